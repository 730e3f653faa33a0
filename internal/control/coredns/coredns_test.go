package coredns

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func TestCorefile(t *testing.T) {
	cfg := Config{Kubeconfig: "/d/admin.kubeconfig", Domain: "cluster.local", ListenIP: net.ParseIP("192.0.2.7"), Port: 10053, ResolvConf: "/etc/resolv.conf"}
	got := Corefile(cfg, true)
	for _, want := range []string{".:10053 {", "bind 192.0.2.7", "kubernetes cluster.local in-addr.arpa ip6.arpa {", `kubeconfig "/d/admin.kubeconfig"`, "skiffacl\n", `forward . "/etc/resolv.conf"`} {
		if !strings.Contains(got, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(Corefile(cfg, false), "forward") {
		t.Error("forwards with no upstream nameserver")
	}
}

func TestHasNameserver(t *testing.T) {
	dir := t.TempDir()
	with, without := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	_ = os.WriteFile(with, []byte("# x\nsearch example\nnameserver 10.0.0.53\n"), 0o644)
	_ = os.WriteFile(without, []byte("search example\n"), 0o644)
	if !hasNameserver(with) || hasNameserver(without) || hasNameserver(filepath.Join(dir, "missing")) {
		t.Error("hasNameserver misreads resolv.conf")
	}
}

func TestManifestPointsTheServiceAtTheServer(t *testing.T) {
	data := Manifest(Config{ServiceIP: "10.43.0.10", ListenIP: net.ParseIP("192.0.2.7"), Port: 10053})
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var svc corev1.Service
	var slice discoveryv1.EndpointSlice
	if err := dec.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&slice); err != nil {
		t.Fatal(err)
	}
	if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != "10.43.0.10" || svc.Spec.Selector != nil || len(svc.Spec.Ports) != 2 {
		t.Errorf("service %+v", svc)
	}
	if slice.Labels[discoveryv1.LabelServiceName] != "kube-dns" || slice.AddressType != discoveryv1.AddressTypeIPv4 ||
		slice.Endpoints[0].Addresses[0] != "192.0.2.7" || *slice.Ports[0].Port != 10053 || *slice.Ports[0].Name != svc.Spec.Ports[0].Name {
		t.Errorf("endpoint slice %+v", slice)
	}
}

// recorder is a dns.ResponseWriter from a given source.
type recorder struct {
	dns.ResponseWriter
	from net.Addr
	msg  *dns.Msg
}

func (r *recorder) RemoteAddr() net.Addr { return r.from }
func (r *recorder) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 10053}
}
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msg = m; return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}
func (r *recorder) Network() string             { return "udp" }

type answered struct{}

func (answered) Name() string { return "answered" }
func (answered) ServeDNS(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	m := new(dns.Msg).SetReply(r)
	return dns.RcodeSuccess, w.WriteMsg(m)
}

func TestSourceFilterAllowsPodsAndNodesOnly(t *testing.T) {
	// As the server sets it up: loopback, the cluster and the service CIDRs.
	acl := newSourceACL([]netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.43.0.0/16"), netip.MustParsePrefix("127.0.0.0/8")})
	h := aclHandler{acl: acl, next: answered{}}
	ask := func(from string) int {
		w := &recorder{from: &net.UDPAddr{IP: net.ParseIP(from), Port: 4000}}
		q := new(dns.Msg).SetQuestion("example.org.", dns.TypeA)
		if _, err := h.ServeDNS(context.Background(), w, q); err != nil {
			t.Fatal(err)
		}
		return w.msg.Rcode
	}
	agent := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "192.0.2.20"}, {Type: corev1.NodeHostName, Address: "agent1"}}}}
	if got := ask("192.0.2.20"); got != dns.RcodeRefused {
		t.Errorf("an unknown address got %s, want REFUSED", dns.RcodeToString[got])
	}
	acl.setNode("agent1", agent)
	for _, from := range []string{"10.42.3.4", "10.43.0.1", "127.0.0.1", "192.0.2.20", "::ffff:192.0.2.20"} {
		if got := ask(from); got != dns.RcodeSuccess {
			t.Errorf("%s got %s, want an answer", from, dns.RcodeToString[got])
		}
	}
	for _, from := range []string{"198.51.100.9", "10.44.0.1"} {
		if got := ask(from); got != dns.RcodeRefused {
			t.Errorf("%s got %s, want REFUSED", from, dns.RcodeToString[got])
		}
	}
	acl.setNode("agent1", nil)
	if got := ask("192.0.2.20"); got != dns.RcodeRefused {
		t.Errorf("a deleted node's address got %s, want REFUSED", dns.RcodeToString[got])
	}
}
