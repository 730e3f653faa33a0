package etcd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"

	"github.com/skiffkube/skiff/internal/controlplane"
)

// etcd creates member/ before it looks for a WAL: a data dir with only
// that is no data (a join that died there must not start a new cluster).
func TestHasDataNeedsAWAL(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	if HasData(l) || Unfinished(l) {
		t.Fatal("an empty data dir has data or an unfinished member")
	}
	if err := os.MkdirAll(filepath.Join(l.EtcdDataDir(), "member", "snap"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.EtcdDataDir(), "member", "snap", "db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if HasData(l) || !Unfinished(l) {
		t.Fatalf("member/ without a WAL: HasData %v, Unfinished %v; want false, true", HasData(l), Unfinished(l))
	}
	if err := os.MkdirAll(filepath.Join(l.EtcdDataDir(), "member", "wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if HasData(l) || !Unfinished(l) {
		t.Fatal("an empty member/wal counts as data")
	}
	if err := os.WriteFile(filepath.Join(l.EtcdDataDir(), "member", "wal", "0000000000000000-0000000000000000.wal"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !HasData(l) || Unfinished(l) {
		t.Fatalf("member/wal/*.wal: HasData %v, Unfinished %v; want true, false", HasData(l), Unfinished(l))
	}
}

func TestPrepareJoinMovesAnUnfinishedMemberAside(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	now := time.Unix(1700000000, 0)
	if aside, err := PrepareJoin(l, now); err != nil || aside != "" {
		t.Fatalf("no member dir: %q, %v", aside, err)
	}
	db := filepath.Join(l.EtcdDataDir(), "member", "snap", "db")
	if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	aside, err := PrepareJoin(l, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(l.EtcdDataDir(), "member.unfinished-1700000000"); aside != want {
		t.Fatalf("moved to %q, want %q", aside, want)
	}
	if _, err := os.Stat(filepath.Join(aside, "snap", "db")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.EtcdDataDir(), "member")); !os.IsNotExist(err) {
		t.Fatalf("member dir still there: %v", err)
	}

	// A member with a WAL is data: never moved.
	w := filepath.Join(l.EtcdDataDir(), "member", "wal", "0000000000000000-0000000000000000.wal")
	if err := os.MkdirAll(filepath.Dir(w), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if aside, err := PrepareJoin(l, now.Add(time.Hour)); err != nil || aside != "" {
		t.Fatalf("a member with a WAL: moved to %q, %v", aside, err)
	}
}

// fakeCluster is etcd's cluster API with max-learners learners.
type fakeCluster struct {
	mu          sync.Mutex
	members     []*etcdserverpb.Member
	maxLearners int
	nextID      uint64
	removed     []uint64
	removeErr   error
	adds        int
}

func (f *fakeCluster) MemberList(context.Context, ...clientv3.OpOption) (*clientv3.MemberListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &clientv3.MemberListResponse{Members: append([]*etcdserverpb.Member{}, f.members...)}, nil
}

func (f *fakeCluster) MemberRemove(_ context.Context, id uint64) (*clientv3.MemberRemoveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removeErr != nil {
		return nil, f.removeErr
	}
	f.removed = append(f.removed, id)
	for i, m := range f.members {
		if m.ID == id {
			f.members = append(f.members[:i], f.members[i+1:]...)
			break
		}
	}
	return &clientv3.MemberRemoveResponse{}, nil
}

func (f *fakeCluster) MemberAddAsLearner(_ context.Context, peers []string) (*clientv3.MemberAddResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	learners := 0
	for _, m := range f.members {
		if m.IsLearner {
			learners++
		}
	}
	if learners >= f.maxLearners {
		return nil, rpctypes.ErrGRPCTooManyLearners
	}
	f.nextID++
	m := &etcdserverpb.Member{ID: f.nextID, PeerURLs: peers, IsLearner: true}
	f.members = append(f.members, m)
	return &clientv3.MemberAddResponse{Member: m, Members: append([]*etcdserverpb.Member{}, f.members...)}, nil
}

func testEtcd(t *testing.T) *Etcd {
	return New(Config{
		Layout:      controlplane.Layout{DataDir: t.TempDir()},
		AdvertiseIP: net.ParseIP("10.0.0.3"),
		Join:        []string{"https://10.0.0.1:2379"},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// fakeClock: pause advances it by 2 s; after stopAfter pauses (1000 when
// 0: a join that would wait forever) it says the join's context ended.
type fakeClock struct {
	t         time.Time
	pauses    int
	stopAfter int
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) pause(context.Context) error {
	c.pauses++
	if (c.stopAfter > 0 && c.pauses >= c.stopAfter) || c.pauses >= 1000 {
		return context.DeadlineExceeded
	}
	c.t = c.t.Add(2 * time.Second)
	return nil
}

// checkInitialCluster checks initial against what etcd checks when a
// member joins an existing cluster: a member for every member, matched by
// peer URLs (membership.ValidateClusterAndAssignIDs).
func checkInitialCluster(t *testing.T, initial string, members []*etcdserverpb.Member) {
	t.Helper()
	um, err := types.NewURLsMap(initial)
	if err != nil {
		t.Fatalf("initial cluster %q: %v", initial, err)
	}
	local, err := membership.NewClusterFromURLsMap(zap.NewNop(), "skiff", um)
	if err != nil {
		t.Fatalf("initial cluster %q: %v", initial, err)
	}
	var ms []*membership.Member
	for _, m := range members {
		ms = append(ms, &membership.Member{ID: types.ID(m.ID), RaftAttributes: membership.RaftAttributes{PeerURLs: m.PeerURLs, IsLearner: m.IsLearner}, Attributes: membership.Attributes{Name: m.Name}})
	}
	existing := membership.NewClusterFromMembers(zap.NewNop(), types.ID(1), ms)
	if err := membership.ValidateClusterAndAssignIDs(zap.NewNop(), local, existing); err != nil {
		t.Fatalf("initial cluster %q against members %v: %v", initial, members, err)
	}
}

// With max-learners=1, a learner left unstarted by another machine's failed
// join would block every later join: it is removed once it has kept this
// join waiting StaleLearnerAfter.
func TestJoinRemovesAStaleUnstartedLearner(t *testing.T) {
	e := testEtcd(t)
	f := &fakeCluster{maxLearners: 1, nextID: 100, members: []*etcdserverpb.Member{
		{ID: 1, Name: "s1-aa", PeerURLs: []string{"https://10.0.0.1:2380"}},
		{ID: 7, PeerURLs: []string{"https://10.0.0.7:2380"}, IsLearner: true},
	}}
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	initial, err := e.join(context.Background(), f, "s3-cc", clock.now, clock.pause)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.removed) != 1 || f.removed[0] != 7 {
		t.Fatalf("removed %v, want [7]", f.removed)
	}
	if waited := time.Duration(clock.pauses) * 2 * time.Second; waited < StaleLearnerAfter {
		t.Fatalf("removed after waiting %s, before %s", waited, StaleLearnerAfter)
	}
	if want := "s1-aa=https://10.0.0.1:2380,s3-cc=https://10.0.0.3:2380"; initial != want {
		t.Fatalf("initial cluster %q, want %q", initial, want)
	}
	checkInitialCluster(t, initial, f.members)
}

// A learner that cannot be removed, or a join that ends while one blocks
// it: the error names the member and how to remove it.
func TestJoinBlockedByALearnerNamesIt(t *testing.T) {
	blocked := func() *fakeCluster {
		return &fakeCluster{maxLearners: 1, members: []*etcdserverpb.Member{
			{ID: 1, Name: "s1-aa", PeerURLs: []string{"https://10.0.0.1:2380"}},
			{ID: 0xabc, PeerURLs: []string{"https://10.0.0.7:2380"}, IsLearner: true},
		}}
	}
	e := testEtcd(t)
	f := blocked()
	f.removeErr = errors.New("etcdserver: unhealthy cluster")
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	_, err := e.join(context.Background(), f, "s3-cc", clock.now, clock.pause)
	if err == nil || !strings.Contains(err.Error(), "abc") || !strings.Contains(err.Error(), "member remove abc") {
		t.Fatalf("err %v, want one naming learner abc and how to remove it", err)
	}

	clock = &fakeClock{t: time.Unix(1700000000, 0), stopAfter: 3}
	_, err = e.join(context.Background(), blocked(), "s3-cc", clock.now, clock.pause)
	if err == nil || !strings.Contains(err.Error(), "too many learner members") ||
		!strings.Contains(err.Error(), "unstarted learner abc (peer https://10.0.0.7:2380)") || !strings.Contains(err.Error(), "member remove abc") {
		t.Fatalf("err %v, want one naming learner abc and how to remove it", err)
	}
}

// With --etcd-arg max-learners=2 another server's learner may be unstarted
// when this one is added: the initial cluster still lists it (unnamed, as
// etcdctl member add prints it), or etcd refuses to start ("member count
// is unequal").
func TestJoinInitialClusterKeepsUnstartedMembers(t *testing.T) {
	e := testEtcd(t)
	f := &fakeCluster{maxLearners: 2, nextID: 100, members: []*etcdserverpb.Member{
		{ID: 1, Name: "s1-aa", PeerURLs: []string{"https://10.0.0.1:2380"}},
		{ID: 7, PeerURLs: []string{"https://10.0.0.7:2380"}, IsLearner: true},
	}}
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	initial, err := e.join(context.Background(), f, "s3-cc", clock.now, clock.pause)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.removed) != 0 {
		t.Fatalf("removed %v, want none", f.removed)
	}
	if want := "s1-aa=https://10.0.0.1:2380,=https://10.0.0.7:2380,s3-cc=https://10.0.0.3:2380"; initial != want {
		t.Fatalf("initial cluster %q, want %q", initial, want)
	}
	checkInitialCluster(t, initial, f.members)
}
