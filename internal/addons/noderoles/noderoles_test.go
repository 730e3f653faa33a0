package noderoles

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ready asks l until it is ready, as the manager does.
func ready(t *testing.T, l *Labeler) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := l.Ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerNodeGetsItsRoles(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	l := New(Config{NodeName: "server1"}, client, quiet())
	if err := l.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// Before the kubelet registers the Node.
	if err := l.Ready(); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("Ready before registration = %v", err)
	}
	// The kubelet registers it with its own labels, one role label set to
	// another value by hand.
	_, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "server1", Labels: map[string]string{
		"kubernetes.io/hostname": "server1", "tier": "edge", MasterLabel: "false",
	}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready(t, l)
	n, err := client.CoreV1().Nodes().Get(ctx, "server1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"kubernetes.io/hostname": "server1", "tier": "edge", ControlPlaneLabel: "true", MasterLabel: "true"}
	if len(n.Labels) != len(want) {
		t.Errorf("labels %v, want %v", n.Labels, want)
	}
	for k, v := range want {
		if n.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (all: %v)", k, n.Labels[k], v, n.Labels)
		}
	}
	if _, ok := n.Labels[EtcdLabel]; ok {
		t.Errorf("etcd role without embedded etcd: %v", n.Labels)
	}
}

func TestEtcdRoleWithEmbeddedEtcd(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "server1"}})
	l := New(Config{NodeName: "server1", EmbeddedEtcd: true}, client, quiet())
	if err := l.Init(ctx); err != nil {
		t.Fatal(err)
	}
	ready(t, l)
	n, _ := client.CoreV1().Nodes().Get(ctx, "server1", metav1.GetOptions{})
	for _, k := range []string{ControlPlaneLabel, MasterLabel, EtcdLabel} {
		if n.Labels[k] != "true" {
			t.Errorf("%s = %q, want true (all: %v)", k, n.Labels[k], n.Labels)
		}
	}
}

func TestLabelledNodeIsNotPatched(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "server1", Labels: Labels(false)}})
	l := New(Config{NodeName: "server1"}, client, quiet())
	if err := l.Init(ctx); err != nil {
		t.Fatal(err)
	}
	ready(t, l)
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" {
			t.Errorf("patched a node that has its roles: %v", a)
		}
	}
}
