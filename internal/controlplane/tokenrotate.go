package controlplane

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/token"
)

// maxRetiredTokens is how many rotated-away tokens a data dir remembers.
const maxRetiredTokens = 5

// RetiredTokensFile holds a bcrypt hash of each server token secret that
// `skiff token rotate` replaced on this server, one a line, newest last:
// a server whose --token still says such a token starts on its stored
// token instead of being refused (see IsRetiredToken).
func (l Layout) RetiredTokensFile() string { return filepath.Join(l.ServerDir(), "token-retired") }

// WriteToken stores t, in full form, as the data dir's server token
// (atomically, mode 0600).
func WriteToken(l Layout, t token.Token) error {
	if err := atomicfile.Write(l.TokenFile(), []byte(t.String()+"\n"), 0o600, 0o700); err != nil {
		return fmt.Errorf("writing the server token: %w", err)
	}
	return nil
}

// RetireToken records secret as a token this data dir's server no longer
// accepts, keeping the last few. Only a hash is stored.
func RetireToken(l Layout, secret string) error {
	hash, err := bcrypt.GenerateFromPassword(prehash(secret), bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("hashing the retired token: %w", err)
	}
	lines, err := retiredHashes(l)
	if err != nil {
		return err
	}
	lines = append(lines, string(hash))
	if len(lines) > maxRetiredTokens {
		lines = lines[len(lines)-maxRetiredTokens:]
	}
	if err := atomicfile.Write(l.RetiredTokensFile(), []byte(strings.Join(lines, "\n")+"\n"), 0o600, 0o700); err != nil {
		return fmt.Errorf("writing %s: %w", l.RetiredTokensFile(), err)
	}
	return nil
}

// IsRetiredToken reports whether secret is one RetireToken recorded in l.
func IsRetiredToken(l Layout, secret string) (bool, error) {
	lines, err := retiredHashes(l)
	if err != nil {
		return false, err
	}
	for _, h := range lines {
		if bcrypt.CompareHashAndPassword([]byte(h), prehash(secret)) == nil {
			return true, nil
		}
	}
	return false, nil
}

func retiredHashes(l Layout) ([]string, error) {
	data, err := os.ReadFile(l.RetiredTokensFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", l.RetiredTokensFile(), err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}

// prehash fits any secret into bcrypt's 72 bytes.
func prehash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return []byte(hex.EncodeToString(sum[:]))
}

// CheckTokenPin is CheckToken without its rule on the stored secret: it
// refuses only a full given token that pins another CA than l's. A server
// on an external datastore uses it: whether a secret other than the stored
// one is the cluster's current token (rotated on another server) is for
// the datastore's sealed bootstrap data to tell.
func CheckTokenPin(l Layout, given *token.Token) error {
	if given == nil || given.IsShort() {
		return nil
	}
	caPEM, err := os.ReadFile(l.ServerCA().Cert)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading server CA: %w", err)
	}
	return checkGiven(l, given, caPEM, nil)
}

// StoredToken is the data dir's server token, nil when there is none.
func StoredToken(l Layout) (*token.Token, error) { return readStoredToken(l) }
