package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func newTestCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, created, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "skiff-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("expected a new CA")
	}
	return ca
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := parseCert(data)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

func TestCACreatedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")

	ca1 := newTestCA(t, dir)
	if !ca1.Cert.IsCA || ca1.Cert.Subject.CommonName != "skiff-test-ca" {
		t.Errorf("CA cert: IsCA=%v CN=%q", ca1.Cert.IsCA, ca1.Cert.Subject.CommonName)
	}
	if ca1.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA cert lacks KeyUsageCertSign")
	}
	if years := ca1.Cert.NotAfter.Sub(ca1.Cert.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("CA validity %.2f years, want 10", years)
	}
	wantMode(t, keyPath, 0o600)
	wantMode(t, certPath, 0o644)
	wantMode(t, dir, 0o700)

	ca2, created, err := LoadOrCreateCA(certPath, keyPath, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("second call created a new CA")
	}
	if ca2.Cert.SerialNumber.Cmp(ca1.Cert.SerialNumber) != 0 {
		t.Error("second call returned a different CA")
	}
	onDisk, _ := os.ReadFile(certPath)
	if !bytes.Equal(ca2.CertPEM, onDisk) {
		t.Error("CertPEM differs from the cert file")
	}
	if n := len(ca1.Cert.SerialNumber.Bytes()); n < 8 {
		t.Errorf("serial only %d bytes, want a random 128-bit number", n)
	}
}

func TestCAFilesMismatchedOrMissing(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	newTestCA(t, a)
	newTestCA(t, b)

	_, _, err := LoadOrCreateCA(filepath.Join(a, "ca.crt"), filepath.Join(b, "ca.key"), "x")
	if err == nil || !strings.Contains(err.Error(), "does not match") ||
		!strings.Contains(err.Error(), filepath.Join(a, "ca.crt")) || !strings.Contains(err.Error(), filepath.Join(b, "ca.key")) {
		t.Errorf("mismatched cert/key: got %v, want an error naming both files", err)
	}

	missingKey := filepath.Join(t.TempDir(), "ca.key")
	_, _, err = LoadOrCreateCA(filepath.Join(a, "ca.crt"), missingKey, "x")
	if err == nil || !strings.Contains(err.Error(), missingKey) {
		t.Errorf("missing key: got %v, want an error naming %s", err, missingKey)
	}

	missingCert := filepath.Join(t.TempDir(), "ca.crt")
	_, _, err = LoadOrCreateCA(missingCert, filepath.Join(a, "ca.key"), "x")
	if err == nil || !strings.Contains(err.Error(), missingCert) {
		t.Errorf("missing cert: got %v, want an error naming %s", err, missingCert)
	}
}

func TestCANotACA(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	leafCert, leafKey := filepath.Join(dir, "leaf.crt"), filepath.Join(dir, "leaf.key")
	if _, _, err := ca.EnsureLeaf(leafCert, leafKey, LeafSpec{CommonName: "x", Usage: ClientAuth}, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateCA(leafCert, leafKey, "x")
	if err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf loaded as CA: got %v", err)
	}
}

var serverSpec = LeafSpec{
	CommonName:    "kube-apiserver",
	Organizations: []string{"skiff"},
	DNSNames:      []string{"localhost", "kubernetes.default"},
	IPs:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.43.0.1"), net.IPv6loopback},
	Usage:         ServerAuth,
}

