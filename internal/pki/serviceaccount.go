package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// EnsureServiceAccountKey creates the key the apiserver signs service-account
// tokens with (--service-account-signing-key-file) at privPath, and its public
// half (--service-account-key-file) at pubPath.
//
// The key is ECDSA P-256, so tokens are ES256; kube-apiserver signs and
// verifies those and publishes them in its OIDC discovery document.
//
// An existing private key is never replaced, even if it cannot be parsed:
// replacing it would invalidate every token already issued. Only the public
// file is rewritten, when it is missing or does not match.
func EnsureServiceAccountKey(privPath, pubPath string) error {
	privPEM, err := readIfExists(privPath)
	if err != nil {
		return err
	}
	if privPEM == nil {
		key, err := newKey()
		if err != nil {
			return err
		}
		if privPEM, err = encodeKey(key); err != nil {
			return err
		}
		if err := writeFileAtomic(privPath, privPEM, keyMode, dirMode); err != nil {
			return err
		}
	}
	key, err := parseKey(privPEM)
	if err != nil {
		return fmt.Errorf("loading service-account key %s: %w (move it away to create a new one; existing service-account tokens will stop working)", privPath, err)
	}

	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encoding service-account public key: %w", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	current, err := readIfExists(pubPath)
	if err != nil {
		return err
	}
	if current != nil && publicKeyPEMMatches(current, key.Public()) {
		return nil
	}
	return writeFileAtomic(pubPath, pubPEM, certMode, dirMode)
}

func publicKeyPEMMatches(data []byte, want crypto.PublicKey) bool {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return false
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return false
	}
	return samePublicKey(pub, want)
}
