package nodeaddrs

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestAnnotator(t *testing.T) {
	client := fake.NewClientset()
	cfg := Config{
		NodeName:    "n1",
		InternalIPs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")},
		ExternalIPs: []netip.Addr{netip.MustParseAddr("203.0.113.9")},
		Hostname:    "n1",
	}
	a := New(cfg, client, slog.New(slog.DiscardHandler))
	if err := a.Ready(); err == nil {
		t.Fatal("ready before the node registered")
	}
	if _, err := client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{"other": "x"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Ready retries once its retry interval has passed.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := a.Ready()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	n, _ := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	want := map[string]string{"other": "x", InternalIPAnnotation: "10.0.0.5,fd00::5", ExternalIPAnnotation: "203.0.113.9", HostnameAnnotation: "n1"}
	if len(n.Annotations) != len(want) {
		t.Errorf("annotations %v, want %v", n.Annotations, want)
	}
	for k, v := range want {
		if n.Annotations[k] != v {
			t.Errorf("annotation %s=%q, want %q", k, n.Annotations[k], v)
		}
	}

	// Started again without --node-external-ip: the annotations go, so the
	// controller leaves the node to its kubelet.
	cfg.ExternalIPs = nil
	b := New(cfg, client, slog.New(slog.DiscardHandler))
	if err := b.Ready(); err != nil {
		t.Fatal(err)
	}
	n, _ = client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if len(n.Annotations) != 1 || n.Annotations["other"] != "x" {
		t.Errorf("annotations after removal: %v", n.Annotations)
	}
}
