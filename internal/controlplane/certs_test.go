package controlplane

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func ipStrs(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

func TestAPIServerSANs(t *testing.T) {
	in := CertInputs{
		ClusterDomain: "corp.example",
		ServiceCIDR:   "10.43.0.0/16",
		AdvertiseIP:   net.ParseIP("192.0.2.10"),
		// Duplicates on purpose: a name in two cases, an IP given twice,
		// the advertise IP again as a host IP and as a tls-san.
		TLSSANs: []string{"api.example.com", "203.0.113.7", "API.Example.com", "fd00::7", "192.0.2.10", ""},
		HostDNS: []string{"node-a", "Node-A"},
		HostIPs: []net.IP{net.ParseIP("192.0.2.10").To4(), net.ParseIP("198.51.100.4"), net.ParseIP("2001:db8::4"), net.ParseIP("127.0.0.1")},
	}
	dns, ips, err := APIServerSANs(in)
	if err != nil {
		t.Fatal(err)
	}

	wantDNS := []string{
		"api.example.com",
		"kubernetes",
		"kubernetes.default",
		"kubernetes.default.svc",
		"kubernetes.default.svc.corp.example",
		"localhost",
		"node-a",
	}
	if !slices.Equal(dns, wantDNS) {
		t.Errorf("DNS SANs\n got %q\nwant %q", dns, wantDNS)
	}
	if slices.Contains(dns, "kubernetes.default.svc.cluster.local") {
		t.Error("DNS SANs name the default domain although cluster-domain is corp.example")
	}

	wantIPs := sortedCopy([]string{
		"127.0.0.1", "::1", // loopback
		"192.0.2.10", "198.51.100.4", "2001:db8::4", // host, advertise
		"10.43.0.1",              // kubernetes Service
		"203.0.113.7", "fd00::7", // --tls-san
	})
	if got := ipStrs(ips); !slices.Equal(got, wantIPs) {
		t.Errorf("IP SANs\n got %q\nwant %q (deduplicated, sorted)", got, wantIPs)
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			t.Errorf("IP SAN %v has length %d", ip, len(ip))
		}
	}

	// The result must not depend on input order, or every restart on a
	// machine whose interfaces list differently would reissue the cert.
	rev := in
	rev.TLSSANs = slices.Clone(in.TLSSANs)
	slices.Reverse(rev.TLSSANs)
	rev.HostIPs = slices.Clone(in.HostIPs)
	slices.Reverse(rev.HostIPs)
	rev.HostDNS = []string{"Node-A", "node-a"}
	dns2, ips2, err := APIServerSANs(rev)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dns2, dns) || !slices.Equal(ipStrs(ips2), ipStrs(ips)) {
		t.Errorf("reordered inputs gave a different result:\n%q %q\n%q %q", dns, ipStrs(ips), dns2, ipStrs(ips2))
	}
}

