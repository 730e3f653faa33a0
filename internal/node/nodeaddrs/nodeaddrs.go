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
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
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

// retryInterval spaces the attempts while the kubelet has not registered
// the Node yet; the manager asks for readiness far more often.
const retryInterval = 250 * time.Millisecond

// Annotator is the component; it belongs in the phase that waits for the
// node, and is ready once the Node carries the annotations.
type Annotator struct {
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
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) *Annotator {
	return &Annotator{cfg: cfg, client: client, log: log.With("component", "node-addresses")}
}

func (a *Annotator) Name() string { return "node-addresses" }

func (a *Annotator) Init(context.Context) error {
	if a.client != nil {
		return nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("node-addresses: loading %s: %w", a.cfg.Kubeconfig, err)
	}
	if a.client, err = kubernetes.NewForConfig(rc); err != nil {
		return fmt.Errorf("node-addresses: %w", err)
	}
	return nil
}

func (a *Annotator) Start(context.Context) error { return nil }
func (a *Annotator) Stop() error                 { return nil }

// Ready is nil once the Node carries the annotations; until then it says
// why not (most often: not registered yet).
func (a *Annotator) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return nil
	}
	if time.Since(a.last) < retryInterval {
		return a.lastErr
	}
	a.last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.lastErr = a.apply(ctx)
	a.done = a.lastErr == nil
	return a.lastErr
}

// apply patches the annotations that differ, and removes those the node no
// longer has, leaving the others alone.
func (a *Annotator) apply(ctx context.Context) error {
	n, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s not registered yet", a.cfg.NodeName)
	}
	if err != nil {
		return fmt.Errorf("node-addresses: getting node %s: %w", a.cfg.NodeName, err)
	}
	changed := map[string]any{}
	want := Annotations(a.cfg)
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
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": changed}})
	if err != nil {
		return err
	}
	if _, err := a.client.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "skiff"}); err != nil {
		return fmt.Errorf("node-addresses: annotating node %s: %w", a.cfg.NodeName, err)
	}
	a.log.Debug("address annotations set", "node", a.cfg.NodeName, "annotations", changed)
	return nil
}
