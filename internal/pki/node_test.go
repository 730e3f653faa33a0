package pki

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// Only a kubelet client certificate of the trusted CA, valid now, names a
// node; every other certificate is refused with the reason.
func TestVerifyNodeClient(t *testing.T) {
	ca := newTestCA(t, t.TempDir())
	other := newTestCA(t, t.TempDir())
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	now := time.Now()
	issue := func(ca *CA, spec LeafSpec, at time.Time) *x509.Certificate {
		t.Helper()
		certPEM, _, err := ca.IssueLeaf(spec, at)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(certPEM)
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	if name, err := VerifyNodeClient(issue(ca, NodeClientSpec("edge-1"), now), nil, roots, now); err != nil || name != "edge-1" {
		t.Errorf("a node's certificate: %q, %v; want edge-1", name, err)
	}
	for _, c := range []struct {
		what string
		leaf *x509.Certificate
		want string
	}{
		{"another CA's", issue(other, NodeClientSpec("edge-1"), now), "unknown authority"},
		{"expired", issue(ca, NodeClientSpec("edge-1"), now.Add(-2*365*24*time.Hour)), "expired"},
		{"not in system:nodes", issue(ca, LeafSpec{CommonName: NodeUserPrefix + "edge-1", Usage: ClientAuth}, now), "not a node's"},
		{"kube-proxy's", issue(ca, LeafSpec{CommonName: "system:kube-proxy", Usage: ClientAuth}, now), "not a node's"},
		{"a serving certificate", issue(ca, LeafSpec{CommonName: NodeUserPrefix + "edge-1", Organizations: []string{NodesGroup}, DNSNames: []string{"edge-1"}, Usage: ServerAuth}, now), "usage"},
	} {
		name, err := VerifyNodeClient(c.leaf, nil, roots, now)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %q, %v; want an error containing %q", c.what, name, err, c.want)
		}
	}
}
