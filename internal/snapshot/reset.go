package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore/etcd"
)

// Reset is one `skiff server --cluster-reset`.
type Reset struct {
	// Config is the server's; ClusterResetRestorePath is the snapshot, if any.
	Config *config.Server
	// AdvertiseIP is this server's address: a restored etcd member's peer URL.
	AdvertiseIP net.IP
	// NodeName names a new etcd member (restoring onto a data dir that
	// never ran etcd).
	NodeName string
	// Now stamps what is moved aside; zero means time.Now().
	Now time.Time
}

// ClusterReset makes this server's datastore a one-member cluster, from its
// own data or from a snapshot, and returns what was done and what to do
// next, for the user. The server must be stopped (the caller holds the data
// dir). Everything that can be refused is refused before the first write:
// an external datastore, a file that is not a snapshot of this datastore,
// other etcd members still up.
//
// SQLite has no members: without a snapshot there is nothing to reset and
// nothing is touched (not an error).
func ClusterReset(ctx context.Context, r Reset) (string, error) {
	cfg := r.Config
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	path := cfg.ClusterResetRestorePath
	st, err := StoreFor(cfg)
	if err != nil {
		return "", fmt.Errorf("cluster-reset: %w", err)
	}
	restart := "Start the server again without --cluster-reset"
	if path != "" {
		restart += " and --cluster-reset-restore-path"
	}
	switch st.Kind {
	case KindSQLite:
		if path == "" {
			return "cluster-reset: the SQLite datastore has no other members; nothing was reset or changed.\n" +
				"To restore a snapshot, add --cluster-reset-restore-path FILE. " + restart + ".", nil
		}
		aside, err := ResetSQLite(st.SQLitePath, path, now)
		if err != nil {
			return "", fmt.Errorf("cluster-reset-restore-path: %w", err)
		}
		msg := fmt.Sprintf("cluster-reset: restored %s into %s.\n", path, st.SQLitePath)
		if aside != "" {
			msg += fmt.Sprintf("The previous datastore was kept as %s (with its -wal and -shm files, if any).\n", aside)
		}
		return msg + restart + ".", nil
	case KindEtcd:
		return resetEtcd(ctx, r, st, path, restart, now)
	}
	return "", fmt.Errorf("cluster-reset: a %q datastore cannot be reset", st.Kind)
}

func resetEtcd(ctx context.Context, r Reset, st Store, path, restart string, now time.Time) (string, error) {
	l := controlplane.Layout{DataDir: r.Config.DataDir}
	if path != "" {
		// The file first: a bad one is refused whatever the members do.
		if err := Check(KindEtcd, path); err != nil {
			return "", fmt.Errorf("cluster-reset-restore-path: %w", err)
		}
	}
	if etcd.HasData(l) {
		members, err := ReadMembers(st.EtcdDataDir)
		if err != nil {
			return "", fmt.Errorf("cluster-reset: %w", err)
		}
		cas := ProbeCAs{ServerCAFile: l.EtcdServerCA().Cert, PeerCAFile: l.EtcdPeerCA().Cert}
		if up := MembersUp(ctx, members, cas); len(up) > 0 {
			return "", fmt.Errorf("cluster-reset: other etcd members are up: %s; stop skiff on them first (a reset makes this server a cluster of its own)", strings.Join(up, ", "))
		}
	} else if path == "" {
		return "", fmt.Errorf("cluster-reset: %s holds no etcd data to reset; give a snapshot with --cluster-reset-restore-path", st.EtcdDataDir)
	}
	others := "On every other server: stop skiff, remove " + l.DBDir() + ", and start it again with --server pointing at this one, to join the new cluster."
	if path == "" {
		name := etcd.MemberName(l)
		if name == "" {
			return "", fmt.Errorf("cluster-reset: %s has no member name file; was it made by skiff?", st.EtcdDataDir)
		}
		if err := ForceNewCluster(ctx, st.EtcdDataDir, name); err != nil {
			return "", fmt.Errorf("cluster-reset: %w", err)
		}
		return fmt.Sprintf("cluster-reset: etcd member %s is now the only member of its cluster, with its data.\n%s.\n%s", name, restart, others), nil
	}
	if r.AdvertiseIP == nil {
		return "", errors.New("cluster-reset: no advertise address for the restored member")
	}
	name := etcd.MemberName(l)
	newName := name == ""
	if newName {
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		node := r.NodeName
		if node == "" {
			node = "skiff"
		}
		name = node + "-" + hex.EncodeToString(b)
	}
	aside, err := RestoreEtcd(EtcdRestore{Snapshot: path, DataDir: st.EtcdDataDir, Name: name, PeerURL: etcd.PeerURL(r.AdvertiseIP), Now: now})
	if err != nil {
		return "", fmt.Errorf("cluster-reset-restore-path: %w", err)
	}
	if newName {
		// The name etcd's component reads at its next start.
		if err := os.WriteFile(filepath.Join(st.EtcdDataDir, "name"), []byte(name+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("cluster-reset: storing the member name: %w", err)
		}
	}
	msg := fmt.Sprintf("cluster-reset: restored %s into %s as member %s, the only member of a new etcd cluster.\n", path, st.EtcdDataDir, name)
	if aside != "" {
		msg += fmt.Sprintf("The previous etcd data was kept as %s.\n", aside)
	}
	return msg + restart + ".\n" + others, nil
}
