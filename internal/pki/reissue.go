package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// LoadCA loads an existing CA (certificate and key), never creating one. A
// missing file, a key that does not match or a certificate that is not a CA
// is an error naming the files.
func LoadCA(certPath, keyPath string) (*CA, error) {
	for _, p := range []string{certPath, keyPath} {
		ok, err := exists(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("loading CA: %s: %w", p, os.ErrNotExist)
		}
	}
	return loadCA(certPath, keyPath)
}

// ReadCert parses the first certificate of the PEM file path.
func ReadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cert, err := parseCert(data)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return cert, nil
}

// SpecOf is the LeafSpec a certificate was issued from: its subject, SANs
// and extended key usages.
func SpecOf(cert *x509.Certificate) LeafSpec {
	spec := LeafSpec{
		CommonName:    cert.Subject.CommonName,
		Organizations: slices.Clone(cert.Subject.Organization),
		DNSNames:      slices.Clone(cert.DNSNames),
		IPs:           slices.Clone(cert.IPAddresses),
	}
	for _, u := range cert.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			spec.Usage |= ServerAuth
		case x509.ExtKeyUsageClientAuth:
			spec.Usage |= ClientAuth
		}
	}
	return spec
}

// Reissue signs a new certificate for the leaf in certPath, valid for a year
// from now, with the subject, SANs and usages of the one there and its
// existing private key in keyPath, and replaces certPath atomically. The key
// is kept, so the certificate and key files never disagree, whenever a reader
// loads them. It returns the new certificate. A missing or unparsable
// certificate or key, or a key that does not match, is an error: the start-up
// path (EnsureLeaf) makes those, not this one.
func (ca *CA) Reissue(certPath, keyPath string, now time.Time) (*x509.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("reissue: CA is not loaded")
	}
	old, err := ReadCert(certPath)
	if err != nil {
		return nil, fmt.Errorf("reissuing %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reissuing %s: %w", certPath, err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reissuing %s: key %s: %w", certPath, keyPath, err)
	}
	if !keyMatches(key, old.PublicKey) {
		return nil, fmt.Errorf("reissuing %s: key %s does not match it", certPath, keyPath)
	}
	spec := SpecOf(old)
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("reissuing %s: %w", certPath, err)
	}
	certPEM, err := ca.signLeaf(key.Public(), spec, now)
	if err != nil {
		return nil, fmt.Errorf("reissuing %s: %w", certPath, err)
	}
	if err := writeFileAtomic(certPath, certPEM, certMode, dirMode); err != nil {
		return nil, err
	}
	return parseCert(certPEM)
}

// KeyPairReloader serves a certificate and key from files and loads them
// again when either file changes (size or modification time), for a TLS
// server's GetCertificate or a client's GetClientCertificate. A pair that
// fails to load (caught between two writes, say) keeps the last good one.
type KeyPairReloader struct {
	certPath, keyPath string

	mu      sync.Mutex
	stamp   [2]fileStamp
	current *tls.Certificate
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// NewKeyPairReloader loads the pair once; an error names the files.
func NewKeyPairReloader(certPath, keyPath string) (*KeyPairReloader, error) {
	r := &KeyPairReloader{certPath: certPath, keyPath: keyPath}
	if _, err := r.Current(); err != nil {
		return nil, err
	}
	return r, nil
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

// Current returns the pair as the files hold it now (a stat of each per
// call; a read only when they changed).
func (r *KeyPairReloader) Current() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, errC := stampOf(r.certPath)
	ks, errK := stampOf(r.keyPath)
	if errC == nil && errK == nil && r.current != nil && r.stamp == [2]fileStamp{cs, ks} {
		return r.current, nil
	}
	pair, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		if r.current != nil {
			return r.current, nil
		}
		return nil, fmt.Errorf("loading %s and %s: %w", r.certPath, r.keyPath, err)
	}
	if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil {
		pair.Leaf = leaf
	}
	r.current, r.stamp = &pair, [2]fileStamp{cs, ks}
	return r.current, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *KeyPairReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current()
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (r *KeyPairReloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Current()
}
