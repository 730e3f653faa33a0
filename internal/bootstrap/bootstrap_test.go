package bootstrap

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffkube/skiff/internal/controlplane"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCollectWriteRoundTrip(t *testing.T) {
	src := controlplane.Layout{DataDir: t.TempDir()}
	writeFile(t, src.ServerCA().Cert, "server-ca-cert")
	writeFile(t, src.ServerCA().Key, "server-ca-key")
	writeFile(t, src.ServiceAccountKey(), "sa-key")
	writeFile(t, src.TokenFile(), "K10::server:secret")
	// A leaf certificate is not bootstrap data.
	writeFile(t, src.ServingAPIServer().Cert, "leaf")
	settings := Settings{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}
	d, err := Collect(src, settings)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Files) != 4 {
		t.Fatalf("collected %d files, want 4: %v", len(d.Files), d.Files)
	}
	blob, err := Seal(d, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(blob), "server-ca-key") {
		t.Fatal("sealed data holds a key in the clear")
	}
	if _, err := Open(blob, "other"); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("Open with another token: %v, want ErrWrongToken", err)
	}
	got, err := Open(blob, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if got.Settings != settings {
		t.Fatalf("settings %+v, want %+v", got.Settings, settings)
	}
	dst := controlplane.Layout{DataDir: t.TempDir()}
	if err := got.Write(dst); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst.ServerCA().Key)
	if err != nil || string(b) != "server-ca-key" {
		t.Fatalf("server CA key after Write: %q, %v", b, err)
	}
	if fi, _ := os.Stat(dst.ServerCA().Key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(dst.ServingAPIServer().Cert); !os.IsNotExist(err) {
		t.Fatal("a leaf certificate travelled with the bootstrap data")
	}
	if c, err := got.Conflicts(dst); err != nil || len(c) != 0 {
		t.Fatalf("conflicts after Write: %v %v", c, err)
	}
	writeFile(t, dst.ServerCA().Cert, "another cluster's CA")
	if c, _ := got.Conflicts(dst); len(c) != 1 || c[0] != "server/tls/server-ca.crt" {
		t.Fatalf("conflicts = %v, want the server CA", c)
	}
}

func TestWriteRefusesPartialData(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	for name, d := range map[string]*Data{
		"cert without key": {Files: map[string][]byte{"server/tls/server-ca.crt": []byte("c")}},
		"not a bootstrap file": {Files: map[string][]byte{
			"server/tls/server-ca.crt": []byte("c"), "server/tls/server-ca.key": []byte("k"), "etc/passwd": []byte("x"),
		}},
		"no server CA": {Files: map[string][]byte{"server/token": []byte("t")}},
	} {
		if err := d.Write(l); err == nil {
			t.Errorf("%s: Write succeeded", name)
		}
		if entries, _ := os.ReadDir(l.DataDir); len(entries) != 0 {
			t.Fatalf("%s: a refused Write wrote %v", name, entries)
		}
	}
}

func TestSettingsMismatch(t *testing.T) {
	cluster := Settings{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}
	if err := cluster.Mismatch(cluster); err != nil {
		t.Fatal(err)
	}
	mine := cluster
	mine.ServiceCIDR = "10.96.0.0/12"
	mine.ClusterDomain = "example.org"
	err := mine.Mismatch(cluster)
	want := `--service-cidr: this server has "10.96.0.0/12", the cluster has "10.43.0.0/16"; --cluster-domain: this server has "example.org", the cluster has "cluster.local"`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}

	// --service-node-port-range is compared once the cluster records it.
	mine = cluster
	mine.ServiceNodePortRange = "31000-31100"
	if err := mine.Mismatch(cluster); err != nil {
		t.Errorf("a cluster that records no NodePort range: %v", err)
	}
	cluster.ServiceNodePortRange = "30000-32767"
	want = `--service-node-port-range: this server has "31000-31100", the cluster has "30000-32767"`
	if err := mine.Mismatch(cluster); err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// The datastore key must not depend on the token: an unsalted hash of it
// there would let a reader of the database test guesses at one SHA-256
// each, bypassing the key derivation.
func TestStorageKeyIndependentOfToken(t *testing.T) {
	if !strings.HasPrefix(StorageKey, StoragePrefix) {
		t.Fatalf("key %q is not under %q", StorageKey, StoragePrefix)
	}
	for _, secret := range []string{"one", "two"} {
		sum := sha256.Sum256([]byte(secret))
		if h := hex.EncodeToString(sum[:]); strings.Contains(StorageKey, h[:8]) {
			t.Fatalf("key %q holds a hash of the token", StorageKey)
		}
	}
}
