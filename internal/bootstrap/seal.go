package bootstrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrWrongToken is Open's error when the passphrase is not the one the data
// was sealed with (or the data was altered).
var ErrWrongToken = errors.New("the bootstrap data was sealed with another token")

const (
	sealVersion = "skiff-bootstrap-v1"
	saltSize    = 16
	// kdfIterations of PBKDF2-SHA256: tokens may be passwords people chose,
	// so guessing must cost; ~50 ms here, once per server start.
	kdfIterations = 200_000
)

// sealed is the stored form: JSON, so the datastore holds printable text.
type sealed struct {
	Version    string `json:"version"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// Seal encrypts d with AES-256-GCM under a key derived from passphrase (the
// token's secret) with PBKDF2-SHA256 and a random salt. The result is JSON.
func Seal(d *Data, passphrase string) ([]byte, error) {
	if passphrase == "" {
		return nil, errors.New("bootstrap: sealing needs a token")
	}
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	s := sealed{Version: sealVersion, Salt: make([]byte, saltSize)}
	if _, err := rand.Read(s.Salt); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	aead, err := newAEAD(passphrase, s.Salt)
	if err != nil {
		return nil, err
	}
	s.Nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(s.Nonce); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	s.Ciphertext = aead.Seal(nil, s.Nonce, plain, []byte(sealVersion))
	return json.Marshal(s)
}

// Open decrypts what Seal made. A wrong passphrase is ErrWrongToken; data
// that is not sealed bootstrap data is another error.
func Open(blob []byte, passphrase string) (*Data, error) {
	var s sealed
	if err := json.Unmarshal(blob, &s); err != nil || s.Version != sealVersion {
		return nil, errors.New("bootstrap: stored data is not sealed bootstrap data of this version")
	}
	aead, err := newAEAD(passphrase, s.Salt)
	if err != nil {
		return nil, err
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, errors.New("bootstrap: stored data has a bad nonce")
	}
	plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, []byte(sealVersion))
	if err != nil {
		return nil, ErrWrongToken
	}
	var d Data
	if err := json.Unmarshal(plain, &d); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return &d, nil
}

func newAEAD(passphrase string, salt []byte) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, passphrase, salt, kdfIterations, 32)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: deriving the key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return cipher.NewGCM(block)
}

// StorageKey is the one datastore key a cluster's sealed data lives under.
// It says nothing about the token: a key derived from the token (an
// unsalted hash, say) would let anyone who reads the database or its
// backups test token guesses without paying for the key derivation. A
// server tells "another token" apart by Open failing with ErrWrongToken,
// and "no cluster yet" by nothing under StoragePrefix (so a key of another
// format there is a cluster, too).
const StorageKey = StoragePrefix + "data"

// StoragePrefix is where a cluster's sealed bootstrap data lives.
const StoragePrefix = "/bootstrap/"
