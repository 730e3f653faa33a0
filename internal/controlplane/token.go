package controlplane

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/token"
)

// GivenToken reads the token the user gave with --token or --token-file, if
// any, and checks its syntax. It touches nothing, so it runs before start-up
// writes a byte.
func GivenToken(cfg *config.Server) (*token.Token, error) {
	raw, source := cfg.Token, "--token"
	if cfg.TokenFile != "" {
		data, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token-file: %w", err)
		}
		raw, source = strings.TrimSpace(string(data)), "token-file "+cfg.TokenFile
		// An empty file is a mistake (a secret not mounted yet, say), not
		// "no token": generating a random one would leave every node that
		// was given the intended token unable to join.
		if raw == "" {
			return nil, fmt.Errorf("token-file %s is empty", cfg.TokenFile)
		}
	}
	if raw == "" {
		return nil, nil
	}
	t, err := token.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &t, nil
}

// EnsureToken settles the cluster token: the one stored in the data dir, the
// one given, or a new one, and stores it in full form
// (SK10<CA hash>::server:<secret>, mode 0600). A given token must match the
// stored one and pin this server's CA: agents already trust both.
func EnsureToken(l Layout, given *token.Token, caPEM []byte) (token.Token, error) {
	path := l.TokenFile()
	stored, err := readStoredToken(l)
	if err != nil {
		return token.Token{}, err
	}
	if err := checkGiven(l, given, caPEM, stored); err != nil {
		return token.Token{}, err
	}

	var secret string
	switch {
	case given != nil:
		secret = given.Secret
	case stored != nil:
		secret = stored.Secret
	default:
		s, err := token.NewSecret()
		if err != nil {
			return token.Token{}, err
		}
		secret = s
	}
	full := token.Token{CAHash: token.HashCA(caPEM), Username: "server", Secret: secret}
	if stored == nil || stored.String() != full.String() {
		if err := atomicfile.Write(path, []byte(full.String()+"\n"), 0o600, 0o700); err != nil {
			return token.Token{}, err
		}
	}
	return full, nil
}

// CheckToken refuses, without writing anything, a given token that
// EnsureToken would refuse later: one that pins another CA than the stored
// one, or whose secret differs from the stored token's. Start-up calls it
// before the datastore opens, so a wrong token leaves the data dir as it was.
func CheckToken(l Layout, given *token.Token) error {
	if given == nil {
		return nil
	}
	caPEM, err := os.ReadFile(l.ServerCA().Cert)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading server CA: %w", err)
	}
	stored, err := readStoredToken(l)
	if err != nil {
		return err
	}
	return checkGiven(l, given, caPEM, stored)
}

// readStoredToken returns the data dir's token, nil when there is none.
func readStoredToken(l Layout) (*token.Token, error) {
	data, err := os.ReadFile(l.TokenFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading stored token: %w", err)
	}
	t, err := token.Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("stored token %s: %w", l.TokenFile(), err)
	}
	return &t, nil
}

// checkGiven is the one rule for a given token: a full one must pin caPEM
// (when the CA exists yet), and its secret must be the stored one's.
func checkGiven(l Layout, given *token.Token, caPEM []byte, stored *token.Token) error {
	if given == nil {
		return nil
	}
	if !given.IsShort() && caPEM != nil {
		if err := given.VerifyCA(caPEM); err != nil {
			return fmt.Errorf("--token does not belong to this server: %w", err)
		}
	}
	if stored != nil && stored.Secret != given.Secret {
		return fmt.Errorf("--token differs from the token this data dir was set up with (%s): start without --token, or give that token "+
			"(if the cluster's token was rotated while this server was down, start it with that one: it takes the new one from the datastore)", l.TokenFile())
	}
	return nil
}
