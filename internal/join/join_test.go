package join

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffkube/skiff/internal/pki"
)

type fixture struct {
	srv              *Server
	client           *fake.Clientset
	clientCA, server *pki.CA
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	clientCA, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), "client")
	if err != nil {
		t.Fatal(err)
	}
	serverCA, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), "server")
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	return fixture{
		srv: &Server{
			Secrets: func() []string { return []string{"server-secret", "agent-secret"} },
			CAs:     func() (*pki.CA, *pki.CA, error) { return clientCA, serverCA, nil },
			Client:  func() (kubernetes.Interface, error) { return client, nil },
			Cluster: Cluster{ClusterCIDR: "10.42.0.0/16", ClusterDNS: "10.43.0.10", FlannelBackend: "vxlan"},
		},
		client: client, clientCA: clientCA, server: serverCA,
	}
}

func (f fixture) post(t *testing.T, secret string, req Request) (int, string, *Response) {
	t.Helper()
	body, _ := json.Marshal(req)
	r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	if secret != "" {
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		return w.Code, w.Body.String(), nil
	}
	var resp Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return w.Code, "", &resp
}

func parse(t *testing.T, certPEM string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		t.Fatalf("no PEM in %q", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var agent = Request{NodeName: "edge-1", NodePassword: "0123456789abcdef0123", Hostname: "edge-1.lan", NodeIPs: []string{"192.0.2.10"}}

func TestJoinIssuesNodeCredentials(t *testing.T) {
	f := newFixture(t)
	code, msg, resp := f.post(t, "agent-secret", agent)
	if code != http.StatusOK {
		t.Fatalf("join: %d %s", code, msg)
	}
	pool := func(ca *pki.CA) *x509.CertPool { p := x509.NewCertPool(); p.AddCert(ca.Cert); return p }

	kc := parse(t, resp.KubeletClientCert)
	if kc.Subject.CommonName != "system:node:edge-1" || !slices.Equal(kc.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("kubelet client subject %v", kc.Subject)
	}
	if _, err := kc.Verify(x509.VerifyOptions{Roots: pool(f.clientCA), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client cert vs client CA: %v", err)
	}
	ks := parse(t, resp.KubeletServingCert)
	if _, err := ks.Verify(x509.VerifyOptions{Roots: pool(f.server), DNSName: "edge-1.lan"}); err != nil {
		t.Errorf("kubelet serving cert vs server CA for the host name: %v", err)
	}
	if err := ks.VerifyHostname("192.0.2.10"); err != nil {
		t.Errorf("kubelet serving cert lacks the node IP: %v", err)
	}
	if kp := parse(t, resp.KubeProxyCert); kp.Subject.CommonName != "system:kube-proxy" {
		t.Errorf("kube-proxy subject %v", kp.Subject)
	}
	for name, keyPEM := range map[string]string{"kubelet client": resp.KubeletClientKey, "kubelet serving": resp.KubeletServingKey, "kube-proxy": resp.KubeProxyKey} {
		if !strings.Contains(keyPEM, "PRIVATE KEY") {
			t.Errorf("%s key missing", name)
		}
	}
	if resp.ServerCA != string(f.server.CertPEM) || resp.Cluster.ClusterCIDR != "10.42.0.0/16" || resp.Cluster.FlannelBackend != "vxlan" {
		t.Errorf("cluster part: %+v", resp.Cluster)
	}

	sec, err := f.client.CoreV1().Secrets("kube-system").Get(t.Context(), PasswordSecretName("edge-1"), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no password secret: %v", err)
	}
	if sec.Type != PasswordSecretType || strings.Contains(string(sec.Data["hash"]), agent.NodePassword) {
		t.Errorf("password secret %v: must hold a hash, not the password", sec.Type)
	}
}

func TestJoinRefusals(t *testing.T) {
	f := newFixture(t)
	if code, _, _ := f.post(t, "server-secret", agent); code != http.StatusOK {
		t.Fatalf("first join: %d", code)
	}
	// The same machine again (same password) is welcome.
	if code, msg, _ := f.post(t, "server-secret", agent); code != http.StatusOK {
		t.Fatalf("rejoin with the same password: %d %s", code, msg)
	}
	other := agent
	other.NodePassword = "another-machine-password"
	cases := []struct {
		name     string
		secret   string
		req      Request
		status   int
		contains string
	}{
		{"no token", "", agent, http.StatusUnauthorized, "token not accepted"},
		{"wrong token", "guess", agent, http.StatusUnauthorized, "token not accepted"},
		{"name taken by another machine", "server-secret", other, http.StatusForbidden, "kubectl delete node edge-1"},
		{"bad node name", "server-secret", Request{NodeName: "Edge_1", NodePassword: agent.NodePassword, NodeIPs: agent.NodeIPs}, http.StatusBadRequest, "invalid node name"},
		{"short password", "server-secret", Request{NodeName: "n2", NodePassword: "short", NodeIPs: agent.NodeIPs}, http.StatusBadRequest, "at least 16"},
		{"bad IP", "server-secret", Request{NodeName: "n2", NodePassword: agent.NodePassword, NodeIPs: []string{"300.1.1.1"}}, http.StatusBadRequest, "invalid node IP"},
	}
	for _, c := range cases {
		code, msg, _ := f.post(t, c.secret, c.req)
		if code != c.status || !strings.Contains(msg, c.contains) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, code, msg, c.status, c.contains)
		}
	}
}

// postWithCert posts as a client presenting certPEM over TLS.
func (f fixture) postWithCert(t *testing.T, secret, certPEM string, req Request) (int, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	if secret != "" {
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{parse(t, certPEM)}}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// A joined node comes back with its kubelet client certificate when its
// token is gone; the certificate names the one node it may renew, the node
// password is still checked, and anything else that is not a current kubelet
// certificate of this cluster is no way in.
func TestRejoinWithNodeCertificate(t *testing.T) {
	f := newFixture(t)
	code, msg, resp := f.post(t, "agent-secret", agent)
	if code != http.StatusOK {
		t.Fatalf("join: %d %s", code, msg)
	}
	if code, msg := f.postWithCert(t, "deleted-token", resp.KubeletClientCert, agent); code != http.StatusOK {
		t.Errorf("rejoin with the node certificate and a deleted token: %d %s", code, msg)
	}
	if code, msg := f.postWithCert(t, "", resp.KubeletClientCert, agent); code != http.StatusOK {
		t.Errorf("rejoin with the node certificate and no token: %d %s", code, msg)
	}

	otherName := agent
	otherName.NodeName = "edge-2"
	otherPassword := agent
	otherPassword.NodePassword = "another-machine-password"
	// A certificate from another cluster's client CA.
	foreign, _, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "f.crt"), filepath.Join(t.TempDir(), "f.key"), "client")
	if err != nil {
		t.Fatal(err)
	}
	nodeSpec := pki.LeafSpec{CommonName: "system:node:edge-1", Organizations: []string{"system:nodes"}, Usage: pki.ClientAuth}
	foreignCert, _, err := foreign.IssueLeaf(nodeSpec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := f.clientCA.IssueLeaf(nodeSpec, time.Now().Add(-2*365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	notANode, _, err := f.clientCA.IssueLeaf(pki.LeafSpec{CommonName: "system:node:edge-1", Usage: pki.ClientAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		cert     string
		req      Request
		status   int
		contains string
	}{
		{"another node's name", resp.KubeletClientCert, otherName, http.StatusForbidden, `node "edge-1"'s, not "edge-2"'s`},
		{"another node password", resp.KubeletClientCert, otherPassword, http.StatusForbidden, "taken by another machine"},
		{"kube-proxy's certificate", resp.KubeProxyCert, agent, http.StatusUnauthorized, "may have expired or been deleted"},
		{"another cluster's CA", string(foreignCert), agent, http.StatusUnauthorized, "token not accepted"},
		{"expired certificate", string(expired), agent, http.StatusUnauthorized, "token not accepted"},
		{"not in system:nodes", string(notANode), agent, http.StatusUnauthorized, "token not accepted"},
	} {
		code, msg := f.postWithCert(t, "deleted-token", c.cert, c.req)
		if code != c.status || !strings.Contains(msg, c.contains) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, code, msg, c.status, c.contains)
		}
	}
}

// A machine whose Node was deleted (and with it the stored node password)
// cannot come back on the certificate it kept; with a token it can.
func TestRejoinRefusedAfterNodeDeleted(t *testing.T) {
	f := newFixture(t)
	code, msg, resp := f.post(t, "agent-secret", agent)
	if code != http.StatusOK {
		t.Fatalf("join: %d %s", code, msg)
	}
	secret := PasswordSecretName(agent.NodeName)
	if err := f.client.CoreV1().Secrets(PasswordSecretNamespace).Delete(context.Background(), secret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	code, msg = f.postWithCert(t, "", resp.KubeletClientCert, agent)
	if code != http.StatusForbidden || !strings.Contains(msg, "was removed from the cluster") {
		t.Errorf("certificate rejoin of a deleted node: %d %q, want 403 saying it was removed", code, msg)
	}
	if _, err := f.client.CoreV1().Secrets(PasswordSecretNamespace).Get(context.Background(), secret, metav1.GetOptions{}); err == nil {
		t.Error("the refused rejoin stored a node password")
	}
	if code, msg, _ := f.post(t, "agent-secret", agent); code != http.StatusOK {
		t.Errorf("join with a token after the node was deleted: %d %s", code, msg)
	}
}

func publicPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	p, err := pki.EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// A renewing node sends its public keys: the certificates are for them and
// no key comes back, so its certificate and key never disagree.
func TestJoinSignsTheNodesKeys(t *testing.T) {
	f := newFixture(t)
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serving, _ := rsa.GenerateKey(rand.Reader, 2048)
	req := agent
	req.PublicKeys = map[string]string{LeafKubeletClient: publicPEM(t, client.Public()), LeafKubeletServing: publicPEM(t, serving.Public())}
	code, msg, resp := f.post(t, "agent-secret", req)
	if code != http.StatusOK {
		t.Fatalf("join: %d %s", code, msg)
	}
	if kc := parse(t, resp.KubeletClientCert); !client.PublicKey.Equal(kc.PublicKey) || resp.KubeletClientKey != "" {
		t.Errorf("kubelet client certificate is not for the sent key (key returned: %v)", resp.KubeletClientKey != "")
	}
	if ks := parse(t, resp.KubeletServingCert); !serving.PublicKey.Equal(ks.PublicKey) || resp.KubeletServingKey != "" {
		t.Errorf("kubelet serving certificate is not for the sent key (key returned: %v)", resp.KubeletServingKey != "")
	}
	// Leaves without a sent key get a new one, as on the first join.
	if _, err := tls.X509KeyPair([]byte(resp.KubeProxyCert), []byte(resp.KubeProxyKey)); err != nil {
		t.Errorf("kube-proxy pair: %v", err)
	}
}

func TestJoinRefusesBadPublicKeys(t *testing.T) {
	f := newFixture(t)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	good, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, _ := x509.MarshalECPrivateKey(good)
	for name, keys := range map[string]map[string]string{
		"not PEM":      {LeafKubeletClient: "hello"},
		"private key":  {LeafFlannel: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}))},
		"garbage DER":  {LeafKubeProxy: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("nope")}))},
		"weak RSA":     {LeafKubeletServing: publicPEM(t, weak.Public())},
		"unknown leaf": {"etcd": publicPEM(t, good.Public())},
	} {
		req := agent
		req.PublicKeys = keys
		code, msg, _ := f.post(t, "agent-secret", req)
		var leaf string
		for k := range keys {
			leaf = k
		}
		if code != http.StatusBadRequest || !strings.Contains(msg, leaf) {
			t.Errorf("%s: %d %q, want 400 naming %s", name, code, msg, leaf)
		}
	}
}

