package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/internal/pki"
)

type testPKI struct {
	dir              string
	serverCA, client *pki.CA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	s, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "server-ca.crt"), filepath.Join(dir, "server-ca.key"), "server-ca")
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "client-ca.crt"), filepath.Join(dir, "client-ca.key"), "client-ca")
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{dir: dir, serverCA: s, client: c}
}

// leaf writes a certificate pair and returns its file names.
func (p *testPKI) leaf(t *testing.T, ca *pki.CA, name string, spec pki.LeafSpec) (string, string) {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueLeaf(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// echoServer stands in for a kubelet or a pod on a loopback address.
func echoServer(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func node(name, ip, podCIDR string) *corev1.Node {
	var cidrs []string
	if podCIDR != "" {
		cidrs = []string{podCIDR}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: cidrs},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

// connectVia sends an HTTP CONNECT on the egress socket as the apiserver does.
func connectVia(t *testing.T, socket, addr string) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "CONNECT "+addr+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, resp
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoes checks that conn carries bytes both ways to an echo server.
func echoes(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	msg := "hello " + what
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
		t.Fatalf("%s: echo %q, %v", what, buf, err)
	}
}

func TestTunnelCarriesKubeletConnectionsAndRefusesTheRest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPKI(t)
	servingCert, servingKey := p.leaf(t, p.serverCA, "serving", pki.LeafSpec{CommonName: "server", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: pki.ServerAuth})
	nodeCert, nodeKey := p.leaf(t, p.client, "node", pki.LeafSpec{CommonName: "system:node:agent1", Organizations: []string{"system:nodes"}, Usage: pki.ClientAuth})
	userCert, userKey := p.leaf(t, p.client, "user", pki.LeafSpec{CommonName: "alice", Organizations: []string{"system:masters"}, Usage: pki.ClientAuth})
	foreignCert, foreignKey := p.leaf(t, p.serverCA, "foreign", pki.LeafSpec{CommonName: "system:node:agent1", Organizations: []string{"system:nodes"}, Usage: pki.ClientAuth})
	kubeletPort := echoServer(t, "127.0.0.1")
	podPort := echoServer(t, "127.0.7.1")
	localPort := echoServer(t, "127.0.0.3")

	socket := filepath.Join(p.dir, "egress.sock")
	srv := NewServer(ServerConfig{
		ClientCAFile: filepath.Join(p.dir, "client-ca.crt"),
		SocketPath:   socket,
		LocalNode:    "server1",
		Nodes: func() []*corev1.Node {
			return []*corev1.Node{
				node("agent1", "10.99.0.5", "127.0.7.0/24"),
				node("agent2", "127.0.0.2", "10.42.8.0/24"),
				node("server1", "127.0.0.3", "10.42.0.0/24"),
				node("agent3", "10.99.0.9", ""),
				node("agent4", "10.99.0.9", ""),
			}
		},
	}, log)
	if err := srv.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("egress socket %v, %v; want mode 0600", fi, err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET "+Path, srv)
	hs := httptest.NewUnstartedServer(mux)
	pair, err := tls.LoadX509KeyPair(servingCert, servingKey)
	if err != nil {
		t.Fatal(err)
	}
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
	hs.StartTLS()
	defer hs.Close()
	serverAddr := strings.TrimPrefix(hs.URL, "https://")

	newClient := func(cert, key string) *Client {
		c := NewClient(ClientConfig{
			Servers:     func() []string { return []string{serverAddr} },
			CAPEM:       p.serverCA.CertPEM,
			CertFile:    cert,
			KeyFile:     key,
			NodeIPs:     []string{"10.99.0.5"},
			KubeletPort: kubeletPort,
			PodCIDRs:    []netip.Prefix{netip.MustParsePrefix("127.0.7.0/24")},
		}, log)
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Certificates that are not a node's from the client CA are refused with
	// a reason.
	for what, pair := range map[string][2]string{
		"not a node's":       {userCert, userKey},
		"certificate signed": {foreignCert, foreignKey},
	} {
		if _, err := newClient(pair[0], pair[1]).connect(ctx, serverAddr); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), what) {
			t.Errorf("tunnel with a bad certificate: err = %v, want 401 saying %q", err, what)
		}
	}

	agent := newClient(nodeCert, nodeKey)
	if agent.Ready() == nil {
		t.Fatal("Ready before any tunnel is up")
	}
	if err := agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tunnel", func() bool { return agent.Ready() == nil && slices.Equal(srv.Connected(), []string{"agent1"}) })

	// The node's address on the kubelet port reaches the kubelet on loopback.
	target := net.JoinHostPort("10.99.0.5", strconv.Itoa(kubeletPort))
	conn, resp := connectVia(t, socket, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %s", target, resp.Status)
	}
	echoes(t, conn, "kubelet")
	// A pod address on the node is dialled by the agent.
	conn, resp = connectVia(t, socket, net.JoinHostPort("127.0.7.1", strconv.Itoa(podPort)))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT to a pod: %s", resp.Status)
	}
	echoes(t, conn, "pod")
	// The server's own node is dialled directly.
	conn, resp = connectVia(t, socket, net.JoinHostPort("127.0.0.3", strconv.Itoa(localPort)))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT to the server's node: %s", resp.Status)
	}
	echoes(t, conn, "local node")

	for _, c := range []struct{ addr, want string }{
		// The agent refuses anything but its kubelet and pods.
		{"10.99.0.5:22", "neither this node's kubelet nor a pod address"},
		// A node without a tunnel is dialled directly, and named when that fails.
		{net.JoinHostPort("127.0.0.2", strconv.Itoa(freeTCPPort(t))), "node agent2 has no tunnel connected, and dialling it directly failed"},
		// An address two nodes claim is not routed to either.
		{"10.99.0.9:10250", "claimed by several nodes (agent3, agent4)"},
	} {
		if _, resp := connectVia(t, socket, c.addr); resp.StatusCode != 502 || !strings.Contains(resp.Status, c.want) {
			t.Errorf("CONNECT %s: %s, want 502 saying %q", c.addr, resp.Status, c.want)
		}
	}
	// Not CONNECT: refused.
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if r, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || r.StatusCode != 405 {
		t.Fatalf("GET on the egress socket: %v, %v", r, err)
	}
	c.Close()

	// A second tunnel from the same node (another address for the same
	// server) lives beside the first instead of knocking it down, and carries
	// the traffic once the first goes.
	second := newClient(nodeCert, nodeKey)
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	waitFor(t, "two tunnels from agent1", func() bool { return second.Ready() == nil && agent.Ready() == nil && sessionCount(srv, "agent1") == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := sessionCount(srv, "agent1"); n != 2 {
		t.Fatalf("%d tunnels from agent1 after a second connected, want both", n)
	}
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first tunnel to close", func() bool { return sessionCount(srv, "agent1") == 1 })
	conn, resp = connectVia(t, socket, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT through the second tunnel: %s", resp.Status)
	}
	echoes(t, conn, "kubelet again")

	// A broken tunnel comes back by itself.
	srv.mu.Lock()
	srv.sessions["agent1"][0].Close()
	srv.mu.Unlock()
	waitFor(t, "the tunnel to drop", func() bool { return len(srv.Connected()) == 0 })
	waitFor(t, "the tunnel to come back", func() bool { return slices.Equal(srv.Connected(), []string{"agent1"}) })
	conn, resp = connectVia(t, socket, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT after reconnect: %s", resp.Status)
	}
	echoes(t, conn, "kubelet after reconnect")

	// After Stop, the socket is gone and a late tunnel is not kept.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("egress socket still there after Stop: %v", err)
	}
	waitFor(t, "tunnels closed by Stop", func() bool { return len(srv.Connected()) == 0 })
	time.Sleep(1500 * time.Millisecond) // the agent redials within its backoff
	if got := srv.Connected(); len(got) != 0 {
		t.Errorf("tunnels kept after Stop: %v", got)
	}
}

func sessionCount(s *Server, node string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions[node])
}

// freeTCPPort is a loopback port nothing listens on.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
