package controlplane

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiffkube/skiff/internal/token"
)

// The token code only hashes the CA bytes, so any bytes stand in for a CA.
var (
	testCAPEM  = []byte("-----BEGIN CERTIFICATE-----\nMIIBserver\n-----END CERTIFICATE-----\n")
	otherCAPEM = []byte("-----BEGIN CERTIFICATE-----\nMIIBother\n-----END CERTIFICATE-----\n")
)

var fullTokenRE = regexp.MustCompile(`^SK10[0-9a-f]{64}::server:[!-9;-~]+$`)

// wantStored checks the token file holds tok in full form, mode 0600.
func wantStored(t *testing.T, l Layout, tok token.Token) {
	t.Helper()
	data := readFileT(t, l.TokenFile())
	if string(data) != tok.String()+"\n" {
		t.Errorf("token file holds %q, want %q", data, tok.String()+"\n")
	}
	if !fullTokenRE.MatchString(strings.TrimSpace(string(data))) {
		t.Errorf("token file %q is not in full form", data)
	}
	wantPerm(t, l.TokenFile(), 0o600)
}

func givenToken(t *testing.T, tokenFlag string) *token.Token {
	t.Helper()
	cfg := defaultConfig(t)
	cfg.Token = tokenFlag
	g, err := GivenToken(cfg)
	if err != nil {
		t.Fatalf("GivenToken(%q): %v", tokenFlag, err)
	}
	return g
}

