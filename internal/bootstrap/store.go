package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/controlplane"
)

// ErrOtherCluster is Sync's error when the datastore holds the bootstrap
// data of a cluster whose token is not this server's.
var ErrOtherCluster = errors.New("the datastore holds a cluster with another token: give this server that cluster's token (--token or --token-file; the new one after `skiff token rotate`), or use another datastore")

// ErrNoToken is Sync's error for a server without a token on a datastore
// that holds a cluster already.
var ErrNoToken = errors.New("the datastore holds a cluster already: a server joining it needs the cluster's token (--token or --token-file)")

// Entry is one key of the datastore with its value, the revision that
// created it and the one that last changed it.
type Entry struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
}

// KV is the part of a datastore's etcd API that Sync needs: kine's (on
// PostgreSQL or MySQL) or an external etcd's. Both speak it through
// clientv3; see EtcdKV.
type KV interface {
	// List returns every key under prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Entry, error)
	// Create stores value at key unless the key exists, in one
	// transaction; created is false when it existed.
	Create(ctx context.Context, key string, value []byte) (created bool, err error)
	// Delete removes key if it was last changed at revision rev.
	Delete(ctx context.Context, key string, rev int64) error
	// Replace stores value at key if the key was last changed at
	// revision rev, in one transaction; replaced is false when it was
	// changed since (or is gone).
	Replace(ctx context.Context, key string, value []byte, rev int64) (replaced bool, err error)
}

// EtcdKV is KV over an etcd client. Its transactions are the shapes kine
// implements (create: mod revision 0 then put; replace: mod revision
// equal then put, else get; delete: mod revision equal then delete).
func EtcdKV(c clientv3.KV) KV { return etcdKV{c} }

type etcdKV struct{ c clientv3.KV }

