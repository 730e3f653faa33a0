package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/datastore/etcd"
)

// ErrExternal is wrapped by StoreFor's error for an external datastore,
// which skiff does not snapshot.
var ErrExternal = errors.New("use your database's own backups")

// StoreFor says which datastore the server configured by cfg keeps
// snapshots of: embedded etcd (--cluster-init, --server, or a data dir that
// holds etcd data) or SQLite (the default, or a sqlite:// endpoint). An
// external datastore is an error wrapping ErrExternal, its URL redacted.
func StoreFor(cfg *config.Server) (Store, error) {
	kind, err := config.DatastoreKind(cfg.DatastoreEndpoint)
	if err != nil {
		return Store{}, err
	}
	l := controlplane.Layout{DataDir: cfg.DataDir}
	if kind != "sqlite" {
		return Store{}, fmt.Errorf("the datastore is external (%s): skiff snapshots only SQLite and embedded etcd; %w",
			config.RedactURL(cfg.DatastoreEndpoint), ErrExternal)
	}
	if cfg.EmbeddedEtcd() || etcd.HasData(l) {
		return Store{
			Kind:        KindEtcd,
			EtcdDataDir: l.EtcdDataDir(),
			EtcdClient: func(context.Context) (clientv3.Config, error) {
				return etcd.ClientConfig(l)
			},
		}, nil
	}
	return Store{Kind: KindSQLite, SQLitePath: sqlitePath(cfg)}, nil
}

// sqlitePath is the file of the SQLite datastore: the data dir's, or the
// path of a sqlite:// endpoint.
func sqlitePath(cfg *config.Server) string {
	ep := cfg.DatastoreEndpoint
	if p, ok := strings.CutPrefix(ep, "sqlite://"); ok {
		p, _, _ = strings.Cut(p, "?")
		if p != "" {
			return p
		}
	}
	return datastore.SQLitePath(cfg.DataDir)
}
