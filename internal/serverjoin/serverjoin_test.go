package serverjoin

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/internal/token"
)

var settings = bootstrap.Settings{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}

const (
	agentSecret     = "agentsecretagentsecret"
	bootstrapSecret = "abcdef.0123456789abcdef"
)

// cluster is a first server's data dir and its supervisor's two routes.
type cluster struct {
	l       controlplane.Layout
	token   token.Token
	url     string
	members func(context.Context) ([]string, error)
	// replaced is the secret Handler.Replaced reports ("": none).
	replaced string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{l: controlplane.Layout{DataDir: t.TempDir()}}
	ca, _, err := pki.LoadOrCreateCA(c.l.ServerCA().Cert, c.l.ServerCA().Key, "test-server-ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.LoadOrCreateCA(c.l.EtcdServerCA().Cert, c.l.EtcdServerCA().Key, "test-etcd-ca"); err != nil {
		t.Fatal(err)
	}
	c.token = token.Token{CAHash: token.HashCA(ca.CertPEM), Username: "server", Secret: "serversecretserversecret"}
	if err := os.WriteFile(c.l.TokenFile(), []byte(c.token.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueLeaf(pki.LeafSpec{CommonName: "supervisor", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.ServerAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c.members = func(context.Context) ([]string, error) { return []string{"https://10.0.0.1:2379"}, nil }
	h := &Handler{
		Layout:           c.l,
		Settings:         settings,
		Members:          func(ctx context.Context) ([]string, error) { return c.members(ctx) },
		JoinSecrets:      func() []string { return []string{c.token.Secret, agentSecret} },
		IsBootstrapToken: func(_ context.Context, given string) bool { return given == bootstrapSecret },
		Replaced:         func(secret string) bool { return c.replaced != "" && secret == c.replaced },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cacerts", func(w http.ResponseWriter, _ *http.Request) { w.Write(ca.CertPEM) })
	mux.Handle("GET "+Path, h)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

func TestFetchWithTheServerToken(t *testing.T) {
	c := newCluster(t)
	joiner := controlplane.Layout{DataDir: t.TempDir()}
	resp, pinned, err := Fetch(context.Background(), c.url, c.token, joiner)
	if err != nil {
		t.Fatal(err)
	}
	if !pinned {
		t.Error("a full token's pin was not checked")
	}
	if resp.Bootstrap.Settings != settings || len(resp.EtcdMembers) != 1 {
		t.Fatalf("answer %+v", resp)
	}
	for _, f := range []string{"server/tls/server-ca.key", "server/tls/etcd/server-ca.key", "server/token"} {
		if resp.Bootstrap.Files[f] == nil {
			t.Errorf("bootstrap data lacks %s", f)
		}
	}
	if err := resp.Check(settings, joiner, c.url); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRefusals(t *testing.T) {
	c := newCluster(t)
	joiner := controlplane.Layout{DataDir: t.TempDir()}
	withSecret := func(s string) token.Token { tk := c.token; tk.Secret = s; return tk }
	for _, tc := range []struct {
		name   string
		token  token.Token
		status int
		want   string
	}{
		{"agent token", withSecret(agentSecret), http.StatusForbidden, "agent tokens cannot join servers; use the server token from <data-dir>/server/token"},
		{"bootstrap token", withSecret(bootstrapSecret), http.StatusForbidden, "agent tokens cannot join servers"},
		{"wrong token", withSecret("wrongwrongwrongwrong"), http.StatusUnauthorized, "token not accepted"},
	} {
		_, _, err := Fetch(context.Background(), c.url, tc.token, joiner)
		var re *RefusedError
		if !errors.As(err, &re) || re.Status != tc.status || !strings.Contains(re.Message, tc.want) {
			t.Errorf("%s: got %v, want %d %q", tc.name, err, tc.status, tc.want)
		}
	}
	other := c.token
	other.CAHash = strings.Repeat("0", len(other.CAHash))
	if _, _, err := Fetch(context.Background(), c.url, other, joiner); err == nil || errors.As(err, new(*RefusedError)) {
		t.Errorf("a token pinning another CA: got %v, want a pin error before asking", err)
	}
	if entries, _ := os.ReadDir(joiner.DataDir); len(entries) != 0 {
		t.Errorf("a refused fetch wrote %v", entries)
	}
	c.members = func(context.Context) ([]string, error) { return nil, ErrNoEmbeddedEtcd }
	_, _, err := Fetch(context.Background(), c.url, c.token, joiner)
	var re *RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusConflict || !strings.Contains(re.Message, "--cluster-init") {
		t.Errorf("a server without embedded etcd: got %v", err)
	}
}

func TestCheckRefusesOtherSettingsAndOtherCAs(t *testing.T) {
	c := newCluster(t)
	joiner := controlplane.Layout{DataDir: t.TempDir()}
	resp, _, err := Fetch(context.Background(), c.url, c.token, joiner)
	if err != nil {
		t.Fatal(err)
	}
	mine := settings
	mine.ClusterCIDR = "10.52.0.0/16"
	err = resp.Check(mine, joiner, c.url)
	if err == nil || !strings.Contains(err.Error(), `--cluster-cidr: this server has "10.52.0.0/16", the cluster has "10.42.0.0/16"`) {
		t.Errorf("settings mismatch: got %v", err)
	}
	if _, _, err := pki.LoadOrCreateCA(joiner.ServerCA().Cert, joiner.ServerCA().Key, "mine"); err != nil {
		t.Fatal(err)
	}
	err = resp.Check(settings, joiner, c.url)
	if err == nil || !strings.Contains(err.Error(), filepath.ToSlash("server/tls/server-ca.crt")) {
		t.Errorf("another cluster's CA in the data dir: got %v", err)
	}
}

// A server whose token the cluster rotated away from (it could not follow
// the rotation) refuses joins with it, and takes them again once it has
// the new one.
func TestFetchRefusesAReplacedServerToken(t *testing.T) {
	c := newCluster(t)
	joiner := controlplane.Layout{DataDir: t.TempDir()}
	c.replaced = c.token.Secret
	_, _, err := Fetch(context.Background(), c.url, c.token, joiner)
	var re *RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusUnauthorized || !strings.Contains(re.Message, "rotated") {
		t.Fatalf("join with a replaced server token: got %v, want 401 saying it was rotated", err)
	}
	if entries, _ := os.ReadDir(joiner.DataDir); len(entries) != 0 {
		t.Errorf("a refused fetch wrote %v", entries)
	}
	c.replaced = ""
	if _, _, err := Fetch(context.Background(), c.url, c.token, joiner); err != nil {
		t.Fatalf("join once the token is current again: %v", err)
	}
}
