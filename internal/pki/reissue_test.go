package pki

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReissueKeepsSpecAndKey(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "leaf.crt"), filepath.Join(dir, "leaf.key")
	spec := LeafSpec{CommonName: "kube-apiserver", Organizations: []string{"o"}, DNSNames: []string{"localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1").To4()}, Usage: ServerAuth | ClientAuth}
	now := time.Now()
	if _, _, err := ca.EnsureLeaf(certPath, keyPath, spec, now); err != nil {
		t.Fatal(err)
	}
	reloader, err := NewKeyPairReloader(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := reloader.Current()
	keyBefore, _ := os.ReadFile(keyPath)

	later := now.Add(300 * 24 * time.Hour)
	cert, err := ca.Reissue(certPath, keyPath, later)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.After(later.Add(364*24*time.Hour)) || cert.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Errorf("re-issued certificate valid until %v, serial %v", cert.NotAfter, cert.SerialNumber)
	}
	// Same spec: EnsureLeaf finds nothing to do.
	if issued, reason, err := ca.EnsureLeaf(certPath, keyPath, spec, later); err != nil || issued {
		t.Errorf("EnsureLeaf after Reissue: issued %v (%s), %v", issued, reason, err)
	}
	if keyAfter, _ := os.ReadFile(keyPath); string(keyAfter) != string(keyBefore) {
		t.Error("Reissue changed the key")
	}
	// The reloader serves the new certificate (the file's size or mtime
	// changed; force the mtime in case both writes fell in one tick).
	_ = os.Chtimes(certPath, later, later)
	got, err := reloader.Current()
	if err != nil || got.Leaf.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("reloader serves serial %v, want %v (%v)", got.Leaf.SerialNumber, cert.SerialNumber, err)
	}
	// A broken file keeps the last good pair.
	if err := os.WriteFile(certPath, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := reloader.Current(); err != nil || got.Leaf.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("broken file: %v, %v", got, err)
	}
	if _, err := ca.Reissue(certPath, keyPath, later); err == nil || !strings.Contains(err.Error(), certPath) {
		t.Errorf("Reissue of a broken file: %v", err)
	}
	if _, err := LoadCA(filepath.Join(dir, "none.crt"), filepath.Join(dir, "ca.key")); err == nil {
		t.Error("LoadCA of a missing file succeeded")
	}
}
