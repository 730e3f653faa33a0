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
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
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

// retryInterval spaces the attempts while the kubelet has not registered
// the Node yet; the manager asks for readiness far more often.
const retryInterval = 250 * time.Millisecond

// Labeler is the component. It is ready once the Node carries its roles,
// so it belongs in the phase that waits for the node.
type Labeler struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger

	mu      sync.Mutex
	done    bool
	last    time.Time
	lastErr error
}

// New returns the component; client may be nil to build one from the
// kubeconfig.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) *Labeler {
	return &Labeler{cfg: cfg, client: client, log: log.With("component", "node-roles")}
}

func (l *Labeler) Name() string { return "node-roles" }

func (l *Labeler) Init(context.Context) error {
	if l.client != nil {
		return nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", l.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("node-roles: loading %s: %w", l.cfg.Kubeconfig, err)
	}
	if l.client, err = kubernetes.NewForConfig(rc); err != nil {
		return fmt.Errorf("node-roles: %w", err)
	}
	return nil
}

func (l *Labeler) Start(context.Context) error { return nil }
func (l *Labeler) Stop() error                 { return nil }

// Ready is nil once the Node has its role labels; until then it says why
// not (most often: not registered yet).
func (l *Labeler) Ready() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return nil
	}
	if time.Since(l.last) < retryInterval {
		return l.lastErr
	}
	l.last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.lastErr = l.apply(ctx)
	l.done = l.lastErr == nil
	return l.lastErr
}

// apply adds the role labels the Node lacks (or has with another value),
// leaving its other labels alone.
func (l *Labeler) apply(ctx context.Context) error {
	n, err := l.client.CoreV1().Nodes().Get(ctx, l.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s not registered yet", l.cfg.NodeName)
	}
	if err != nil {
		return fmt.Errorf("node-roles: getting node %s: %w", l.cfg.NodeName, err)
	}
	missing := map[string]string{}
	for k, v := range Labels(l.cfg.EmbeddedEtcd) {
		if n.Labels[k] != v {
			missing[k] = v
		}
	}
	meta := map[string]any{}
	if len(missing) > 0 {
		meta["labels"] = missing
	}
	if m := l.cfg.EtcdMember; m != "" && n.Annotations[EtcdMemberAnnotation] != m {
		meta["annotations"] = map[string]string{EtcdMemberAnnotation: m}
	}
	if len(meta) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	if _, err := l.client.CoreV1().Nodes().Patch(ctx, l.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "skiff"}); err != nil {
		return fmt.Errorf("node-roles: labelling node %s: %w", l.cfg.NodeName, err)
	}
	l.log.Debug("role labels set", "node", l.cfg.NodeName, "labels", missing, "etcd-member", l.cfg.EtcdMember)
	return nil
}
