package coredns

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func TestCorefile(t *testing.T) {
	cfg := Config{Kubeconfig: "/d/admin.kubeconfig", Domain: "cluster.local", ListenIP: net.ParseIP("192.0.2.7"), Port: 10053, ResolvConf: "/etc/resolv.conf", NodeHosts: "/d/node-hosts"}
	got := Corefile(cfg, true)
	for _, want := range []string{".:10053 {", "bind 192.0.2.7", "kubernetes cluster.local in-addr.arpa ip6.arpa {", `kubeconfig "/d/admin.kubeconfig"`, "skiffacl\n", `forward . "/etc/resolv.conf"`, `hosts "/d/node-hosts" {`} {
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

// The manifest's Service has no selector; the endpoints every server
// publishes (Addon.Serves) name its ports.
func TestManifestAndServedEndpointsAgree(t *testing.T) {
	data := Manifest(Config{ServiceIP: "10.43.0.10", ListenIP: net.ParseIP("192.0.2.7"), Port: 10053})
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var svc corev1.Service
	if err := dec.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != "10.43.0.10" || svc.Spec.Selector != nil || len(svc.Spec.Ports) != 2 {
		t.Errorf("service %+v", svc)
	}
	served := Addon.Serves(nil)
	if len(served) != 1 || served[0].Name != svc.Name || served[0].Namespace != svc.Namespace || len(served[0].Ports) != len(svc.Spec.Ports) {
		t.Fatalf("served %+v, Service %s/%s", served, svc.Namespace, svc.Name)
	}
	for i, p := range served[0].Ports {
		if p.Name != svc.Spec.Ports[i].Name || p.Protocol != svc.Spec.Ports[i].Protocol || p.Port != DefaultPort {
			t.Errorf("served port %+v, Service port %+v", p, svc.Spec.Ports[i])
		}
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

func node(name string, addrs ...corev1.NodeAddress) *corev1.Node {
	n := &corev1.Node{}
	n.Name = name
	n.Status.Addresses = addrs
	return n
}

func internalIP(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

func TestNodeHostsFromNodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "node-hosts")
	h := newNodeHosts(path, "cluster.local", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := h.write(); err != nil {
		t.Fatal(err)
	}
	lines := func() []string {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range strings.Split(string(data), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		return out
	}
	if got := lines(); len(got) != 0 {
		t.Errorf("no nodes: %q", got)
	}
	// Dual-stack with the IPv6 address listed first, an ExternalIP and a
	// host name: InternalIPs only, IPv4 first.
	h.setNode("server1", node("server1",
		internalIP("2001:db8::10"), corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.10"},
		internalIP("192.0.2.10"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: "server1.example"}))
	h.setNode("agent1", node("agent1", internalIP("192.0.2.20")))
	// A name inside the cluster domain or a reverse zone would shadow the
	// kubernetes plugin's answers.
	h.setNode("kubernetes.default.svc.cluster.local", node("kubernetes.default.svc.cluster.local", internalIP("192.0.2.30")))
	h.setNode("10.0.43.10.in-addr.arpa", node("10.0.43.10.in-addr.arpa", internalIP("192.0.2.31")))
	// No InternalIP yet (registered, status not reported): no line.
	h.setNode("agent2", node("agent2"))
	want := []string{"192.0.2.20 agent1", "192.0.2.10 server1", "2001:db8::10 server1"}
	if got := lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("hosts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A node that moves, and one that leaves.
	h.setNode("agent1", node("agent1", internalIP("192.0.2.21")))
	h.setNode("server1", nil)
	if got, want := lines(), []string{"192.0.2.21 agent1"}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("after a move and a deletion: %q, want %q", got, want)
	}
}

// TestHostsStanzaAnswersNodeNames runs CoreDNS's hosts plugin as the
// Corefile configures it, on the file nodeHosts writes: a node's name is
// answered, a changed address within the reload interval, and other names
// (the search-path forms among them) go on to the next plugin.
func TestHostsStanzaAnswersNodeNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node-hosts")
	h := newNodeHosts(path, "cluster.local", slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.setNode("agent1", node("agent1", internalIP("192.0.2.20")))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	_, port, _ := net.SplitHostPort(addr)
	pc.Close()
	if err := dnsserver.SetDirectives(directives); err != nil {
		t.Fatal(err)
	}
	caddy.Quiet, dnsserver.Quiet = true, true
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(".:" + port + " {\n    bind 127.0.0.1\n" + hostsStanza(path) + "}\n"), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		inst.Stop()
		inst.ShutdownCallbacks()
	}()
	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg).SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := func(r *dns.Msg) string {
		for _, rr := range r.Answer {
			if rec, ok := rr.(*dns.A); ok {
				return rec.A.String()
			}
		}
		return ""
	}
	if r := ask("agent1.", dns.TypeA); a(r) != "192.0.2.20" {
		t.Errorf("agent1: %v", r)
	}
	if r := ask("AGENT1.", dns.TypeA); a(r) != "192.0.2.20" {
		t.Errorf("AGENT1: %v", r)
	}
	if r := ask("agent1.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA of an IPv4-only node: %v, want an empty answer", r)
	}
	// Names the file does not hold are not answered here: with no plugin
	// after hosts in this Corefile, fallthrough ends in SERVFAIL.
	for _, name := range []string{"agent1.default.svc.cluster.local.", "agent2.", "example.org."} {
		if r := ask(name, dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: %v, want it passed on", name, r)
		}
	}
	h.setNode("agent1", node("agent1", internalIP("192.0.2.21")))
	h.setNode("agent2", node("agent2", internalIP("192.0.2.22")))
	deadline := time.Now().Add(5 * time.Second)
	for a(ask("agent1.", dns.TypeA)) != "192.0.2.21" || a(ask("agent2.", dns.TypeA)) != "192.0.2.22" {
		if time.Now().After(deadline) {
			t.Fatalf("new addresses not served 5s after the change: %v %v", ask("agent1.", dns.TypeA), ask("agent2.", dns.TypeA))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
