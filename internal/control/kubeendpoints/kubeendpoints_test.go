package kubeendpoints

import (
	"context"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestReconcilePublishesSupervisorPort(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	ip := net.ParseIP("192.0.2.10")
	if err := Reconcile(ctx, c, ip, 6443); err != nil {
		t.Fatal(err)
	}
	ep, err := c.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Subsets) != 1 || ep.Subsets[0].Addresses[0].IP != "192.0.2.10" || ep.Subsets[0].Ports[0].Port != 6443 {
		t.Fatalf("endpoints %+v", ep.Subsets)
	}
	if ep.Labels[discoveryv1.LabelSkipMirror] != "true" {
		t.Fatal("endpoints would be mirrored into a second slice")
	}
	es, err := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if es.AddressType != discoveryv1.AddressTypeIPv4 || es.Endpoints[0].Addresses[0] != "192.0.2.10" || *es.Ports[0].Port != 6443 ||
		es.Labels[discoveryv1.LabelServiceName] != "kubernetes" {
		t.Fatalf("slice %+v", es)
	}

	// A second pass with nothing changed writes nothing.
	before := len(c.Actions())
	if err := Reconcile(ctx, c, ip, 6443); err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Actions()[before:] {
		if a.GetVerb() != "get" {
			t.Fatalf("idle reconcile did %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}

	// A hand edit is put back.
	ep.Subsets[0].Ports[0].Port = 6444
	if _, err := c.CoreV1().Endpoints("default").Update(ctx, ep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Reconcile(ctx, c, ip, 6443); err != nil {
		t.Fatal(err)
	}
	ep, _ = c.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if ep.Subsets[0].Ports[0].Port != 6443 || ep.Subsets[0].Ports[0].Protocol != corev1.ProtocolTCP {
		t.Fatalf("hand edit not reverted: %+v", ep.Subsets)
	}

	// Moving to IPv6 replaces the slice, whose address type is immutable.
	if err := Reconcile(ctx, c, net.ParseIP("2001:db8::1"), 6443); err != nil {
		t.Fatal(err)
	}
	es, _ = c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if es.AddressType != discoveryv1.AddressTypeIPv6 || es.Endpoints[0].Addresses[0] != "2001:db8::1" {
		t.Fatalf("slice after move to IPv6 %+v", es)
	}
}
