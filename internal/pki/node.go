package pki

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The identity a kubelet client certificate carries, which the apiserver's
// Node authorizer, the join API and the agent tunnel all read.
const (
	NodeUserPrefix = "system:node:"
	NodesGroup     = "system:nodes"
)

// NodeClientSpec is the spec of node nodeName's kubelet client certificate:
// user system:node:<nodeName> in group system:nodes, for client auth.
func NodeClientSpec(nodeName string) LeafSpec {
	return LeafSpec{CommonName: NodeUserPrefix + nodeName, Organizations: []string{NodesGroup}, Usage: ClientAuth}
}

// VerifyNodeClient checks that leaf is a node's kubelet client certificate:
// it chains (through intermediates, which may be nil) to a CA in roots for
// client auth, is valid at now (the zero time means the current time) and
// names NodeUserPrefix+<name> in group NodesGroup. It returns <name>, or an
// error saying which of these fails.
func VerifyNodeClient(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) (string, error) {
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	name, ok := strings.CutPrefix(leaf.Subject.CommonName, NodeUserPrefix)
	if !ok || name == "" || !slices.Contains(leaf.Subject.Organization, NodesGroup) {
		return "", fmt.Errorf("client certificate %q is not a node's (%s<name> in group %s)", leaf.Subject.CommonName, NodeUserPrefix, NodesGroup)
	}
	return name, nil
}
