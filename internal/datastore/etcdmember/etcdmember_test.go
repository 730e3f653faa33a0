package etcdmember

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// members is a fake cluster; removeErr is what MemberRemove answers after
// removing (another server's removal winning the race).
type members struct {
	mu        sync.Mutex
	list      []*etcdserverpb.Member
	removed   []uint64
	removeErr error
}

func (m *members) MemberList(context.Context, ...clientv3.OpOption) (*clientv3.MemberListResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &clientv3.MemberListResponse{Members: append([]*etcdserverpb.Member{}, m.list...)}, nil
}

func (m *members) MemberRemove(_ context.Context, id uint64) (*clientv3.MemberRemoveResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removed = append(m.removed, id)
	for i, x := range m.list {
		if x.ID == id {
			m.list = append(m.list[:i], m.list[i+1:]...)
		}
	}
	return &clientv3.MemberRemoveResponse{}, m.removeErr
}

func (m *members) removedIDs() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uint64{}, m.removed...)
}

func node(name, member string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if member != "" {
		n.Annotations = map[string]string{MemberAnnotation: member}
	}
	return n
}

func TestDeletedServerNodeRemovesItsMember(t *testing.T) {
	m := &members{list: []*etcdserverpb.Member{{ID: 1, Name: "s1-aa"}, {ID: 2, Name: "s2-bb"}, {ID: 3, Name: "s3-cc"}}}
	client := fake.NewClientset(node("s1", "s1-aa"), node("s3", "s3-cc"), node("agent", ""))
	c := New(Config{}, client, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	for c.Ready() != nil {
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"agent", "s3"} {
		if err := client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(m.removedIDs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.removedIDs(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("removed members %v, want [3]", got)
	}
}

func TestRemoveIsIdempotent(t *testing.T) {
	m := &members{list: []*etcdserverpb.Member{{ID: 2, Name: "s2-bb"}}, removeErr: rpctypes.ErrMemberNotFound}
	c := New(Config{}, fake.NewClientset(), m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Another server removed it between the list and the remove.
	if err := c.Remove(ctx, "s2", "s2-bb"); err != nil {
		t.Fatal(err)
	}
	// Already gone from the list.
	if err := c.Remove(ctx, "s9", "s9-zz"); err != nil {
		t.Fatal(err)
	}
	if got := m.removedIDs(); len(got) != 1 {
		t.Fatalf("MemberRemove calls %v, want one", got)
	}
}
