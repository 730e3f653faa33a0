package loadbalancer

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// echoServer answers every connection with its name.
func echoServer(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, name)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

func ask(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestFailoverAndServerUpdates(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	// A port nothing listens on: a server that is down.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	lb := New("127.0.0.1:0", []string{deadAddr, a.Addr().String()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := lb.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer lb.Stop()

	if got := ask(t, lb.Addr()); got != "a" {
		t.Fatalf("with the first server down got %q, want a", got)
	}
	// The server that answered is tried first from now on.
	if got := ask(t, lb.Addr()); got != "a" {
		t.Fatalf("second connection got %q", got)
	}
	lb.SetServers([]string{b.Addr().String(), a.Addr().String()})
	a.Close()
	if got := ask(t, lb.Addr()); got != "b" {
		t.Fatalf("after a failed and the list changed got %q, want b", got)
	}
	if s := lb.Servers(); len(s) != 2 || s[0] != b.Addr().String() {
		t.Errorf("servers %v", s)
	}
	b.Close()
	if got := ask(t, lb.Addr()); got != "" {
		t.Errorf("with every server down got %q, want a closed connection", got)
	}
}

func TestPortInUseFailsInit(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	lb := New(ln.Addr().String(), []string{"127.0.0.1:1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := lb.Init(context.Background()); err == nil {
		t.Fatal("Init succeeded on a port in use")
	}
}

func TestServersFromTheKubernetesService(t *testing.T) {
	c := fake.NewClientset(&corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.2"}, {IP: "10.0.0.1"}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: 6443}},
		}},
	})
	got, err := Servers(context.Background(), c, "server.example:6443")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:6443", "10.0.0.2:6443", "server.example:6443"}
	if !slices.Equal(got, want) {
		t.Errorf("servers %v, want %v", got, want)
	}
	if got, _ := Servers(context.Background(), c, "10.0.0.2:6443"); len(got) != 2 {
		t.Errorf("seed listed twice: %v", got)
	}
}

// holdServer answers every connection with its name and keeps it open (a
// watch), until the peer closes it.
func holdServer(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, name)
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

// A server that leaves the list has its open connections closed, so that a
// client (the kubelet's watches) reconnects, through the load balancer, to
// a server that is still there.
func TestServerThatLeavesHasItsConnectionsClosed(t *testing.T) {
	a, b := holdServer(t, "a"), holdServer(t, "b")
	lb := New("127.0.0.1:0", []string{a.Addr().String(), b.Addr().String()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := lb.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer lb.Stop()

	watch, err := net.Dial("tcp", lb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(watch, buf); err != nil || string(buf) != "a" {
		t.Fatalf("first server: %q, %v", buf, err)
	}
	// b's list change leaves a's connection alone.
	lb.SetServers([]string{a.Addr().String()})
	lb.SetServers([]string{a.Addr().String(), b.Addr().String()})

	other, err := net.Dial("tcp", lb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := io.ReadFull(other, buf); err != nil || string(buf) != "a" {
		t.Fatalf("second connection: %q, %v", buf, err)
	}

	lb.SetServers([]string{b.Addr().String()})
	// Both connections to a end: the reads return (EOF), rather than hang.
	for _, c := range []net.Conn{watch, other} {
		if n, err := c.Read(buf); err == nil {
			t.Errorf("connection to the server that left still open (read %d bytes)", n)
		}
	}
	reconnect, err := net.Dial("tcp", lb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer reconnect.Close()
	if _, err := io.ReadFull(reconnect, buf); err != nil || string(buf) != "b" {
		t.Fatalf("after a left: %q, %v; want b", buf, err)
	}
}

func TestNoServerListedKeepsTheList(t *testing.T) {
	c := fake.NewClientset(&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"}})
	if got, err := Servers(context.Background(), c, "server.example:6443"); err == nil {
		t.Errorf("servers %v from endpoints that list none, want an error", got)
	}
}
