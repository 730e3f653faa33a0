package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	kubeletapis "k8s.io/kubelet/pkg/apis"
)

// Node is the configuration of the node a server (and, later, an agent) runs:
// container runtime, kubelet, kube-proxy and flannel. It is embedded in Server,
// so its flags are the server's flags too.
type Node struct {
	NodeName                 string   `json:"node-name"`
	NodeLabels               []string `json:"node-label"`
	NodeTaints               []string `json:"node-taint"`
	NodeIP                   string   `json:"node-ip"`
	KubeletArgs              []string `json:"kubelet-arg"`
	KubeProxyArgs            []string `json:"kube-proxy-arg"`
	FlannelBackend           string   `json:"flannel-backend"`
	ContainerRuntimeEndpoint string   `json:"container-runtime-endpoint"`
	PauseImage               string   `json:"pause-image"`
	// ResolvConf is omitted when empty so that config goldens that do not
	// set it stay as they are.
	ResolvConf string `json:"resolv-conf,omitempty"`
	// NodeExternalIP is the Node's ExternalIP (v4, or a v4,v6 pair); servicelb
	// publishes it as a LoadBalancer's address.
	NodeExternalIP string `json:"node-external-ip,omitempty"`
	// FlannelIface is the interface flannel sends pod traffic through
	// (default: --node-ip's).
	FlannelIface          string `json:"flannel-iface,omitempty"`
	ProtectKernelDefaults bool   `json:"protect-kernel-defaults,omitempty"`
	// PrivateRegistry is registries.yaml (K3s's format), read at start.
	PrivateRegistry string `json:"private-registry,omitempty"`
}

// FlannelBackends are the values --flannel-backend takes.
var FlannelBackends = []string{"vxlan", "host-gw", "none"}

// AddFlags registers the node options on fs with their defaults.
func (n *Node) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&n.NodeName, "node-name", "", "name of this node (default: the host name, lower-cased)")
	fs.StringArrayVar(&n.NodeLabels, "node-label", []string{}, "label to register the node with, key=value (repeatable)")
	fs.StringArrayVar(&n.NodeTaints, "node-taint", []string{}, "taint to register the node with, key=value:Effect (repeatable)")
	fs.StringVar(&n.NodeIP, "node-ip", "", "IP address of this node, or an IPv4,IPv6 pair for dual-stack (default: the advertise address)")
	fs.StringArrayVar(&n.KubeletArgs, "kubelet-arg", []string{}, "extra kubelet flag, key=value (repeatable)")
	fs.StringArrayVar(&n.KubeProxyArgs, "kube-proxy-arg", []string{}, "extra kube-proxy flag, key=value (repeatable)")
	fs.StringVar(&n.FlannelBackend, "flannel-backend", "vxlan", "pod network backend: vxlan, host-gw or none (bring your own CNI)")
	fs.StringVar(&n.ContainerRuntimeEndpoint, "container-runtime-endpoint", "", "CRI socket of an external container runtime (default: skiff's own containerd)")
	fs.StringVar(&n.PauseImage, "pause-image", "", "sandbox (pause) image for pods (default: skiff's built-in image)")
	fs.StringVar(&n.NodeExternalIP, "node-external-ip", "", "external IP address of this node, or an IPv4,IPv6 pair; servicelb publishes it for LoadBalancer Services")
	fs.StringVar(&n.FlannelIface, "flannel-iface", "", "interface flannel uses for pod traffic between nodes (default: --node-ip's interface)")
	fs.BoolVar(&n.ProtectKernelDefaults, "protect-kernel-defaults", false, "refuse to start the kubelet when kernel settings differ from its defaults, instead of changing them")
	fs.StringVar(&n.PrivateRegistry, "private-registry", DefaultPrivateRegistry, "registries.yaml with mirrors and credentials of private registries (K3s's format)")
	fs.StringVar(&n.ResolvConf, "resolv-conf", "", "resolv.conf the kubelet gives pods, used as is (default: the host's, or systemd-resolved's, or one without loopback nameservers)")
}

// Complete puts the node options into canonical form.
func (n *Node) Complete() {
	n.KubeletArgs = NormalizeArgs(n.KubeletArgs)
	n.KubeProxyArgs = NormalizeArgs(n.KubeProxyArgs)
	n.NodeName = strings.ToLower(n.NodeName)
	n.NodeIP = trimList(n.NodeIP)
	n.NodeExternalIP = trimList(n.NodeExternalIP)
	// The kubelet and CoreDNS read it later, from another working directory.
	if n.ResolvConf != "" {
		if abs, err := filepath.Abs(n.ResolvConf); err == nil {
			n.ResolvConf = abs
		}
	}
}

