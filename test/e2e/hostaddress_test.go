package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/internal/token"
)

// hostAddress is an IPv4 address of one of this machine's own interfaces,
// not loopback: traffic to it stays on the machine. The default-route
// interface comes first: bridges and links that other tests' nodes made
// (cni0, flannel, a harness bridge) may come and go while the test runs.
func hostAddress(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if route, err := os.ReadFile("/proc/net/route"); err == nil {
		for _, line := range strings.Split(string(route), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 1 && f[1] == "00000000" {
				if iface, err := net.InterfaceByName(f[0]); err == nil {
					ifaces = append([]net.Interface{*iface}, ifaces...)
				}
				break
			}
		}
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine")
	return ""
}

// TestServerOnHostAddress runs a server with --bind-address set to one of
// the host's own addresses and checks, on that one server: the admin
// kubeconfig is written as soon as the API answers and names an address the
// server listens on, so `skiff kubectl` and `skiff token create` work; and
// service-account issuer discovery publishes a jwks_uri on the supervisor's
// address and port that a service-account token can fetch.
func TestServerOnHostAddress(t *testing.T) {
	ip := hostAddress(t)
	s := newServer(t, "--bind-address", ip)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	if err := s.waitFor("apiserver ready in", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Written before the controllers phase, not at "ready": while a start
	// is slow, kubectl already works.
	kc, err := os.ReadFile(s.Kubeconfig)
	if err != nil {
		t.Fatalf("no admin kubeconfig once the API answered: %v", err)
	}
	supervisor := net.JoinHostPort(ip, strconv.Itoa(s.Port))
	if !strings.Contains(string(kc), "server: https://"+supervisor+"\n") {
		t.Errorf("admin kubeconfig does not name the bind address %s:\n%s", supervisor, kc)
	}
	if err := s.waitFor("skiff server ready in", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The port is not open on loopback: a client that dialled 127.0.0.1
	// would be refused.
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), 2*time.Second); err == nil {
		conn.Close()
		t.Fatalf("the supervisor answers on 127.0.0.1 with --bind-address %s", ip)
	}

	env := []string{"SKIFF_WRITE_KUBECONFIG=" + s.Kubeconfig}
	if out, err := runToExitEnv(t, env, s.bin, "kubectl", "get", "namespace", "kube-system", "-o", "name"); err != nil || !strings.Contains(out, "namespace/kube-system") {
		t.Errorf("skiff kubectl with --bind-address %s: %v\n%s", ip, err, out)
	}
	out, err := runToExitEnv(t, env, s.bin, "token", "create", "--ttl", "10m")
	if err != nil {
		t.Errorf("skiff token create with --bind-address %s: %v\n%s", ip, err, out)
	} else if _, err := token.Parse(out); err != nil {
		t.Errorf("token create printed %q: %v", out, err)
	}

	t.Run("service-account issuer discovery", func(t *testing.T) {
		ctx := context.Background()
		c := s.Client()
		sa, err := c.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "oidc-e2e"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := c.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pem, err := os.ReadFile(filepath.Join(s.DataDir, "server", "tls", "server-ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		fetch := func(u string, into any) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			req.Header.Set("Authorization", "Bearer "+tr.Status.Token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", u, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s with a service-account token: %s", u, resp.Status)
			}
			if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
				t.Fatalf("GET %s: %v", u, err)
			}
		}
		var disco struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		fetch("https://"+supervisor+"/.well-known/openid-configuration", &disco)
		if disco.Issuer != "https://kubernetes.default.svc.cluster.local" {
			t.Errorf("issuer %q", disco.Issuer)
		}
		u, err := url.Parse(disco.JWKSURI)
		if err != nil || u.Host != supervisor || u.Path != "/openid/v1/jwks" {
			t.Fatalf("jwks_uri %q, want https://%s/openid/v1/jwks", disco.JWKSURI, supervisor)
		}
		var jwks struct {
			Keys []struct {
				KID string `json:"kid"`
			} `json:"keys"`
		}
		fetch(disco.JWKSURI, &jwks)
		// The token's signing key is among the published ones.
		header, err := base64.RawURLEncoding.DecodeString(strings.Split(tr.Status.Token, ".")[0])
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			KID string `json:"kid"`
		}
		_ = json.Unmarshal(header, &h)
		found := false
		for _, k := range jwks.Keys {
			found = found || (k.KID == h.KID && h.KID != "")
		}
		if !found {
			t.Errorf("the token's key %q is not in the published JWKS %+v", h.KID, jwks.Keys)
		}
	})
}
