package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSignPublicKey(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubPEM, err := EncodePublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignPublicKey(pub, LeafSpec{CommonName: "n1", Usage: ClientAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("the certificate is not for the given key")
	}
	weak, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := ca.SignPublicKey(weak.Public(), LeafSpec{CommonName: "n1", Usage: ClientAuth}, time.Now()); err == nil || !strings.Contains(err.Error(), "P-224") {
		t.Errorf("P-224 key: %v", err)
	}
	if _, err := ParsePublicKeyPEM(append(pubPEM, pubPEM...)); err == nil {
		t.Error("two PEM blocks accepted")
	}
}