func TestLeafLifecycle(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certPath, keyPath := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	now := time.Now()

	ensure := func(spec LeafSpec, at time.Time, wantIssued bool, wantReason string) *x509.Certificate {
		t.Helper()
		issued, reason, err := ca.EnsureLeaf(certPath, keyPath, spec, at)
		if err != nil {
			t.Fatal(err)
		}
		if issued != wantIssued || !strings.Contains(reason, wantReason) {
			t.Fatalf("EnsureLeaf = (%v, %q), want (%v, %q)", issued, reason, wantIssued, wantReason)
		}
		return readCert(t, certPath)
	}

	first := ensure(serverSpec, now, true, "missing")
	wantMode(t, keyPath, 0o600)
	wantMode(t, certPath, 0o644)
	if days := first.NotAfter.Sub(now).Hours() / 24; days < 364.9 || days > 365.1 {
		t.Errorf("leaf valid for %.1f days, want 365", days)
	}
	if first.NotBefore.After(now.Add(-59 * time.Minute)) {
		t.Errorf("NotBefore %v is not backdated for clock skew", first.NotBefore)
	}

	// Unchanged: no reissue, even with the SANs listed in another order.
	reordered := serverSpec
	reordered.DNSNames = []string{"kubernetes.default", "localhost", "LOCALHOST"}
	reordered.IPs = []net.IP{net.IPv6loopback, net.ParseIP("10.43.0.1").To4(), net.ParseIP("127.0.0.1")}
	second := ensure(reordered, now.Add(24*time.Hour), false, "")
	if second.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("certificate changed without a reason")
	}

	// Near expiry: 365-280 = 85 days left, inside RenewBefore.
	later := now.Add(280 * 24 * time.Hour)
	renewed := ensure(serverSpec, later, true, "expires in 85 days")
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("renewal kept the serial number")
	}
	if !renewed.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(first.PublicKey) {
		t.Error("renewal did not reuse the existing key")
	}

	// Expired (a node powered off for over a year), then the clock set back.
	ensure(serverSpec, later.Add(395*24*time.Hour), true, "expired 30 days ago")
	ensure(serverSpec, later, true, "not valid yet")

	// SANs changed.
	moreSANs := serverSpec
	moreSANs.IPs = append(slices.Clone(serverSpec.IPs), net.ParseIP("192.0.2.7"))
	withIP := ensure(moreSANs, later, true, "SANs changed")
	if !slices.ContainsFunc(withIP.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("192.0.2.7")) }) {
		t.Error("new IP SAN missing from the certificate")
	}

	// Subject and usage changes.
	newOrg := moreSANs
	newOrg.Organizations = []string{"system:masters"}
	ensure(newOrg, later, true, "subject changed")
	both := newOrg
	both.Usage = ServerAuth | ClientAuth
	ensure(both, later, true, "usage changed")
	ensure(both, later, false, "")

	// A different CA (as after restoring another cluster's PKI).
	otherCA := newTestCA(t, t.TempDir())
	if issued, reason, err := otherCA.EnsureLeaf(certPath, keyPath, both, later); err != nil || !issued || !strings.Contains(reason, "not signed") {
		t.Fatalf("EnsureLeaf with another CA = (%v, %q, %v)", issued, reason, err)
	}
	if err := readCert(t, certPath).CheckSignatureFrom(otherCA.Cert); err != nil {
		t.Errorf("reissued certificate not signed by the new CA: %v", err)
	}
}

