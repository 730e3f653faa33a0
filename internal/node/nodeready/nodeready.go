// Package nodeready is the last start-up phase of a node: it is ready when the
// node's Node object reports Ready, which is what "skiff server ready" promises.
package nodeready

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Waiter is the component.
type Waiter struct {
	kubeconfig string
	nodeName   string
	// registeredOnly makes the phase end once the Node is registered and has
	// reported status: with a CNI that the user brings (or an external runtime
	// with its own CNI setup), Ready comes only after the user acts, and that
	// needs a running server.
	registeredOnly bool
	log            *slog.Logger
	client         kubernetes.Interface
	since          time.Time
	warned         bool
}

// New returns a component that waits for nodeName to be Ready, or only to be
// registered when registeredOnly is set. since is when this process started: a
// lease renewed after it comes from this process's kubelet.
func New(kubeconfig, nodeName string, registeredOnly bool, since time.Time, log *slog.Logger) *Waiter {
	return &Waiter{kubeconfig: kubeconfig, nodeName: nodeName, registeredOnly: registeredOnly, since: since, log: log.With("component", "node")}
}

func (w *Waiter) Name() string { return "node" }

func (w *Waiter) Init(context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", w.kubeconfig)
	if err != nil {
		return fmt.Errorf("node: loading %s: %w", w.kubeconfig, err)
	}
	if w.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("node: client for %s: %w", w.kubeconfig, err)
	}
	return nil
}

func (w *Waiter) Start(context.Context) error { return nil }
func (w *Waiter) Stop() error                 { return nil }

// Ready is nil once this start's kubelet has reported the Node Ready; otherwise it
// says why not, in the kubelet's words. A Ready condition left from before a
// restart does not count: its heartbeat is older than this start.
func (w *Waiter) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	node, err := w.client.CoreV1().Nodes().Get(ctx, w.nodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", w.nodeName, err)
	}
	// The kubelet posts node status only when it changes, so a Ready
	// condition left from before a restart looks the same as a current one.
	// Status posted since this process started is current; otherwise the
	// node's lease, renewed every 10 s, tells that this start's kubelet is the
	// one behind it.
	if !statusSince(node, w.since) {
		lease, err := w.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, w.nodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("node %s: no status from this start's kubelet yet (lease: %w)", w.nodeName, err)
		}
		if lease.Spec.RenewTime == nil || lease.Spec.RenewTime.Time.Before(w.since) {
			return fmt.Errorf("node %s: no status or lease renewal from this start's kubelet yet", w.nodeName)
		}
	}
	err = Condition(node)
	if err != nil && w.registeredOnly {
		if !w.warned {
			w.warned = true
			w.log.Warn("node registered but not Ready until a CNI network is installed (--flannel-backend=none or an external runtime)", "node", w.nodeName, "reason", err)
		}
		return nil
	}
	return err
}

// Condition reports whether node is Ready.
func Condition(node *corev1.Node) error {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s not ready: %s", node.Name, c.Message)
		}
	}
	return errors.New("node " + node.Name + " has no Ready condition yet")
}

// statusSince reports whether the kubelet posted the Ready condition at or after
// t (the API keeps whole seconds, so t is rounded up: an older post never counts).
func statusSince(node *corev1.Node, t time.Time) bool {
	cut := t.Truncate(time.Second)
	if !cut.Equal(t) {
		cut = cut.Add(time.Second)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return !c.LastHeartbeatTime.Time.Before(cut) || !c.LastTransitionTime.Time.Before(cut)
		}
	}
	return false
}
