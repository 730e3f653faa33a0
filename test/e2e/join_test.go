package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/token"
)

// TestJoinAPI drives the supervisor's join endpoint as an agent would: a wrong
// token is refused, the right one returns node credentials that the API accepts,
// and the same node name with another node password is refused with a way out.
func TestJoinAPI(t *testing.T) {
	s := newServer(t, "--agent-token", "agents-only-secret")
	s.Start()
	raw, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	_, secret, ok := strings.Cut(strings.TrimSpace(string(raw)), "::server:")
	if !ok {
		t.Fatalf("unexpected token format %q", raw)
	}
	post := func(secret string, req join.Request) (int, []byte) {
		body, _ := json.Marshal(req)
		r, _ := http.NewRequest(http.MethodPost, s.URL()+join.Path, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+secret)
		resp, err := s.AnonymousClient().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	req := join.Request{NodeName: "agent-1", NodePassword: "e2e-node-password-1", Hostname: "agent-1", NodeIPs: []string{"192.0.2.50"}}

	if code, body := post("wrong", req); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d %s", code, body)
	}
	viaAgentToken := req
	viaAgentToken.NodeName = "agent-0"
	if code, body := post("agents-only-secret", viaAgentToken); code != http.StatusOK {
		t.Errorf("join with --agent-token: %d %s", code, body)
	}
	code, body := post(secret, req)
	if code != http.StatusOK {
		t.Fatalf("join: %d %s", code, body)
	}
	var resp join.Response
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}

	// kube-proxy's credentials work against the API (it may list Services).
	pair, err := tls.X509KeyPair([]byte(resp.KubeProxyCert), []byte(resp.KubeProxyKey))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(resp.ServerCA))
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	if code, out := get(t, c, s.URL()+"/api/v1/services"); code != http.StatusOK {
		t.Errorf("kube-proxy credentials from the join: %d %s", code, out)
	}

	other := req
	other.NodePassword = "another-machine-pass"
	if code, body := post(secret, other); code != http.StatusForbidden || !strings.Contains(string(body), "kubectl delete node agent-1") {
		t.Errorf("reused node name with another password: %d %s", code, body)
	}

	t.Run("deleting the node frees its name", func(t *testing.T) {
		ctx := context.Background()
		c := s.Client()
		if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "agent-1"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.CoreV1().Nodes().Delete(ctx, "agent-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := c.CoreV1().Secrets("kube-system").Get(ctx, join.PasswordSecretName("agent-1"), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("password secret still there 30s after the node was deleted (%v)", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if code, body := post(secret, other); code != http.StatusOK {
			t.Errorf("another machine joining under the freed name: %d %s", code, body)
		}
	})

	t.Run("skiff token", func(t *testing.T) {
		out, err := runToExit(t, time.Minute, "token", "create", "--kubeconfig", s.Kubeconfig, "--ttl", "1h", "--description", "e2e agents")
		if err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		tok, err := token.Parse(out)
		if err != nil {
			t.Fatalf("token create printed %q: %v", out, err)
		}
		_, cacerts := get(t, s.AnonymousClient(), s.URL()+"/cacerts")
		if tok.CAHash != token.HashCA(cacerts) {
			t.Errorf("created token pins %s, /cacerts hashes to %s", tok.CAHash, token.HashCA(cacerts))
		}
		req2 := req
		req2.NodeName, req2.NodePassword = "agent-2", "e2e-node-password-2"
		code, body := post(tok.Secret, req2)
		if code != http.StatusOK {
			t.Fatalf("join with a created token: %d %s", code, body)
		}
		var joined join.Response
		if err := json.Unmarshal(body, &joined); err != nil {
			t.Fatal(err)
		}
		id, _, _ := strings.Cut(tok.Secret, ".")
		if out, err := runToExit(t, time.Minute, "token", "list", "--kubeconfig", s.Kubeconfig); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "e2e agents") {
			t.Errorf("token list: %v\n%s", err, out)
		}
		if out, err := runToExit(t, time.Minute, "token", "delete", "--kubeconfig", s.Kubeconfig, id); err != nil {
			t.Fatalf("token delete: %v\n%s", err, out)
		}
		// A restarting agent comes back with its kubelet client certificate
		// once its token is gone; the supervisor's TLS hands it to the join.
		pair, err := tls.X509KeyPair([]byte(joined.KubeletClientCert), []byte(joined.KubeletClientKey))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(joined.ServerCA))
		asNode := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
		body, _ = json.Marshal(req2)
		r, _ := http.NewRequest(http.MethodPost, s.URL()+join.Path, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok.Secret)
		resp, err := asNode.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		out2, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("rejoin with the node's certificate after its token was deleted: %d %s", resp.StatusCode, out2)
		}
		req2.NodeName = "agent-3"
		if code, body := post(tok.Secret, req2); code != http.StatusUnauthorized || !strings.Contains(string(body), "may have expired or been deleted") {
			t.Errorf("join with a deleted token: %d %s", code, body)
		}
	})
}
