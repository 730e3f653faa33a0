package probe

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthCheck(t *testing.T) {
	healthy := true
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if !healthy {
			http.Error(w, "[-]poststarthook/rbac failed: not finished", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().(*net.TCPAddr)

	h := NewHealth(net.IPv4zero, addr.Port)
	if err := h.Check(false); err == nil || err.Error() != "not running" {
		t.Fatalf("stopped component: %v", err)
	}
	if err := h.Check(true); err != nil {
		t.Fatalf("healthy component: %v", err)
	}
	healthy = false
	err := h.Check(true)
	if err == nil || !strings.Contains(err.Error(), "rbac failed") {
		t.Fatalf("an unhealthy answer should say which check failed: %v", err)
	}
	if err := NewHealth(nil, 0).Check(true); err != nil {
		t.Fatalf("a component without a port is ready when running: %v", err)
	}
}