func TestAPIServerSANsMinimal(t *testing.T) {
	dns, ips, err := APIServerSANs(CertInputs{ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	wantDNS := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	if !slices.Equal(dns, wantDNS) {
		t.Errorf("DNS SANs %q, want %q", dns, wantDNS)
	}
	if got, want := ipStrs(ips), []string{"10.43.0.1", "127.0.0.1", "::1"}; !slices.Equal(got, want) {
		t.Errorf("IP SANs %q, want %q (a nil advertise IP adds nothing)", got, want)
	}

	// The advertise address alone, in neither the host IPs nor --tls-san.
	for _, adv := range []string{"192.0.2.99", "2001:db8::99"} {
		_, ips, err := APIServerSANs(CertInputs{ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16", AdvertiseIP: net.ParseIP(adv)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ipStrs(ips), adv) {
			t.Errorf("IP SANs %q lack the advertise address %s", ipStrs(ips), adv)
		}
	}
}

// A specific --bind-address is where local clients dial (LocalHost), so it
// is a SAN even with another advertise address and outside the host's
// interface addresses (127.0.0.2); a wildcard adds nothing.
func TestAPIServerSANsBindAddress(t *testing.T) {
	for _, bind := range []string{"127.0.0.2", "192.0.2.7", "fd00::7"} {
		_, ips, err := APIServerSANs(CertInputs{ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16", AdvertiseIP: net.ParseIP("192.0.2.99"), BindIP: net.ParseIP(bind)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ipStrs(ips), LocalHost(bind)) {
			t.Errorf("IP SANs %q lack the bind address %s", ipStrs(ips), bind)
		}
	}
	for _, bind := range []string{"0.0.0.0", "::"} {
		_, ips, err := APIServerSANs(CertInputs{ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16", BindIP: net.ParseIP(bind)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ipStrs(ips), []string{"10.43.0.1", "127.0.0.1", "::1"}; !slices.Equal(got, want) {
			t.Errorf("bind %s: IP SANs %q, want %q", bind, got, want)
		}
	}
}

func TestAPIServerSANsDualStack(t *testing.T) {
	_, ips, err := APIServerSANs(CertInputs{ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16, fd00:43::/112"})
	if err != nil {
		t.Fatal(err)
	}
	got := ipStrs(ips)
	for _, want := range []string{"10.43.0.1", "fd00:43::1"} {
		if !slices.Contains(got, want) {
			t.Errorf("IP SANs %q lack the kubernetes Service address %s", got, want)
		}
	}
}

func TestAPIServerSANsBadServiceCIDR(t *testing.T) {
	if _, _, err := APIServerSANs(CertInputs{ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0"}); err == nil || !strings.Contains(err.Error(), "service-cidr") {
		t.Errorf("got %v, want an error naming service-cidr", err)
	}
}

func TestServiceIPs(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		want []string
	}{
		{"10.43.0.0/16", []string{"10.43.0.1"}},
		{"10.96.0.0/12", []string{"10.96.0.1"}},
		{"10.43.7.9/16", []string{"10.43.0.1"}}, // host bits are masked off
		{"fd00:43::/112", []string{"fd00:43::1"}},
		{"10.43.0.0/16,fd00:43::/112", []string{"10.43.0.1", "fd00:43::1"}},
		{"fd00:43::/112, 10.43.0.0/16", []string{"fd00:43::1", "10.43.0.1"}},
	} {
		got, err := ServiceIPs(tc.cidr)
		if err != nil {
			t.Errorf("ServiceIPs(%q): %v", tc.cidr, err)
			continue
		}
		if !slices.Equal(ipStrs(got), tc.want) {
			t.Errorf("ServiceIPs(%q) = %q, want %q", tc.cidr, ipStrs(got), tc.want)
		}
		for _, ip := range got {
			if (ip.To4() != nil) != (len(ip) == net.IPv4len) {
				t.Errorf("ServiceIPs(%q): %v is %d bytes", tc.cidr, ip, len(ip))
			}
		}
	}
	for _, bad := range []string{"", "10.43.0.0", "not-a-cidr", "10.43.0.0/16,", "10.43.0.0/33", "10.43.0.0/16;fd00::/112"} {
		_, err := ServiceIPs(bad)
		if err == nil {
			t.Errorf("ServiceIPs(%q): no error", bad)
		} else if !strings.Contains(err.Error(), "service-cidr") {
			t.Errorf("ServiceIPs(%q): error %q does not name service-cidr", bad, err)
		}
	}
}

// certTestInputs stands for a host with a name, one address that is also the
// advertise address, and one --tls-san.
func certTestInputs() CertInputs {
	return CertInputs{
		ClusterDomain: "cluster.local",
		ServiceCIDR:   "10.43.0.0/16",
		AdvertiseIP:   net.ParseIP("192.0.2.10"),
		TLSSANs:       []string{"skiff.example.com"},
		HostDNS:       []string{"localhost", "node-a"},
		HostIPs:       []net.IP{net.ParseIP("127.0.0.1").To4(), net.IPv6loopback, net.ParseIP("192.0.2.10").To4()},
	}
}

func readCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: trailing data after the certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func wantPerm(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

func caPairs(l Layout) []Pair { return []Pair{l.ServerCA(), l.ClientCA(), l.RequestHeaderCA()} }

func leafPairs(l Layout) []Pair {
	return []Pair{l.ServingAPIServer(), l.ClientAdmin(), l.ClientController(), l.ClientScheduler(), l.ClientKubeAPIServer(), l.ClientAuthProxy()}
}

// serials maps every certificate file to its serial number.
func serials(t *testing.T, pairs []Pair) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range pairs {
		out[p.Cert] = readCertFile(t, p.Cert).SerialNumber.String()
	}
	return out
}

// issuedFiles returns the file part of CertResult.Issued ("file: reason").
func issuedFiles(t *testing.T, res CertResult) []string {
	t.Helper()
	var out []string
	for _, e := range res.Issued {
		file, reason, ok := strings.Cut(e, ": ")
		if !ok || reason == "" {
			t.Errorf("Issued entry %q is not \"file: reason\"", e)
		}
		out = append(out, file)
	}
	sort.Strings(out)
	return out
}

func certPaths(pairs []Pair) []string {
	var out []string
	for _, p := range pairs {
		out = append(out, p.Cert)
	}
	sort.Strings(out)
	return out
}

func pool(t *testing.T, caPath string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(readFileT(t, caPath)) {
		t.Fatalf("%s: no certificate", caPath)
	}
	return p
}

func verifies(cert *x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) error {
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: now})
	return err
}

func TestEnsureCertificatesFirstRun(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	in := certTestInputs()
	now := time.Now()

	res, err := EnsureCertificates(l, in, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := issuedFiles(t, res), certPaths(append(caPairs(l), leafPairs(l)...)); !slices.Equal(got, want) {
		t.Errorf("Issued files\n got %q\nwant %q", got, want)
	}
	if !bytes.Equal(res.ServerCAPEM, readFileT(t, l.ServerCA().Cert)) {
		t.Error("ServerCAPEM differs from the server CA file: the join token hash would not match what is served")
	}

	// Every key, and only keys, is private.
	keys, err := filepath.Glob(filepath.Join(l.TLSDir(), "*.key"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 10 { // 3 CAs, 6 leaves, service account
		t.Errorf("%d key files in %s, want 10: %q", len(keys), l.TLSDir(), keys)
	}
	for _, k := range keys {
		wantPerm(t, k, 0o600)
	}
	wantPerm(t, l.TLSDir(), 0o700)
	if _, err := os.Stat(l.ServiceAccountPub()); err != nil {
		t.Errorf("service-account public key: %v", err)
	}
	block, _ := pem.Decode(readFileT(t, l.ServiceAccountPub()))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Error("service-account public key is not a PUBLIC KEY PEM")
	}

	// Three distinct CAs: a client certificate must never pass as a
	// serving certificate or as the front proxy.
	cas := map[string]*x509.Certificate{}
	for _, p := range caPairs(l) {
		ca := readCertFile(t, p.Cert)
		if !ca.IsCA {
			t.Errorf("%s is not a CA", p.Cert)
		}
		cas[p.Cert] = ca
	}
	if a, b, c := cas[l.ServerCA().Cert], cas[l.ClientCA().Cert], cas[l.RequestHeaderCA().Cert]; a.Equal(b) || a.Equal(c) || b.Equal(c) ||
		bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo) || bytes.Equal(b.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) {
		t.Error("the three CAs are not distinct")
	}

	serverRoots, clientRoots, rhRoots := pool(t, l.ServerCA().Cert), pool(t, l.ClientCA().Cert), pool(t, l.RequestHeaderCA().Cert)
	for _, tc := range []struct {
		pair      Pair
		cn        string
		orgs      []string
		roots     *x509.CertPool
		usage     x509.ExtKeyUsage
		wrongRoot []*x509.CertPool
	}{
		{l.ServingAPIServer(), "kube-apiserver", nil, serverRoots, x509.ExtKeyUsageServerAuth, []*x509.CertPool{clientRoots, rhRoots}},
		{l.ClientAdmin(), "system:admin", []string{"system:masters"}, clientRoots, x509.ExtKeyUsageClientAuth, []*x509.CertPool{serverRoots, rhRoots}},
		{l.ClientController(), "system:kube-controller-manager", nil, clientRoots, x509.ExtKeyUsageClientAuth, []*x509.CertPool{serverRoots, rhRoots}},
		{l.ClientScheduler(), "system:kube-scheduler", nil, clientRoots, x509.ExtKeyUsageClientAuth, []*x509.CertPool{serverRoots, rhRoots}},
		{l.ClientKubeAPIServer(), "system:apiserver", []string{"system:masters"}, clientRoots, x509.ExtKeyUsageClientAuth, []*x509.CertPool{serverRoots, rhRoots}},
		{l.ClientAuthProxy(), "system:auth-proxy", nil, rhRoots, x509.ExtKeyUsageClientAuth, []*x509.CertPool{serverRoots, clientRoots}},
	} {
		cert := readCertFile(t, tc.pair.Cert)
		if cert.Subject.CommonName != tc.cn {
			t.Errorf("%s: CN %q, want %q", tc.pair.Cert, cert.Subject.CommonName, tc.cn)
		}
		if !slices.Equal(cert.Subject.Organization, tc.orgs) {
			t.Errorf("%s: O %q, want %q", tc.pair.Cert, cert.Subject.Organization, tc.orgs)
		}
		if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{tc.usage}) {
			t.Errorf("%s: ExtKeyUsage %v, want only %v", tc.pair.Cert, cert.ExtKeyUsage, tc.usage)
		}
		if cert.IsCA {
			t.Errorf("%s is a CA", tc.pair.Cert)
		}
		if err := verifies(cert, tc.roots, tc.usage, now); err != nil {
			t.Errorf("%s does not verify against its CA: %v", tc.pair.Cert, err)
		}
		for _, wrong := range tc.wrongRoot {
			if err := verifies(cert, wrong, tc.usage, now); err == nil {
				t.Errorf("%s verifies against a CA that did not sign it", tc.pair.Cert)
			}
		}
		other := x509.ExtKeyUsageServerAuth
		if tc.usage == x509.ExtKeyUsageServerAuth {
			other = x509.ExtKeyUsageClientAuth
		}
		if err := verifies(cert, tc.roots, other, now); err == nil {
			t.Errorf("%s is also accepted for %v", tc.pair.Cert, other)
		}
	}

	// The serving certificate says exactly what APIServerSANs says, and a
	// client that dials any of those names accepts it.
	serving := readCertFile(t, l.ServingAPIServer().Cert)
	dns, ips, _ := APIServerSANs(in)
	if !slices.Equal(sortedCopy(serving.DNSNames), dns) || !slices.Equal(sortedCopy(ipStrs(serving.IPAddresses)), sortedCopy(ipStrs(ips))) {
		t.Errorf("serving SANs %q %q, want %q %q", serving.DNSNames, ipStrs(serving.IPAddresses), dns, ipStrs(ips))
	}
	for _, host := range []string{"kubernetes.default.svc", "skiff.example.com", "node-a", "10.43.0.1", "192.0.2.10", "127.0.0.1", "::1"} {
		if err := serving.VerifyHostname(host); err != nil {
			t.Errorf("serving certificate: %v", err)
		}
	}
	if serving.VerifyHostname("other.example.com") == nil {
		t.Error("serving certificate accepts a name it was not given")
	}

	// The front-proxy certificate's name is the one the apiserver allows.
	if got, want := argValue(t, testPlan(t, l).APIServerArgs(), "requestheader-allowed-names"), readCertFile(t, l.ClientAuthProxy().Cert).Subject.CommonName; got != want {
		t.Errorf("requestheader-allowed-names=%q but the auth-proxy certificate is %q", got, want)
	}
}

func TestEnsureCertificatesIsIdempotent(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	in := certTestInputs()
	now := time.Now()
	first, err := EnsureCertificates(l, in, now)
	if err != nil {
		t.Fatal(err)
	}
	all := append(caPairs(l), leafPairs(l)...)
	before := serials(t, all)
	saKey := readFileT(t, l.ServiceAccountKey())

	second, err := EnsureCertificates(l, in, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Issued) != 0 {
		t.Errorf("second run issued %q", second.Issued)
	}
	if !bytes.Equal(first.ServerCAPEM, second.ServerCAPEM) {
		t.Error("second run returned a different server CA")
	}
	if after := serials(t, all); !mapsEqual(before, after) {
		t.Errorf("serials changed:\n%v\n%v", before, after)
	}
	if !bytes.Equal(saKey, readFileT(t, l.ServiceAccountKey())) {
		t.Error("service-account key changed: every issued token would be invalid")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func TestEnsureCertificatesNewTLSSANReissuesOnlyServing(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	in := certTestInputs()
	now := time.Now()
	if _, err := EnsureCertificates(l, in, now); err != nil {
		t.Fatal(err)
	}
	all := append(caPairs(l), leafPairs(l)...)
	before := serials(t, all)
	servingKey := readFileT(t, l.ServingAPIServer().Key)

	in.TLSSANs = append(in.TLSSANs, "new.example.com", "198.51.100.77")
	res, err := EnsureCertificates(l, in, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := issuedFiles(t, res), []string{l.ServingAPIServer().Cert}; !slices.Equal(got, want) {
		t.Errorf("Issued %q, want only %q", got, want)
	}
	after := serials(t, all)
	for path, s := range before {
		changed := after[path] != s
		if want := path == l.ServingAPIServer().Cert; changed != want {
			t.Errorf("%s: serial changed=%v, want %v", path, changed, want)
		}
	}
	serving := readCertFile(t, l.ServingAPIServer().Cert)
	if err := serving.VerifyHostname("new.example.com"); err != nil {
		t.Errorf("reissued serving certificate: %v", err)
	}
	if err := serving.VerifyHostname("198.51.100.77"); err != nil {
		t.Errorf("reissued serving certificate: %v", err)
	}
	if err := serving.VerifyHostname("skiff.example.com"); err != nil {
		t.Errorf("reissued serving certificate lost an old SAN: %v", err)
	}
	if !bytes.Equal(servingKey, readFileT(t, l.ServingAPIServer().Key)) {
		t.Error("serving key was replaced, want it kept across a reissue")
	}
}

func TestEnsureCertificatesRenewsLeavesNotCAs(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	in := certTestInputs()
	now := time.Now()
	if _, err := EnsureCertificates(l, in, now); err != nil {
		t.Fatal(err)
	}
	caBefore := serials(t, caPairs(l))
	leafBefore := serials(t, leafPairs(l))

	// Leaves last a year and are renewed within 90 days of expiry (pki.RenewBefore).
	later := now.Add(280 * 24 * time.Hour)
	res, err := EnsureCertificates(l, in, later)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := issuedFiles(t, res), certPaths(leafPairs(l)); !slices.Equal(got, want) {
		t.Errorf("Issued %q, want every leaf %q", got, want)
	}
	for _, e := range res.Issued {
		if !strings.Contains(e, "expires in") {
			t.Errorf("Issued entry %q does not say the certificate was expiring", e)
		}
	}
	if after := serials(t, caPairs(l)); !mapsEqual(caBefore, after) {
		t.Errorf("CA serials changed: %v -> %v", caBefore, after)
	}
	leafAfter := serials(t, leafPairs(l))
	for path, s := range leafBefore {
		if leafAfter[path] == s {
			t.Errorf("%s was not renewed", path)
		}
		cert := readCertFile(t, path)
		if !cert.NotAfter.After(later.Add(300 * 24 * time.Hour)) {
			t.Errorf("%s: renewed NotAfter %v is not a year after %v", path, cert.NotAfter, later)
		}
	}
	again, err := EnsureCertificates(l, in, later)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Issued) != 0 {
		t.Errorf("run after renewal issued %q", again.Issued)
	}
}

func TestEnsureCertificatesBadServiceCIDR(t *testing.T) {
	in := certTestInputs()
	in.ServiceCIDR = "10.43.0.0"
	_, err := EnsureCertificates(Layout{DataDir: t.TempDir()}, in, time.Now())
	if err == nil || !strings.Contains(err.Error(), "service-cidr") {
		t.Errorf("got %v, want an error naming service-cidr", err)
	}
}

func TestWriteComponentKubeconfigs(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	now := time.Now()
	res, err := EnsureCertificates(l, certTestInputs(), now)
	if err != nil {
		t.Fatal(err)
	}
	// Not LoopbackURL, to see that the URL given is the one written.
	const url = "https://127.0.0.1:16444"
	if err := WriteComponentKubeconfigs(l, url, res.ServerCAPEM); err != nil {
		t.Fatal(err)
	}
	serving := readCertFile(t, l.ServingAPIServer().Cert)
	clientRoots := pool(t, l.ClientCA().Cert)

	for _, tc := range []struct {
		path string
		pair Pair
		cn   string
	}{
		{l.AdminKubeconfig(), l.ClientAdmin(), "system:admin"},
		{l.ControllerKubeconfig(), l.ClientController(), "system:kube-controller-manager"},
		{l.SchedulerKubeconfig(), l.ClientScheduler(), "system:kube-scheduler"},
	} {
		wantPerm(t, tc.path, 0o600)
		cfg, err := clientcmd.LoadFromFile(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
		if err != nil {
			t.Fatalf("%s: building a client config: %v", tc.path, err)
		}
		if rc.Host != url {
			t.Errorf("%s: server %q, want %q", tc.path, rc.Host, url)
		}
		if !bytes.Equal(rc.TLSClientConfig.CAData, res.ServerCAPEM) {
			t.Errorf("%s: CA is not the server CA", tc.path)
		}
		if rc.TLSClientConfig.CertFile != tc.pair.Cert || rc.TLSClientConfig.KeyFile != tc.pair.Key {
			t.Errorf("%s: credentials %q %q, want %q %q", tc.path, rc.TLSClientConfig.CertFile, rc.TLSClientConfig.KeyFile, tc.pair.Cert, tc.pair.Key)
		}

		// The kubeconfig's CA accepts the apiserver's serving certificate
		// on the loopback address ...
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(rc.TLSClientConfig.CAData)
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1", CurrentTime: now}); err != nil {
			t.Errorf("%s: its CA does not accept the serving certificate: %v", tc.path, err)
		}
		// ... and its client certificate is the component's and passes the
		// apiserver's client CA.
		cert := readCertFile(t, rc.TLSClientConfig.CertFile)
		if cert.Subject.CommonName != tc.cn {
			t.Errorf("%s: client certificate CN %q, want %q", tc.path, cert.Subject.CommonName, tc.cn)
		}
		if err := verifies(cert, clientRoots, x509.ExtKeyUsageClientAuth, now); err != nil {
			t.Errorf("%s: client certificate: %v", tc.path, err)
		}
	}

	// A changed URL is written through.
	const url2 = "https://127.0.0.1:26444"
	if err := WriteComponentKubeconfigs(l, url2, res.ServerCAPEM); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(l.SchedulerKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster].Server; got != url2 {
		t.Errorf("after rewrite: server %q, want %q", got, url2)
	}
}

func TestWriteComponentKubeconfigsErrorNamesFile(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	err := WriteComponentKubeconfigs(l, "https://127.0.0.1:6444", nil)
	if err == nil || !strings.Contains(err.Error(), l.AdminKubeconfig()) {
		t.Errorf("with no CA: got %v, want an error naming %s", err, l.AdminKubeconfig())
	}
}
