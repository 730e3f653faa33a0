package joinclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/internal/token"
)

// testServer is a supervisor stand-in: /cacerts and the real join handler, over
// TLS with a certificate from the server CA.
func testServer(t *testing.T) (url string, serverCA *pki.CA) {
	t.Helper()
	url, serverCA, _ = testServerWith(t, func() []string { return []string{"cluster-secret"} })
	return url, serverCA
}

// testServerWith accepts the token secrets that secrets returns at each
// request, and asks for client certificates as the supervisor does.
func testServerWith(t *testing.T, secrets func() []string) (url string, serverCA, clientCA *pki.CA) {
	t.Helper()
	dir := t.TempDir()
	clientCA, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), "client")
	if err != nil {
		t.Fatal(err)
	}
	serverCA, _, err = pki.LoadOrCreateCA(filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), "server")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := serverCA.IssueLeaf(pki.LeafSpec{CommonName: "test", IPs: []net.IP{net.IPv4(127, 0, 0, 1).To4()}, Usage: pki.ServerAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cacerts", func(w http.ResponseWriter, _ *http.Request) { w.Write(serverCA.CertPEM) })
	mux.Handle("POST "+join.Path, &join.Server{
		Secrets: secrets,
		CAs:     func() (*pki.CA, *pki.CA, error) { return clientCA, serverCA, nil },
		Client:  func() (kubernetes.Interface, error) { return client, nil },
		Cluster: join.Cluster{ClusterCIDR: "10.42.0.0/16"},
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, serverCA, clientCA
}

func TestJoinWritesCredentialsAndKeepsPassword(t *testing.T) {
	url, serverCA := testServer(t)
	l := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	req := Request{ServerURL: url, Token: token.Token{CAHash: token.HashCA(serverCA.CertPEM), Username: "node", Secret: "cluster-secret"}, NodeName: "edge-1", NodeIPs: []string{"192.0.2.9"}}

	resp, err := Run(context.Background(), req, l, log)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Cluster.ClusterCIDR != "10.42.0.0/16" {
		t.Errorf("cluster config %+v", resp.Cluster)
	}
	if strings.Contains(logs.String(), "not verified") {
		t.Error("warned about the CA with a pinned token")
	}
	for _, f := range []string{l.ClientKubelet().Key, l.ServingKubelet().Key, l.ClientKubeProxy().Key, l.KubeletKubeconfig(), l.KubeProxyKubeconfig()} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatalf("missing %s", f)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	pw1, _ := os.ReadFile(filepath.Join(l.AgentDir(), "node-password"))
	// A second join of the same machine reuses its password and is accepted.
	if _, err := Run(context.Background(), req, l, log); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if pw2, _ := os.ReadFile(filepath.Join(l.AgentDir(), "node-password")); string(pw1) != string(pw2) {
		t.Error("node password changed between joins")
	}
	// Another machine (another data dir) under the same name is refused.
	other := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	if _, err := Run(context.Background(), req, other, log); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("second machine with the same name: %v", err)
	}
}

func TestJoinRefusals(t *testing.T) {
	url, serverCA := testServer(t)
	l := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	base := Request{ServerURL: url, NodeName: "edge-2", NodeIPs: []string{"192.0.2.9"}}

	wrongPin := base
	wrongPin.Token = token.Token{CAHash: strings.Repeat("ab", 32), Username: "node", Secret: "cluster-secret"}
	_, err := Run(context.Background(), wrongPin, l, log)
	if err == nil || !strings.Contains(err.Error(), strings.Repeat("ab", 32)) || !strings.Contains(err.Error(), token.HashCA(serverCA.CertPEM)) {
		t.Errorf("wrong CA pin: %v (want both hashes)", err)
	}

	wrongSecret := base
	wrongSecret.Token = token.Token{CAHash: token.HashCA(serverCA.CertPEM), Username: "node", Secret: "guess"}
	if _, err := Run(context.Background(), wrongSecret, l, log); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong secret: %v", err)
	}

	short := base
	short.Token = token.Token{Secret: "cluster-secret"}
	if _, err := Run(context.Background(), short, l, log); err != nil {
		t.Fatalf("short token: %v", err)
	}
	if !strings.Contains(logs.String(), "was not verified") {
		t.Errorf("no warning for a short token; logs: %s", logs.String())
	}
}

// A joined agent restarts after its token is deleted: it presents the
// kubelet client certificate it holds, and the server renews its
// credentials. Without credentials of its own the same token is refused with
// a message that says the token may have expired or been deleted.
func TestRejoinAfterTokenDeleted(t *testing.T) {
	valid := true
	url, serverCA, _ := testServerWith(t, func() []string {
		if valid {
			return []string{"token-create-secret"}
		}
		return nil
	})
	l := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	req := Request{ServerURL: url, Token: token.Token{CAHash: token.HashCA(serverCA.CertPEM), Username: "node", Secret: "token-create-secret"}, NodeName: "edge-1", NodeIPs: []string{"192.0.2.9"}}
	if _, err := Run(context.Background(), req, l, log); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(l.ClientKubelet().Cert)
	valid = false
	if _, err := Run(context.Background(), req, l, log); err != nil {
		t.Fatalf("restart after the token was deleted: %v", err)
	}
	if after, _ := os.ReadFile(l.ClientKubelet().Cert); bytes.Equal(before, after) {
		t.Error("the rejoin did not renew the kubelet client certificate")
	}

	fresh := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	_, err := Run(context.Background(), req, fresh, log)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Status != http.StatusUnauthorized ||
		!strings.Contains(err.Error(), "may have expired or been deleted") || !strings.Contains(err.Error(), "not joined before") {
		t.Errorf("first join with a deleted token: %v", err)
	}
}

// NodeCertificate offers the node's kubelet certificate only when it is this
// node's, from the cluster the token pins, and current.
func TestNodeCertificate(t *testing.T) {
	url, serverCA, _ := testServerWith(t, func() []string { return []string{"s"} })
	l := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	req := Request{ServerURL: url, Token: token.Token{Secret: "s"}, NodeName: "edge-1", NodeIPs: []string{"192.0.2.9"}}
	now := time.Now()
	if cert, why := NodeCertificate(l, "edge-1", serverCA.CertPEM, now); cert != nil || why != "not joined before" {
		t.Errorf("empty data dir: %v %q", cert, why)
	}
	if _, err := JoinWithCA(context.Background(), req, l, serverCA.CertPEM); err != nil {
		t.Fatal(err)
	}
	otherCA, _, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "o.crt"), filepath.Join(t.TempDir(), "o.key"), "other")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		node   string
		ca     []byte
		now    time.Time
		ok     bool
		reason string
	}{
		{"joined, current", "edge-1", serverCA.CertPEM, now, true, ""},
		{"another node name", "edge-2", serverCA.CertPEM, now, false, `not "edge-2"'s`},
		{"token pins another CA", "edge-1", otherCA.CertPEM, now, false, "another server CA"},
		{"expired", "edge-1", serverCA.CertPEM, now.Add(400 * 24 * time.Hour), false, "expired"},
	} {
		cert, why := NodeCertificate(l, c.node, c.ca, c.now)
		if (cert != nil) != c.ok || !strings.Contains(why, c.reason) {
			t.Errorf("%s: cert %v, reason %q; want ok=%v, reason containing %q", c.name, cert != nil, why, c.ok, c.reason)
		}
	}
	// A client CA that did not sign it (the cluster was reinstalled).
	if err := os.WriteFile(l.ClientCA(), otherCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if cert, why := NodeCertificate(l, "edge-1", serverCA.CertPEM, now); cert != nil || !strings.Contains(why, "unknown authority") {
		t.Errorf("certificate not from the saved client CA: %v %q", cert != nil, why)
	}
	// Damaged files are no credentials.
	if err := os.WriteFile(l.ClientKubelet().Key, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cert, _ := NodeCertificate(l, "edge-1", serverCA.CertPEM, now); cert != nil {
		t.Error("a damaged key was offered")
	}
}

// A rejoin sends the node's public keys: the keys stay byte for byte, only
// the certificates change, and each fits its key.
func TestRejoinKeepsKeys(t *testing.T) {
	url, serverCA := testServer(t)
	l := node.Layout{DataDir: t.TempDir(), RunDir: t.TempDir()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	req := Request{ServerURL: url, Token: token.Token{CAHash: token.HashCA(serverCA.CertPEM), Username: "node", Secret: "cluster-secret"}, NodeName: "edge-1", NodeIPs: []string{"192.0.2.9"}}
	if _, err := Run(context.Background(), req, l, log); err != nil {
		t.Fatal(err)
	}
	if got := ExistingPublicKeys(l); len(got) != len(join.Leaves) {
		t.Fatalf("public keys of %d leaves after the first join, want %d", len(got), len(join.Leaves))
	}
	pairs := leafPairs(l)
	read := func(p string) []byte {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	keys, certs := map[string][]byte{}, map[string][]byte{}
	for name, p := range pairs {
		keys[name], certs[name] = read(p.Key), read(p.Cert)
	}
	resp, err := Run(context.Background(), req, l, log)
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if resp.KubeletClientKey != "" || resp.KubeletServingKey != "" || resp.KubeProxyKey != "" || resp.FlannelKey != "" {
		t.Error("the server sent new keys to a node that sent its public keys")
	}
	for name, p := range pairs {
		if !bytes.Equal(read(p.Key), keys[name]) {
			t.Errorf("%s: key changed on rejoin", p.Key)
		}
		if bytes.Equal(read(p.Cert), certs[name]) {
			t.Errorf("%s: certificate not renewed", p.Cert)
		}
		if _, err := tls.LoadX509KeyPair(p.Cert, p.Key); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// An answer whose certificate is not for the node's key is refused
	// before anything is written.
	other, _, err := serverCA.IssueLeaf(pki.LeafSpec{CommonName: "edge-1", Usage: pki.ServerAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bad := *resp
	bad.KubeletServingCert = string(other)
	before := read(l.ClientKubelet().Cert)
	if err := WriteCredentials(l, &bad, url); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("mismatched certificate: %v", err)
	}
	if !bytes.Equal(read(l.ClientKubelet().Cert), before) {
		t.Error("a refused answer was partly written")
	}
}
