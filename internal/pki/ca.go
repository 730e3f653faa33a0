package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock is a little behind
	// still accepts a certificate issued just now.
	clockSkew = time.Hour
)

// CA is a certificate authority loaded from, or just written to, disk.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // exactly the bytes of the cert file; the join token hashes these
}

// LoadOrCreateCA loads certPath/keyPath, or creates a self-signed CA (valid 10
// years) when both are missing. It never replaces an existing CA: every
// certificate and join token in the cluster depends on it. One file without
// the other, or a cert/key mismatch, is an error naming the files.
func LoadOrCreateCA(certPath, keyPath, commonName string) (ca *CA, created bool, err error) {
	certExists, err := exists(certPath)
	if err != nil {
		return nil, false, err
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, false, err
	}

	switch {
	case certExists && keyExists:
		ca, err := loadCA(certPath, keyPath)
		return ca, false, err
	case certExists:
		return nil, false, fmt.Errorf("CA certificate %s exists but its key %s is missing: restore the key (or remove both files to create a new CA, which invalidates every issued certificate and join token)", certPath, keyPath)
	case keyExists:
		return nil, false, fmt.Errorf("CA key %s exists but its certificate %s is missing: restore the certificate (or remove both files to create a new CA, which invalidates every issued certificate and join token)", keyPath, certPath)
	}

	ca, err = createCA(certPath, keyPath, commonName, time.Now())
	if err != nil {
		return nil, false, fmt.Errorf("creating CA %q: %w", commonName, err)
	}
	return ca, true, nil
}

func loadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := readIfExists(certPath)
	if err != nil {
		return nil, err
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("loading CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("loading CA certificate %s: it is not a CA certificate (basic constraints CA:FALSE)", certPath)
	}
	keyPEM, err := readIfExists(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading CA key %s: %w", keyPath, err)
	}
	if !keyMatches(key, cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

func createCA(certPath, keyPath, commonName string, now time.Time) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := encodeCert(der)

	// Key first: a crash between the two writes leaves a key without a
	// certificate, which the next start reports instead of silently making a
	// second CA.
	if err := writeFileAtomic(keyPath, keyPEM, keyMode, dirMode); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, certPEM, certMode, dirMode); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}
