// Package certs lists, checks, rotates and renews the certificates skiff
// manages in a data dir: `skiff certificate check|rotate` and the running
// server's and agent's online renewal.
//
// Leaves are re-issued with their own subject, SANs, usages and key
// (pki.Reissue), so only the certificate file changes, atomically, and every
// reader (the apiserver's dynamic certificate files, client-go's reloading
// of kubeconfig certificate files, the kubelet's serving file manager, the
// supervisor's and the tunnel's own reloading) sees either the old or the new
// pair, never a mix. CAs are never re-issued here.
package certs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/node"
)

// Entry is one certificate file skiff manages.
type Entry struct {
	// Service names the leaf for `skiff certificate rotate --service`, as
	// K3s does (api-server, kubelet...); "" for a CA.
	Service string
	Cert    string
	// Key is the leaf's private key, or the CA's key when there is one.
	Key string
	// CACert and CAKey sign the leaf; CAKey is "" on an agent, whose
	// leaves the server signs.
	CACert, CAKey string
	IsCA          bool
}

// Services are the names `rotate --service` accepts, sorted.
var Services = []string{"admin", "api-server", "auth-proxy", "controller-manager", "etcd", "flannel", "kube-proxy", "kubelet", "scheduler", "supervisor"}

// Inventory lists the certificate files of dataDir that exist: the server's
// CAs and leaves (server/tls), etcd's (server/tls/etcd) and the node's
// (agent/tls), in that order. A missing file is left out; any other error
// reading the directory is returned.
func Inventory(dataDir string) ([]Entry, error) {
	l := controlplane.Layout{DataDir: dataDir}
	nl := node.Layout{DataDir: dataDir}
	etcdLeaf := func(name string) controlplane.Pair {
		// The names of internal/datastore/etcd's certs.go.
		base := filepath.Join(l.EtcdTLSDir(), name)
		return controlplane.Pair{Cert: base + ".crt", Key: base + ".key"}
	}
	ca := func(p controlplane.Pair) Entry { return Entry{Cert: p.Cert, Key: p.Key, IsCA: true} }
	leaf := func(svc string, p, ca controlplane.Pair) Entry {
		return Entry{Service: svc, Cert: p.Cert, Key: p.Key, CACert: ca.Cert, CAKey: ca.Key}
	}
	nodeLeaf := func(svc string, p node.Pair, ca controlplane.Pair, agentCA string) Entry {
		e := Entry{Service: svc, Cert: p.Cert, Key: p.Key, CACert: agentCA}
		// On a server the node's leaves come from the server's CAs here.
		if ok, _ := fileExists(ca.Key); ok {
			e.CACert, e.CAKey = ca.Cert, ca.Key
		}
		return e
	}
	all := []Entry{
		ca(l.ServerCA()), ca(l.ClientCA()), ca(l.RequestHeaderCA()),
		leaf("api-server", l.ServingAPIServer(), l.ServerCA()),
		leaf("admin", l.ClientAdmin(), l.ClientCA()),
		leaf("controller-manager", l.ClientController(), l.ClientCA()),
		leaf("scheduler", l.ClientScheduler(), l.ClientCA()),
		leaf("api-server", l.ClientKubeAPIServer(), l.ClientCA()),
		leaf("auth-proxy", l.ClientAuthProxy(), l.RequestHeaderCA()),
		ca(l.EtcdServerCA()), ca(l.EtcdPeerCA()),
		leaf("etcd", etcdLeaf("server-client"), l.EtcdServerCA()),
		leaf("etcd", etcdLeaf("peer-server-client"), l.EtcdPeerCA()),
		leaf("etcd", etcdLeaf("client"), l.EtcdServerCA()),
		{Cert: nl.ServerCA(), IsCA: true}, {Cert: nl.ClientCA(), IsCA: true},
		nodeLeaf("kubelet", nl.ClientKubelet(), l.ClientCA(), nl.ClientCA()),
		nodeLeaf("kubelet", nl.ServingKubelet(), l.ServerCA(), nl.ServerCA()),
		nodeLeaf("kube-proxy", nl.ClientKubeProxy(), l.ClientCA(), nl.ClientCA()),
		nodeLeaf("flannel", nl.ClientFlannel(), l.ClientCA(), nl.ClientCA()),
	}
	var out []Entry
	for _, e := range all {
		ok, err := fileExists(e.Cert)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if e.IsCA {
			if ok, _ := fileExists(e.Key); !ok {
				e.Key = ""
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// Leaves keeps the leaves of entries.
func Leaves(entries []Entry) []Entry {
	return slices.DeleteFunc(slices.Clone(entries), func(e Entry) bool { return e.IsCA })
}

// Select returns the leaves of entries that services name ("supervisor"
// names the apiserver's serving certificate, which the supervisor's port
// serves); all leaves when services is empty. An unknown service is an
// error naming it and the known ones, before anything is chosen.
func Select(entries []Entry, services []string) ([]Entry, error) {
	want := map[string]bool{}
	for _, s := range services {
		for _, s := range strings.Split(s, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !slices.Contains(Services, s) {
				return nil, fmt.Errorf("--service %q: unknown service; known: %s", s, strings.Join(Services, ", "))
			}
			want[s] = true
		}
	}
	if want["supervisor"] {
		want["supervisor-serving"] = true
	}
	var out []Entry
	for _, e := range Leaves(entries) {
		name := e.Service
		if len(want) == 0 || want[name] || (want["supervisor-serving"] && filepath.Base(e.Cert) == "serving-kube-apiserver.crt") {
			out = append(out, e)
		}
	}
	return out, nil
}

// ServicesOf lists the distinct services of entries, sorted.
func ServicesOf(entries []Entry) []string {
	set := map[string]bool{}
	for _, e := range entries {
		if e.Service != "" {
			set[e.Service] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func fileExists(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("certificates: %w", err)
	}
	return true, nil
}
