package snapshot

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startEtcd runs a one-member etcd on loopback ports the kernel picks.
func startEtcd(t *testing.T, dir, name string, force bool) (*embed.Etcd, string) {
	t.Helper()
	c, err := loopbackURL()
	if err != nil {
		t.Fatal(err)
	}
	p, err := loopbackURL()
	if err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = name
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{c}, []url.URL{c}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{p}, []url.URL{p}
	cfg.InitialCluster = name + "=" + p.String()
	cfg.ForceNewCluster = force
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatal(err)
	}
	return e, c.String()
}

func client(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestEtcdSnapshotRoundTrip saves a snapshot of a running etcd, refuses a
// truncated one, restores it as a one-member cluster and reads the key
// back, written before the snapshot, not the one written after.
func TestEtcdSnapshotRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	ctx := context.Background()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "db", "etcd")
	e, endpoint := startEtcd(t, dataDir, "s1", false)
	cli := client(t, endpoint)
	if _, err := cli.Put(ctx, "/registry/namespaces/kept", "v1"); err != nil {
		t.Fatal(err)
	}
	st := Store{Kind: KindEtcd, EtcdDataDir: dataDir, EtcdClient: func(context.Context) (clientv3.Config, error) {
		return clientv3.Config{Endpoints: []string{endpoint}}, nil
	}}
	snapDir := filepath.Join(dir, "snapshots")
	at := time.Unix(1700000000, 0)
	f, err := Save(ctx, st, SaveOptions{Dir: snapDir, Prefix: ScheduledPrefix, Node: "s1", Now: at, Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "etcd-snapshot-s1-1700000000.zip" {
		t.Errorf("saved %s", f.Name)
	}
	plain, err := Save(ctx, st, SaveOptions{Dir: snapDir, Prefix: OnDemandPrefix, Node: "s1", Now: at})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/namespaces/later", "v2"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.Path(), plain.Path()} {
		if err := Check(KindEtcd, p); err != nil {
			t.Errorf("Check(%s): %v", p, err)
		}
		if err := Check(KindSQLite, p); err == nil || !strings.Contains(err.Error(), "etcd snapshot, and this server's datastore is SQLite") {
			t.Errorf("Check as SQLite = %v", err)
		}
	}

	// Not snapshots: refused, naming the file and why.
	b, _ := os.ReadFile(plain.Path())
	for name, content := range map[string][]byte{
		"truncated": b[:len(b)-4096],
		"flipped":   append(append([]byte{}, b[:100]...), append([]byte{b[100] ^ 0xff}, b[101:]...)...),
		"random":    []byte(strings.Repeat("x", 4096+32)),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, content, 0o600)
		err := Check(KindEtcd, p)
		t.Logf("%s: %v", name, err)
		if err == nil || !strings.HasPrefix(err.Error(), p+" is not an etcd snapshot: ") {
			t.Errorf("Check(%s) = %v, want a refusal", name, err)
		}
		if _, err := RestoreEtcd(EtcdRestore{Snapshot: p, DataDir: dataDir, Name: "s1", PeerURL: "http://127.0.0.1:2380"}); err == nil {
			t.Errorf("RestoreEtcd(%s): want a refusal", name)
		}
	}
	e.Close()
	if entries, _ := os.ReadDir(filepath.Dir(dataDir)); len(entries) != 1 {
		t.Errorf("a refused restore left files beside the data dir: %v", entries)
	}

	members, err := ReadMembers(dataDir)
	if err != nil || len(members) != 1 || members[0].Name != "s1" {
		t.Fatalf("ReadMembers = %+v, %v", members, err)
	}
	if up := MembersUp(ctx, members, ProbeCAs{}); len(up) != 0 {
		t.Errorf("a stopped member answers: %v", up)
	}

	aside, err := RestoreEtcd(EtcdRestore{Snapshot: f.Path(), DataDir: dataDir, Name: "s1", PeerURL: "http://127.0.0.1:2380", Now: time.Unix(1800000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if aside != dataDir+"-old-1800000000" {
		t.Errorf("moved aside to %s", aside)
	}
	// The restored member's recorded peer URL is not where the test's etcd
	// listens: start it as a reset would, with force-new-cluster.
	e2, endpoint2 := startEtcd(t, dataDir, "s1", true)
	defer e2.Close()
	cli2 := client(t, endpoint2)
	for key, want := range map[string]int64{"/registry/namespaces/kept": 1, "/registry/namespaces/later": 0} {
		resp, err := cli2.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != want {
			t.Errorf("%s: %d keys after the restore, want %d", key, resp.Count, want)
		}
	}
	ms, err := cli2.MemberList(ctx)
	if err != nil || len(ms.Members) != 1 {
		t.Errorf("members after restore: %v, %v", ms, err)
	}
}

// TestForceNewClusterAndMembersUp: a member of a two-member cluster whose
// peer is up is reported as such; once reset, it is a one-member cluster
// with its data.
func TestForceNewClusterAndMembersUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	ctx := context.Background()
	dir := t.TempDir()
	e1, ep1 := startEtcd(t, filepath.Join(dir, "a"), "a", false)
	cli := client(t, ep1)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	// Add a second member that is up.
	c2, _ := loopbackURL()
	p2, _ := loopbackURL()
	if _, err := cli.MemberAdd(ctx, []string{p2.String()}); err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "b")
	cfg.Name = "b"
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{c2}, []url.URL{c2}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{p2}, []url.URL{p2}
	cfg.InitialCluster = fmt.Sprintf("a=%s,b=%s", e1.Config().AdvertisePeerUrls[0].String(), p2.String())
	cfg.ClusterState = embed.ClusterStateFlagExisting
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e2, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e2.Server.ReadyNotify():
	case err := <-e2.Err():
		t.Fatal(err)
	}
	e1.Close()
	members, err := ReadMembers(filepath.Join(dir, "a"))
	if err != nil || len(members) != 2 {
		t.Fatalf("ReadMembers = %+v, %v", members, err)
	}
	up := MembersUp(ctx, members, ProbeCAs{})
	if len(up) != 1 || !strings.HasPrefix(up[0], "b at http://127.0.0.1:") {
		t.Errorf("MembersUp = %v, want b", up)
	}
	e2.Close()
	if up := MembersUp(ctx, members, ProbeCAs{}); len(up) != 0 {
		t.Errorf("MembersUp with both down = %v", up)
	}
	if err := ForceNewCluster(ctx, filepath.Join(dir, "a"), "a"); err != nil {
		t.Fatal(err)
	}
	members, err = ReadMembers(filepath.Join(dir, "a"))
	if err != nil || len(members) != 1 || members[0].Name != "a" {
		t.Fatalf("members after the reset: %+v, %v", members, err)
	}
	e3, ep3 := startEtcd(t, filepath.Join(dir, "a"), "a", false)
	defer e3.Close()
	resp, err := client(t, ep3).Get(ctx, "k")
	if err != nil || resp.Count != 1 {
		t.Errorf("k after the reset: %v, %v", resp, err)
	}
}