func TestEnsureTokenGeneratedAndKept(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	if g := givenToken(t, ""); g != nil {
		t.Fatalf("no --token: GivenToken = %+v, want nil", g)
	}

	tok, err := EnsureToken(l, nil, testCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != token.HashCA(testCAPEM) || tok.Username != "server" {
		t.Errorf("token %+v: want the CA hash %s and user server", tok, token.HashCA(testCAPEM))
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok.Secret) {
		t.Errorf("generated secret %q is not 64 hex characters", tok.Secret)
	}
	wantStored(t, l, tok)
	if !strings.HasPrefix(tok.String(), "SK10"+token.HashCA(testCAPEM)+"::server:") {
		t.Errorf("token %q does not pin the CA", tok.String())
	}

	// A restart without --token keeps the token, without rewriting it.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(l.TokenFile(), old, old); err != nil {
		t.Fatal(err)
	}
	again, err := EnsureToken(l, nil, testCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	if again != tok {
		t.Errorf("restart: token %+v, want %+v", again, tok)
	}
	if fi, _ := os.Stat(l.TokenFile()); !fi.ModTime().Equal(old) {
		t.Error("restart rewrote an unchanged token file")
	}

	// A second data dir gets a different secret.
	other, err := EnsureToken(Layout{DataDir: t.TempDir()}, nil, testCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	if other.Secret == tok.Secret {
		t.Error("two data dirs generated the same secret")
	}
}

func TestEnsureTokenGivenShortSecret(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	g := givenToken(t, "my-cluster-secret")
	if g == nil || !g.IsShort() || g.Secret != "my-cluster-secret" {
		t.Fatalf("GivenToken = %+v", g)
	}
	tok, err := EnsureToken(l, g, testCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	want := token.Token{CAHash: token.HashCA(testCAPEM), Username: "server", Secret: "my-cluster-secret"}
	if tok != want {
		t.Errorf("token %+v, want %+v", tok, want)
	}
	wantStored(t, l, want)

	// Restarts with the same secret, with the full form, or with nothing
	// all agree.
	for _, g := range []*token.Token{g, givenToken(t, want.String()), nil} {
		got, err := EnsureToken(l, g, testCAPEM)
		if err != nil {
			t.Errorf("restart with %v: %v", g != nil, err)
		} else if got != want {
			t.Errorf("restart: token %+v, want %+v", got, want)
		}
	}
	wantStored(t, l, want)
}

func TestEnsureTokenGivenFullWithRightCA(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	full := "SK10" + token.HashCA(testCAPEM) + "::server:full-secret"
	tok, err := EnsureToken(l, givenToken(t, full), testCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	if tok.String() != full {
		t.Errorf("token %q, want %q", tok.String(), full)
	}
	wantStored(t, l, tok)
}

func TestEnsureTokenGivenWrongCAHash(t *testing.T) {
	wrong := "SK10" + token.HashCA(otherCAPEM) + "::server:wrong-ca-secret"

	// Fresh data dir: refused, nothing written.
	l := Layout{DataDir: t.TempDir()}
	_, err := EnsureToken(l, givenToken(t, wrong), testCAPEM)
	if !errors.Is(err, token.ErrCAMismatch) {
		t.Fatalf("got %v, want ErrCAMismatch", err)
	}
	if strings.Contains(err.Error(), "wrong-ca-secret") {
		t.Errorf("error %q contains the secret", err)
	}
	if _, err := os.Stat(l.TokenFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file after a refused token: %v, want it absent", err)
	}

	// Set-up data dir with that very secret: still refused, file unchanged.
	l2 := Layout{DataDir: t.TempDir()}
	if _, err := EnsureToken(l2, givenToken(t, "wrong-ca-secret"), testCAPEM); err != nil {
		t.Fatal(err)
	}
	before := readFileT(t, l2.TokenFile())
	if _, err := EnsureToken(l2, givenToken(t, wrong), testCAPEM); !errors.Is(err, token.ErrCAMismatch) {
		t.Errorf("got %v, want ErrCAMismatch", err)
	}
	if after := readFileT(t, l2.TokenFile()); string(after) != string(before) {
		t.Errorf("token file changed from %q to %q", before, after)
	}
}

func TestEnsureTokenDifferentSecretThanStored(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	if _, err := EnsureToken(l, givenToken(t, "first-secret"), testCAPEM); err != nil {
		t.Fatal(err)
	}
	before := readFileT(t, l.TokenFile())

	for _, given := range []string{"second-secret", "SK10" + token.HashCA(testCAPEM) + "::server:second-secret"} {
		_, err := EnsureToken(l, givenToken(t, given), testCAPEM)
		if err == nil {
			t.Fatalf("%q: no error", given)
		}
		if !strings.Contains(err.Error(), l.TokenFile()) {
			t.Errorf("error %q does not name the token file %s", err, l.TokenFile())
		}
		for _, secret := range []string{"first-secret", "second-secret"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains a secret", err)
			}
		}
		if after := readFileT(t, l.TokenFile()); string(after) != string(before) {
			t.Errorf("token file changed from %q to %q", before, after)
		}
	}
}

func TestEnsureTokenFollowsCurrentCA(t *testing.T) {
	// The stored token always pins the CA the server presents now.
	l := Layout{DataDir: t.TempDir()}
	first, err := EnsureToken(l, nil, testCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	second, err := EnsureToken(l, nil, otherCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	if second.Secret != first.Secret || second.CAHash != token.HashCA(otherCAPEM) {
		t.Errorf("after a CA change: %+v, want secret %q and hash of the new CA", second, first.Secret)
	}
	wantStored(t, l, second)
}

func TestEnsureTokenCorruptStoredToken(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	if err := os.MkdirAll(l.ServerDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	corrupt := "SK10abc::server:stored-s3cret\n"
	if err := os.WriteFile(l.TokenFile(), []byte(corrupt), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := EnsureToken(l, nil, testCAPEM)
	if err == nil || !strings.Contains(err.Error(), l.TokenFile()) {
		t.Fatalf("got %v, want an error naming %s", err, l.TokenFile())
	}
	if strings.Contains(err.Error(), "stored-s3cret") {
		t.Errorf("error %q contains the secret", err)
	}
	if got := readFileT(t, l.TokenFile()); string(got) != corrupt {
		t.Errorf("corrupt token file was overwritten with %q", got)
	}
}

func TestGivenTokenFromFile(t *testing.T) {
	dir := t.TempDir()
	full := "SK10" + token.HashCA(testCAPEM) + "::server:file-secret"
	for _, tc := range []struct {
		content string
		want    token.Token
	}{
		{"file-secret\n", token.Token{Secret: "file-secret"}},
		{"  file-secret \r\n", token.Token{Secret: "file-secret"}},
		{full + "\n", token.Token{CAHash: token.HashCA(testCAPEM), Username: "server", Secret: "file-secret"}},
	} {
		path := filepath.Join(dir, "token")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := defaultConfig(t)
		cfg.TokenFile = path
		got, err := GivenToken(cfg)
		if err != nil {
			t.Errorf("token file %q: %v", tc.content, err)
		} else if got == nil || *got != tc.want {
			t.Errorf("token file %q: got %+v, want %+v", tc.content, got, tc.want)
		}
	}
}

func TestGivenTokenFileMissing(t *testing.T) {
	cfg := defaultConfig(t)
	cfg.TokenFile = filepath.Join(t.TempDir(), "no-such-token")
	_, err := GivenToken(cfg)
	if err == nil || !strings.Contains(err.Error(), "token-file") {
		t.Fatalf("got %v, want an error naming token-file", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap ErrNotExist", err)
	}
}

func TestGivenTokenFileEmpty(t *testing.T) {
	// An empty token file is a mistake, not "no token": a generated token
	// would lock out every node given the intended one.
	for _, content := range []string{"", "\n", "  \n"} {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := defaultConfig(t)
		cfg.TokenFile = path
		got, err := GivenToken(cfg)
		if err == nil {
			t.Errorf("empty token file %q: got %+v, want an error", content, got)
		} else if !strings.Contains(err.Error(), "token-file") || !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name token-file %s", err, path)
		}
	}
}

func TestGivenTokenMalformed(t *testing.T) {
	hash := token.HashCA(testCAPEM)
	for _, bad := range []string{
		"SK10abc::server:s3cr3tVALUE",          // short hash
		"XX10" + hash + "::server:s3cr3tVALUE", // bad prefix
		"SK10" + hash + "::s3cr3tVALUE",        // no user
		"SK10" + hash + "::server:s3cr3t VALUE",
		"s3cr3t:VALUE",
		"s3cr3t\tVALUE",
	} {
		cfg := defaultConfig(t)
		cfg.Token = bad
		_, err := GivenToken(cfg)
		if !errors.Is(err, token.ErrInvalid) {
			t.Errorf("--token %q: got %v, want ErrInvalid", bad, err)
			continue
		}
		if !strings.Contains(err.Error(), "--token") {
			t.Errorf("error %q does not name --token", err)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error %q contains the secret", err)
		}

		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(bad+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg = defaultConfig(t)
		cfg.TokenFile = path
		_, err = GivenToken(cfg)
		if !errors.Is(err, token.ErrInvalid) {
			t.Errorf("token-file with %q: got %v, want ErrInvalid", bad, err)
			continue
		}
		if !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("token-file error %q: want the path and no secret", err)
		}
	}
}
