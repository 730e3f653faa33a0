// Package bootstrap is the data every server of one cluster must share: the
// CAs and their keys, the service-account key, the token and the
// encryption config, plus the cluster-wide settings servers must agree on.
//
// A server starting a cluster collects it from its data dir; a server
// joining gets it from a member (through the join API, with the server
// token) or from the external datastore (sealed with a key derived from the
// token), checks it, and writes it before it issues any certificate, so
// every server's leaves chain to the same CAs.
package bootstrap

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/controlplane"
)

// Data is a cluster's bootstrap data.
type Data struct {
	// Files maps a path relative to the data dir (slash-separated, like
	// "server/tls/server-ca.key") to the file's content. Only the paths
	// Paths lists appear; a file that does not exist yet is absent.
	Files map[string][]byte `json:"files"`
	// Settings are the cluster-wide settings of the server that started
	// the cluster.
	Settings Settings `json:"settings"`
}

// Paths are the files, relative to the data dir, that make up the
// bootstrap data. Leaf certificates are not among them: every server issues
// its own from the shared CAs.
func Paths(l controlplane.Layout) []string {
	abs := []string{
		l.ServerCA().Cert, l.ServerCA().Key,
		l.ClientCA().Cert, l.ClientCA().Key,
		l.RequestHeaderCA().Cert, l.RequestHeaderCA().Key,
		l.ServiceAccountKey(), l.ServiceAccountPub(),
		l.EtcdServerCA().Cert, l.EtcdServerCA().Key,
		l.EtcdPeerCA().Cert, l.EtcdPeerCA().Key,
		l.TokenFile(),
		l.AgentTokenFile(),
		l.EncryptionConfig(),
	}
	rel := make([]string, 0, len(abs))
	for _, p := range abs {
		r, err := filepath.Rel(l.DataDir, p)
		if err != nil {
			panic(fmt.Sprintf("bootstrap path %s outside the data dir %s", p, l.DataDir))
		}
		rel = append(rel, filepath.ToSlash(r))
	}
	return rel
}

// Collect reads the bootstrap files that exist in l's data dir. Errors
// other than a missing file name the file.
func Collect(l controlplane.Layout, settings Settings) (*Data, error) {
	d := &Data{Files: map[string][]byte{}, Settings: settings}
	for _, rel := range Paths(l) {
		b, err := os.ReadFile(filepath.Join(l.DataDir, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bootstrap: reading %s: %w", rel, err)
		}
		d.Files[rel] = b
	}
	return d, nil
}

// Check reports a Data that is not whole: a file outside Paths, or a CA
// certificate without its key (or a key without its certificate).
func (d *Data) Check(l controlplane.Layout) error {
	known := map[string]bool{}
	for _, rel := range Paths(l) {
		known[rel] = true
	}
	for rel := range d.Files {
		if !known[rel] {
			return fmt.Errorf("bootstrap data holds %q, which is not a bootstrap file", rel)
		}
	}
	for _, p := range []controlplane.Pair{l.ServerCA(), l.ClientCA(), l.RequestHeaderCA(), l.EtcdServerCA(), l.EtcdPeerCA()} {
		cert, key := relTo(l, p.Cert), relTo(l, p.Key)
		if (d.Files[cert] == nil) != (d.Files[key] == nil) {
			return fmt.Errorf("bootstrap data holds only one of %s and %s", cert, key)
		}
	}
	if d.Files[relTo(l, l.ServerCA().Cert)] == nil {
		return errors.New("bootstrap data holds no server CA")
	}
	return nil
}

// Conflicts lists the files in l's data dir that exist with a content other
// than d's, sorted: writing d would replace them. A server that already has
// its own CAs must not silently take another cluster's.
func (d *Data) Conflicts(l controlplane.Layout) ([]string, error) {
	var out []string
	for rel, want := range d.Files {
		got, err := os.ReadFile(filepath.Join(l.DataDir, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bootstrap: reading %s: %w", rel, err)
		}
		if !bytes.Equal(got, want) {
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Write puts d's files into l's data dir, each atomically with mode 0600,
// after checking d as a whole: a bad Data writes nothing.
func (d *Data) Write(l controlplane.Layout) error {
	if err := d.Check(l); err != nil {
		return err
	}
	rels := make([]string, 0, len(d.Files))
	for rel := range d.Files {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		path := filepath.Join(l.DataDir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if err := atomicfile.Write(path, d.Files[rel], 0o600, 0o700); err != nil {
			return fmt.Errorf("bootstrap: writing %s: %w", rel, err)
		}
	}
	return nil
}

func relTo(l controlplane.Layout, abs string) string {
	r, _ := filepath.Rel(l.DataDir, abs)
	return filepath.ToSlash(r)
}

// Settings are the settings every server of a cluster must share. The
// field names are the flags'.
type Settings struct {
	ClusterCIDR   string `json:"cluster-cidr"`
	ServiceCIDR   string `json:"service-cidr"`
	ClusterDNS    string `json:"cluster-dns"`
	ClusterDomain string `json:"cluster-domain"`
	// ServiceNodePortRange is recorded since issue 14; a cluster recorded
	// before has none, and is not compared.
	ServiceNodePortRange string `json:"service-node-port-range,omitempty"`
}

// Mismatch names every setting where mine differs from the cluster's, with
// both values, one error per flag, as
// `--cluster-cidr: this server has "X", the cluster has "Y"`. Nil when they
// agree. A setting the cluster does not record (empty) is not compared.
func (mine Settings) Mismatch(cluster Settings) error {
	var errs []string
	for _, f := range []struct{ flag, mine, cluster string }{
		{"cluster-cidr", mine.ClusterCIDR, cluster.ClusterCIDR},
		{"service-cidr", mine.ServiceCIDR, cluster.ServiceCIDR},
		{"cluster-dns", mine.ClusterDNS, cluster.ClusterDNS},
		{"cluster-domain", mine.ClusterDomain, cluster.ClusterDomain},
		{"service-node-port-range", mine.ServiceNodePortRange, cluster.ServiceNodePortRange},
	} {
		if f.cluster != "" && f.mine != f.cluster {
			errs = append(errs, fmt.Sprintf("--%s: this server has %q, the cluster has %q", f.flag, f.mine, f.cluster))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}