// The kubelet serving certificate is signed by the server CA, which also
// signs the apiserver's: it must not answer to the apiserver's names.
func TestJoinKeepsApiserverNamesOutOfKubeletCerts(t *testing.T) {
	f := newFixture(t)
	f.srv.Cluster.ServiceCIDR = "10.43.0.0/16,fd00:43::/112"
	f.srv.Cluster.ClusterDomain = "cluster.local"
	f.srv.TLSSANs = []string{"API.example.com", "203.0.113.5"}

	req := agent
	req.Hostname = "bad host"
	if code, msg, _ := f.post(t, "agent-secret", req); code != http.StatusBadRequest || !strings.Contains(msg, `"bad host"`) {
		t.Errorf("invalid hostname: %d %q, want 400 naming it", code, msg)
	}
	for _, hostname := range []string{"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "api.example.com", "localhost", "kubernetes"} {
		req := agent
		req.Hostname = hostname
		req.NodeIPs = []string{"192.0.2.10", "10.43.0.1", "127.0.0.1", "::1", "fd00:43::1", "203.0.113.5"}
		code, msg, resp := f.post(t, "agent-secret", req)
		if code != http.StatusOK {
			t.Fatalf("join as %s: %d %s", hostname, code, msg)
		}
		ks := parse(t, resp.KubeletServingCert)
		if !slices.Equal(ks.DNSNames, []string{"edge-1"}) {
			t.Errorf("hostname %s: DNS names %v, want only the node name", hostname, ks.DNSNames)
		}
		if len(ks.IPAddresses) != 1 || !ks.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) {
			t.Errorf("hostname %s: IPs %v, want only the node's own", hostname, ks.IPAddresses)
		}
	}
	// The node name and hostname stay.
	_, _, resp := f.post(t, "agent-secret", agent)
	if ks := parse(t, resp.KubeletServingCert); !slices.Equal(ks.DNSNames, []string{"edge-1", "edge-1.lan"}) {
		t.Errorf("DNS names %v, want the node name and hostname", ks.DNSNames)
	}
}