func TestLeafKeyProblems(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certPath, keyPath := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	spec := LeafSpec{CommonName: "system:kube-scheduler", Usage: ClientAuth}
	now := time.Now()
	if _, _, err := ca.EnsureLeaf(certPath, keyPath, spec, now); err != nil {
		t.Fatal(err)
	}
	before := readCert(t, certPath)

	// Another valid key in place of ours: kept, and the cert reissued for it.
	otherKey, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := encodeKey(otherKey)
	if err := os.WriteFile(keyPath, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	issued, reason, err := ca.EnsureLeaf(certPath, keyPath, spec, now)
	if err != nil || !issued || reason != "key does not match certificate" {
		t.Fatalf("after key swap: (%v, %q, %v)", issued, reason, err)
	}
	if !readCert(t, certPath).PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(otherKey.Public()) {
		t.Error("certificate not reissued for the key on disk")
	}

	// Garbage key: replaced by a fresh one.
	if err := os.WriteFile(keyPath, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	issued, reason, err = ca.EnsureLeaf(certPath, keyPath, spec, now)
	if err != nil || !issued || !strings.Contains(reason, "key") {
		t.Fatalf("after corrupting key: (%v, %q, %v)", issued, reason, err)
	}
	keyPEM, _ := os.ReadFile(keyPath)
	key, err := parseKey(keyPEM)
	if err != nil {
		t.Fatalf("key not replaced: %v", err)
	}
	after := readCert(t, certPath)
	if !keyMatches(key, after.PublicKey) || keyMatches(key, before.PublicKey) {
		t.Error("expected a new key matching the new certificate")
	}
}

func TestLeafVerifiesAgainstCA(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	cases := []struct {
		usage Usage
		want  []x509.ExtKeyUsage
	}{
		{ServerAuth, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{ClientAuth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{ServerAuth | ClientAuth, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	}
	for i, c := range cases {
		certPath := filepath.Join(dir, "leaf"+string(rune('0'+i))+".crt")
		keyPath := strings.TrimSuffix(certPath, ".crt") + ".key"
		spec := serverSpec
		spec.Usage = c.usage
		if _, _, err := ca.EnsureLeaf(certPath, keyPath, spec, time.Now()); err != nil {
			t.Fatal(err)
		}
		cert := readCert(t, certPath)
		if !slices.Equal(cert.ExtKeyUsage, c.want) {
			t.Errorf("usage %d: ExtKeyUsage %v, want %v", c.usage, cert.ExtKeyUsage, c.want)
		}
		for _, eku := range c.want {
			opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{eku}}
			if eku == x509.ExtKeyUsageServerAuth {
				opts.DNSName = "kubernetes.default"
			}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("usage %d: verify for %v: %v", c.usage, eku, err)
			}
		}
		if c.usage == ClientAuth {
			_, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err == nil {
				t.Error("a client certificate verified for server auth")
			}
		}
	}
}

func TestLeafSpecValidation(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	for _, spec := range []LeafSpec{
		{Usage: ClientAuth},
		{CommonName: "x"},
		{CommonName: "x", Usage: 4},
		{CommonName: "x", Usage: ClientAuth, IPs: []net.IP{{1, 2, 3}}},
	} {
		if _, _, err := ca.EnsureLeaf(filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key"), spec, time.Now()); err == nil {
			t.Errorf("spec %+v accepted", spec)
		}
	}
}

func TestServiceAccountKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	priv, pub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := EnsureServiceAccountKey(priv, pub); err != nil {
		t.Fatal(err)
	}
	wantMode(t, priv, 0o600)
	privPEM, _ := os.ReadFile(priv)
	pubPEM, _ := os.ReadFile(pub)
	key, err := parseKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeyPEMMatches(pubPEM, key.Public()) {
		t.Fatal("public key file does not match the private key")
	}

	// Idempotent: nothing is rewritten (an atomic rewrite would change the inode).
	privInfo, _ := os.Stat(priv)
	pubInfo, _ := os.Stat(pub)
	if err := EnsureServiceAccountKey(priv, pub); err != nil {
		t.Fatal(err)
	}
	privInfo2, _ := os.Stat(priv)
	pubInfo2, _ := os.Stat(pub)
	if !os.SameFile(privInfo, privInfo2) || !os.SameFile(pubInfo, pubInfo2) {
		t.Error("second call rewrote a key file")
	}
	privAgain, _ := os.ReadFile(priv)
	pubAgain, _ := os.ReadFile(pub)
	if !bytes.Equal(privPEM, privAgain) || !bytes.Equal(pubPEM, pubAgain) {
		t.Error("second call changed the key files")
	}

	// Lost or wrong public file: rewritten from the existing private key.
	for _, content := range [][]byte{nil, []byte("junk")} {
		if content == nil {
			os.Remove(pub)
		} else if err := os.WriteFile(pub, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := EnsureServiceAccountKey(priv, pub); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(pub); !bytes.Equal(got, pubPEM) {
			t.Errorf("public key not restored (had %q)", content)
		}
	}

	// An unreadable private key is an error, never silently replaced.
	if err := os.WriteFile(priv, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsureServiceAccountKey(priv, pub); err == nil || !strings.Contains(err.Error(), priv) {
		t.Errorf("corrupt private key: got %v, want an error naming %s", err, priv)
	}
}

func TestWriteKubeconfig(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, filepath.Join(dir, "tls"))
	certPath, keyPath := filepath.Join(dir, "tls", "admin.crt"), filepath.Join(dir, "tls", "admin.key")
	if _, _, err := ca.EnsureLeaf(certPath, keyPath, LeafSpec{CommonName: "admin", Organizations: []string{"system:masters"}, Usage: ClientAuth}, time.Now()); err != nil {
		t.Fatal(err)
	}

	spec := KubeconfigSpec{
		Path:      filepath.Join(dir, "etc", "skiff.yaml"),
		ServerURL: "https://127.0.0.1:6444",
		CAPEM:     ca.CertPEM,
		CertPath:  certPath,
		KeyPath:   keyPath,
	}
	changed, err := WriteKubeconfig(spec)
	if err != nil || !changed {
		t.Fatalf("first write: (%v, %v)", changed, err)
	}
	wantMode(t, spec.Path, 0o600)
	wantMode(t, filepath.Dir(spec.Path), 0o755)

	cfg, err := clientcmd.LoadFromFile(spec.Path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("no current context in %+v", cfg)
	}
	cluster, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cluster == nil || user == nil {
		t.Fatalf("context %+v points at missing entries", ctx)
	}
	if cluster.Server != spec.ServerURL || !bytes.Equal(cluster.CertificateAuthorityData, ca.CertPEM) {
		t.Errorf("cluster = %s with CA %q", cluster.Server, cluster.CertificateAuthorityData)
	}
	if ctx.AuthInfo != "default" || user.ClientCertificate != certPath || user.ClientKey != keyPath {
		t.Errorf("user %q = cert %q key %q", ctx.AuthInfo, user.ClientCertificate, user.ClientKey)
	}

	// Unchanged: not rewritten, but a loosened mode is fixed.
	fi1, _ := os.Stat(spec.Path)
	if err := os.Chmod(spec.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err = WriteKubeconfig(spec)
	if err != nil || changed {
		t.Fatalf("second write: (%v, %v)", changed, err)
	}
	fi2, _ := os.Stat(spec.Path)
	if !fi2.ModTime().Equal(fi1.ModTime()) || !os.SameFile(fi1, fi2) {
		t.Error("unchanged kubeconfig was rewritten")
	}
	wantMode(t, spec.Path, 0o600)

	// Embedded, with a user name and mode: a portable admin kubeconfig.
	spec.Embed, spec.User, spec.Mode = true, "admin", 0o640
	if changed, err = WriteKubeconfig(spec); err != nil || !changed {
		t.Fatalf("embedded write: (%v, %v)", changed, err)
	}
	wantMode(t, spec.Path, 0o640)
	cfg, err = clientcmd.LoadFromFile(spec.Path)
	if err != nil {
		t.Fatal(err)
	}
	embedded := cfg.AuthInfos["admin"]
	certPEM, _ := os.ReadFile(certPath)
	if embedded == nil || !bytes.Equal(embedded.ClientCertificateData, certPEM) || len(embedded.ClientKeyData) == 0 || embedded.ClientCertificate != "" {
		t.Errorf("embedded user = %+v", embedded)
	}
	// The loaded config must be usable by client-go as is.
	if _, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig(); err != nil {
		t.Errorf("client config: %v", err)
	}
}

func TestHostSANs(t *testing.T) {
	dns, ips, err := HostSANs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dns, "localhost") {
		t.Errorf("dns %v lacks localhost", dns)
	}
	hostname, _ := os.Hostname()
	if hostname != "" && !slices.Contains(dns, strings.ToLower(hostname)) {
		t.Errorf("dns %v lacks hostname %q", dns, hostname)
	}
	has := func(s string) bool {
		return slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.Equal(net.ParseIP(s)) })
	}
	if !has("127.0.0.1") || !has("::1") {
		t.Errorf("ips %v lack loopback", ips)
	}
	for _, ip := range ips {
		if ip.IsLoopback() && !ip.Equal(net.ParseIP("127.0.0.1")) && !ip.Equal(net.IPv6loopback) {
			t.Errorf("unexpected loopback %v", ip)
		}
		if ip.To4() == nil && ip.IsLinkLocalUnicast() {
			t.Errorf("link-local IPv6 %v included", ip)
		}
	}
	// Usable as SANs as is.
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	spec := LeafSpec{CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Usage: ServerAuth}
	if _, _, err := ca.EnsureLeaf(filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), spec, time.Now()); err != nil {
		t.Fatal(err)
	}
	if issued, reason, _ := ca.EnsureLeaf(filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), spec, time.Now()); issued {
		t.Errorf("HostSANs output caused a reissue: %s", reason)
	}
}
