package bootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/token"
)

var settings = bootstrap.Settings{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}

var shared struct {
	once sync.Once
	kv   bootstrap.KV
	err  error
	// stop ends kine and removes its dir, after every test.
	stop func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.stop != nil {
		shared.stop()
	}
	os.Exit(code)
}

// kineKV returns the store's KV over the etcd API of kine on SQLite in a
// temp dir, as the server runs it, emptied of bootstrap data. One kine
// serves every test: kine registers its metrics once per process.
func kineKV(t *testing.T) bootstrap.KV {
	t.Helper()
	shared.once.Do(func() {
		logrus.SetOutput(io.Discard)
		// Short: kine's unix socket path must fit in 108 bytes.
		dir, err := os.MkdirTemp("", "skbs-")
		if err != nil {
			shared.err = err
			return
		}
		k := datastore.New(datastore.Config{DataDir: dir}, slog.New(slog.DiscardHandler))
		shared.stop = func() { _ = k.Stop(); _ = os.RemoveAll(dir) }
		ctx := context.Background()
		if shared.err = k.Init(ctx); shared.err != nil {
			return
		}
		if shared.err = k.Start(ctx); shared.err != nil {
			return
		}
		c, err := k.Client()
		shared.kv, shared.err = bootstrap.EtcdKV(c), err
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	ctx := context.Background()
	entries, err := shared.kv.List(ctx, bootstrap.StoragePrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := shared.kv.Delete(ctx, e.Key, e.ModRevision); err != nil {
			t.Fatal(err)
		}
	}
	return shared.kv
}

// newSync is a server's Sync on a fresh data dir, preparing its data as
// the server does (CAs and token made in the staging dir).
func newSync(t *testing.T, secret string) bootstrap.Sync {
	t.Helper()
	l := controlplane.Layout{DataDir: filepath.Join(t.TempDir(), "data")}
	var given *token.Token
	if secret != "" {
		given = &token.Token{Secret: secret}
	}
	return bootstrap.Sync{
		Layout:   l,
		Settings: settings,
		Secret:   secret,
		Prepare: func(staging controlplane.Layout, secret string) (*bootstrap.Data, string, error) {
			given := given
			if given == nil && secret != "" {
				given = &token.Token{Secret: secret}
			}
			res, err := controlplane.EnsureCertificates(staging, controlplane.CertInputs{
				ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16", AdvertiseIP: net.ParseIP("192.0.2.1"),
			}, time.Now())
			if err != nil {
				return nil, "", err
			}
			tok, err := controlplane.EnsureToken(staging, given, res.ServerCAPEM)
			if err != nil {
				return nil, "", err
			}
			d, err := bootstrap.Collect(staging, settings)
			return d, tok.Secret, err
		},
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// files lists what a data dir holds (relative paths), for "wrote nothing".
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// The first server stores its data; a second one with the token gets the
// same CAs, keys and token; a restart of either changes nothing; a third
// with another token, and one without a token, are refused and write
// nothing; one with another --service-cidr is refused naming both values;
// one whose data dir holds other CAs is refused naming them.
func TestSyncOnKine(t *testing.T) {
	kv := kineKV(t)
	ctx := context.Background()

	first := newSync(t, "")
	res, err := first.Run(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.Secret == "" {
		t.Fatalf("first server: %+v, want Created with a generated secret", res)
	}
	entries, err := kv.List(ctx, bootstrap.StoragePrefix)
	if err != nil || len(entries) != 1 || entries[0].Key != bootstrap.StorageKey {
		t.Fatalf("datastore holds %v (%v), want one entry at %s", entries, err, bootstrap.StorageKey)
	}
	if bytes.Contains(entries[0].Value, read(t, first.Layout.ServerCA().Key)) {
		t.Fatal("the datastore holds the server CA key in the clear")
	}
	staged, _ := filepath.Glob(filepath.Join(first.Layout.ServerDir(), "bootstrap-staging-*"))
	if len(staged) != 0 {
		t.Fatalf("staging dirs left: %v", staged)
	}

	second := newSync(t, res.Secret)
	res2, err := second.Run(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Created {
		t.Fatal("second server created the bootstrap data again")
	}
	for _, p := range []func(controlplane.Layout) string{
		func(l controlplane.Layout) string { return l.ServerCA().Cert },
		func(l controlplane.Layout) string { return l.ServerCA().Key },
		func(l controlplane.Layout) string { return l.ClientCA().Key },
		func(l controlplane.Layout) string { return l.RequestHeaderCA().Key },
		func(l controlplane.Layout) string { return l.ServiceAccountKey() },
		func(l controlplane.Layout) string { return l.TokenFile() },
	} {
		if a, b := read(t, p(first.Layout)), read(t, p(second.Layout)); !bytes.Equal(a, b) {
			t.Errorf("%s differs between the servers", filepath.Base(p(first.Layout)))
		}
	}
	// Restarts: the data dirs hold the cluster's files already.
	for _, s := range []bootstrap.Sync{first, second} {
		s.Secret = res.Secret
		if r, err := s.Run(ctx, kv); err != nil || r.Created {
			t.Fatalf("restart: %+v, %v", r, err)
		}
	}

	wrong := newSync(t, "another-token")
	if _, err := wrong.Run(ctx, kv); !errors.Is(err, bootstrap.ErrOtherCluster) {
		t.Fatalf("another token: %v, want ErrOtherCluster", err)
	}
	noToken := newSync(t, "")
	if _, err := noToken.Run(ctx, kv); !errors.Is(err, bootstrap.ErrNoToken) {
		t.Fatalf("no token: %v, want ErrNoToken", err)
	}
	for _, s := range []bootstrap.Sync{wrong, noToken} {
		if f := files(t, s.Layout.DataDir); len(f) != 0 {
			t.Fatalf("a refused server wrote %v", f)
		}
	}

	mismatch := newSync(t, res.Secret)
	mismatch.Settings.ServiceCIDR = "10.99.0.0/16"
	_, err = mismatch.Run(ctx, kv)
	if err == nil || !strings.Contains(err.Error(), `--service-cidr: this server has "10.99.0.0/16", the cluster has "10.43.0.0/16"`) {
		t.Fatalf("other service CIDR: %v", err)
	}
	if f := files(t, mismatch.Layout.DataDir); len(f) != 0 {
		t.Fatalf("a refused server wrote %v", f)
	}

	// A data dir with CAs of its own (a server that ran alone before).
	own := newSync(t, res.Secret)
	alone, _, err := newSync(t, res.Secret).Prepare(own.Layout, res.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := alone.Write(own.Layout); err != nil {
		t.Fatal(err)
	}
	_, err = own.Run(ctx, kv)
	if err == nil || !strings.Contains(err.Error(), "server/tls/server-ca.crt") {
		t.Fatalf("data dir with other CAs: %v, want a refusal naming server/tls/server-ca.crt", err)
	}
}

// barrierKV holds every caller's first List until n callers have made one,
// so n first servers all see an empty datastore and race to create.
type barrierKV struct {
	bootstrap.KV
	mu      sync.Mutex
	waiting int
	n       int
	release chan struct{}
	seen    map[*bootstrap.Sync]bool
}

func (b *barrierKV) List(ctx context.Context, prefix string) ([]bootstrap.Entry, error) {
	out, err := b.KV.List(ctx, prefix)
	b.mu.Lock()
	if b.waiting < b.n {
		b.waiting++
		if b.waiting == b.n {
			close(b.release)
		}
		b.mu.Unlock()
		<-b.release
		return out, err
	}
	b.mu.Unlock()
	return out, err
}

// Two first servers with the same token race: one creates, the other adopts
// its data, so both end with one set of CAs.
func TestSyncRaceSameToken(t *testing.T) {
	kv := &barrierKV{KV: kineKV(t), n: 2, release: make(chan struct{})}
	servers := []bootstrap.Sync{newSync(t, "shared"), newSync(t, "shared")}
	results := make([]bootstrap.Result, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() { results[i], errs[i] = servers[i].Run(context.Background(), kv) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
	}
	if results[0].Created == results[1].Created {
		t.Fatalf("created: %v and %v, want exactly one", results[0].Created, results[1].Created)
	}
	for _, f := range []func(controlplane.Layout) string{
		func(l controlplane.Layout) string { return l.ServerCA().Key },
		func(l controlplane.Layout) string { return l.ClientCA().Key },
		func(l controlplane.Layout) string { return l.ServiceAccountKey() },
	} {
		if !bytes.Equal(read(t, f(servers[0].Layout)), read(t, f(servers[1].Layout))) {
			t.Errorf("%s differs after the race", filepath.Base(f(servers[0].Layout)))
		}
	}
}

// Two first servers with different tokens race: the loser cannot open the
// winner's data and is refused, writing nothing, so the datastore keeps one
// cluster.
func TestSyncRaceOtherToken(t *testing.T) {
	inner := kineKV(t)
	kv := &barrierKV{KV: inner, n: 2, release: make(chan struct{})}
	servers := []bootstrap.Sync{newSync(t, "token-a"), newSync(t, "token-b")}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() { _, errs[i] = servers[i].Run(context.Background(), kv) })
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("errors %v and %v: want exactly one refusal", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, bootstrap.ErrOtherCluster) {
			t.Fatalf("refusal %v, want ErrOtherCluster", err)
		}
	}
	for i, err := range errs {
		if err != nil {
			if f := files(t, servers[i].Layout.DataDir); len(f) != 0 {
				t.Fatalf("the refused server wrote %v", f)
			}
		}
	}
	entries, err := inner.List(context.Background(), bootstrap.StoragePrefix)
	if err != nil || len(entries) != 1 {
		t.Fatalf("datastore holds %d entries (%v), want 1", len(entries), err)
	}
}

// A datastore holding bootstrap data under another key of the prefix (the
// old per-token key, say) holds a cluster: a server is refused, not made a
// first server, and writes nothing.
func TestSyncOtherKeyIsACluster(t *testing.T) {
	kv := kineKV(t)
	ctx := context.Background()
	if _, err := kv.Create(ctx, bootstrap.StoragePrefix+"0123456789ab", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	s := newSync(t, "some-token")
	if _, err := s.Run(ctx, kv); !errors.Is(err, bootstrap.ErrOtherCluster) {
		t.Fatalf("old-format key: %v, want ErrOtherCluster", err)
	}
	if f := files(t, s.Layout.DataDir); len(f) != 0 {
		t.Fatalf("a refused server wrote %v", f)
	}
	if entries, _ := kv.List(ctx, bootstrap.StoragePrefix); len(entries) != 1 {
		t.Fatalf("datastore holds %d entries, want the one it had", len(entries))
	}
}

// lostReplyKV creates, then reports an error, once: the reply of a create
// that happened was lost.
type lostReplyKV struct {
	bootstrap.KV
	lost bool
}

func (l *lostReplyKV) Create(ctx context.Context, key string, value []byte) (bool, error) {
	created, err := l.KV.Create(ctx, key, value)
	if err == nil && !l.lost {
		l.lost = true
		return false, errors.New("connection reset")
	}
	return created, err
}

// A first server without a token whose create's reply is lost gets a
// datastore error with its generated secret; retried with it, it takes the
// data it stored and keeps that token, instead of being refused.
func TestSyncRetryAfterLostReply(t *testing.T) {
	kv := &lostReplyKV{KV: kineKV(t)}
	s := newSync(t, "")
	res, err := s.Run(context.Background(), kv)
	var dsErr *bootstrap.DatastoreError
	if !errors.As(err, &dsErr) || res.Secret == "" {
		t.Fatalf("lost reply: %+v, %v; want a DatastoreError with the secret", res, err)
	}
	if f := files(t, s.Layout.DataDir); len(f) != 0 {
		t.Fatalf("wrote %v before the datastore answered", f)
	}
	s.Secret = res.Secret
	res2, err := s.Run(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Secret != res.Secret {
		t.Fatalf("secret changed across the retry")
	}
	tok, err := token.Parse(string(read(t, s.Layout.TokenFile())))
	if err != nil || tok.Secret != res.Secret {
		t.Fatalf("data dir token %+v (%v), want the generated secret", tok, err)
	}
}
