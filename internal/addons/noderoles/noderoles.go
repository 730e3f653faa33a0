// Package noderoles gives a server's own Node the role labels K3s gives it
// (node-role.kubernetes.io/control-plane and .../master, and .../etcd where
// embedded etcd runs), which `kubectl get nodes` shows as ROLES and which
// charts and tools select on. The kubelet may not set node-role labels
// itself (the NodeRestriction admission plugin refuses them), so the server
// sets them with its own credentials once its kubelet has registered.
//
// As in K3s, they are set at every start, not watched: a label removed by
// hand stays removed until the server starts again.
package noderoles

import (
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffkube/skiff/internal/node/nodemeta"
)

// The role labels, K3s's keys; the value is always "true".
const (
	ControlPlaneLabel = "node-role.kubernetes.io/control-plane"
	MasterLabel       = "node-role.kubernetes.io/master"
	EtcdLabel         = "node-role.kubernetes.io/etcd"
)

// Config says which node to label and with which roles.
type Config struct {
	// Kubeconfig may get and patch Nodes (the admin's).
	Kubeconfig string
	// NodeName is the server's own node.
	NodeName string
	// EmbeddedEtcd adds the etcd role: set it where the server runs an
	// embedded etcd member (an external datastore is not one).
	EmbeddedEtcd bool
	// EtcdMember, when set, is this server's embedded etcd member, recorded
	// in the Node's annotation EtcdMemberAnnotation so that deleting the
	// Node removes the member (etcdmember).
	EtcdMember string
}

// EtcdMemberAnnotation names a server node's embedded etcd member.
const EtcdMemberAnnotation = "etcd.skiff.io/member-name"

// Labels are the role labels of a server node.
func Labels(embeddedEtcd bool) map[string]string {
	l := map[string]string{ControlPlaneLabel: "true", MasterLabel: "true"}
	if embeddedEtcd {
		l[EtcdLabel] = "true"
	}
	return l
}

// Labeler is the component. It is ready once the Node carries its roles,
// so it belongs in the phase that waits for the node.
type Labeler struct{ *nodemeta.Patcher }

// New returns the component; client may be nil to build one from the
// kubeconfig.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) *Labeler {
	return &Labeler{nodemeta.New("node-roles", cfg.Kubeconfig, cfg.NodeName, client, cfg.diff, log)}
}

// diff adds the role labels the Node lacks (or has with another value),
// leaving its other labels alone, and the etcd member annotation.
func (cfg Config) diff(n *corev1.Node) map[string]any {
	missing := map[string]string{}
	for k, v := range Labels(cfg.EmbeddedEtcd) {
		if n.Labels[k] != v {
			missing[k] = v
		}
	}
	meta := map[string]any{}
	if len(missing) > 0 {
		meta["labels"] = missing
	}
	if m := cfg.EtcdMember; m != "" && n.Annotations[EtcdMemberAnnotation] != m {
		meta["annotations"] = map[string]string{EtcdMemberAnnotation: m}
	}
	return meta
}
