package bootstrap

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// ErrAgentTokenMismatch is the refusal of a server whose --agent-token is
// not the cluster's. Neither token is in the message.
var ErrAgentTokenMismatch = errors.New("--agent-token (or --agent-token-file) differs from the cluster's agent token, kept in <data-dir>/server/agent-token: give every server the same one, or none")

// ReadAgentToken is the agent token a server is given: --agent-token, else
// the content of --agent-token-file (file ""), trimmed; "" when neither is
// set. A file that cannot be read is an error naming it.
func ReadAgentToken(flag, file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(flag), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--agent-token-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// CheckAgentToken refuses with ErrAgentTokenMismatch a server given the
// agent token given ("" for none) when d, the cluster's bootstrap data,
// holds another one. A cluster without one, or a server given none, is
// accepted (the server then shares the cluster's).
func (d *Data) CheckAgentToken(l controlplane.Layout, given string) error {
	cluster, ok := d.Files[relTo(l, l.AgentTokenFile())]
	if given == "" || !ok {
		return nil
	}
	if !sameAgentSecret(string(cluster), given) {
		return ErrAgentTokenMismatch
	}
	return nil
}

// WriteAgentToken stores the agent token given in l's data dir (mode 0600)
// so that it travels with the bootstrap data to every server that joins
// later. Nothing to do for "" or for the token stored already. Another
// token replaces the stored one and changed is true: on this server the
// flag is the truth (a rotated --agent-token-file), while a server joining
// with another token than the cluster's is refused by CheckAgentToken
// before anything is written.
func WriteAgentToken(l controlplane.Layout, given string) (changed bool, err error) {
	if given == "" {
		return false, nil
	}
	stored, err := os.ReadFile(l.AgentTokenFile())
	switch {
	case err == nil:
		if sameAgentSecret(string(stored), given) {
			return false, nil
		}
		changed = true
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("bootstrap: reading %s: %w", l.AgentTokenFile(), err)
	}
	if err := os.MkdirAll(l.ServerDir(), 0o700); err != nil {
		return false, fmt.Errorf("bootstrap: %w", err)
	}
	if err := atomicfile.Write(l.AgentTokenFile(), []byte(given+"\n"), 0o600, 0o700); err != nil {
		return false, fmt.Errorf("bootstrap: writing %s: %w", l.AgentTokenFile(), err)
	}
	return changed, nil
}

// sameAgentSecret compares two agent tokens by their secrets (a full token
// and its short form are the same), in constant time.
func sameAgentSecret(a, b string) bool {
	sa, sb := secretOf(a), secretOf(b)
	return subtle.ConstantTimeCompare([]byte(sa), []byte(sb)) == 1
}

func secretOf(raw string) string {
	raw = strings.TrimSpace(raw)
	if t, err := token.Parse(raw); err == nil {
		return t.Secret
	}
	return raw
}
