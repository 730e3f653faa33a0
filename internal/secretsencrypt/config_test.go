package secretsencrypt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/skiffkube/skiff/internal/controlplane"
)

var now = time.Date(2026, 12, 8, 2, 30, 0, 0, time.UTC)

// The generated file is one the apiserver loads, and it writes Secrets
// with the primary key's prefix.
func TestEnsureWritesAConfigTheAPIServerLoads(t *testing.T) {
	for _, typ := range []string{AESCBC, Secretbox} {
		t.Run(typ, func(t *testing.T) {
			l := controlplane.Layout{DataDir: t.TempDir()}
			wrote, err := Ensure(l, typ, now)
			if err != nil || !wrote {
				t.Fatalf("Ensure: %v %v", wrote, err)
			}
			fi, err := os.Stat(l.EncryptionConfig())
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", fi.Mode().Perm())
			}
			if filepath.Dir(l.EncryptionConfig()) != l.CredDir() {
				t.Errorf("config not in the cred dir: %s", l.EncryptionConfig())
			}
			before, _ := os.ReadFile(l.EncryptionConfig())
			// A second start keeps the keys.
			if wrote, err := Ensure(l, typ, now); err != nil || wrote {
				t.Fatalf("second Ensure: %v %v", wrote, err)
			}
			after, _ := os.ReadFile(l.EncryptionConfig())
			if !bytes.Equal(before, after) {
				t.Error("second Ensure changed the keys")
			}

			out := storedBy(t, l)
			want := "k8s:enc:" + typ + ":v1:" + typ + "key:"
			if !bytes.HasPrefix(out, []byte(want)) {
				t.Errorf("stored value starts %q, want %q", out[:min(len(out), 40)], want)
			}
			if got := storedWith(out); got != typ+":"+typ+"key" {
				t.Errorf("storedWith = %q", got)
			}
		})
	}
}

// storedBy loads l's file with the apiserver's own loader and returns what
// it stores for a Secret.
func storedBy(t *testing.T, l controlplane.Layout) []byte {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ec, err := encryptionconfig.LoadEncryptionConfig(ctx, l.EncryptionConfig(), true, "test")
	if err != nil {
		t.Fatalf("the apiserver refuses the config: %v", err)
	}
	tr := ec.Transformers[schema.GroupResource{Resource: "secrets"}]
	if tr == nil {
		t.Fatal("no transformer for secrets")
	}
	out, err := tr.TransformToStorage(ctx, []byte("k8s\x00plain"), value.DefaultContext("/registry/secrets/default/s"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestKeysRoundTripAndGroupProviders(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	k := Keys{
		{Type: Secretbox, Name: "new", Secret: "c2Vj"},
		{Type: AESCBC, Name: "a", Secret: "YQ=="},
		{Type: AESCBC, Name: "b", Secret: "Yg=="},
		{Type: Identity},
	}
	c := k.Configuration()
	if n := len(c.Resources[0].Providers); n != 3 {
		t.Fatalf("%d providers, want 3 (secretbox, aescbc with 2 keys, identity)", n)
	}
	if err := os.MkdirAll(l.CredDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(l, k); err != nil {
		t.Fatal(err)
	}
	got, err := Read(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(k) {
		t.Fatalf("read %v", got)
	}
	for i := range k {
		if got[i] != k[i] {
			t.Errorf("key %d: %+v, want %+v", i, got[i], k[i])
		}
	}
}

func TestReadRefusesAForeignConfig(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	os.MkdirAll(l.CredDir(), 0o700)
	os.WriteFile(l.EncryptionConfig(), []byte(`{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{"resources":["secrets"],"providers":[{"kms":{"name":"x","endpoint":"unix:///k"}}]}]}`), 0o600)
	if _, err := Read(l); err == nil {
		t.Fatal("a KMS config was read as skiff's")
	}
}

func TestNewKeyNamesAreUnique(t *testing.T) {
	k, _ := Initial(AESCBC, now)
	if k[0].Name != "aescbckey" {
		t.Errorf("first key %q, want aescbckey (K3s's name)", k[0].Name)
	}
	a, _ := NewKey(AESCBC, k, now)
	k = append(k, a)
	b, _ := NewKey(AESCBC, k, now)
	if a.Name == b.Name || a.Name == "aescbckey" {
		t.Errorf("names %q %q", a.Name, b.Name)
	}
	if _, err := NewKey("aesgcm", nil, now); err == nil {
		t.Error("aesgcm accepted")
	}
}
