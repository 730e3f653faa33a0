package lbloopback

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func lbService(name string, created int64, ingress []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), CreationTimestamp: metav1.Unix(created, 0)},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: ports},
	}
	for _, ip := range ingress {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func tcp(port int32) corev1.ServicePort { return corev1.ServicePort{Port: port} }
func udp(port int32) corev1.ServicePort {
	return corev1.ServicePort{Port: port, Protocol: corev1.ProtocolUDP}
}

func key(proto corev1.Protocol, addr string) Key {
	return Key{Protocol: proto, Addr: netip.MustParseAddrPort(addr)}
}

func TestDesiredFollowsTheServicesThatListThisNode(t *testing.T) {
	node := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}
	web := lbService("web", 1, []string{"10.0.0.1", "10.0.0.2", "fd00::1"}, tcp(80), udp(53),
		corev1.ServicePort{Port: 9, Protocol: corev1.ProtocolSCTP})
	other := lbService("other", 2, []string{"10.0.0.2"}, tcp(81))
	pending := lbService("pending", 3, nil, tcp(82))
	younger := lbService("younger", 4, []string{"10.0.0.1"}, tcp(80), tcp(83))
	cluster := lbService("cluster", 0, nil, tcp(84))
	cluster.Spec.Type = corev1.ServiceTypeClusterIP
	cluster.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.0.0.1"}}

	got := Desired([]*corev1.Service{younger, other, web, pending, cluster}, node)
	want := map[Key]struct {
		target, service string
	}{
		key(corev1.ProtocolTCP, "127.0.0.1:80"): {"10.0.0.1:80", "web"},
		key(corev1.ProtocolUDP, "127.0.0.1:53"): {"10.0.0.1:53", "web"},
		key(corev1.ProtocolTCP, "[::1]:80"):     {"[fd00::1]:80", "web"},
		key(corev1.ProtocolUDP, "[::1]:53"):     {"[fd00::1]:53", "web"},
		key(corev1.ProtocolTCP, "127.0.0.1:83"): {"10.0.0.1:83", "younger"},
	}
	if len(got) != len(want) {
		t.Errorf("got %d listeners, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.Target.String() != w.target || g.Service.Name != w.service {
			t.Errorf("%s: got %v (%v), want %s for %s", k, g.Target, ok, w.target, w.service)
		}
	}
	if len(Desired([]*corev1.Service{web}, nil)) != 0 {
		t.Error("a node with no addresses listens")
	}
}

func TestPlanReconcilesTheSet(t *testing.T) {
	a, b := lbService("a", 1, nil), lbService("b", 2, nil)
	k80, k81, k82 := key(corev1.ProtocolTCP, "127.0.0.1:80"), key(corev1.ProtocolTCP, "127.0.0.1:81"), key(corev1.ProtocolUDP, "127.0.0.1:82")
	t80 := netip.MustParseAddrPort("10.0.0.1:80")
	running := map[Key]Want{
		k80: {Target: t80, Service: a},
		k81: {Target: netip.MustParseAddrPort("10.0.0.1:81"), Service: a},
	}
	want := map[Key]Want{
		k80: {Target: t80, Service: a},                                    // unchanged
		k81: {Target: netip.MustParseAddrPort("10.0.0.9:81"), Service: a}, // the node's address changed
		k82: {Target: netip.MustParseAddrPort("10.0.0.1:82"), Service: b}, // new
	}
	closing, opening := Plan(running, want)
	if !slices.Equal(closing, []Key{k81}) || !slices.Equal(opening, []Key{k81, k82}) {
		t.Errorf("close %v open %v", closing, opening)
	}
	// Another Service now owns the port: reopened for it.
	closing, opening = Plan(running, map[Key]Want{k80: {Target: t80, Service: b}})
	if !slices.Equal(closing, []Key{k80, k81}) || !slices.Equal(opening, []Key{k80}) {
		t.Errorf("owner change: close %v open %v", closing, opening)
	}
	closing, opening = Plan(running, nil)
	if len(closing) != 2 || len(opening) != 0 {
		t.Errorf("nothing wanted: close %v open %v", closing, opening)
	}
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return netip.MustParseAddrPort(pc.LocalAddr().String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestForwardsTCPWithHalfClose(t *testing.T) {
	// The target greets, then echoes what it reads after the client's
	// half-close.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("hi;"))
				data, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("echo:"), data...))
			}()
		}
	}()
	k := Key{Protocol: corev1.ProtocolTCP, Addr: freeAddr(t, "tcp")}
	l, err := listen(context.Background(), k, Want{Target: netip.MustParseAddrPort(up.Addr().String()), Service: lbService("s", 1, nil)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", k.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("hello"))
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hi;echo:hello" {
		t.Errorf("through the forwarder: %q %v", got, err)
	}
	c.Close()

	// A connection open when the listener closes is ended with it.
	open, err := net.Dial("tcp", k.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(open)
	if greeting, err := r.ReadString(';'); err != nil || greeting != "hi;" {
		t.Fatalf("greeting through the forwarder: %q %v", greeting, err)
	}
	l.close()
	if _, err := r.ReadByte(); err == nil {
		t.Error("a connection outlived its listener")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("a connection outlived its listener (read timed out)")
	}
	if c, err := net.Dial("tcp", k.Addr.String()); err == nil {
		c.Close()
		t.Error("the port still answers after close")
	}
}

func TestForwardsUDPBothWays(t *testing.T) {
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = up.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	k := Key{Protocol: corev1.ProtocolUDP, Addr: freeAddr(t, "udp")}
	l, err := listen(context.Background(), k, Want{Target: netip.MustParseAddrPort(up.LocalAddr().String()), Service: lbService("s", 1, nil)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	for _, client := range []string{"one", "two"} {
		c, err := net.Dial("udp", k.Addr.String())
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			msg := client + strings.Repeat("!", i)
			_, _ = c.Write([]byte(msg))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "echo:"+msg {
				t.Errorf("client %s: %q %v", client, buf[:n], err)
			}
		}
		c.Close()
	}
}

// TestReconcileReportsATakenPort runs the component on a fake cluster: a
// Service listing this node gets a loopback listener, one whose port is
// taken gets a Warning event, and a deleted one loses its listener.
func TestReconcileReportsATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := int32(netip.MustParseAddrPort(taken.Addr().String()).Port())
	freePort := int32(freeAddr(t, "tcp").Port())
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, {Type: corev1.NodeHostName, Address: "n1"},
	}}}
	client := fake.NewSimpleClientset(node,
		lbService("free", 1, []string{"192.0.2.10"}, tcp(freePort)),
		lbService("busy", 2, []string{"192.0.2.10"}, tcp(takenPort)))
	f := New(Config{NodeName: "n1", Client: client}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	poll := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	answers := func(port int32) bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	poll("the listener of free", func() bool { return answers(freePort) })
	poll("a PortInUse event on busy", func() bool {
		evs, _ := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "busy" && e.Reason == ReasonPortInUse && e.Type == corev1.EventTypeWarning &&
				strings.Contains(e.Message, "address already in use") {
				return true
			}
		}
		return false
	})
	if err := client.CoreV1().Services("default").Delete(ctx, "free", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("the listener of free to close", func() bool { return !answers(freePort) })
}
