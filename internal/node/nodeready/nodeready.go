// Package nodeready is the last start-up phase of a node: it is ready when the
// node's Node object reports Ready, which is what "skiff server ready" promises.
package nodeready

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Waiter is the component.
type Waiter struct {
	kubeconfig string
	nodeName   string
	log        *slog.Logger
	client     kubernetes.Interface
}

// New returns a component that waits for nodeName to be Ready.
func New(kubeconfig, nodeName string, log *slog.Logger) *Waiter {
	return &Waiter{kubeconfig: kubeconfig, nodeName: nodeName, log: log.With("component", "node")}
}

func (w *Waiter) Name() string { return "node" }

func (w *Waiter) Init(context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", w.kubeconfig)
	if err != nil {
		return fmt.Errorf("loading %s: %w", w.kubeconfig, err)
	}
	w.client, err = kubernetes.NewForConfig(cfg)
	return err
}

func (w *Waiter) Start(context.Context) error { return nil }
func (w *Waiter) Stop() error                 { return nil }

// Ready is nil once the Node's Ready condition is True; otherwise it says why not,
// in the kubelet's words.
func (w *Waiter) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2e9)
	defer cancel()
	node, err := w.client.CoreV1().Nodes().Get(ctx, w.nodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", w.nodeName, err)
	}
	return Condition(node)
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
