// Package controlplane decides what the control plane runs with: where its
// files live, which certificates it needs, and the command line of each
// upstream component. It is pure planning and file writing, kept apart from
// the packages that link Kubernetes so that it tests fast.
package controlplane

import "path/filepath"

// Layout names the files of a server's data dir.
type Layout struct{ DataDir string }

func (l Layout) ServerDir() string { return filepath.Join(l.DataDir, "server") }
func (l Layout) TLSDir() string    { return filepath.Join(l.ServerDir(), "tls") }
func (l Layout) CredDir() string   { return filepath.Join(l.ServerDir(), "cred") }
func (l Layout) EtcDir() string    { return filepath.Join(l.ServerDir(), "etc") }
func (l Layout) TokenFile() string { return filepath.Join(l.ServerDir(), "token") }
func (l Layout) LockFile() string  { return filepath.Join(l.ServerDir(), "skiff.lock") }

// AgentTokenFile holds the cluster's agent token (--agent-token of the
// server that started it), shared with every server as bootstrap data.
func (l Layout) AgentTokenFile() string { return filepath.Join(l.ServerDir(), "agent-token") }

func (l Layout) tls(name string) string { return filepath.Join(l.TLSDir(), name) }

// Pair is a certificate and its key.
type Pair struct{ Cert, Key string }

func (l Layout) pair(name string) Pair {
	return Pair{Cert: l.tls(name + ".crt"), Key: l.tls(name + ".key")}
}

func (l Layout) ServerCA() Pair        { return l.pair("server-ca") }
func (l Layout) ClientCA() Pair        { return l.pair("client-ca") }
func (l Layout) RequestHeaderCA() Pair { return l.pair("request-header-ca") }

// ServingAPIServer is the certificate of both the supervisor and the
// apiserver's loopback port: the same names reach either.
func (l Layout) ServingAPIServer() Pair    { return l.pair("serving-kube-apiserver") }
func (l Layout) ClientAdmin() Pair         { return l.pair("client-admin") }
func (l Layout) ClientController() Pair    { return l.pair("client-controller") }
func (l Layout) ClientScheduler() Pair     { return l.pair("client-scheduler") }
func (l Layout) ClientKubeAPIServer() Pair { return l.pair("client-kube-apiserver") }
func (l Layout) ClientAuthProxy() Pair     { return l.pair("client-auth-proxy") }
func (l Layout) ServiceAccountKey() string { return l.tls("service.key") }
func (l Layout) ServiceAccountPub() string { return l.tls("service.pub") }

func (l Layout) AdminKubeconfig() string { return filepath.Join(l.CredDir(), "admin.kubeconfig") }
func (l Layout) ControllerKubeconfig() string {
	return filepath.Join(l.CredDir(), "controller.kubeconfig")
}
func (l Layout) SchedulerKubeconfig() string {
	return filepath.Join(l.CredDir(), "scheduler.kubeconfig")
}

func (l Layout) AuthenticationConfig() string {
	return filepath.Join(l.EtcDir(), "authentication-config.yaml")
}
func (l Layout) EgressSelectorConfig() string {
	return filepath.Join(l.EtcDir(), "egress-selector-config.yaml")
}

// ManifestsDir holds the manifests the server applies (auto-deploy).
func (l Layout) ManifestsDir() string { return filepath.Join(l.ServerDir(), "manifests") }

// StaticDir holds chart files that HelmCharts name as /static/<path>.
func (l Layout) StaticDir() string { return filepath.Join(l.ServerDir(), "static") }

// IDFile holds this server's identity, a UUID made at its first start:
// unlike its name, not shared with a clone of its machine.
func (l Layout) IDFile() string { return filepath.Join(l.ServerDir(), "id") }

// HelmDir holds the Helm controller's repository cache.
func (l Layout) HelmDir() string { return filepath.Join(l.ServerDir(), "helm") }

// EgressSocket is where the apiserver reaches kubelets and pods (through
// agents' tunnels).
func (l Layout) EgressSocket() string { return filepath.Join(l.ServerDir(), "egress.sock") }

// DBDir holds the datastore: SQLite's file, or etcd's data dir.
func (l Layout) DBDir() string { return filepath.Join(l.ServerDir(), "db") }

// EtcdDataDir is embedded etcd's data dir (--cluster-init, or a server that
// joined with --server).
func (l Layout) EtcdDataDir() string { return filepath.Join(l.DBDir(), "etcd") }

// EtcdTLSDir holds embedded etcd's CAs and certificates, apart from the
// Kubernetes ones: an etcd client certificate must not be a Kubernetes one.
func (l Layout) EtcdTLSDir() string { return filepath.Join(l.TLSDir(), "etcd") }

// EtcdServerCA signs etcd's serving and client certificates.
func (l Layout) EtcdServerCA() Pair { return l.etcdPair("server-ca") }

// EtcdPeerCA signs the certificates etcd members use between each other.
func (l Layout) EtcdPeerCA() Pair { return l.etcdPair("peer-ca") }

func (l Layout) etcdPair(name string) Pair {
	base := filepath.Join(l.EtcdTLSDir(), name)
	return Pair{Cert: base + ".crt", Key: base + ".key"}
}

// EncryptionConfig is the apiserver's encryption-at-rest configuration,
// when secrets encryption is on.
func (l Layout) EncryptionConfig() string {
	return filepath.Join(l.CredDir(), "encryption-config.json")
}
