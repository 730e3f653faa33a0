// Package nodeaddrs lets a node with --node-external-ip say its addresses
// in annotations on its own Node, as K3s's agent does with its k3s.io
// annotations. Such a node's kubelet runs with --cloud-provider=external,
// so it stops maintaining Node.status.addresses after registration; skiff's
// cloud node controller (package cloudnode, on an elected server) then sets
// the addresses from these annotations and removes the kubelet's
// node.cloudprovider.kubernetes.io/uninitialized taint.
//
// The node sets them itself, with its kubelet's credentials, as soon as the
// kubelet has registered the Node: NodeRestriction lets a node update its
// own Node object.
package nodeaddrs

import (
	"log/slog"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffkube/skiff/internal/node/nodemeta"
)

// The Node annotations the cloud node controller reads. Addresses are
// comma-separated, primary family first.
const (
	InternalIPAnnotation = "skiff.io/internal-ip"
	ExternalIPAnnotation = "skiff.io/external-ip"
	HostnameAnnotation   = "skiff.io/hostname"
)

// Config says which Node to annotate with what.
type Config struct {
	// Kubeconfig is the kubelet's: the node's own identity.
	Kubeconfig string
	NodeName   string
	// InternalIPs are the node IPs, ExternalIPs --node-external-ip's.
	InternalIPs, ExternalIPs []netip.Addr
	// Hostname is the Hostname address the kubelet reports: the node name
	// (its --hostname-override).
	Hostname string
}

// Annotations are the annotations cfg's node carries: none without an
// external IP, so that a node started again without --node-external-ip
// (whose kubelet then maintains its addresses itself) is left to its
// kubelet by the controller.
func Annotations(cfg Config) map[string]string {
	if len(cfg.ExternalIPs) == 0 {
		return nil
	}
	return map[string]string{
		InternalIPAnnotation: join(cfg.InternalIPs),
		ExternalIPAnnotation: join(cfg.ExternalIPs),
		HostnameAnnotation:   cfg.Hostname,
	}
}

func join(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

// Annotator is the component; it belongs in the phase that waits for the
// node, and is ready once the Node carries the annotations.
type Annotator struct{ *nodemeta.Patcher }

// New returns the component; client may be nil to build one from the
// kubeconfig.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) *Annotator {
	return &Annotator{nodemeta.New("node-addresses", cfg.Kubeconfig, cfg.NodeName, client, cfg.diff, log)}
}

// diff sets the annotations that differ and removes those the node no
// longer has, leaving the others alone.
func (cfg Config) diff(n *corev1.Node) map[string]any {
	changed := map[string]any{}
	want := Annotations(cfg)
	for _, k := range []string{InternalIPAnnotation, ExternalIPAnnotation, HostnameAnnotation} {
		v, ok := want[k]
		cur, has := n.Annotations[k]
		switch {
		case ok && (!has || cur != v):
			changed[k] = v
		case !ok && has:
			changed[k] = nil // a merge patch's null removes it
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return map[string]any{"annotations": changed}
}