// Validate returns every problem with the node options, each naming its flag.
func (n *Node) Validate() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if n.NodeName != "" {
		if err := checkNodeName(n.NodeName); err != nil {
			add(fieldError("node-name", "%v", err))
		}
	}
	for _, l := range n.NodeLabels {
		if err := validateLabel(l); err != nil {
			add(itemError("node-label", l, "%v", err))
		} else if err := checkOwnLabel(l); err != nil {
			add(itemError("node-label", l, "%v", err))
		}
	}
	for _, t := range n.NodeTaints {
		if err := validateTaint(t); err != nil {
			add(itemError("node-taint", t, "%v", err))
		}
	}
	if n.NodeIP != "" {
		if _, err := ParseIPs(n.NodeIP); err != nil {
			add(fieldError("node-ip", "%v", err))
		}
	}
	for _, f := range []struct {
		flag string
		args []string
	}{{"kubelet-arg", n.KubeletArgs}, {"kube-proxy-arg", n.KubeProxyArgs}} {
		for _, err := range validateArgs(f.args) {
			add(fieldError(f.flag, "%v", err))
		}
	}
	if !contains(FlannelBackends, n.FlannelBackend) {
		add(fieldError("flannel-backend", "unknown backend %q; want one of %s", n.FlannelBackend, strings.Join(FlannelBackends, ", ")))
	}
	if e := n.ContainerRuntimeEndpoint; e != "" && !strings.HasPrefix(e, "unix://") && !strings.HasPrefix(e, "/") {
		add(fieldError("container-runtime-endpoint", "%q is not a unix socket; want unix:///path/to.sock", e))
	}
	if strings.ContainsAny(n.PauseImage, " \t\n") {
		add(fieldError("pause-image", "invalid image reference %q", n.PauseImage))
	}
	return append(errs, n.validateOperations()...)
}

// ResolveNodeName is the node's name: --node-name, else the host name that
// hostname (os.Hostname) returns, lower-cased as the kubelet does. A name
// the API would refuse for a Node (not a DNS-1123 subdomain: at most 253
// lower-case letters, digits, '-' and '.') is an error naming the value, the
// rule and --node-name, so start-up stops before it writes anything rather
// than waiting for a Node that can never register.
func (n *Node) ResolveNodeName(hostname func() (string, error)) (string, error) {
	if n.NodeName != "" {
		if err := checkNodeName(n.NodeName); err != nil {
			return "", fieldError("node-name", "%v", err)
		}
		return n.NodeName, nil
	}
	h, err := hostname()
	if err != nil {
		return "", fmt.Errorf("reading host name for the node name (set --node-name): %w", err)
	}
	name := strings.ToLower(h)
	if err := checkNodeName(name); err != nil {
		return "", fmt.Errorf("the host name is not a valid node name: %w; set one with --node-name", err)
	}
	return name, nil
}

// checkNodeName applies the API server's rule for a Node's name.
func checkNodeName(name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("invalid node name %q: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// checkOwnLabel refuses a label the node may not set on its own Node: the
// kubelet and the NodeRestriction admission plugin (which skiff enables)
// refuse labels in the kubernetes.io and k8s.io namespaces other than the
// kubelet's own (kubeletapis.IsKubeletLabel), and any label under
// node-restriction.kubernetes.io. Such a label is for an administrator to
// set with kubectl once the Node exists.
func checkOwnLabel(l string) error {
	key, _, _ := strings.Cut(l, "=")
	ns, _, found := strings.Cut(key, "/")
	if !found {
		return nil
	}
	inNS := func(parent string) bool { return ns == parent || strings.HasSuffix(ns, "."+parent) }
	restricted := inNS(corev1.LabelNamespaceNodeRestriction) ||
		(inNS("kubernetes.io") || inNS("k8s.io")) && !kubeletapis.IsKubeletLabel(key)
	if restricted {
		return fmt.Errorf("%q: a node may not set this label on itself: the kubelet and NodeRestriction allow a node only its own kubernetes.io and k8s.io labels (under %s, or the well-known hostname, os, arch, instance-type and topology labels); label the Node with kubectl once it is up", l, strings.Join(kubeletapis.KubeletLabelNamespaces(), "/ or ")+"/")
	}
	return nil
}

func validateLabel(l string) error {
	key, value, ok := strings.Cut(l, "=")
	if !ok {
		return fmt.Errorf("%q is not key=value", l)
	}
	if msgs := validation.IsQualifiedName(key); len(msgs) > 0 {
		return fmt.Errorf("%q: invalid key: %s", l, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsValidLabelValue(value); len(msgs) > 0 {
		return fmt.Errorf("%q: invalid value: %s", l, strings.Join(msgs, "; "))
	}
	return nil
}

var taintEffects = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}

func validateTaint(t string) error {
	kv, effect, ok := strings.Cut(t, ":")
	if !ok || !contains(taintEffects, effect) {
		return fmt.Errorf("%q is not key[=value]:Effect with Effect one of %s", t, strings.Join(taintEffects, ", "))
	}
	key, value, _ := strings.Cut(kv, "=")
	if msgs := validation.IsQualifiedName(key); len(msgs) > 0 {
		return fmt.Errorf("%q: invalid key: %s", t, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsValidLabelValue(value); len(msgs) > 0 {
		return fmt.Errorf("%q: invalid value: %s", t, strings.Join(msgs, "; "))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
