package bootstrap

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// The first server's --agent-token travels with the bootstrap data to a
// server that joins without the flag; a joiner with another one is refused
// before anything is written, without either token in the message.
func TestAgentTokenShared(t *testing.T) {
	first := controlplane.Layout{DataDir: t.TempDir()}
	writeFile(t, first.ServerCA().Cert, "server-ca-cert")
	writeFile(t, first.ServerCA().Key, "server-ca-key")
	if changed, err := WriteAgentToken(first, "agent-secret-one"); err != nil || changed {
		t.Fatal(changed, err)
	}
	if fi, err := os.Stat(first.AgentTokenFile()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent token file: %v, %v; want mode 0600", fi, err)
	}
	// A restart with the same flag changes nothing.
	if changed, err := WriteAgentToken(first, "agent-secret-one"); err != nil || changed {
		t.Fatal(changed, err)
	}
	d, err := Collect(first, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Files["server/agent-token"]; !ok {
		t.Fatalf("the bootstrap data lacks the agent token: %v", d.Files)
	}

	// A joiner without the flag, or with the same token (full form too),
	// takes it.
	for _, given := range []string{"", "agent-secret-one", token.Prefix + strings.Repeat("0", 64) + "::node:agent-secret-one"} {
		if err := d.CheckAgentToken(first, given); err != nil {
			t.Fatalf("joiner with %q: %v", given, err)
		}
	}
	joiner := controlplane.Layout{DataDir: t.TempDir()}
	if err := d.Write(joiner); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(joiner.AgentTokenFile()); err != nil || strings.TrimSpace(string(b)) != "agent-secret-one" {
		t.Fatalf("joiner's agent token: %q, %v", b, err)
	}

	// Another token: refused naming the flag, not the tokens.
	err = d.CheckAgentToken(first, "agent-secret-two")
	if !errors.Is(err, ErrAgentTokenMismatch) || !strings.Contains(err.Error(), "--agent-token") ||
		strings.Contains(err.Error(), "agent-secret") {
		t.Fatalf("another agent token: %v", err)
	}
	// A restart of a server with another token (rotated) replaces it.
	if changed, err := WriteAgentToken(joiner, "agent-secret-two"); err != nil || !changed {
		t.Fatalf("restart with another agent token: changed %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(joiner.AgentTokenFile()); strings.TrimSpace(string(b)) != "agent-secret-two" {
		t.Fatalf("the rotated agent token was not stored: %q", b)
	}
}

func TestReadAgentToken(t *testing.T) {
	if got, err := ReadAgentToken(" flag-secret\n", ""); err != nil || got != "flag-secret" {
		t.Fatalf("flag: %q, %v", got, err)
	}
	f := t.TempDir() + "/agent"
	writeFile(t, f, "file-secret\n")
	if got, err := ReadAgentToken("", f); err != nil || got != "file-secret" {
		t.Fatalf("file: %q, %v", got, err)
	}
	if _, err := ReadAgentToken("", f+"-missing"); err == nil || !strings.Contains(err.Error(), "--agent-token-file") {
		t.Fatalf("missing file: %v", err)
	}
}
