package controlplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/pki"
)

// CertInputs is what decides the certificates' contents.
type CertInputs struct {
	ClusterDomain string
	// ServiceCIDR may be a dual-stack pair "v4,v6"; the first IP of each
	// range is the kubernetes Service's address.
	ServiceCIDR string
	// AdvertiseIP is the address other machines reach this server on.
	AdvertiseIP net.IP
	// BindIP is --bind-address when it names one address: clients on this
	// machine reach the supervisor there (LocalHost), so it must be a SAN
	// even when it is a loopback address other than 127.0.0.1.
	BindIP net.IP
	// TLSSANs are --tls-san: DNS names or IPs.
	TLSSANs []string
	// HostDNS and HostIPs are the machine's own names (pki.HostSANs).
	HostDNS []string
	HostIPs []net.IP
}

// CertResult reports what EnsureCertificates did.
type CertResult struct {
	ServerCAPEM []byte
	// Issued lists "file: reason" for every certificate (re)issued.
	Issued []string
}

// APIServerSANs returns the serving certificate's names: the host's names and
// IPs, the loopback names, the in-cluster names of the kubernetes Service,
// the first IP of each service range, the advertise address and --tls-san.
func APIServerSANs(in CertInputs) (dns []string, ips []net.IP, err error) {
	dnsSet := map[string]bool{}
	ipSet := map[string]net.IP{}
	addIP := func(ip net.IP) {
		if ip != nil {
			ipSet[ip.String()] = ip
		}
	}
	for _, n := range append([]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + in.ClusterDomain}, in.HostDNS...) {
		dnsSet[strings.ToLower(n)] = true
	}
	addIP(net.ParseIP("127.0.0.1"))
	addIP(net.ParseIP("::1"))
	for _, ip := range in.HostIPs {
		addIP(ip)
	}
	addIP(in.AdvertiseIP)
	if in.BindIP != nil && !in.BindIP.IsUnspecified() {
		addIP(in.BindIP)
	}
	svcIPs, err := ServiceIPs(in.ServiceCIDR)
	if err != nil {
		return nil, nil, err
	}
	for _, ip := range svcIPs {
		addIP(ip)
	}
	for _, san := range in.TLSSANs {
		if ip := net.ParseIP(san); ip != nil {
			addIP(ip)
		} else if san != "" {
			dnsSet[strings.ToLower(san)] = true
		}
	}
	for n := range dnsSet {
		dns = append(dns, n)
	}
	sort.Strings(dns)
	keys := make([]string, 0, len(ipSet))
	for k := range ipSet {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ips = append(ips, ipSet[k])
	}
	return dns, ips, nil
}

// ServiceIPs returns the first address of each service range: the
// kubernetes Service's ClusterIP.
func ServiceIPs(serviceCIDR string) ([]net.IP, error) {
	var out []net.IP
	for _, c := range strings.Split(serviceCIDR, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("service-cidr: %w", err)
		}
		out = append(out, net.IP(p.Masked().Addr().Next().AsSlice()))
	}
	return out, nil
}

// EnsureCertificates creates the CAs once and (re)issues every leaf that is
// missing, expires within pki.RenewBefore, or no longer matches what it
// should say. Nothing existing is touched when all is current.
func EnsureCertificates(l Layout, in CertInputs, now time.Time) (CertResult, error) {
	var res CertResult
	if err := os.MkdirAll(l.TLSDir(), 0o700); err != nil {
		return res, fmt.Errorf("creating %s: %w", l.TLSDir(), err)
	}
	loadCA := func(p Pair, cn string) (*pki.CA, error) {
		ca, created, err := pki.LoadOrCreateCA(p.Cert, p.Key, cn)
		if err != nil {
			return nil, err
		}
		if created {
			res.Issued = append(res.Issued, p.Cert+": new CA")
		}
		return ca, nil
	}
	serverCA, err := loadCA(l.ServerCA(), "skiff-server-ca")
	if err != nil {
		return res, err
	}
	clientCA, err := loadCA(l.ClientCA(), "skiff-client-ca")
	if err != nil {
		return res, err
	}
	requestHeaderCA, err := loadCA(l.RequestHeaderCA(), "skiff-request-header-ca")
	if err != nil {
		return res, err
	}
	res.ServerCAPEM = serverCA.CertPEM

	dns, ips, err := APIServerSANs(in)
	if err != nil {
		return res, err
	}
	leaves := []struct {
		ca   *pki.CA
		pair Pair
		spec pki.LeafSpec
	}{
		{serverCA, l.ServingAPIServer(), pki.LeafSpec{CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Usage: pki.ServerAuth}},
		{clientCA, l.ClientAdmin(), pki.LeafSpec{CommonName: "system:admin", Organizations: []string{"system:masters"}, Usage: pki.ClientAuth}},
		{clientCA, l.ClientController(), pki.LeafSpec{CommonName: "system:kube-controller-manager", Usage: pki.ClientAuth}},
		{clientCA, l.ClientScheduler(), pki.LeafSpec{CommonName: "system:kube-scheduler", Usage: pki.ClientAuth}},
		// The apiserver's identity towards kubelets (logs, exec, metrics).
		{clientCA, l.ClientKubeAPIServer(), pki.LeafSpec{CommonName: "system:apiserver", Organizations: []string{"system:masters"}, Usage: pki.ClientAuth}},
		// The aggregator's identity towards extension apiservers.
		{requestHeaderCA, l.ClientAuthProxy(), pki.LeafSpec{CommonName: "system:auth-proxy", Usage: pki.ClientAuth}},
	}
	for _, leaf := range leaves {
		issued, reason, err := leaf.ca.EnsureLeaf(leaf.pair.Cert, leaf.pair.Key, leaf.spec, now)
		if err != nil {
			return res, err
		}
		if issued {
			res.Issued = append(res.Issued, leaf.pair.Cert+": "+reason)
		}
	}
	if err := pki.EnsureServiceAccountKey(l.ServiceAccountKey(), l.ServiceAccountPub()); err != nil {
		return res, err
	}
	return res, nil
}

// WriteComponentKubeconfigs writes the kubeconfigs the in-process components
// use to reach the apiserver's loopback port. They reference the certificate
// files, so a renewed certificate needs no rewrite.
func WriteComponentKubeconfigs(l Layout, apiserverURL string, serverCAPEM []byte) error {
	// Created here so that it is private; WriteKubeconfig would make a
	// missing directory world-readable.
	if err := os.MkdirAll(l.CredDir(), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", l.CredDir(), err)
	}
	for _, k := range []struct {
		path string
		pair Pair
	}{
		{l.AdminKubeconfig(), l.ClientAdmin()},
		{l.ControllerKubeconfig(), l.ClientController()},
		{l.SchedulerKubeconfig(), l.ClientScheduler()},
	} {
		if _, err := pki.WriteKubeconfig(pki.KubeconfigSpec{
			Path: k.path, ServerURL: apiserverURL, CAPEM: serverCAPEM,
			CertPath: k.pair.Cert, KeyPath: k.pair.Key, Mode: 0o600,
		}); err != nil {
			return fmt.Errorf("writing %s: %w", k.path, err)
		}
	}
	return nil
}
