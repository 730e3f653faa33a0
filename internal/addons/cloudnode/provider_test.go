package cloudnode

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	cloudproviderapi "k8s.io/cloud-provider/api"

	"github.com/skiffkube/skiff/internal/node/nodeaddrs"
)

var cloudTaint = corev1.Taint{Key: cloudproviderapi.TaintExternalCloudProvider, Value: "true", Effect: corev1.TaintEffectNoSchedule}

func kubeletAddresses() []corev1.NodeAddress {
	return []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}, {Type: corev1.NodeHostName, Address: "n1"}}
}

func TestInstanceMetadataFromAnnotations(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{
			nodeaddrs.InternalIPAnnotation: "10.0.0.5,fd00::5",
			nodeaddrs.ExternalIPAnnotation: "203.0.113.9",
			nodeaddrs.HostnameAnnotation:   "n1",
		}},
		Spec:   corev1.NodeSpec{Taints: []corev1.Taint{cloudTaint}},
		Status: corev1.NodeStatus{Addresses: kubeletAddresses()},
	}
	md, err := Provider{}.InstanceMetadata(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "10.0.0.5"},
		{Type: corev1.NodeInternalIP, Address: "fd00::5"},
		{Type: corev1.NodeExternalIP, Address: "203.0.113.9"},
		{Type: corev1.NodeHostName, Address: "n1"},
	}
	if !slices.Equal(md.NodeAddresses, want) || md.ProviderID != "skiff://n1" {
		t.Errorf("metadata %+v, want addresses %v and provider ID skiff://n1", md, want)
	}

	// A provider ID already set is kept.
	n.Spec.ProviderID = "skiff://old"
	if md, _ := (Provider{}).InstanceMetadata(context.Background(), n); md.ProviderID != "skiff://old" {
		t.Errorf("provider ID %q", md.ProviderID)
	}

	// A malformed annotation is named.
	n.Annotations[nodeaddrs.ExternalIPAnnotation] = "203.0.113.999"
	if _, err := (Provider{}).InstanceMetadata(context.Background(), n); err == nil {
		t.Error("malformed external-ip annotation accepted")
	}
}

func TestInstanceMetadataWithoutAnnotations(t *testing.T) {
	// A node the kubelet maintains: its own addresses, unchanged.
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: kubeletAddresses()}}
	md, err := Provider{}.InstanceMetadata(context.Background(), n)
	if err != nil || !slices.Equal(md.NodeAddresses, kubeletAddresses()) {
		t.Errorf("metadata %+v, %v; want the node's own addresses", md, err)
	}
	// A node waiting to be initialised that has not annotated itself yet:
	// an error, so the controller retries.
	n.Spec.Taints = []corev1.Taint{cloudTaint}
	if _, err := (Provider{}).InstanceMetadata(context.Background(), n); err == nil {
		t.Error("tainted node without annotations initialised")
	}
}

// The upstream controller, with this provider, initialises a node that
// has annotated itself (taint removed, addresses from the annotations)
// and leaves a kubelet-maintained node's addresses alone.
func TestControllerInitialisesAnnotatedNode(t *testing.T) {
	external := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "ext", Annotations: map[string]string{
			nodeaddrs.InternalIPAnnotation: "10.0.0.5",
			nodeaddrs.ExternalIPAnnotation: "203.0.113.9",
			nodeaddrs.HostnameAnnotation:   "ext",
		}},
		Spec:   corev1.NodeSpec{Taints: []corev1.Taint{cloudTaint, {Key: "user", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}}},
	}
	plain := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Status: corev1.NodeStatus{Addresses: kubeletAddresses()}}
	// A node registered before it was given --node-external-ip has no
	// taint: the periodic reconcile gives it its addresses.
	late := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Annotations: map[string]string{
			nodeaddrs.InternalIPAnnotation: "10.0.0.6",
			nodeaddrs.ExternalIPAnnotation: "203.0.113.10",
		}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.6"}, {Type: corev1.NodeHostName, Address: "late"}}},
	}
	client := fake.NewClientset(external, plain, late)
	c := New(Config{Client: client, StatusUpdateFrequency: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got *corev1.Node
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, "ext", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Spec.Taints) == 1 && slices.ContainsFunc(n.Status.Addresses, func(a corev1.NodeAddress) bool { return a.Type == corev1.NodeExternalIP }) {
			got = n
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node not initialised: taints %v, addresses %v", n.Spec.Taints, n.Status.Addresses)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got.Spec.Taints[0].Key != "user" || got.Spec.ProviderID != "skiff://ext" {
		t.Errorf("taints %v, provider ID %q", got.Spec.Taints, got.Spec.ProviderID)
	}
	want := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.9"}, {Type: corev1.NodeHostName, Address: "ext"}}
	if !slices.Equal(got.Status.Addresses, want) {
		t.Errorf("addresses %v, want %v", got.Status.Addresses, want)
	}
	wantLate := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.6"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.10"}, {Type: corev1.NodeHostName, Address: "late"}}
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, "late", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(n.Status.Addresses, wantLate) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("late node's addresses %v, want %v", n.Status.Addresses, wantLate)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// After a reconcile round (the late node's addresses came from one),
	// the kubelet-maintained node is as it was and was never written.
	p, err := client.CoreV1().Nodes().Get(ctx, "plain", metav1.GetOptions{})
	if err != nil || !slices.Equal(p.Status.Addresses, kubeletAddresses()) || p.Spec.ProviderID != "" {
		t.Errorf("kubelet-maintained node changed: %+v, %v", p, err)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			if n, ok := a.(interface{ GetName() string }); ok && n.GetName() == "plain" {
				t.Errorf("the controller wrote the kubelet-maintained node: %v", a)
			}
		}
	}
}
