package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/control/etcdsnapshot"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/snapshot"
)

// clusterReset is `skiff server --cluster-reset`: with the data dir locked,
// it makes the datastore a one-member cluster (from its own data or the
// --cluster-reset-restore-path snapshot), prints what it did and the next
// steps, and returns without starting the server.
func clusterReset(ctx context.Context, cfg *config.Server, l controlplane.Layout, advertiseIP net.IP, log *slog.Logger) error {
	if err := checkDataDir(l); err != nil {
		return err
	}
	release, err := lockDataDir(l)
	if err != nil {
		return err
	}
	defer release()
	node, _ := cfg.Node.ResolveNodeName(os.Hostname)
	msg, err := snapshot.ClusterReset(ctx, snapshot.Reset{Config: cfg, AdvertiseIP: advertiseIP, NodeName: serverName(node)})
	if err != nil {
		return err
	}
	log.Info("cluster reset done; restart without --cluster-reset", "component", "cluster-reset")
	fmt.Fprintln(os.Stdout, msg)
	return nil
}

// snapshotComponent is the scheduled-snapshot and ETCDSnapshotFile
// component, for a datastore skiff snapshots (SQLite, embedded etcd); nil
// for an external one.
func snapshotComponent(cfg *config.Server, l controlplane.Layout, node string, log *slog.Logger) component.Component {
	st, err := snapshot.StoreFor(cfg)
	if err != nil {
		// An external datastore: the database's own backups, not skiff's.
		return nil
	}
	schedule := cfg.EtcdSnapshotScheduleCron
	if cfg.EtcdDisableSnapshots {
		schedule = ""
	}
	return etcdsnapshot.New(etcdsnapshot.Config{
		Kubeconfig: l.AdminKubeconfig(),
		Store:      st,
		Dir:        cfg.SnapshotDir(),
		Node:       node,
		Schedule:   schedule,
		Retention:  cfg.EtcdSnapshotRetention,
		Compress:   cfg.EtcdSnapshotCompress,
	}, log)
}
