package token

import (
	"errors"
	"strings"
	"testing"
)

var (
	testCA   = []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	testHash = HashCA(testCA)
)

// secretLike is used as the secret (or in its place) in malformed cases so the
// test can check that no error ever echoes it.
const secretLike = "s3cr3tVALUE"

func TestRoundTrip(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 64 {
		t.Fatalf("NewSecret length = %d, want 64", len(secret))
	}
	for _, tok := range []Token{
		{CAHash: testHash, Username: "server", Secret: secret},
		{CAHash: testHash, Username: "node", Secret: "p@ss!word"},
		{Secret: secret},
	} {
		s := tok.String()
		got, err := Parse(s + "\n")
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if got != tok {
			t.Errorf("round trip of %q = %+v, want %+v", s, got, tok)
		}
		if got.IsShort() != (tok.CAHash == "") {
			t.Errorf("IsShort(%q) = %v", s, got.IsShort())
		}
	}
}

func TestParseFullForm(t *testing.T) {
	got, err := Parse("  SK10" + strings.ToUpper(testHash) + "::server:" + secretLike + "\r\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Token{CAHash: testHash, Username: "server", Secret: secretLike}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseMalformed(t *testing.T) {
	cases := []struct {
		name, in, wantDetail string
	}{
		{"empty", "  \n", "token is empty"},
		{"bad prefix", "K10" + testHash + "::server:" + secretLike, "bad prefix"},
		{"secret in prefix", secretLike + "::server:" + secretLike, "bad prefix"},
		{"hash too short", "SK10abc::server:" + secretLike, "CA hash is 3 characters"},
		{"hash is the secret", "SK10" + secretLike + "::server:x", "CA hash is 11 characters"},
		{"hash too long", "SK10" + testHash + "00::server:" + secretLike, "CA hash is 66 characters"},
		{"hash not hex", "SK10" + strings.Repeat("g", 64) + "::server:" + secretLike, "not 64 hex"},
		{"missing user", "SK10" + testHash + "::" + secretLike, "missing user"},
		{"empty user", "SK10" + testHash + "::" + ":" + secretLike, "missing user"},
		{"user with space", "SK10" + testHash + "::ser ver:" + secretLike, "user must be printable"},
		{"empty secret", "SK10" + testHash + "::server:", "secret is empty"},
		{"secret with colon", "SK10" + testHash + "::server:" + secretLike + ":x", "secret must not contain ':'"},
		{"secret with space", "SK10" + testHash + "::server:" + secretLike + " x", "secret must be printable"},
		{"short with colon", "server:" + secretLike, "secret must not contain ':'"},
		{"short with tab", secretLike + "\tx", "secret must be printable"},
		{"short non-ascii", secretLike + "é", "secret must be printable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.in)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error", c.in)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, `expected "SK10<64 hex sha256 of the CA>::<user>:<secret>" or a bare secret`) {
				t.Errorf("error %q does not state the expected format", msg)
			}
			if !strings.Contains(msg, c.wantDetail) {
				t.Errorf("error %q does not contain %q", msg, c.wantDetail)
			}
			if strings.Contains(msg, secretLike) {
				t.Errorf("error %q leaks the secret", msg)
			}
		})
	}
}

func TestVerifyCA(t *testing.T) {
	tok := Token{CAHash: testHash, Username: "server", Secret: secretLike}
	if err := tok.VerifyCA(testCA); err != nil {
		t.Fatalf("matching CA: %v", err)
	}

	other := []byte("another CA")
	err := tok.VerifyCA(other)
	if !errors.Is(err, ErrCAMismatch) {
		t.Fatalf("mismatching CA: got %v, want ErrCAMismatch", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, testHash) || !strings.Contains(msg, HashCA(other)) {
		t.Errorf("error %q should show expected and actual hashes", msg)
	}
	if strings.Contains(msg, secretLike) {
		t.Errorf("error %q leaks the secret", msg)
	}

	if err := (Token{Secret: secretLike}).VerifyCA(testCA); !errors.Is(err, ErrNoCAHash) {
		t.Errorf("short token: got %v, want ErrNoCAHash", err)
	}
}

func TestHashCA(t *testing.T) {
	// sha256("") is a fixed, well-known value.
	if got := HashCA(nil); got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("HashCA(nil) = %s", got)
	}
	// A trailing newline changes the hash: the pin covers the bytes as served.
	if HashCA(testCA) == HashCA(testCA[:len(testCA)-1]) {
		t.Error("HashCA ignored a byte difference")
	}
}
