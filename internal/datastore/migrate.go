package datastore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// MigratedSuffix is appended to the SQLite files once their keys are in
// etcd: kept for a way back, never read again.
const MigratedSuffix = ".migrated-to-etcd"

// HasSQLiteData reports whether dataDir holds a SQLite datastore that has
// not been migrated.
func HasSQLiteData(dataDir string) bool {
	_, err := os.Stat(SQLitePath(dataDir))
	return err == nil
}

// MigrateSQLite copies every Kubernetes key (/registry/...) of dataDir's
// SQLite datastore, read through kine as K3s does, into the etcd that dst
// reaches, then renames the SQLite files with MigratedSuffix. Keys are put,
// so an interrupted migration is run again whole at the next start (the
// files are renamed only after the last put). It returns the number of keys.
func MigrateSQLite(ctx context.Context, dataDir string, dst *clientv3.Client, log *slog.Logger) (int, error) {
	k := New(Config{DataDir: dataDir}, log)
	if err := k.Init(ctx); err != nil {
		return 0, fmt.Errorf("migrating SQLite: %w", err)
	}
	if err := k.Start(ctx); err != nil {
		return 0, fmt.Errorf("migrating SQLite: %w", err)
	}
	defer k.Stop()
	src, err := clientv3.New(clientv3.Config{Endpoints: k.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		return 0, fmt.Errorf("migrating SQLite: reaching kine: %w", err)
	}
	defer src.Close()
	const prefix = "/registry/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	n, from := 0, prefix
	for {
		resp, err := src.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(500))
		if err != nil {
			return n, fmt.Errorf("migrating SQLite: reading keys from %s: %w", from, err)
		}
		for _, kv := range resp.Kvs {
			if _, err := dst.Put(ctx, string(kv.Key), string(kv.Value)); err != nil {
				return n, fmt.Errorf("migrating SQLite: writing %s into etcd: %w", kv.Key, err)
			}
			n++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if err := k.Stop(); err != nil {
		return n, fmt.Errorf("migrating SQLite: stopping kine: %w", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		p := SQLitePath(dataDir) + suffix
		if err := os.Rename(p, p+MigratedSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("migrating SQLite: %w", err)
		}
	}
	return n, nil
}
