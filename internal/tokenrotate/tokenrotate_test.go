package tokenrotate_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/token"
	"github.com/skiffkube/skiff/internal/tokenrotate"
)

// server is a data dir with CAs and a token, and the rotation route served
// over TLS with its serving certificate, as the supervisor serves it.
func server(t *testing.T) (controlplane.Layout, token.Token, *httptest.Server, []byte) {
	t.Helper()
	l := controlplane.Layout{DataDir: filepath.Join(t.TempDir(), "data")}
	res, err := controlplane.EnsureCertificates(l, controlplane.CertInputs{
		ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16", AdvertiseIP: net.ParseIP("127.0.0.1"),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := controlplane.EnsureToken(l, nil, res.ServerCAPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(&tokenrotate.Handler{Layout: l})
	cert, err := tlsPair(l)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = cert
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return l, tok, srv, res.ServerCAPEM
}

func tlsPair(l controlplane.Layout) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(l.ServingAPIServer().Cert, l.ServingAPIServer().Key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
}

func readToken(t *testing.T, l controlplane.Layout) string {
	t.Helper()
	b, err := os.ReadFile(l.TokenFile())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A rotation with the current token stores the new one in full form and
// remembers the old one as retired; the old token no longer authenticates
// a rotation; the same new token again changes nothing.
func TestRotate(t *testing.T) {
	l, old, srv, caPEM := server(t)
	ctx := context.Background()

	resp, err := tokenrotate.Rotate(ctx, srv.URL, caPEM, old, "brand-new-secret")
	if err != nil {
		t.Fatal(err)
	}
	want := token.Token{CAHash: token.HashCA(caPEM), Username: "server", Secret: "brand-new-secret"}
	if !resp.Changed || resp.Token != want.String() {
		t.Fatalf("answer %+v, want the new full token, changed", resp)
	}
	if got := readToken(t, l); got != want.String()+"\n" {
		t.Fatalf("server/token = %q, want %q", got, want.String())
	}
	for secret, wantRetired := range map[string]bool{old.Secret: true, want.Secret: false, "other": false} {
		if got, err := controlplane.IsRetiredToken(l, secret); err != nil || got != wantRetired {
			t.Errorf("IsRetiredToken(%q) = %v, %v; want %v", secret, got, err, wantRetired)
		}
	}
	info, err := os.Stat(l.RetiredTokensFile())
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("retired tokens file: %v, %v; want mode 0600", info, err)
	}

	// The old token is refused.
	_, err = tokenrotate.Rotate(ctx, srv.URL, caPEM, old, "third-secret")
	var refused *tokenrotate.RefusedError
	if !errors.As(err, &refused) || refused.Status != http.StatusUnauthorized {
		t.Fatalf("rotation with the old token: %v, want 401", err)
	}
	// Again with the new token (a retry): nothing changes.
	resp, err = tokenrotate.Rotate(ctx, srv.URL, caPEM, want, want.String())
	if err != nil || resp.Changed {
		t.Fatalf("same token again: %+v, %v; want unchanged", resp, err)
	}
}

// A new token that does not parse, or that pins another CA, is refused
// naming --new-token, and the stored token stays as it was.
func TestRotateRefusesABadNewToken(t *testing.T) {
	l, old, srv, caPEM := server(t)
	before := readToken(t, l)
	otherCA := "SK10" + strings.Repeat("ab", 32) + "::server:secret"
	for _, bad := range []string{"", "has space", "SK10nothex::server:x", "a:b", otherCA} {
		_, err := tokenrotate.Rotate(context.Background(), srv.URL, caPEM, old, bad)
		var refused *tokenrotate.RefusedError
		if !errors.As(err, &refused) || refused.Status != http.StatusBadRequest || !strings.HasPrefix(refused.Message, "--new-token") {
			t.Errorf("new token %q: %v, want 400 naming --new-token", bad, err)
		}
		if _, err := tokenrotate.ParseNewToken(bad); bad != otherCA && (err == nil || !strings.HasPrefix(err.Error(), "--new-token: ")) {
			t.Errorf("ParseNewToken(%q) = %v, want an error naming --new-token", bad, err)
		}
	}
	if got := readToken(t, l); got != before {
		t.Fatal("a refused rotation changed server/token")
	}
	if _, err := os.Stat(l.RetiredTokensFile()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused rotation wrote %s: %v", l.RetiredTokensFile(), err)
	}
}

// The retired list keeps the last few tokens.
func TestRetiredTokensAreBounded(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	for _, s := range []string{"secret-1", "secret-2", "secret-3", "secret-4", "secret-5", "secret-6"} {
		if err := controlplane.RetireToken(l, s); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(l.RetiredTokensFile())
	if n := bytes.Count(b, []byte("\n")); n != 5 {
		t.Fatalf("%d retired hashes kept, want 5", n)
	}
	if ok, _ := controlplane.IsRetiredToken(l, "secret-1"); ok {
		t.Error("the oldest retired token is still remembered")
	}
	if ok, _ := controlplane.IsRetiredToken(l, "secret-6"); !ok {
		t.Error("the newest retired token is forgotten")
	}
	if bytes.Contains(b, []byte("secret-")) {
		t.Error("the retired tokens file holds a secret in the clear")
	}
}

var kine struct {
	once sync.Once
	k    *datastore.Kine
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kine.k != nil {
		_ = kine.k.Stop()
	}
	if kine.dir != "" {
		_ = os.RemoveAll(kine.dir)
	}
	os.Exit(code)
}

// sharedKine is kine on SQLite in a temp dir, one per test process: kine
// registers its metrics once per process. It stops when the process ends.
func sharedKine(t *testing.T) *datastore.Kine {
	t.Helper()
	kine.once.Do(func() {
		logrus.SetOutput(io.Discard)
		// Short: kine's unix socket path must fit in 108 bytes.
		dir, err := os.MkdirTemp("", "sktr-")
		if err != nil {
			kine.err = err
			return
		}
		kine.dir = dir
		k := datastore.New(datastore.Config{DataDir: dir}, slog.New(slog.DiscardHandler))
		kine.k = k
		if kine.err = k.Init(context.Background()); kine.err != nil {
			return
		}
		kine.err = k.Start(context.Background())
	})
	if kine.err != nil {
		t.Fatal(kine.err)
	}
	return kine.k
}

// Two servers share a datastore (kine, as on an external one): a rotation
// on the first reseals the bootstrap data and leaves the record; the
// second server's follower takes the new token without a restart; a
// server two rotations behind is told so and keeps its token.
func TestRotationReachesTheOtherServers(t *testing.T) {
	k := sharedKine(t)
	ctx := context.Background()
	if c, err := k.Client(); err == nil {
		_, _ = c.Delete(ctx, "/", clientv3.WithPrefix())
		c.Close()
	}

	l1, old, srv, caPEM := server(t)
	// The first server's bootstrap data, sealed with the token, as the
	// bootstrap phase stores it.
	d, err := bootstrap.Collect(l1, bootstrap.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := bootstrap.Seal(d, old.Secret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctx, bootstrap.StorageKey, string(blob)); err != nil {
		t.Fatal(err)
	}
	h1 := srv.Config.Handler.(*tokenrotate.Handler)
	h1.Datastore, h1.Sealed = k.Client, true

	// The second server: the same bootstrap files (CA, token).
	l2 := controlplane.Layout{DataDir: filepath.Join(t.TempDir(), "data2")}
	if err := d.Write(l2); err != nil {
		t.Fatal(err)
	}
	h2 := &tokenrotate.Handler{Layout: l2, Datastore: k.Client}
	f := &tokenrotate.Follower{Handler: h2}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Stop() })

	resp, err := tokenrotate.Rotate(ctx, srv.URL, caPEM, old, "rotated-once")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, bootstrap.StorageKey)
	if err != nil || len(got.Kvs) != 1 {
		t.Fatal(got, err)
	}
	if _, err := bootstrap.Open(got.Kvs[0].Value, "rotated-once"); err != nil {
		t.Fatalf("the bootstrap data does not open with the new token: %v", err)
	}
	// The follower takes it: wait for the file to change.
	deadline := time.Now().Add(time.Minute)
	for readToken(t, l2) != resp.Token+"\n" {
		if time.Now().After(deadline) {
			t.Fatalf("the second server still holds %q a minute after the rotation", readToken(t, l2))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ok, _ := controlplane.IsRetiredToken(l2, old.Secret); !ok {
		t.Error("the second server did not retire the old token")
	}

	// A third server still on the first token, after two rotations: told
	// it is behind, token unchanged.
	l3 := controlplane.Layout{DataDir: filepath.Join(t.TempDir(), "data3")}
	if err := d.Write(l3); err != nil {
		t.Fatal(err)
	}
	next := token.Token{CAHash: token.HashCA(caPEM), Username: "server", Secret: "rotated-once"}
	if _, err := tokenrotate.Rotate(ctx, srv.URL, caPEM, next, "rotated-twice"); err != nil {
		t.Fatal(err)
	}
	rec, err := c.Get(ctx, tokenrotate.RecordKey)
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatal(rec, err)
	}
	h3 := &tokenrotate.Handler{Layout: l3}
	if _, err := h3.Follow(rec.Kvs[0].Value); !errors.Is(err, tokenrotate.ErrBehind) {
		t.Fatalf("a server two rotations behind: %v, want ErrBehind", err)
	}
	if readToken(t, l3) != old.String()+"\n" {
		t.Fatal("a server that is behind changed its token")
	}
	// It fails closed: its (old) token is Replaced, which joins refuse.
	if !h3.Replaced(old.Secret) || h3.Replaced("rotated-twice") || h3.Replaced("") {
		t.Fatal("a server that is behind does not report its old token as replaced (and only it)")
	}
	// Its follower finds it out and says so, once, with what to do.
	var logs syncBuffer
	h3 = &tokenrotate.Handler{Layout: l3, Datastore: k.Client, Sealed: true, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	f3 := &tokenrotate.Follower{Handler: h3}
	if err := f3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f3.Stop() })
	deadline = time.Now().Add(time.Minute)
	for !h3.Replaced(old.Secret) {
		if time.Now().After(deadline) {
			t.Fatal("the follower of a server that is behind did not mark its token replaced")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "it refuses joins with its old token until you run `skiff token rotate"); n != 1 {
		t.Fatalf("%d lines telling what to do, want 1:\n%s", n, logs.String())
	}
	// Given the cluster's token, it takes joins again.
	srv3 := httptest.NewUnstartedServer(h3)
	if srv3.TLS, err = tlsPair(l1); err != nil { // l3 has the same server CA
		t.Fatal(err)
	}
	srv3.StartTLS()
	defer srv3.Close()
	if _, err := tokenrotate.Rotate(ctx, srv3.URL, caPEM, old, "rotated-twice"); err != nil {
		t.Fatal(err)
	}
	if h3.Replaced(old.Secret) || h3.Replaced("rotated-twice") {
		t.Fatal("a server given the cluster's token still refuses joins")
	}
	// The first server, on the current token: nothing to do.
	if changed, err := h1.Follow(rec.Kvs[0].Value); err != nil || changed {
		t.Fatalf("the rotating server following its own record: %v, %v", changed, err)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// failingRecordKV fails the first put of the rotation record, as a lost
// connection (or a crash) right after the reseal committed would.
type failingRecordKV struct {
	clientv3.KV
	failed *bool
}

func (f failingRecordKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if key == tokenrotate.RecordKey && !*f.failed {
		*f.failed = true
		return nil, errors.New("connection lost")
	}
	return f.KV.Put(ctx, key, val, opts...)
}

// A rotation on an external datastore whose record write fails after the
// reseal committed: retried, it leaves the record (though the data is
// resealed already), and another server on the old token follows it.
func TestRetryAfterTheRecordWriteFailed(t *testing.T) {
	k := sharedKine(t)
	ctx := context.Background()
	c, err := k.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// What an earlier test left (kine deletes only in a transaction).
	for _, key := range []string{tokenrotate.RecordKey, bootstrap.StorageKey} {
		if got, err := c.Get(ctx, key); err == nil && len(got.Kvs) == 1 {
			if err := bootstrap.EtcdKV(c).Delete(ctx, key, got.Kvs[0].ModRevision); err != nil {
				t.Fatal(err)
			}
		}
	}
	l1, old, srv, caPEM := server(t)
	d, err := bootstrap.Collect(l1, bootstrap.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := bootstrap.Seal(d, old.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, bootstrap.StorageKey, string(blob)); err != nil {
		t.Fatal(err)
	}
	failed := false
	h1 := srv.Config.Handler.(*tokenrotate.Handler)
	h1.Sealed = true
	h1.Datastore = func() (*clientv3.Client, error) {
		c, err := k.Client()
		if err == nil {
			c.KV = failingRecordKV{KV: c.KV, failed: &failed}
		}
		return c, err
	}

	if _, err := tokenrotate.Rotate(ctx, srv.URL, caPEM, old, "after-a-failure"); err == nil || !strings.Contains(err.Error(), tokenrotate.RecordKey) {
		t.Fatalf("rotation whose record write fails: %v, want an error naming %s", err, tokenrotate.RecordKey)
	}
	got, err := c.Get(ctx, bootstrap.StorageKey)
	if err != nil || len(got.Kvs) != 1 {
		t.Fatal(got, err)
	}
	if _, err := bootstrap.Open(got.Kvs[0].Value, "after-a-failure"); err != nil {
		t.Fatalf("the reseal did not commit before the failure: %v", err)
	}
	if rec, err := c.Get(ctx, tokenrotate.RecordKey); err != nil || len(rec.Kvs) != 0 {
		t.Fatalf("record after the failed write: %v, %v; want none", rec, err)
	}
	if readToken(t, l1) != old.String()+"\n" {
		t.Fatal("the failed rotation changed the server's token")
	}

	// The retry.
	resp, err := tokenrotate.Rotate(ctx, srv.URL, caPEM, old, "after-a-failure")
	if err != nil || !resp.Changed {
		t.Fatalf("retry: %+v, %v", resp, err)
	}
	rec, err := c.Get(ctx, tokenrotate.RecordKey)
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatalf("no rotation record after the retry: %v, %v", rec, err)
	}
	l2 := controlplane.Layout{DataDir: filepath.Join(t.TempDir(), "data2")}
	if err := d.Write(l2); err != nil {
		t.Fatal(err)
	}
	h2 := &tokenrotate.Handler{Layout: l2}
	if changed, err := h2.Follow(rec.Kvs[0].Value); err != nil || !changed {
		t.Fatalf("another server following the record: %v, %v", changed, err)
	}
	if readToken(t, l2) != resp.Token+"\n" {
		t.Fatalf("the other server holds %q, want %q", readToken(t, l2), resp.Token)
	}
}
