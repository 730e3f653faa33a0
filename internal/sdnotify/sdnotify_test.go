package sdnotify

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, path
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestClaimedSocketGetsReadyAndStopping(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, path := listen(t)
	t.Setenv(EnvSocket, path)
	t.Cleanup(func() { socket = "" })

	Claim()
	if v, ok := os.LookupEnv(EnvSocket); ok {
		t.Fatalf("%s still in the environment after Claim: %q", EnvSocket, v)
	}
	Claim() // a second call keeps the socket
	Ready(log)
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("first message %q, want READY=1", got)
	}
	Stopping(log)
	if got := receive(t, conn); got != "STOPPING=1" {
		t.Errorf("second message %q, want STOPPING=1", got)
	}
	if v, ok := os.LookupEnv(EnvSocket); ok {
		t.Errorf("%s left in the environment after sending: %q", EnvSocket, v)
	}
}

func TestNoSocketNoMessage(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Cleanup(func() { socket = "" })
	_ = os.Unsetenv(EnvSocket)
	Claim()
	Ready(log) // nothing to send to, nothing fails
	Stopping(log)
	if socket != "" {
		t.Errorf("socket %q claimed without %s", socket, EnvSocket)
	}
}
