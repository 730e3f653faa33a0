package addons

import (
	"context"
	"net"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

var dns = Service{Namespace: "kube-system", Name: "kube-dns", Ports: []ServicePort{
	{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 10053},
	{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 10053},
}}

var metrics = Service{Namespace: "kube-system", Name: "metrics-server", Ports: []ServicePort{
	{Name: "https", Protocol: corev1.ProtocolTCP, Port: 10251},
}}

// addresses lists the endpoint addresses of a Service's slices.
func addresses(t *testing.T, c *fake.Clientset, ns, svc string) []string {
	t.Helper()
	list, err := c.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			out = append(out, e.Addresses...)
		}
	}
	sort.Strings(out)
	return out
}

// Two servers serving DNS are both listed; a server that stops serving
// metrics takes only its metrics slice away.
func TestPublishListsEveryServer(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), []Service{dns, metrics}); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, c, "S2", net.ParseIP("2001:db8::2"), []Service{dns, metrics}); err != nil {
		t.Fatal(err)
	}
	// Again: nothing changes, nothing fails.
	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), []Service{dns, metrics}); err != nil {
		t.Fatal(err)
	}
	if got := addresses(t, c, "kube-system", "kube-dns"); len(got) != 2 || got[0] != "192.0.2.1" || got[1] != "2001:db8::2" {
		t.Errorf("kube-dns endpoints %v", got)
	}
	s, err := c.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, SliceName("kube-dns", "S2"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.AddressType != discoveryv1.AddressTypeIPv6 || len(s.Ports) != 2 || *s.Ports[1].Name != "dns-tcp" || *s.Ports[1].Port != 10053 ||
		s.Labels[ServerLabel] != "s2" || s.Labels[discoveryv1.LabelManagedBy] != ManagedBy || !*s.Endpoints[0].Conditions.Ready {
		t.Errorf("slice %+v", s)
	}

	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), []Service{dns}); err != nil {
		t.Fatal(err)
	}
	if got := addresses(t, c, "kube-system", "metrics-server"); len(got) != 1 || got[0] != "2001:db8::2" {
		t.Errorf("metrics-server endpoints %v after s1 stopped serving it", got)
	}
	// Stopping: nothing left of s1.
	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), nil); err != nil {
		t.Fatal(err)
	}
	if got := addresses(t, c, "kube-system", "kube-dns"); len(got) != 1 || got[0] != "2001:db8::2" {
		t.Errorf("kube-dns endpoints %v after s1 stopped", got)
	}
}

// A hand edit is put back.
func TestPublishRepairsItsSlice(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), []Service{dns}); err != nil {
		t.Fatal(err)
	}
	api := c.DiscoveryV1().EndpointSlices("kube-system")
	s, _ := api.Get(ctx, SliceName("kube-dns", "s1"), metav1.GetOptions{})
	s.Endpoints[0].Addresses = []string{"192.0.2.99"}
	if _, err := api.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), []Service{dns}); err != nil {
		t.Fatal(err)
	}
	if got := addresses(t, c, "kube-system", "kube-dns"); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Errorf("endpoints %v after a hand edit", got)
	}
}

func kubernetesEndpoints(ips ...string) *corev1.Endpoints {
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"}}
	sub := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "https", Port: 6443}}}
	for _, ip := range ips {
		sub.Addresses = append(sub.Addresses, corev1.EndpointAddress{IP: ip})
	}
	if len(ips) > 0 {
		ep.Subsets = []corev1.EndpointSubset{sub}
	}
	return ep
}

// The slices of a server that left the kubernetes Service's endpoints go,
// once older than the grace; a live server's, a young slice and slices
// skiff did not write stay.
func TestReapRemovesDeadServers(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	c := fake.NewClientset(kubernetesEndpoints("192.0.2.1"))
	for _, s := range []struct {
		server, ip string
	}{{"live", "192.0.2.1"}, {"dead", "192.0.2.2"}, {"young", "192.0.2.3"}} {
		if err := Publish(ctx, c, s.server, net.ParseIP(s.ip), []Service{dns}); err != nil {
			t.Fatal(err)
		}
	}
	// The fake sets no creation time: age the slices by hand.
	api := c.DiscoveryV1().EndpointSlices("kube-system")
	for name, age := range map[string]time.Duration{"live": time.Minute, "dead": time.Minute, "young": time.Second} {
		s, err := api.Get(ctx, SliceName("kube-dns", name), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.CreationTimestamp = metav1.NewTime(now.Add(-age))
		if _, err := api.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	other := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.42.0.9"}}},
	}
	if _, err := api.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	n, err := Reap(ctx, c, now, 15*time.Second)
	if err != nil || n != 1 {
		t.Fatalf("Reap = %d, %v; want 1 slice removed", n, err)
	}
	if got := addresses(t, c, "kube-system", "kube-dns"); len(got) != 3 || got[0] != "10.42.0.9" || got[1] != "192.0.2.1" || got[2] != "192.0.2.3" {
		t.Errorf("kube-dns endpoints %v after reaping", got)
	}
}

// With the endpoint reconciler off, the kubernetes Service lists nobody:
// nothing is taken for dead.
func TestReapWithoutLiveServersDeletesNothing(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset(kubernetesEndpoints())
	if err := Publish(ctx, c, "s1", net.ParseIP("192.0.2.1"), []Service{dns}); err != nil {
		t.Fatal(err)
	}
	if n, err := Reap(ctx, c, time.Now().Add(time.Hour), 15*time.Second); err != nil || n != 0 {
		t.Errorf("Reap = %d, %v; want nothing removed", n, err)
	}
}
