package bootstrap_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// Rotation reseals the cluster's data: afterwards it opens with the new
// token only and holds the new token file; a second server that restarts
// with the new token takes it (its stale token file is replaced, its CAs
// stay); one with the old token is refused; a second rotation finds the
// work done; a rotation with an unknown token changes nothing.
func TestResealOnKine(t *testing.T) {
	kv := kineKV(t)
	ctx := context.Background()

	first := newSync(t, "")
	res, err := first.Run(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	old := res.Secret
	second := newSync(t, old)
	if _, err := second.Run(ctx, kv); err != nil {
		t.Fatal(err)
	}
	caPEM := read(t, first.Layout.ServerCA().Cert)
	newTok := token.Token{CAHash: token.HashCA(caPEM), Username: "server", Secret: "the-new-secret"}

	// An unknown current token: refused, the stored data unchanged.
	before := stored(t, kv)
	if _, err := bootstrap.Reseal(ctx, kv, first.Layout, "not-the-token", newTok); !errors.Is(err, bootstrap.ErrOtherCluster) {
		t.Fatalf("reseal with an unknown token: %v, want ErrOtherCluster", err)
	}
	if after := stored(t, kv); string(after.Value) != string(before.Value) {
		t.Fatal("a refused reseal changed the stored data")
	}

	r, err := bootstrap.Reseal(ctx, kv, first.Layout, old, newTok)
	if err != nil || r.AlreadyRotated {
		t.Fatalf("reseal: %+v, %v", r, err)
	}
	blob := stored(t, kv).Value
	if _, err := bootstrap.Open(blob, old); !errors.Is(err, bootstrap.ErrWrongToken) {
		t.Fatalf("the resealed data opens with the old token: %v", err)
	}
	d, err := bootstrap.Open(blob, newTok.Secret)
	if err != nil {
		t.Fatalf("the resealed data does not open with the new token: %v", err)
	}
	if got := string(d.Files[rel(t, first.Layout, first.Layout.TokenFile())]); got != newTok.String()+"\n" {
		t.Fatalf("resealed token file = %q, want the new full token", got)
	}
	if string(d.Files[rel(t, first.Layout, first.Layout.ServerCA().Cert)]) != string(caPEM) {
		t.Fatal("the reseal changed the server CA")
	}

	// Again (another server of the cluster, or a retry): nothing to do.
	r, err = bootstrap.Reseal(ctx, kv, second.Layout, old, newTok)
	if err != nil || !r.AlreadyRotated {
		t.Fatalf("second reseal: %+v, %v, want AlreadyRotated", r, err)
	}

	// The second server restarts with the old token: refused.
	second.Secret = old
	if _, err := second.Run(ctx, kv); !errors.Is(err, bootstrap.ErrOtherCluster) {
		t.Fatalf("restart with the old token: %v, want ErrOtherCluster", err)
	}
	// With the new one: its token file becomes the new one, nothing else.
	keyBefore := read(t, second.Layout.ServerCA().Key)
	second.Secret = newTok.Secret
	if _, err := second.Run(ctx, kv); err != nil {
		t.Fatalf("restart with the new token: %v", err)
	}
	if got := string(read(t, second.Layout.TokenFile())); got != newTok.String()+"\n" {
		t.Fatalf("second server's token file = %q after the restart, want the new token", got)
	}
	if string(read(t, second.Layout.ServerCA().Key)) != string(keyBefore) {
		t.Fatal("the restart replaced the server CA key")
	}
}

// A write between the read and the replace is not lost: the reseal reads
// again and reseals what is stored then.
func TestResealRetriesAConcurrentWrite(t *testing.T) {
	kv := kineKV(t)
	ctx := context.Background()
	first := newSync(t, "")
	res, err := first.Run(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	newTok := token.Token{Secret: "rotated"}
	racing := &writeOnceKV{KV: kv, t: t, secret: res.Secret, marker: rel(t, first.Layout, first.Layout.EncryptionConfig())}
	if _, err := bootstrap.Reseal(ctx, racing, first.Layout, res.Secret, newTok); err != nil {
		t.Fatal(err)
	}
	if racing.replaces < 2 {
		t.Fatalf("%d replace attempts, want a retry after the concurrent write", racing.replaces)
	}
	d, err := bootstrap.Open(stored(t, kv).Value, newTok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Files[racing.marker]) != "written concurrently" {
		t.Fatal("the concurrent write was lost")
	}
}

// writeOnceKV stores, once, just before the first Replace, the data with
// one file added, as another writer would.
type writeOnceKV struct {
	bootstrap.KV
	t        *testing.T
	secret   string
	marker   string
	replaces int
}

func (w *writeOnceKV) Replace(ctx context.Context, key string, value []byte, rev int64) (bool, error) {
	w.replaces++
	if w.replaces == 1 {
		e := stored(w.t, w.KV)
		d, err := bootstrap.Open(e.Value, w.secret)
		if err != nil {
			return false, err
		}
		d.Files[w.marker] = []byte("written concurrently")
		blob, err := bootstrap.Seal(d, w.secret)
		if err != nil {
			return false, err
		}
		if ok, err := w.KV.Replace(ctx, key, blob, e.ModRevision); err != nil || !ok {
			return false, errors.Join(err, errors.New("concurrent write failed"))
		}
	}
	return w.KV.Replace(ctx, key, value, rev)
}

func stored(t *testing.T, kv bootstrap.KV) bootstrap.Entry {
	t.Helper()
	entries, err := kv.List(context.Background(), bootstrap.StoragePrefix)
	if err != nil || len(entries) != 1 {
		t.Fatalf("datastore holds %d entries (%v), want 1", len(entries), err)
	}
	return entries[0]
}

// rel is path relative to l's data dir, as bootstrap data names files.
func rel(t *testing.T, l controlplane.Layout, path string) string {
	t.Helper()
	r, err := filepath.Rel(l.DataDir, path)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.ToSlash(r)
}
