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

// echoKubelet stands in for a kubelet on loopback.
func echoKubelet(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: []string{podCIDR}},
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

func TestTunnelCarriesKubeletConnectionsAndRefusesTheRest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newTestPKI(t)
	servingCert, servingKey := p.leaf(t, p.serverCA, "serving", pki.LeafSpec{CommonName: "server", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: pki.ServerAuth})
	nodeCert, nodeKey := p.leaf(t, p.client, "node", pki.LeafSpec{CommonName: "system:node:agent1", Organizations: []string{"system:nodes"}, Usage: pki.ClientAuth})
	userCert, userKey := p.leaf(t, p.client, "user", pki.LeafSpec{CommonName: "alice", Organizations: []string{"system:masters"}, Usage: pki.ClientAuth})
	kubeletPort := echoKubelet(t)

	socket := filepath.Join(p.dir, "egress.sock")
	srv := NewServer(ServerConfig{
		ClientCAFile: filepath.Join(p.dir, "client-ca.crt"),
		SocketPath:   socket,
		LocalNode:    "server1",
		Nodes: func() []*corev1.Node {
			return []*corev1.Node{node("agent1", "10.99.0.5", "10.42.7.0/24"), node("agent2", "10.99.0.6", "10.42.8.0/24")}
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
		}, log)
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// A client certificate that is not a node's is refused with a reason.
	if err := newClient(userCert, userKey).connect(ctx, serverAddr); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "not a node's") {
		t.Fatalf("non-node certificate: err = %v, want 401 naming it", err)
	}

	agent := newClient(nodeCert, nodeKey)
	if agent.Ready() == nil {
		t.Fatal("Ready before any tunnel is up")
	}
	if err := agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	waitFor(t, "the tunnel", func() bool { return agent.Ready() == nil && slices.Equal(srv.Connected(), []string{"agent1"}) })

	// The node's address on the kubelet port reaches the kubelet on loopback.
	target := net.JoinHostPort("10.99.0.5", strconv.Itoa(kubeletPort))
	conn, resp := connectVia(t, socket, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %s", target, resp.Status)
	}
	if _, err := io.WriteString(conn, "hello kubelet"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("hello kubelet"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello kubelet" {
		t.Fatalf("echo through the tunnel: %q, %v", buf, err)
	}

	// The agent refuses anything but its kubelet and pods.
	_, resp = connectVia(t, socket, "10.99.0.5:22")
	if resp.StatusCode != 502 || !strings.Contains(resp.Status, "neither this node's kubelet nor a pod address") {
		t.Fatalf("CONNECT to another port: %s, want 502 naming the rule", resp.Status)
	}
	// A node without a tunnel is named, not dialled directly.
	_, resp = connectVia(t, socket, "10.42.8.9:80")
	if resp.StatusCode != 502 || !strings.Contains(resp.Status, "node agent2 has no tunnel") {
		t.Fatalf("CONNECT to a pod on a node without tunnel: %s", resp.Status)
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

	// A broken tunnel comes back by itself.
	srv.mu.Lock()
	srv.sessions["agent1"].Close()
	srv.mu.Unlock()
	waitFor(t, "the tunnel to drop", func() bool { return len(srv.Connected()) == 0 })
	waitFor(t, "the tunnel to come back", func() bool { return slices.Equal(srv.Connected(), []string{"agent1"}) })
	conn, resp = connectVia(t, socket, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT after reconnect: %s", resp.Status)
	}
	conn.Close()
}
