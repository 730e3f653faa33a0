package certs

import (
	"crypto/x509"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/pki"
)

// WarnWithin is how close to expiry a certificate is reported as "warning"
// (and a Warning Event on the Node is posted).
const WarnWithin = 30 * 24 * time.Hour

// Status values of Info.
const (
	StatusOK      = "ok"
	StatusWarning = "warning"
	StatusExpired = "expired"
)

// Info is what `skiff certificate check` says of one certificate file.
type Info struct {
	File     string    `json:"file"`
	Service  string    `json:"service,omitempty"`
	CA       bool      `json:"ca"`
	Subject  string    `json:"subject"`
	SANs     []string  `json:"sans,omitempty"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"notAfter"`
	DaysLeft int       `json:"daysLeft"`
	Status   string    `json:"status"`
	// Error says why the file could not be read; the other fields are
	// then empty.
	Error string `json:"error,omitempty"`
}

// StatusAt is the status of a certificate that expires at notAfter: expired
// once past, warning within WarnWithin, ok before.
func StatusAt(notAfter, now time.Time) string {
	switch left := notAfter.Sub(now); {
	case left <= 0:
		return StatusExpired
	case left < WarnWithin:
		return StatusWarning
	default:
		return StatusOK
	}
}

// DaysLeft is the whole days from now until notAfter, rounded down; negative
// once expired.
func DaysLeft(notAfter, now time.Time) int {
	return int(math.Floor(notAfter.Sub(now).Hours() / 24))
}

// RenewAt is when a leaf that expires at notAfter is due for renewal.
func RenewAt(notAfter time.Time) time.Time { return notAfter.Add(-pki.RenewBefore) }

// Due reports whether a leaf that expires at notAfter is to be renewed now.
func Due(notAfter, now time.Time) bool { return !now.Before(RenewAt(notAfter)) }

// Describe reads e's certificate and says what it is at now.
func Describe(e Entry, now time.Time) Info {
	info := Info{File: e.Cert, Service: e.Service, CA: e.IsCA}
	cert, err := pki.ReadCert(e.Cert)
	if err != nil {
		info.Error, info.Status = err.Error(), "unreadable"
		return info
	}
	info.Subject = subject(cert)
	info.Issuer = cert.Issuer.CommonName
	info.SANs = append(info.SANs, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		info.SANs = append(info.SANs, ip.String())
	}
	info.NotAfter = cert.NotAfter.UTC()
	info.DaysLeft = DaysLeft(cert.NotAfter, now)
	info.Status = StatusAt(cert.NotAfter, now)
	return info
}

// subject is "CN=<name>" with ",O=<group>" for each organization.
func subject(c *x509.Certificate) string {
	parts := []string{"CN=" + c.Subject.CommonName}
	for _, o := range c.Subject.Organization {
		parts = append(parts, "O="+o)
	}
	return strings.Join(parts, ",")
}

// Check describes every certificate of dataDir (Inventory).
func Check(dataDir string, now time.Time) ([]Info, error) {
	entries, err := Inventory(dataDir)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no certificates under %s: is it a skiff data dir (--data-dir)?", dataDir)
	}
	out := make([]Info, 0, len(entries))
	for _, e := range entries {
		out = append(out, Describe(e, now))
	}
	return out, nil
}
