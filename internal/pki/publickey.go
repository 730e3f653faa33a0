package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// minRSABits is the smallest RSA key SignPublicKey accepts.
const minRSABits = 2048

// CheckPublicKey refuses a key a certificate should not be signed for: only
// ECDSA on P-256, P-384 or P-521, RSA of at least 2048 bits and Ed25519 pass.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("unsupported ECDSA curve %v", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is too short (at least %d)", k.N.BitLen(), minRSABits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
}

// ParsePublicKeyPEM reads one PEM "PUBLIC KEY" block (PKIX, as openssl
// writes it) and checks it with CheckPublicKey. Anything else, or trailing
// data, is an error.
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block is %q, not \"PUBLIC KEY\"", block.Type)
	}
	if hasPEM(rest) {
		return nil, errors.New("more than one PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

func hasPEM(data []byte) bool {
	b, _ := pem.Decode(data)
	return b != nil
}

// EncodePublicKey is pub as a PEM "PUBLIC KEY" block.
func EncodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// PublicKeyOfKeyFile reads the private key in keyPath and returns its
// public half as PEM (EncodePublicKey). The error wraps os.ErrNotExist when
// there is no file.
func PublicKeyOfKeyFile(keyPath string) ([]byte, error) {
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return EncodePublicKey(key.Public())
}
