package etcd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/pki"
)

func servingPair(l controlplane.Layout) controlplane.Pair { return etcdPair(l, "server-client") }
func peerPair(l controlplane.Layout) controlplane.Pair    { return etcdPair(l, "peer-server-client") }
func clientPair(l controlplane.Layout) controlplane.Pair  { return etcdPair(l, "client") }

func etcdPair(l controlplane.Layout, name string) controlplane.Pair {
	base := filepath.Join(l.EtcdTLSDir(), name)
	return controlplane.Pair{Cert: base + ".crt", Key: base + ".key"}
}

// CertInputs are the names the serving and peer certificates carry.
type CertInputs struct {
	// AdvertiseIP is the address other members and servers reach this one on.
	AdvertiseIP net.IP
	// Hostname goes into the serving certificate besides localhost.
	Hostname string
}

// EnsureCertificates creates etcd's server and peer CAs once (unless the
// bootstrap data brought them) and (re)issues this member's leaves: the
// serving certificate of the client URLs (loopback, AdvertiseIP, Hostname),
// the peer certificate (AdvertiseIP) and the client certificate of the
// apiserver and skiff's own clients. It returns the files it issued, each as
// "path: reason".
func EnsureCertificates(l controlplane.Layout, in CertInputs, now time.Time) ([]string, error) {
	if err := os.MkdirAll(l.EtcdTLSDir(), 0o700); err != nil {
		return nil, fmt.Errorf("etcd: creating %s: %w", l.EtcdTLSDir(), err)
	}
	var issued []string
	serverCA, created, err := pki.LoadOrCreateCA(l.EtcdServerCA().Cert, l.EtcdServerCA().Key, "skiff-etcd-server-ca")
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	if created {
		issued = append(issued, l.EtcdServerCA().Cert+": new CA")
	}
	peerCA, created, err := pki.LoadOrCreateCA(l.EtcdPeerCA().Cert, l.EtcdPeerCA().Key, "skiff-etcd-peer-ca")
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	if created {
		issued = append(issued, l.EtcdPeerCA().Cert+": new CA")
	}
	dns := []string{"localhost"}
	if in.Hostname != "" && in.Hostname != "localhost" {
		dns = append(dns, in.Hostname)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4()}
	if in.AdvertiseIP != nil && !in.AdvertiseIP.IsLoopback() {
		ips = append(ips, in.AdvertiseIP)
	}
	for _, leaf := range []struct {
		ca   *pki.CA
		pair controlplane.Pair
		spec pki.LeafSpec
	}{
		// etcd's gRPC gateway dials its own client URL with the serving
		// certificate: it must be a client certificate too.
		{serverCA, servingPair(l), pki.LeafSpec{CommonName: "etcd-server", DNSNames: dns, IPs: ips, Usage: pki.ServerAuth | pki.ClientAuth}},
		{peerCA, peerPair(l), pki.LeafSpec{CommonName: "etcd-peer", DNSNames: dns, IPs: ips, Usage: pki.ServerAuth | pki.ClientAuth}},
		{serverCA, clientPair(l), pki.LeafSpec{CommonName: "etcd-client", Usage: pki.ClientAuth}},
	} {
		did, reason, err := leaf.ca.EnsureLeaf(leaf.pair.Cert, leaf.pair.Key, leaf.spec, now)
		if err != nil {
			return issued, fmt.Errorf("etcd: %s: %w", leaf.pair.Cert, err)
		}
		if did {
			issued = append(issued, leaf.pair.Cert+": "+reason)
		}
	}
	return issued, nil
}
