package netutil

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-accepted
}

func TestSpliceHalfClosesAndFinishes(t *testing.T) {
	client, proxyIn := tcpPair(t)
	proxyOut, server := tcpPair(t)
	finished := make(chan struct{})
	go func() { Splice(context.Background(), proxyIn, proxyOut); close(finished) }()

	// A request read to EOF, then a reply on the same connection.
	if _, err := io.WriteString(client, "request"); err != nil {
		t.Fatal(err)
	}
	_ = client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v; want the request and EOF", got, err)
	}
	if _, err := io.WriteString(server, "reply"); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "reply" {
		t.Fatalf("client read %q, %v; want the reply after its own half-close", got, err)
	}
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not return once both directions ended")
	}
}

func TestSpliceStopsWithContext(t *testing.T) {
	_, proxyIn := tcpPair(t)
	proxyOut, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() { Splice(ctx, proxyIn, proxyOut); close(finished) }()
	cancel()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("Splice ignored its context")
	}
}
