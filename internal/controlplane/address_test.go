package controlplane

import (
	"net"
	"testing"
)

// Every --bind-address a server accepts gives clients on the machine an
// address that listener really accepts on.
func TestLocalURL(t *testing.T) {
	for _, tc := range []struct {
		bind string
		want string
	}{
		{"", "https://127.0.0.1:6443"},
		{"0.0.0.0", "https://127.0.0.1:6443"},
		{"::", "https://127.0.0.1:6443"},
		{"[::]", "https://127.0.0.1:6443"}, // not an IP: validation refuses it; never dial it
		{"192.0.2.7", "https://192.0.2.7:6443"},
		{"127.0.0.2", "https://127.0.0.2:6443"},
		{"::1", "https://[::1]:6443"},
		{"fd00::7", "https://[fd00::7]:6443"},
		{"2001:DB8::7", "https://[2001:db8::7]:6443"},
		{"::ffff:192.0.2.7", "https://192.0.2.7:6443"},
	} {
		if got := LocalURL(tc.bind, 6443); got != tc.want {
			t.Errorf("LocalURL(%q, 6443) = %q, want %q", tc.bind, got, tc.want)
		}
	}
}

// The listener and the client agree: for each bind address a listener can
// open on this machine, a client dials LocalHost's answer and is accepted.
func TestLocalHostReachesListener(t *testing.T) {
	for _, bind := range []string{"", "0.0.0.0", "::", "127.0.0.1", "127.0.0.2", "::1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(bind, "0"))
		if err != nil {
			t.Logf("cannot listen on %q here (%v); skipping it", bind, err)
			continue
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		conn, err := net.Dial("tcp", net.JoinHostPort(LocalHost(bind), port))
		if err != nil {
			t.Errorf("bind %q: dialling %s: %v", bind, LocalHost(bind), err)
		} else {
			conn.Close()
		}
		ln.Close()
	}
}
