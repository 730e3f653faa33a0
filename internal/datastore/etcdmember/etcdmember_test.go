package etcdmember

import (
	"context"
	"io"
	"log/slog"
	"net"
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

// node is a server node (etcd role label, InternalIP ip) naming member, or
// an agent's when member is "".
func node(name, member, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if member != "" {
		n.Annotations = map[string]string{MemberAnnotation: member}
		n.Labels = map[string]string{EtcdLabel: "true"}
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

func peer(ip string) []string { return []string{"https://" + net.JoinHostPort(ip, "2380")} }

func startController(t *testing.T, client *fake.Clientset, m *members) *Controller {
	t.Helper()
	c := New(Config{}, client, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	for c.Ready() != nil {
		time.Sleep(10 * time.Millisecond)
	}
	return c
}

func TestDeletedServerNodeRemovesItsMember(t *testing.T) {
	m := &members{list: []*etcdserverpb.Member{
		{ID: 1, Name: "s1-aa", PeerURLs: peer("10.0.0.1")},
		{ID: 2, Name: "s2-bb", PeerURLs: peer("10.0.0.2")},
		{ID: 3, Name: "s3-cc", PeerURLs: peer("fd00::3")},
	}}
	client := fake.NewClientset(node("s1", "s1-aa", "10.0.0.1"), node("s3", "s3-cc", "fd00:0::3"), node("agent", "", "10.0.0.9"))
	startController(t, client, m)
	ctx := context.Background()
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
	m := &members{list: []*etcdserverpb.Member{{ID: 2, Name: "s2-bb", PeerURLs: peer("10.0.0.2")}}, removeErr: rpctypes.ErrMemberNotFound}
	c := New(Config{}, fake.NewClientset(), m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Another server removed it between the list and the remove.
	if err := c.Remove(ctx, node("s2", "s2-bb", "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	// Already gone from the list.
	if err := c.Remove(ctx, node("s9", "s9-zz", "10.0.0.9")); err != nil {
		t.Fatal(err)
	}
	if got := m.removedIDs(); len(got) != 1 {
		t.Fatalf("MemberRemove calls %v, want one", got)
	}
}

// A kubelet may annotate its own Node with any member's name
// (NodeRestriction lets it), and its Node is then deleted: nothing is
// removed unless the Node has the etcd role label, which kubelets cannot
// set, and the member's peer URL is on one of the Node's internal IPs.
func TestForgedAnnotationRemovesNothing(t *testing.T) {
	m := &members{list: []*etcdserverpb.Member{
		{ID: 1, Name: "s1-aa", PeerURLs: peer("10.0.0.1")},
		{ID: 2, Name: "s2-bb", PeerURLs: peer("10.0.0.2")},
	}}
	// An agent naming s1's member, even claiming s1's address (a kubelet
	// writes its Node's status): no etcd role label.
	forged := node("agent", "s1-aa", "10.0.0.1")
	delete(forged.Labels, EtcdLabel)
	// A server (labelled) naming another server's member, not on its IP.
	other := node("s3", "s1-aa", "10.0.0.3")
	// The last one is real: it is removed, after the others were handled.
	real := node("s2", "s2-bb", "10.0.0.2")
	client := fake.NewClientset(forged, other, real)
	startController(t, client, m)
	ctx := context.Background()
	for _, name := range []string{"agent", "s3", "s2"} {
		if err := client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(m.removedIDs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.removedIDs(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("removed members %v, want [2] (only the real node's)", got)
	}
}