func (e etcdKV) List(ctx context.Context, prefix string) ([]Entry, error) {
	resp, err := e.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, Entry{Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (e etcdKV) Create(ctx context.Context, key string, value []byte) (bool, error) {
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (e etcdKV) Replace(ctx context.Context, key string, value []byte, rev int64) (bool, error) {
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(value))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (e etcdKV) Delete(ctx context.Context, key string, rev int64) error {
	_, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key)).
		Commit()
	return err
}

// Sync settles a server's bootstrap data with an external datastore that
// several servers share, before the server writes any certificate:
//
//   - nothing under StoragePrefix: this is the first server. Prepare makes
//     its bootstrap data (from its data dir, creating what is missing, in a
//     staging dir in the server dir), which is sealed with the token and
//     created at StorageKey in one transaction (if absent). A server that
//     loses that race opens the winner's data with its own token: with the
//     same token it adopts it; with another, Open fails and it is refused
//     with ErrOtherCluster, writing nothing. Then the data is written into
//     the data dir.
//   - data at StorageKey: it is opened with the token, checked (Accept, the
//     settings, files of the data dir it would replace) and written into
//     the data dir.
//   - data this token cannot open, or only keys other than StorageKey
//     under StoragePrefix: refused with ErrOtherCluster, writing nothing.
//     No Secret: refused with ErrNoToken.
type Sync struct {
	Layout controlplane.Layout
	// Settings are this server's cluster-wide settings.
	Settings Settings
	// Secret is the token's secret: --token's, else the data dir's stored
	// token's; "" when there is neither (a first server then gets the one
	// Prepare generates).
	Secret string
	// Prepare makes a first server's bootstrap data in staging (the
	// layout of an empty directory, removed afterwards) with the token
	// secret (one it generates when secret is "") and returns both.
	// Nothing may be written into Layout's data dir.
	Prepare func(staging controlplane.Layout, secret string) (*Data, string, error)
	// Accept, when set, may refuse the cluster's data before it is
	// written (a --token that pins another CA, say).
	Accept func(*Data) error
}

// Result says what Sync did.
type Result struct {
	// Created is true when this server stored the cluster's bootstrap data
	// (it started the cluster); false when it adopted the stored data.
	Created bool
	// Secret is the token secret the data is sealed with.
	Secret string
}

// Run does the Sync against kv. Errors name what failed; a failed exchange
// with the datastore is a *DatastoreError, which the caller may retry with
// Secret set to the returned Result's (a first server's generated token,
// whose data may have been stored); a refusal writes nothing.
func (s Sync) Run(ctx context.Context, kv KV) (Result, error) {
	entries, err := kv.List(ctx, StoragePrefix)
	if err != nil {
		return Result{}, &DatastoreError{Op: "listing " + StoragePrefix, Err: err}
	}
	if len(entries) > 0 {
		if s.Secret == "" {
			return Result{}, ErrNoToken
		}
		e, ok := find(entries, StorageKey)
		if !ok {
			// Bootstrap data of another format (or another tool): a
			// cluster, not "no cluster yet".
			return Result{}, fmt.Errorf("%w (it holds %s, not %s)", ErrOtherCluster, entries[0].Key, StorageKey)
		}
		return Result{Secret: s.Secret}, s.adopt(e.Value)
	}

	// Staged next to where the files go (the server dir, mode 0700), and
	// removed whatever happens.
	if err := os.MkdirAll(s.Layout.ServerDir(), 0o700); err != nil {
		return Result{}, fmt.Errorf("bootstrap: %w", err)
	}
	staging, err := os.MkdirTemp(s.Layout.ServerDir(), "bootstrap-staging-")
	if err != nil {
		return Result{}, fmt.Errorf("bootstrap: staging dir: %w", err)
	}
	defer os.RemoveAll(staging)
	d, secret, err := s.Prepare(controlplane.Layout{DataDir: staging}, s.Secret)
	if err != nil {
		return Result{}, err
	}
	if s.Secret != "" && secret != s.Secret {
		return Result{}, errors.New("bootstrap: prepared data has another token than the one given")
	}
	// Staged files are named relative to the staging dir, as Collect
	// names them; the same relative names in the data dir.
	if err := d.Check(s.Layout); err != nil {
		return Result{}, fmt.Errorf("bootstrap: prepared data: %w", err)
	}
	blob, err := Seal(d, secret)
	if err != nil {
		return Result{}, err
	}
	key := StorageKey
	// From here on a datastore error comes with the secret: the create may
	// have happened, and a retry must look for it with this token.
	created, err := kv.Create(ctx, key, blob)
	if err != nil {
		return Result{Secret: secret}, &DatastoreError{Op: "storing " + key, Err: err}
	}
	if !created {
		// Another first server was first: take its data if this token
		// opens it (the same token), else be refused (another token).
		entries, err = kv.List(ctx, StoragePrefix)
		if err != nil {
			return Result{Secret: secret}, &DatastoreError{Op: "listing " + StoragePrefix, Err: err}
		}
		winner, ok := find(entries, key)
		if !ok {
			return Result{Secret: secret}, &DatastoreError{Op: "reading " + key, Err: errors.New("the key was there at create time and is missing now")}
		}
		s.Secret = secret
		return Result{Secret: secret}, s.adopt(winner.Value)
	}
	if err := s.check(d); err != nil {
		return Result{}, err
	}
	return Result{Created: true, Secret: secret}, d.Write(s.Layout)
}

// adopt opens the cluster's data and writes it into the data dir.
func (s Sync) adopt(blob []byte) error {
	secret := s.Secret
	d, err := Open(blob, secret)
	if errors.Is(err, ErrWrongToken) {
		return ErrOtherCluster
	}
	if err != nil {
		return err
	}
	if err := d.Check(s.Layout); err != nil {
		return fmt.Errorf("the datastore's bootstrap data is not whole: %w", err)
	}
	if err := s.check(d); err != nil {
		return err
	}
	return d.Write(s.Layout)
}

// check refuses data this server must not take: other settings, files of
// the data dir it would replace, or what Accept refuses.
func (s Sync) check(d *Data) error {
	if err := s.Settings.Mismatch(d.Settings); err != nil {
		return fmt.Errorf("this server's settings differ from the cluster's in the datastore: %w", err)
	}
	conflicts, err := d.Conflicts(s.Layout)
	if err != nil {
		return err
	}
	// The data opened with this server's token, so its token file is the
	// cluster's current one: after `skiff token rotate` on another server,
	// it replaces the rotated-away token this data dir still holds.
	conflicts = slices.DeleteFunc(conflicts, func(rel string) bool { return rel == relTo(s.Layout, s.Layout.TokenFile()) })
	if len(conflicts) > 0 {
		return fmt.Errorf("data dir %s already holds other bootstrap files than the cluster's in the datastore (%s): it belongs to another cluster; use another --data-dir or remove them",
			s.Layout.DataDir, strings.Join(conflicts, ", "))
	}
	if s.Accept != nil {
		return s.Accept(d)
	}
	return nil
}

func find(entries []Entry, key string) (Entry, bool) {
	for _, e := range entries {
		if e.Key == key {
			return e, true
		}
	}
	return Entry{}, false
}

// DatastoreError is a failure to talk to the datastore, which a caller may
// retry; other errors from Sync are refusals.
type DatastoreError struct {
	Op  string
	Err error
}

func (e *DatastoreError) Error() string { return "datastore: " + e.Op + ": " + e.Err.Error() }
func (e *DatastoreError) Unwrap() error { return e.Err }
