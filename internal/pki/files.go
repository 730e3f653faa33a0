// Package pki creates and maintains the cluster's certificate authorities,
// leaf certificates, service-account key and kubeconfigs on disk.
//
// Every function is idempotent: it is called at every start and only writes
// what is missing or no longer right. Writes are atomic (temp file in the same
// directory, fsync, rename, fsync of the directory) so a crash never leaves a
// half-written key or certificate. Keys are 0600, certificates 0644, and
// directories this package creates are 0700.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/skiffkube/skiff/internal/atomicfile"
	"math/big"
	"os"
)

const (
	keyMode  os.FileMode = 0o600
	certMode os.FileMode = 0o644
	dirMode  os.FileMode = 0o700
)

// writeFileAtomic keeps pki's call sites short.
func writeFileAtomic(path string, data []byte, mode, parentMode os.FileMode) error {
	return atomicfile.Write(path, data, mode, parentMode)
}

// readIfExists returns nil data and nil error for a missing file, so callers
// can tell "absent" (create it) from "unreadable" (stop: never overwrite what
// we could not read).
func readIfExists(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return data, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
	return true, nil
}

// newKey makes an ECDSA P-256 key: quick to generate on every first start,
// and accepted by every Kubernetes component.
func newKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ECDSA P-256 key: %w", err)
	}
	return k, nil
}

// encodeKey uses PKCS#8 ("PRIVATE KEY"), which every Go consumer (client-go's
// keyutil, crypto/tls) reads for any key type.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseKey reads the first private key in PEM data. It accepts the encodings
// openssl and other tools produce so that an operator-supplied CA or key works.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue // e.g. "EC PARAMETERS", which openssl writes before the key
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
	}
}

// parseCert reads the first certificate in PEM data; later blocks (a chain)
// are ignored.
func parseCert(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// keyMatches reports whether key is the private half of pub.
func keyMatches(key crypto.Signer, pub crypto.PublicKey) bool {
	return samePublicKey(key.Public(), pub)
}

// samePublicKey relies on the Equal method every standard-library public key
// type has.
func samePublicKey(a, b crypto.PublicKey) bool {
	p, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && p.Equal(b)
}

// newSerial returns a random 128-bit serial number, so certificates issued by
// different servers, or before and after a reset, never share a serial.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n, nil
}
