// Package node plans what a node runs: where its files live, its certificates and
// kubeconfigs, and the configuration of containerd, the kubelet and kube-proxy. Like
// controlplane, it is planning and file writing only, kept apart from the packages
// that link the components so that it tests fast.
package node

import "path/filepath"

// DefaultRunDir holds the node's runtime state (containerd's state and socket,
// flannel's subnet file). It is fixed rather than under the data dir because socket
// paths are limited to 108 bytes; separate nodes on one host use separate mount
// namespaces.
const DefaultRunDir = "/run/skiff"

// DefaultKubeletPort is the kubelet API's port unless --kubelet-arg=port
// moves it.
const DefaultKubeletPort = 10250

// Layout names the files of a node.
type Layout struct {
	DataDir string
	RunDir  string
}

func (l Layout) AgentDir() string  { return filepath.Join(l.DataDir, "agent") }
func (l Layout) EtcDir() string    { return filepath.Join(l.AgentDir(), "etc") }
func (l Layout) TLSDir() string    { return filepath.Join(l.AgentDir(), "tls") }
func (l Layout) ImagesDir() string { return filepath.Join(l.AgentDir(), "images") }

func (l Layout) ContainerdConfig() string {
	return filepath.Join(l.EtcDir(), "containerd", "config.toml")
}
func (l Layout) ContainerdRoot() string  { return filepath.Join(l.AgentDir(), "containerd") }
func (l Layout) ContainerdState() string { return filepath.Join(l.RunDir, "containerd") }
func (l Layout) ContainerdSocket() string {
	return filepath.Join(l.ContainerdState(), "containerd.sock")
}
func (l Layout) ContainerdLog() string {
	return filepath.Join(l.AgentDir(), "containerd", "containerd.log")
}

// ImportState records which image archives were imported, so that unchanged files
// are not imported again.
func (l Layout) ImportState() string { return filepath.Join(l.AgentDir(), "images.imported.json") }

func (l Layout) CNIConfDir() string { return filepath.Join(l.EtcDir(), "cni", "net.d") }
func (l Layout) FlannelNetConf() string {
	return filepath.Join(l.EtcDir(), "flannel", "net-conf.json")
}
func (l Layout) FlannelSubnetFile() string { return filepath.Join(l.RunDir, "flannel", "subnet.env") }

func (l Layout) KubeletConfig() string     { return filepath.Join(l.AgentDir(), "kubelet.yaml") }
func (l Layout) KubeletKubeconfig() string { return filepath.Join(l.AgentDir(), "kubelet.kubeconfig") }
func (l Layout) KubeProxyKubeconfig() string {
	return filepath.Join(l.AgentDir(), "kubeproxy.kubeconfig")
}
func (l Layout) FlannelKubeconfig() string {
	return filepath.Join(l.AgentDir(), "flannel.kubeconfig")
}
func (l Layout) StaticPodDir() string { return filepath.Join(l.AgentDir(), "pod-manifests") }

// Pair is a certificate and its key.
type Pair struct{ Cert, Key string }

func (l Layout) pair(name string) Pair {
	return Pair{Cert: filepath.Join(l.TLSDir(), name+".crt"), Key: filepath.Join(l.TLSDir(), name+".key")}
}

func (l Layout) ClientKubelet() Pair   { return l.pair("client-kubelet") }
func (l Layout) ServingKubelet() Pair  { return l.pair("serving-kubelet") }
func (l Layout) ClientKubeProxy() Pair { return l.pair("client-kube-proxy") }
func (l Layout) ClientFlannel() Pair   { return l.pair("client-flannel") }

// ClientCA is the CA the kubelet trusts for clients (the apiserver); ServerCA the one
// that signed the apiserver's serving certificate.
func (l Layout) ClientCA() string { return filepath.Join(l.TLSDir(), "client-ca.crt") }
func (l Layout) ServerCA() string { return filepath.Join(l.TLSDir(), "server-ca.crt") }

// KubeletDropinDir holds the user's KubeletConfiguration drop-ins (*.conf),
// merged over KubeletConfig; K3s's place for them, under the data dir.
func (l Layout) KubeletDropinDir() string { return filepath.Join(l.EtcDir(), "kubelet.conf.d") }
