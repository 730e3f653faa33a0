package node

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/pki"
)

// Identity is who the node is, as its certificates say.
type Identity struct {
	NodeName string
	Hostname string
	NodeIPs  []net.IP
}

// CAs signs a node's certificates: client certificates from the client CA, the
// kubelet's serving certificate from the server CA (the apiserver verifies it).
type CAs struct {
	Client, Server *pki.CA
}

// EnsureCertificates writes the node's certificates, CA bundles and kubeconfigs,
// (re)issuing only what is missing, near expiry or no longer matching. apiserverURL
// is where the kubelet and kube-proxy reach the API.
func EnsureCertificates(l Layout, cas CAs, id Identity, apiserverURL string, now time.Time) ([]string, error) {
	if err := os.MkdirAll(l.TLSDir(), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", l.TLSDir(), err)
	}
	for _, f := range []struct {
		path string
		pem  []byte
	}{{l.ClientCA(), cas.Client.CertPEM}, {l.ServerCA(), cas.Server.CertPEM}} {
		if cur, err := os.ReadFile(f.path); err == nil && string(cur) == string(f.pem) {
			continue
		}
		if err := atomicfile.Write(f.path, f.pem, 0o644, 0o700); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	servingDNS := []string{"localhost", id.NodeName}
	if id.Hostname != "" && id.Hostname != id.NodeName {
		servingDNS = append(servingDNS, id.Hostname)
	}
	servingIPs := append([]net.IP{net.IPv4(127, 0, 0, 1).To4()}, id.NodeIPs...)
	var issued []string
	for _, leaf := range []struct {
		ca   *pki.CA
		pair Pair
		spec pki.LeafSpec
	}{
		{cas.Client, l.ClientKubelet(), pki.NodeClientSpec(id.NodeName)},
		{cas.Server, l.ServingKubelet(), pki.LeafSpec{CommonName: id.NodeName, DNSNames: servingDNS, IPs: servingIPs, Usage: pki.ServerAuth}},
		{cas.Client, l.ClientKubeProxy(), pki.LeafSpec{CommonName: "system:kube-proxy", Usage: pki.ClientAuth}},
	} {
		did, reason, err := leaf.ca.EnsureLeaf(leaf.pair.Cert, leaf.pair.Key, leaf.spec, now)
		if err != nil {
			return issued, err
		}
		if did {
			issued = append(issued, leaf.pair.Cert+": "+reason)
		}
	}
	for _, k := range []struct {
		path string
		pair Pair
	}{{l.KubeletKubeconfig(), l.ClientKubelet()}, {l.KubeProxyKubeconfig(), l.ClientKubeProxy()}} {
		if _, err := pki.WriteKubeconfig(pki.KubeconfigSpec{
			Path: k.path, ServerURL: apiserverURL, CAPEM: cas.Server.CertPEM,
			CertPath: k.pair.Cert, KeyPath: k.pair.Key, Mode: 0o600,
		}); err != nil {
			return issued, fmt.Errorf("writing %s: %w", k.path, err)
		}
	}
	return issued, nil
}
