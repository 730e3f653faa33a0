package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// RenewBefore is how long before expiry a leaf certificate is reissued: by
// EnsureLeaf at every start, and by the running server's and agent's online
// renewal (internal/certs). K3s renews at 90 days too.
const RenewBefore = 90 * 24 * time.Hour

// Usage says what a leaf certificate is for. Values combine as bit flags.
type Usage int

const (
	ClientAuth Usage = 1 << iota // TLS client: components authenticating to the apiserver
	ServerAuth                   // TLS server: serving endpoints
)

func (u Usage) extKeyUsages() []x509.ExtKeyUsage {
	var eku []x509.ExtKeyUsage
	if u&ServerAuth != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if u&ClientAuth != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	return eku
}

// LeafSpec describes a leaf certificate.
type LeafSpec struct {
	CommonName    string
	Organizations []string // Kubernetes reads these as the user's groups
	DNSNames      []string
	IPs           []net.IP
	Usage         Usage
}

func (s LeafSpec) validate() error {
	if s.CommonName == "" {
		return errors.New("leaf spec: CommonName is empty")
	}
	if s.Usage == 0 || s.Usage&^(ClientAuth|ServerAuth) != 0 {
		return fmt.Errorf("leaf spec %q: Usage must be ClientAuth, ServerAuth or both, got %d", s.CommonName, s.Usage)
	}
	for _, ip := range s.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("leaf spec %q: invalid IP %v", s.CommonName, ip)
		}
	}
	return nil
}

// EnsureLeaf makes sure certPath/keyPath hold a certificate for spec signed by
// ca and valid for at least RenewBefore after now. It returns whether it
// issued one and, if so, why, for a log line.
//
// The existing private key is kept when it parses, so anything that pinned the
// public key keeps working across renewals; a new ECDSA P-256 key is made
// otherwise.
func (ca *CA) EnsureLeaf(certPath, keyPath string, spec LeafSpec, now time.Time) (issued bool, reason string, err error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return false, "", errors.New("EnsureLeaf: CA is not loaded")
	}
	if err := spec.validate(); err != nil {
		return false, "", err
	}

	keyPEM, err := readIfExists(keyPath)
	if err != nil {
		return false, "", err
	}
	var key crypto.Signer
	if keyPEM != nil {
		key, _ = parseKey(keyPEM) // an unparsable key is replaced, not fatal
	}
	certPEM, err := readIfExists(certPath)
	if err != nil {
		return false, "", err
	}

	reason = ca.leafProblem(certPEM, key, spec, now)
	if reason == "" {
		return false, "", nil
	}

	newKeyMade := key == nil
	if newKeyMade {
		if key, err = newKey(); err != nil {
			return false, "", err
		}
	}
	certPEM, err = ca.signLeaf(key.Public(), spec, now)
	if err != nil {
		return false, "", fmt.Errorf("issuing certificate %s for %q: %w", certPath, spec.CommonName, err)
	}
	// Key first: after a crash in between, the old certificate no longer
	// matches the key, and the next call reissues.
	if newKeyMade {
		encoded, err := encodeKey(key)
		if err != nil {
			return false, "", err
		}
		if err := writeFileAtomic(keyPath, encoded, keyMode, dirMode); err != nil {
			return false, "", err
		}
	}
	if err := writeFileAtomic(certPath, certPEM, certMode, dirMode); err != nil {
		return false, "", err
	}
	return true, reason, nil
}

// leafProblem returns why the existing certificate must be reissued, or ""
// when it is fine. The first problem found is reported.
func (ca *CA) leafProblem(certPEM []byte, key crypto.Signer, spec LeafSpec, now time.Time) string {
	if certPEM == nil {
		return "missing"
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return "unreadable certificate"
	}
	if key == nil {
		return "key missing or unreadable"
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return "not signed by the current CA"
	}
	if left := cert.NotAfter.Sub(now); left < RenewBefore {
		// Rounded: NotAfter has whole seconds, so "now + 115 days" would
		// otherwise read as 114.
		days := int(left.Round(24*time.Hour) / (24 * time.Hour))
		if left <= 0 {
			return fmt.Sprintf("expired %d days ago", -days)
		}
		return fmt.Sprintf("expires in %d days", days)
	}
	if now.Before(cert.NotBefore) {
		return "not valid yet (issued in the future: was the clock wrong?)"
	}
	if cert.Subject.CommonName != spec.CommonName || !sameSet(cert.Subject.Organization, spec.Organizations) {
		return "subject changed"
	}
	if !sameSet(lowerAll(cert.DNSNames), lowerAll(spec.DNSNames)) || !sameSet(ipStrings(cert.IPAddresses), ipStrings(spec.IPs)) {
		return "SANs changed"
	}
	if !keyMatches(key, cert.PublicKey) {
		return "key does not match certificate"
	}
	if !sameSet(cert.ExtKeyUsage, spec.Usage.extKeyUsages()) {
		return "usage changed"
	}
	return ""
}

func (ca *CA) signLeaf(pub crypto.PublicKey, spec LeafSpec, now time.Time) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		// RSA key exchange in TLS encrypts with the certificate's key.
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   spec.CommonName,
			Organization: spec.Organizations,
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(leafValidity),
		KeyUsage:              keyUsage,
		ExtKeyUsage:           spec.Usage.extKeyUsages(),
		BasicConstraintsValid: true,
		DNSNames:              spec.DNSNames,
		IPAddresses:           spec.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return encodeCert(der), nil
}

// sameSet compares as sets: order and duplicates do not matter, so a SAN
// list assembled in a different order does not cause a reissue.
func sameSet[T comparable](a, b []T) bool {
	in := func(x T, s []T) bool { return slices.Contains(s, x) }
	for _, x := range a {
		if !in(x, b) {
			return false
		}
	}
	for _, x := range b {
		if !in(x, a) {
			return false
		}
	}
	return true
}

// lowerAll normalizes DNS names, which compare case-insensitively.
func lowerAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}

// ipStrings normalizes IPs: a certificate stores IPv4 in 4 bytes while
// net.ParseIP returns 16, so the byte slices are not comparable directly.
func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// IssueLeaf signs a new certificate for spec with a new key and returns both as
// PEM, writing nothing: the server uses it to issue a joining agent's
// certificates, which travel to the agent rather than to disk here.
func (ca *CA) IssueLeaf(spec LeafSpec, now time.Time) (certPEM, keyPEM []byte, err error) {
	if err := spec.validate(); err != nil {
		return nil, nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	if certPEM, err = ca.signLeaf(key.Public(), spec, now); err != nil {
		return nil, nil, fmt.Errorf("signing %q: %w", spec.CommonName, err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// SignPublicKey signs a certificate for spec, valid for a year from now, for
// a public key whose private half stays with the requester (an agent renewing
// its certificates keeps its keys). pub must pass CheckPublicKey.
func (ca *CA) SignPublicKey(pub crypto.PublicKey, spec LeafSpec, now time.Time) (certPEM []byte, err error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	if certPEM, err = ca.signLeaf(pub, spec, now); err != nil {
		return nil, fmt.Errorf("signing %q: %w", spec.CommonName, err)
	}
	return certPEM, nil
}
