package servicelb

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

func lbService(name string, age time.Duration, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(time.Now().Add(-age))},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: ports},
	}
}

func TestAssignGivesAPortToTheOldestService(t *testing.T) {
	old := lbService("old", time.Hour, corev1.ServicePort{Port: 80})
	young := lbService("young", time.Minute, corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}, corev1.ServicePort{Port: 443})
	udp := lbService("dns", time.Second, corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolUDP})
	api := lbService("api", time.Second, corev1.ServicePort{Port: 6443})
	got := Assign([]*corev1.Service{young, udp, api, old}, []Reserved{{Port: 6443, Protocol: corev1.ProtocolTCP, What: "supervisor"}})
	if got[old] != "" || got[udp] != "" {
		t.Errorf("old: %q, udp: %q; want both granted", got[old], got[udp])
	}
	if !strings.Contains(got[young], "port 80/TCP is already used by LoadBalancer Service default/old") {
		t.Errorf("young: %q, want the conflict with default/old named", got[young])
	}
	if !strings.Contains(got[api], "port 6443/TCP is already used by skiff's supervisor") {
		t.Errorf("api: %q, want the reserved port named", got[api])
	}
}

func node(name string, ready bool, labels map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{
			Addresses:  addrs,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}},
		},
	}
}

func TestNodeAddresses(t *testing.T) {
	in := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
	}
	ext := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: ip}
	}
	nodes := []*corev1.Node{
		node("a", true, nil, in("10.0.0.2")),
		node("b", true, nil, in("10.0.0.3"), ext("203.0.113.3")),
		node("c", false, nil, in("10.0.0.4")),
	}
	want := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("203.0.113.3")}
	if got := NodeAddresses(nodes); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (external IP preferred, not-Ready node left out)", got, want)
	}
	nodes[0].Labels = map[string]string{EnableLabel: "true"}
	if got := NodeAddresses(nodes); !slices.Equal(got, want[:1]) {
		t.Errorf("with a labelled node: got %v, want only it", got)
	}
	svc := lbService("x", 0)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	if got := ingressFor(svc, want); len(got) != 0 {
		t.Errorf("IPv6-only Service got IPv4 addresses %v", got)
	}
}

func TestRemoveNodeAddressesKeepsOthers(t *testing.T) {
	ctx := context.Background()
	n := node("a", true, nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.2"})
	ours := lbService("ours", 0, corev1.ServicePort{Port: 80})
	ours.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.0.0.2"}, {IP: "198.51.100.7"}}
	other := lbService("metallb", 0, corev1.ServicePort{Port: 81})
	other.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.8"}}
	client := fake.NewClientset(n, ours, other)
	changed, err := RemoveNodeAddresses(ctx, client)
	if err != nil || changed != 1 {
		t.Fatalf("changed %d, %v; want 1", changed, err)
	}
	got, _ := client.CoreV1().Services("default").Get(ctx, "ours", metav1.GetOptions{})
	if ips := ingressIPs(got.Status.LoadBalancer.Ingress); !slices.Equal(ips, []string{"198.51.100.7"}) {
		t.Errorf("ours kept %v, want only the address that is not a node's", ips)
	}
	got, _ = client.CoreV1().Services("default").Get(ctx, "metallb", metav1.GetOptions{})
	if ips := ingressIPs(got.Status.LoadBalancer.Ingress); !slices.Equal(ips, []string{"198.51.100.8"}) {
		t.Errorf("another implementation's address changed: %v", ips)
	}
}

func TestConflictReportedOnce(t *testing.T) {
	holder := lbService("holder", time.Hour, corev1.ServicePort{Port: 80})
	holder.UID = "holder"
	late := lbService("late", time.Minute, corev1.ServicePort{Port: 80})
	late.UID = "late"
	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, s := range []*corev1.Service{holder, late} {
		if err := svcs.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	rec := record.NewFakeRecorder(10)
	c := &Controller{
		log:      slog.New(slog.DiscardHandler),
		client:   fake.NewClientset(holder, late),
		services: listerscorev1.NewServiceLister(svcs),
		nodes:    listerscorev1.NewNodeLister(nodes),
		recorder: rec,
	}
	for range 3 {
		c.reconcile(context.Background())
	}
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d events for one conflict over three passes, want 1", n)
	}
	if ev := <-rec.Events; !strings.Contains(ev, "PortInUse") || !strings.Contains(ev, "default/holder") {
		t.Errorf("event %q, want PortInUse naming default/holder", ev)
	}
	// Freed and taken again: a new conflict is a new event.
	if err := svcs.Delete(holder); err != nil {
		t.Fatal(err)
	}
	c.reconcile(context.Background())
	if err := svcs.Add(holder); err != nil {
		t.Fatal(err)
	}
	holder.CreationTimestamp = metav1.NewTime(time.Now().Add(-2 * time.Hour))
	c.reconcile(context.Background())
	if n := len(rec.Events); n != 1 {
		t.Errorf("%d events after the conflict came back, want 1", n)
	}
}
