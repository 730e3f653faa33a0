package snapshot

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/datastore"
)

func TestClusterResetSQLite(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	db := datastore.SQLitePath(dataDir)
	if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
		t.Fatal(err)
	}
	newKineDB(t, db, 10).Close()
	snap := filepath.Join(t.TempDir(), "snap")
	if err := saveSQLite(ctx, db, snap); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Server{DataDir: dataDir, ClusterReset: true}

	// Without a snapshot: nothing to do, nothing touched.
	msg, err := ClusterReset(ctx, Reset{Config: cfg, AdvertiseIP: net.IPv4(127, 0, 0, 1)})
	if err != nil || !strings.Contains(msg, "nothing was reset or changed") {
		t.Errorf("ClusterReset without a path = %q, %v", msg, err)
	}
	if m, _ := filepath.Glob(db + ".reset-*"); len(m) != 0 {
		t.Errorf("moved aside without a snapshot: %v", m)
	}

	cfg.ClusterResetRestorePath = snap
	msg, err = ClusterReset(ctx, Reset{Config: cfg, Now: time.Unix(1700000000, 0)})
	if err != nil || !strings.Contains(msg, "restored "+snap+" into "+db) || !strings.Contains(msg, db+".reset-1700000000") ||
		!strings.Contains(msg, "without --cluster-reset and --cluster-reset-restore-path") {
		t.Errorf("ClusterReset = %q, %v", msg, err)
	}

	// A snapshot of the wrong kind: refused, naming the flag and the file.
	cfg.ClusterResetRestorePath = filepath.Join(t.TempDir(), "none")
	if _, err := ClusterReset(ctx, Reset{Config: cfg}); err == nil || !strings.HasPrefix(err.Error(), "cluster-reset-restore-path: snapshot "+cfg.ClusterResetRestorePath) {
		t.Errorf("ClusterReset with a missing file = %v", err)
	}
}

func TestClusterResetRefusesAnExternalDatastore(t *testing.T) {
	cfg := &config.Server{DataDir: t.TempDir(), ClusterReset: true, DatastoreEndpoint: "postgres://skiff:secret@db:5432/skiff"}
	_, err := ClusterReset(context.Background(), Reset{Config: cfg})
	if !errors.Is(err, ErrExternal) || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "use your database's own backups") {
		t.Errorf("ClusterReset on postgres = %v", err)
	}
}

func TestClusterResetEtcdWithoutDataNeedsASnapshot(t *testing.T) {
	cfg := &config.Server{DataDir: t.TempDir(), ClusterReset: true, ClusterInit: true}
	_, err := ClusterReset(context.Background(), Reset{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "holds no etcd data to reset") {
		t.Errorf("ClusterReset = %v", err)
	}
}

// TestClusterResetEtcd restores a snapshot into a data dir laid out as the
// etcd component keeps it (its member name in a file beside member/), then
// resets it again from its own data.
func TestClusterResetEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	etcdDir := filepath.Join(dataDir, "server", "db", "etcd")
	e, endpoint := startEtcd(t, etcdDir, "s1-0a0b0c0d", false)
	if err := os.WriteFile(filepath.Join(etcdDir, "name"), []byte("s1-0a0b0c0d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client(t, endpoint).Put(ctx, "/registry/x", "1"); err != nil {
		t.Fatal(err)
	}
	snap, err := saveEtcdTo(ctx, endpoint, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.Close()

	cfg := &config.Server{DataDir: dataDir, ClusterReset: true, ClusterResetRestorePath: snap}
	msg, err := ClusterReset(ctx, Reset{Config: cfg, AdvertiseIP: net.IPv4(127, 0, 0, 1), Now: time.Unix(1700000000, 0)})
	if err != nil || !strings.Contains(msg, "as member s1-0a0b0c0d") || !strings.Contains(msg, etcdDir+"-old-1700000000") {
		t.Fatalf("ClusterReset = %q, %v", msg, err)
	}
	if b, _ := os.ReadFile(filepath.Join(etcdDir, "name")); string(b) != "s1-0a0b0c0d\n" {
		t.Errorf("member name file after the restore: %q", b)
	}
	members, err := ReadMembers(etcdDir)
	if err != nil || len(members) != 1 || members[0].Name != "s1-0a0b0c0d" || members[0].PeerURLs[0] != "https://127.0.0.1:2380" {
		t.Errorf("members after the restore: %+v, %v", members, err)
	}

	cfg.ClusterResetRestorePath = ""
	msg, err = ClusterReset(ctx, Reset{Config: cfg})
	if err != nil || !strings.Contains(msg, "is now the only member of its cluster") {
		t.Fatalf("ClusterReset without a snapshot = %q, %v", msg, err)
	}
	e2, endpoint2 := startEtcd(t, etcdDir, "s1-0a0b0c0d", true)
	defer e2.Close()
	resp, err := client(t, endpoint2).Get(ctx, "/registry/x")
	if err != nil || resp.Count != 1 {
		t.Errorf("the key after the resets: %v, %v", resp, err)
	}
}

func saveEtcdTo(ctx context.Context, endpoint, dir string) (string, error) {
	f, err := Save(ctx, Store{Kind: KindEtcd, EtcdClient: func(context.Context) (clientv3.Config, error) {
		return clientv3.Config{Endpoints: []string{endpoint}}, nil
	}}, SaveOptions{Dir: dir, Prefix: OnDemandPrefix, Node: "s1"})
	return f.Path(), err
}
