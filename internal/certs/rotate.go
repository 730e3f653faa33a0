package certs

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/pki"
)

// Reissued is one leaf re-issued.
type Reissued struct {
	Entry    Entry
	NotAfter time.Time
}

// Rotate re-issues now the leaves of dataDir that services name (all leaves
// when none), each signed by its CA with its own subject, SANs and key. It
// works whether or not the server runs: each file is replaced atomically and
// the components reload it. Refused before anything is written: an unknown
// service, a data dir without certificates, and leaves whose CA key is not
// here (an agent's, which the server issues: the agent renews them itself).
func Rotate(dataDir string, services []string, now time.Time) ([]Reissued, error) {
	entries, err := Inventory(dataDir)
	if err != nil {
		return nil, err
	}
	chosen, err := Select(entries, services)
	if err != nil {
		return nil, err
	}
	if len(chosen) == 0 {
		if len(Leaves(entries)) == 0 {
			return nil, fmt.Errorf("no certificates under %s: is it a skiff data dir (--data-dir)?", dataDir)
		}
		return nil, fmt.Errorf("--service %s: no such certificate on this machine (it has: %s)", strings.Join(services, ","), strings.Join(ServicesOf(entries), ", "))
	}
	var remote []string
	for _, e := range chosen {
		if e.CAKey == "" {
			remote = append(remote, e.Cert)
		}
	}
	if len(remote) > 0 {
		return nil, fmt.Errorf("%s: signed by the server's CA, whose key is not on this machine (an agent): the running agent renews them from the server, and a restart of the agent fetches new ones", strings.Join(remote, ", "))
	}
	cas := caCache{}
	// Every CA and leaf is read before the first write.
	for _, e := range chosen {
		if _, err := cas.get(e); err != nil {
			return nil, err
		}
		if _, err := pki.ReadCert(e.Cert); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Cert, err)
		}
	}
	var out []Reissued
	for _, e := range chosen {
		cert, err := reissue(cas, e, now)
		if err != nil {
			return out, err
		}
		out = append(out, Reissued{Entry: e, NotAfter: cert.NotAfter})
	}
	return out, nil
}

// caCache loads each CA once.
type caCache map[string]*pki.CA

func (c caCache) get(e Entry) (*pki.CA, error) {
	if ca, ok := c[e.CACert]; ok {
		return ca, nil
	}
	ca, err := pki.LoadCA(e.CACert, e.CAKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Cert, err)
	}
	c[e.CACert] = ca
	return ca, nil
}

func reissue(cas caCache, e Entry, now time.Time) (*x509.Certificate, error) {
	ca, err := cas.get(e)
	if err != nil {
		return nil, err
	}
	return ca.Reissue(e.Cert, e.Key, now)
}
