// Package joinclient is the agent's side of joining: fetch the server CA, check it
// against the pin in the token, post the join request with the node password kept
// in the agent's data dir, and write the credentials the server returns.
package joinclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/internal/token"
)

// Request is what the agent knows about itself.
type Request struct {
	ServerURL string // https://server:6443
	// APIServerURL is what the node's kubeconfigs point at (the agent's load
	// balancer); ServerURL when empty.
	APIServerURL string
	Token        token.Token
	NodeName     string
	Hostname     string
	NodeIPs      []string
	// PublicKeys is join.Request.PublicKeys: the public halves of the keys
	// the node already holds (ExistingPublicKeys), for the server to sign.
	PublicKeys map[string]string
}

// leafPairs maps join.Leaves to where the node keeps them.
func leafPairs(l node.Layout) map[string]node.Pair {
	return map[string]node.Pair{
		join.LeafKubeletClient:  l.ClientKubelet(),
		join.LeafKubeletServing: l.ServingKubelet(),
		join.LeafKubeProxy:      l.ClientKubeProxy(),
		join.LeafFlannel:        l.ClientFlannel(),
	}
}

// ExistingPublicKeys returns, for each leaf whose private key file in l
// parses, its public key as PEM: a node that joined before asks the server
// to sign the keys it has, so that renewing replaces only certificate files
// and a crash half-way never leaves a certificate with another key. A
// missing or unreadable key is left out and the server issues a new one.
func ExistingPublicKeys(l node.Layout) map[string]string {
	out := map[string]string{}
	for name, p := range leafPairs(l) {
		if pub, err := pki.PublicKeyOfKeyFile(p.Key); err == nil {
			out[name] = string(pub)
		}
	}
	return out
}

// FetchCA gets the server CA from /cacerts and checks it against the token's pin.
// The TLS connection cannot be verified yet, which is what the pin is for; a
// short token has no pin, and the caller is told so it can warn.
func FetchCA(ctx context.Context, serverURL string, t token.Token) (caPEM []byte, pinned bool, err error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the pin below verifies
	}}
	body, err := get(ctx, c, strings.TrimSuffix(serverURL, "/")+"/cacerts")
	if err != nil {
		return nil, false, fmt.Errorf("fetching the server CA from %s: %w", serverURL, err)
	}
	if t.IsShort() {
		return body, false, nil
	}
	if err := t.VerifyCA(body); err != nil {
		return nil, false, fmt.Errorf("server %s: %w; is --server the right cluster, and the token current?", serverURL, err)
	}
	return body, true, nil
}

// NodePassword returns the node password kept at path, creating it once. It ties
// the node name to this machine: keep the file with the data dir.
func NodePassword(path string) (string, error) {
	if data, err := os.ReadFile(path); err == nil {
		if p := strings.TrimSpace(string(data)); len(p) >= 16 {
			return p, nil
		}
		return "", fmt.Errorf("node password file %s is damaged (under 16 characters): restore it, or delete it and free the node name on the server", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading node password %s: %w", path, err)
	}
	p, err := token.NewSecret()
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, []byte(p+"\n"), 0o600, 0o700); err != nil {
		return "", fmt.Errorf("writing node password %s: %w", path, err)
	}
	return p, nil
}

// RefusedError is a join the server answered with an error status.
type RefusedError struct {
	Server  string
	Status  int    // HTTP status: 401 bad token, 403 node name taken, 400 bad request
	Message string // the server's explanation
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server %s refused the join (%d): %s", e.Server, e.Status, e.Message)
}

// NodeCertificate returns the kubelet client certificate this node already
// holds in l, to present when joining again: a joined node restarts on its
// own credentials, since the token it joined with may have expired or been
// deleted. It returns nil and why not when there is none, or it is not
// system:node:<nodeName>, or the server CA saved with it is not caPEM (the
// CA the agent just pinned: another cluster), or the client CA saved with it
// did not sign it, or it is not valid at now. The server checks it again.
func NodeCertificate(l node.Layout, nodeName string, caPEM []byte, now time.Time) (*tls.Certificate, string) {
	savedCA, err := os.ReadFile(l.ServerCA())
	if errors.Is(err, os.ErrNotExist) {
		return nil, "not joined before"
	}
	if err != nil {
		return nil, err.Error()
	}
	if !bytes.Equal(bytes.TrimSpace(savedCA), bytes.TrimSpace(caPEM)) {
		return nil, "its credentials are from another server CA than the one the token pins"
	}
	pair, err := tls.LoadX509KeyPair(l.ClientKubelet().Cert, l.ClientKubelet().Key)
	if err != nil {
		return nil, "kubelet client certificate: " + err.Error()
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, "kubelet client certificate: " + err.Error()
	}
	clientCA, err := os.ReadFile(l.ClientCA())
	if err != nil {
		return nil, err.Error()
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(clientCA) {
		return nil, l.ClientCA() + " holds no certificate"
	}
	name, err := pki.VerifyNodeClient(leaf, nil, roots, now)
	if err != nil {
		return nil, "kubelet client certificate: " + err.Error()
	}
	if name != nodeName {
		return nil, fmt.Sprintf("kubelet client certificate is node %q's, not %q's", name, nodeName)
	}
	pair.Leaf = leaf
	return &pair, ""
}

// Join posts the join request over TLS verified against caPEM and returns the
// server's answer. The token's secret goes as bearer; nodeCert, when not nil,
// is presented as the TLS client certificate, which the server accepts in the
// token's place for that node.
func Join(ctx context.Context, r Request, caPEM []byte, password string, nodeCert *tls.Certificate) (*join.Response, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the server CA from /cacerts holds no certificate")
	}
	tc := &tls.Config{RootCAs: pool}
	if nodeCert != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return nodeCert, nil }
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: tc}}
	body, _ := json.Marshal(join.Request{NodeName: r.NodeName, NodePassword: password, Hostname: r.Hostname, NodeIPs: r.NodeIPs, PublicKeys: r.PublicKeys})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(r.ServerURL, "/")+join.Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.Token.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("joining %s: %w", r.ServerURL, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, &RefusedError{Server: r.ServerURL, Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	var out join.Response
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("joining %s: malformed answer: %w", r.ServerURL, err)
	}
	return &out, nil
}

