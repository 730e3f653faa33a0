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
