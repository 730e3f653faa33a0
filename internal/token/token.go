// Package token parses and formats the cluster join token.
//
// The full form pins the server CA so a joining node can trust the first TLS
// connection it makes:
//
//	SK10<sha256 hex of the server CA PEM>::<username>:<secret>
//
// The short form is the bare secret. It does not pin the CA, so a node joining
// with it has to learn the CA some other way.
//
// Character rules: the username and the secret are printable ASCII without
// whitespace and without ':'. Forbidding ':' in both keeps parsing unambiguous
// (a short token can never be mistaken for a full one, and the user/secret
// split has exactly one answer). Secrets made by NewSecret are hex, so the
// rule only constrains hand-chosen secrets.
//
// No error from this package contains the secret, or any part of the input
// string: a user may paste the secret where the hash belongs.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Prefix starts every full-form token; the digits version the format.
const Prefix = "SK10"

// ErrInvalid is wrapped by every error Parse returns. Its text states the
// accepted formats so the user sees them next to what is wrong.
var ErrInvalid = errors.New(`invalid token: expected "SK10<64 hex sha256 of the CA>::<user>:<secret>" or a bare secret`)

// ErrCAMismatch is wrapped by VerifyCA when the served CA is not the pinned one.
var ErrCAMismatch = errors.New("server CA does not match the token's CA hash")

// ErrNoCAHash is returned by VerifyCA for a short token. It is an error rather
// than a silent success so a caller cannot skip CA pinning by accident.
var ErrNoCAHash = errors.New("token has no CA hash (short form): the server CA cannot be verified with it")

// Token is a parsed join token.
type Token struct {
	CAHash   string // 64 lower-case hex chars, "" for a short token
	Username string // "server" for the cluster token; "" for a short token
	Secret   string
}

// Parse accepts the full or the short form. Surrounding whitespace (such as
// the newline at the end of a token file) is ignored. An upper-case CA hash is
// accepted and stored lower-case.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, invalid("token is empty")
	}

	hashPart, creds, full := strings.Cut(s, "::")
	if !full {
		if err := checkField("secret", s); err != nil {
			return Token{}, err
		}
		return Token{Secret: s}, nil
	}

	if !strings.HasPrefix(hashPart, Prefix) {
		return Token{}, invalid("bad prefix: a token containing \"::\" must start with " + Prefix)
	}
	hash := strings.ToLower(strings.TrimPrefix(hashPart, Prefix))
	if len(hash) != sha256.Size*2 {
		return Token{}, invalid(fmt.Sprintf("CA hash is %d characters, want 64 hex", len(hash)))
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return Token{}, invalid("CA hash is not 64 hex characters")
	}

	user, secret, ok := strings.Cut(creds, ":")
	if !ok || user == "" {
		return Token{}, invalid("missing user: want <user>:<secret> after \"::\"")
	}
	if err := checkField("user", user); err != nil {
		return Token{}, err
	}
	if err := checkField("secret", secret); err != nil {
		return Token{}, err
	}
	return Token{CAHash: hash, Username: user, Secret: secret}, nil
}

// checkField enforces the character rules from the package doc. The message
// names the offending field and character class, never its content.
func checkField(name, v string) error {
	if v == "" {
		return invalid(name + " is empty")
	}
	for _, r := range v {
		switch {
		case r == ':':
			return invalid(name + " must not contain ':'")
		case r <= ' ' || r > '~':
			return invalid(name + " must be printable ASCII without whitespace")
		}
	}
	return nil
}

func invalid(what string) error {
	return fmt.Errorf("%w: %s", ErrInvalid, what)
}

// String returns the full form when the token pins a CA, else the bare secret.
// It contains the secret: do not log it.
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Secret
	}
	return Prefix + t.CAHash + "::" + t.Username + ":" + t.Secret
}

// IsShort reports whether the token lacks a CA hash.
func (t Token) IsShort() bool { return t.CAHash == "" }

// NewSecret returns 32 random bytes, hex-encoded (64 characters).
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating token secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// HashCA returns the sha256 hex of the CA PEM. It hashes the bytes exactly as
// the server serves them, so the server must serve its CA file unmodified.
func HashCA(caPEM []byte) string {
	sum := sha256.Sum256(caPEM)
	return hex.EncodeToString(sum[:])
}

// VerifyCA checks the CA a server presented against the hash in the token.
// The hashes are not secret, so the error shows both to ease debugging.
func (t Token) VerifyCA(caPEM []byte) error {
	if t.CAHash == "" {
		return ErrNoCAHash
	}
	if got := HashCA(caPEM); got != t.CAHash {
		return fmt.Errorf("%w: token expects sha256 %s, server presented sha256 %s", ErrCAMismatch, t.CAHash, got)
	}
	return nil
}
