package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/pki"
)

// forgeLeaf replaces the leaf certPath (key keyPath) with one signed by the
// CA caCert/caKey, with the same subject, SANs, usages and key, that expires
// at notAfter: a certificate about to expire, as a year of running makes.
func forgeLeaf(t *testing.T, certPath, caCert, caKey string, notAfter time.Time) {
	t.Helper()
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	old, err := pki.ReadCert(certPath)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: old.Subject.CommonName, Organization: old.Subject.Organization},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage, BasicConstraintsValid: true,
		DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, old.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644, 0o700); err != nil {
		t.Fatal(err)
	}
}

func notAfter(t *testing.T, path string) time.Time {
	t.Helper()
	c, err := pki.ReadCert(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// TestCertificateRenewalOnline forges leaf certificates of a running server
// and agent to expire in 10 days and checks that they are renewed while both
// run, and that kubectl (a fresh connection), the agent's kubelet and its
// tunnel keep working without a restart. Then `skiff certificate check`
// shows the renewed files and `rotate --service` re-issues (and refuses an
// unknown service).
func TestCertificateRenewalOnline(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	s := newServer(t)
	s.Start()
	raw, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	agentDir := filepath.Join(t.TempDir(), "agent")
	buildWebImage(t, filepath.Join(agentDir, "agent", "images", "web.tar"))
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "killall", "--data-dir", agentDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	lbPort := strconv.Itoa(freePort(t))
	a := startAgent(t, "--server", s.URL(), "--token", strings.TrimSpace(string(raw)), "--data-dir", agentDir, "--lb-server-port", lbPort)
	a.waitFor(t, "skiff agent ready in", 2*time.Minute)
	c := s.Client()
	pods := deployWeb(t, c, 1)
	nodeName := pods[0].Spec.NodeName
	serverPID, agentPID := s.cmd.Process.Pid, a.cmd.Process.Pid

	stls := filepath.Join(s.DataDir, "server", "tls")
	atls := filepath.Join(agentDir, "agent", "tls")
	forged := []struct{ cert, caCert, caKey string }{
		{filepath.Join(stls, "serving-kube-apiserver.crt"), filepath.Join(stls, "server-ca.crt"), filepath.Join(stls, "server-ca.key")},
		{filepath.Join(stls, "client-admin.crt"), filepath.Join(stls, "client-ca.crt"), filepath.Join(stls, "client-ca.key")},
		// The agent's kubelet client certificate is its tunnel's too.
		{filepath.Join(atls, "client-kubelet.crt"), filepath.Join(stls, "client-ca.crt"), filepath.Join(stls, "client-ca.key")},
		{filepath.Join(atls, "serving-kubelet.crt"), filepath.Join(stls, "server-ca.crt"), filepath.Join(stls, "server-ca.key")},
	}
	// The agent renews by joining again, sending its public keys: its keys
	// stay, only the certificates change.
	agentKeys := map[string][]byte{}
	for _, f := range forged[2:] {
		key := strings.TrimSuffix(f.cert, ".crt") + ".key"
		data, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		agentKeys[key] = data
	}
	soon := time.Now().Add(10 * 24 * time.Hour)
	for _, f := range forged {
		forgeLeaf(t, f.cert, f.caCert, f.caKey, soon)
		if d := time.Until(notAfter(t, f.cert)); d > 11*24*time.Hour {
			t.Fatalf("forging %s: expires in %v", f.cert, d)
		}
	}
	renewedAt := time.Now()
	// Noticed by the file watch, not by a knob: renewal is due 90 days
	// before expiry.
	for _, f := range forged {
		waitRenewed(t, f.cert)
	}
	for key, before := range agentKeys {
		if after, err := os.ReadFile(key); err != nil || !bytes.Equal(after, before) {
			t.Errorf("%s changed when the agent renewed its certificates (%v)", key, err)
		}
	}
	// A line per renewed file, by the process that renewed it: exactly one
	// for the server's, which it renews itself; at least one for the
	// agent's, which it renews by joining again, and a second forge event
	// seen after the first re-join (a loaded machine) makes a second one.
	for i, f := range forged {
		out := s.Output()
		if i >= 2 {
			out = a.out.String()
		}
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "certificate renewed") && strings.Contains(l, f.cert) {
				lines = append(lines, l)
			}
		}
		if agentFile := i >= 2; len(lines) == 0 || (!agentFile && len(lines) != 1) {
			t.Errorf("%d renewal lines for %s, want %s: %q", len(lines), f.cert, map[bool]string{false: "1", true: "at least 1"}[agentFile], lines)
		} else {
			t.Log(lines[0])
		}
	}

	// The supervisor serves the new certificate on a new connection.
	servingNow := notAfter(t, forged[0].cert)
	eventually(t, time.Minute, func() (string, error) {
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].NotAfter; !got.Equal(servingNow) {
			return "", fmt.Errorf("supervisor serves a certificate valid until %v, the file says %v", got, servingNow)
		}
		return "", nil
	})
	// kubectl on a fresh connection, with the admin kubeconfig (which
	// embeds the admin certificate) rewritten.
	eventually(t, time.Minute, func() (string, error) {
		kc, err := os.ReadFile(s.Kubeconfig)
		if err != nil {
			return "", err
		}
		adminPEM, _ := os.ReadFile(forged[1].cert)
		if !strings.Contains(string(kc), base64.StdEncoding.EncodeToString(adminPEM)) {
			return "", fmt.Errorf("%s does not embed the renewed admin certificate", s.Kubeconfig)
		}
		return s.kubectl("get", "nodes")
	})
	nodeKeepsWorking(t, s, nodeName, pods[0].Name, renewedAt)
	// The metrics: expiry per file and renewals.
	metricsText, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Errorf("GET /metrics: %v", err)
	}
	for _, want := range []string{`skiff_certificate_expiration_timestamp_seconds{file="` + forged[0].cert + `"}`, `skiff_certificate_renewals_total{file="` + forged[1].cert + `"} 1`} {
		if !strings.Contains(string(metricsText), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Not one restart.
	if s.cmd.Process.Pid != serverPID || a.cmd.Process.Pid != agentPID {
		t.Fatal("a process was replaced")
	}
	select {
	case <-s.exited:
		t.Fatalf("the server exited:\n%s", s.Output())
	case <-a.exited:
		t.Fatalf("the agent exited:\n%s", a.out.String())
	default:
	}

	// skiff certificate check -o json shows the renewed certificates.
	out, err := runToExit(t, time.Minute, "certificate", "check", "-o", "json", "--data-dir", s.DataDir)
	if err != nil {
		t.Fatalf("certificate check: %v\n%s", err, out)
	}
	var infos []struct {
		File     string `json:"file"`
		Service  string `json:"service"`
		DaysLeft int    `json:"daysLeft"`
		Status   string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("certificate check -o json: %v\n%s", err, out)
	}
	seen := 0
	for _, i := range infos {
		if i.File == forged[0].cert || i.File == forged[1].cert {
			seen++
			if i.DaysLeft < 364 || i.Status != "ok" {
				t.Errorf("check reports the renewed %s as %+v", i.File, i)
			}
		}
	}
	if seen != 2 {
		t.Errorf("check does not list the renewed files:\n%s", out)
	}
	if out, err := runToExit(t, time.Minute, "certificate", "check", "--data-dir", agentDir); err != nil || !strings.Contains(out, "client-kubelet.crt") ||
		!strings.Contains(out, "DAYS LEFT") || !strings.Contains(out, "(CA)") {
		t.Errorf("certificate check of the agent: %v\n%s", err, out)
	} else {
		t.Logf("skiff certificate check --data-dir <agent>:\n%s", out)
	}

	// rotate: an unknown service is refused naming it, with nothing changed.
	before, _ := os.ReadFile(forged[0].cert)
	if out, err := runToExit(t, time.Minute, "certificate", "rotate", "--data-dir", s.DataDir, "--service", "api-server,bogus"); err == nil || !strings.Contains(out, `"bogus"`) {
		t.Errorf("rotate --service bogus: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(forged[0].cert); string(after) != string(before) {
		t.Error("a refused rotate changed the apiserver's certificate")
	}
	// rotate --service admin, while it runs: the admin kubeconfig follows.
	if out, err := runToExit(t, time.Minute, "certificate", "rotate", "--data-dir", s.DataDir, "--service", "admin"); err != nil || strings.Count(out, "re-issued") != 1 {
		t.Errorf("rotate --service admin: %v\n%s", err, out)
	}
	eventually(t, time.Minute, func() (string, error) {
		kc, err := os.ReadFile(s.Kubeconfig)
		if err != nil {
			return "", err
		}
		adminPEM, _ := os.ReadFile(forged[1].cert)
		if !strings.Contains(string(kc), base64.StdEncoding.EncodeToString(adminPEM)) {
			return "", fmt.Errorf("%s does not embed the rotated admin certificate", s.Kubeconfig)
		}
		return s.kubectl("get", "nodes")
	})
	// rotate --service api-server re-issues its two files, while it runs.
	out, err = runToExit(t, time.Minute, "certificate", "rotate", "--data-dir", s.DataDir, "--service", "api-server")
	if err != nil || strings.Count(out, "re-issued") != 2 || !strings.Contains(out, "serving-kube-apiserver.crt") {
		t.Errorf("rotate --service api-server: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(forged[0].cert); string(after) == string(before) {
		t.Error("rotate did not change the apiserver's certificate")
	}
	eventually(t, time.Minute, func() (string, error) { return s.kubectl("logs", pods[0].Name) })
	// An agent's certificates come from the server.
	if out, err := runToExit(t, time.Minute, "certificate", "rotate", "--data-dir", agentDir); err == nil || !strings.Contains(out, "not on this machine") {
		t.Errorf("rotate on the agent: %v\n%s", err, out)
	}
}

// waitRenewed waits until the certificate file is valid for most of a year.
func waitRenewed(t *testing.T, cert string) {
	t.Helper()
	eventually(t, 2*time.Minute, func() (string, error) {
		if left := time.Until(notAfter(t, cert)); left < 300*24*time.Hour {
			return "", fmt.Errorf("%s still expires in %v", cert, left.Round(time.Hour))
		}
		return "", nil
	})
}

// nodeKeepsWorking checks that after a renewal at renewedAt the node is
// Ready and its kubelet renews its lease, and that the apiserver still
// reaches the kubelet (through the tunnel on an agent) for logs and exec of
// the web pod.
func nodeKeepsWorking(t *testing.T, s *server, nodeName, pod string, renewedAt time.Time) {
	t.Helper()
	c := s.Client()
	// The kubelet: Ready, and its lease renewed after the renewal.
	eventually(t, 2*time.Minute, func() (string, error) {
		n, err := c.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
		if err != nil || !nodeReady(n) {
			return "", fmt.Errorf("node %s not Ready: %v", nodeName, err)
		}
		l, err := c.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), nodeName, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if l.Spec.RenewTime == nil || !l.Spec.RenewTime.After(renewedAt.Add(time.Second)) {
			return "", fmt.Errorf("lease renewed at %v, not since the renewal at %v", l.Spec.RenewTime, renewedAt)
		}
		return "", nil
	})
	// The tunnel and the kubelet's serving certificate: logs and exec.
	eventually(t, time.Minute, func() (string, error) {
		out, err := s.kubectl("logs", pod)
		if err == nil && !strings.Contains(out, "listening on :8080") {
			err = fmt.Errorf("unexpected logs")
		}
		return out, err
	})
	eventually(t, time.Minute, func() (string, error) {
		out, err := s.kubectl("exec", pod, "--", "/web", "fetch", "http://127.0.0.1:8080/")
		if err == nil && !strings.Contains(out, "hello from") {
			err = fmt.Errorf("unexpected answer")
		}
		return out, err
	})
}

// TestCertificateRenewalServerNode forges the kubelet certificates of a
// server's own node to expire in 10 days: the server renews them from its
// CAs while it runs, and the node keeps working without a restart.
func TestCertificateRenewalServerNode(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	s := newServerWith(t)
	buildWebImage(t, filepath.Join(s.DataDir, "agent", "images", "web.tar"))
	t.Cleanup(func() {
		s.kill()
		if out, err := exec.Command(bin, "killall", "--data-dir", s.DataDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	s.Start()
	pods := deployWeb(t, s.Client(), 1)
	pid := s.cmd.Process.Pid
	stls := filepath.Join(s.DataDir, "server", "tls")
	atls := filepath.Join(s.DataDir, "agent", "tls")
	forged := []struct{ cert, ca string }{
		{filepath.Join(atls, "client-kubelet.crt"), "client-ca"},
		{filepath.Join(atls, "serving-kubelet.crt"), "server-ca"},
		{filepath.Join(stls, "client-kube-apiserver.crt"), "client-ca"},
	}
	for _, f := range forged {
		forgeLeaf(t, f.cert, filepath.Join(stls, f.ca+".crt"), filepath.Join(stls, f.ca+".key"), time.Now().Add(10*24*time.Hour))
	}
	renewedAt := time.Now()
	for _, f := range forged {
		waitRenewed(t, f.cert)
	}
	nodeKeepsWorking(t, s, pods[0].Spec.NodeName, pods[0].Name, renewedAt)
	// The kubelet serves its renewed certificate.
	servingNow := notAfter(t, forged[1].cert)
	eventually(t, time.Minute, func() (string, error) {
		conn, err := tls.Dial("tcp", "127.0.0.1:10250", &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].NotAfter; !got.Equal(servingNow) {
			return "", fmt.Errorf("the kubelet serves a certificate valid until %v, the file says %v", got, servingNow)
		}
		return "", nil
	})
	if s.cmd.Process.Pid != pid {
		t.Fatal("the server process was replaced")
	}
	select {
	case <-s.exited:
		t.Fatalf("the server exited:\n%s", s.Output())
	default:
	}
}

// TestCertificateRenewalEtcd forges embedded etcd's serving and client
// certificates to expire in 10 days: the server renews them while it runs,
// etcd serves the new serving certificate and accepts the new client one on
// new connections, and the API keeps working.
func TestCertificateRenewalEtcd(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	s := newServer(t, "--cluster-init")
	s.Start()
	pid := s.cmd.Process.Pid
	etls := filepath.Join(s.DataDir, "server", "tls", "etcd")
	serving, client := filepath.Join(etls, "server-client.crt"), filepath.Join(etls, "client.crt")
	for _, f := range []string{serving, client} {
		forgeLeaf(t, f, filepath.Join(etls, "server-ca.crt"), filepath.Join(etls, "server-ca.key"), time.Now().Add(10*24*time.Hour))
	}
	waitRenewed(t, serving)
	waitRenewed(t, client)
	caPEM, err := os.ReadFile(filepath.Join(etls, "server-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(client, filepath.Join(etls, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	servingNow := notAfter(t, serving)
	eventually(t, time.Minute, func() (string, error) {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
		resp, err := hc.Get("https://127.0.0.1:2379/health")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if got := resp.TLS.PeerCertificates[0].NotAfter; !got.Equal(servingNow) {
			return "", fmt.Errorf("etcd serves a certificate valid until %v, the file says %v", got, servingNow)
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return "", nil
	})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "after-renewal"}}
	if _, err := s.Client().CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a namespace after the renewal: %v", err)
	}
	if s.cmd.Process.Pid != pid {
		t.Fatal("the server process was replaced")
	}
}