// WriteCredentials writes the node's certificates, CA bundles and kubeconfigs
// (pointing at apiserverURL) where the node's components read them. A leaf
// whose key the answer leaves out was signed for the key the node holds
// (Request.PublicKeys): only its certificate is written, after checking that
// it matches that key. Everything is checked before the first write.
func WriteCredentials(l node.Layout, resp *join.Response, apiserverURL string) error {
	if err := os.MkdirAll(l.TLSDir(), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", l.TLSDir(), err)
	}
	type file struct {
		path string
		data string
		mode os.FileMode
	}
	files := []file{{l.ServerCA(), resp.ServerCA, 0o644}, {l.ClientCA(), resp.ClientCA, 0o644}}
	pairs := leafPairs(l)
	for _, leaf := range []struct {
		name      string
		cert, key string
	}{
		{join.LeafKubeletClient, resp.KubeletClientCert, resp.KubeletClientKey},
		{join.LeafKubeletServing, resp.KubeletServingCert, resp.KubeletServingKey},
		{join.LeafKubeProxy, resp.KubeProxyCert, resp.KubeProxyKey},
		{join.LeafFlannel, resp.FlannelCert, resp.FlannelKey},
	} {
		p := pairs[leaf.name]
		if leaf.cert == "" {
			return fmt.Errorf("join answer lacks %s", filepath.Base(p.Cert))
		}
		if leaf.key == "" {
			// Signed for the key on disk: it must be that key's.
			keyPEM, err := os.ReadFile(p.Key)
			if err != nil {
				return fmt.Errorf("join answer lacks %s and the node has none: %w", filepath.Base(p.Key), err)
			}
			if _, err := tls.X509KeyPair([]byte(leaf.cert), keyPEM); err != nil {
				return fmt.Errorf("join answer's %s does not fit the node's key %s: %w", filepath.Base(p.Cert), p.Key, err)
			}
			files = append(files, file{p.Cert, leaf.cert, 0o644})
			continue
		}
		// A new key: the first join, or a server that predates
		// Request.PublicKeys.
		files = append(files, file{p.Cert, leaf.cert, 0o644}, file{p.Key, leaf.key, 0o600})
	}
	for _, f := range files {
		if f.data == "" {
			return fmt.Errorf("join answer lacks %s", filepath.Base(f.path))
		}
	}
	for _, f := range files {
		if err := atomicfile.Write(f.path, []byte(f.data), f.mode, 0o700); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	for _, k := range []struct {
		path string
		pair node.Pair
	}{{l.KubeletKubeconfig(), l.ClientKubelet()}, {l.KubeProxyKubeconfig(), l.ClientKubeProxy()}, {l.FlannelKubeconfig(), l.ClientFlannel()}} {
		if _, err := pki.WriteKubeconfig(pki.KubeconfigSpec{
			Path: k.path, ServerURL: apiserverURL, CAPEM: []byte(resp.ServerCA),
			CertPath: k.pair.Cert, KeyPath: k.pair.Key, Mode: 0o600,
		}); err != nil {
			return fmt.Errorf("writing %s: %w", k.path, err)
		}
	}
	return nil
}

// Run does the whole join: CA, pin, password, request, files. It warns when the
// token cannot verify the CA.
func Run(ctx context.Context, r Request, l node.Layout, log *slog.Logger) (*join.Response, error) {
	caPEM, pinned, err := FetchCA(ctx, r.ServerURL, r.Token)
	if err != nil {
		return nil, err
	}
	WarnUnpinned(log, r.ServerURL, pinned)
	return JoinWithCA(ctx, r, l, caPEM)
}

// WarnUnpinned logs, for a short token, that the server's CA was not verified.
func WarnUnpinned(log *slog.Logger, serverURL string, pinned bool) {
	if !pinned {
		log.Warn("the token has no CA hash: the server's CA was not verified; use the full token (SK10...) from the server", "component", "join", "server", serverURL)
	}
}

// JoinWithCA is Run after FetchCA: password, request, files. A node that
// joined before presents its kubelet client certificate (NodeCertificate)
// besides the token, so it gets fresh credentials even once the token is
// gone.
func JoinWithCA(ctx context.Context, r Request, l node.Layout, caPEM []byte) (*join.Response, error) {
	password, err := NodePassword(filepath.Join(l.AgentDir(), "node-password"))
	if err != nil {
		return nil, err
	}
	nodeCert, why := NodeCertificate(l, r.NodeName, caPEM, time.Now())
	if r.PublicKeys == nil {
		r.PublicKeys = ExistingPublicKeys(l)
	}
	resp, err := Join(ctx, r, caPEM, password, nodeCert)
	if err != nil {
		var refused *RefusedError
		if nodeCert == nil && errors.As(err, &refused) && refused.Status == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w (the node's own credentials could not stand in for the token: %s)", err, why)
		}
		return nil, err
	}
	apiserverURL := r.APIServerURL
	if apiserverURL == "" {
		apiserverURL = r.ServerURL
	}
	if err := WriteCredentials(l, resp, apiserverURL); err != nil {
		return nil, err
	}
	return resp, nil
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, nil
}
