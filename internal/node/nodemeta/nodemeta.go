// Package nodemeta is the component that brings labels and annotations of
// this machine's own Node to what skiff wants, once per start: it waits
// for the kubelet to register the Node, then merge-patches what differs.
// The node's role labels and its address annotations are two uses.
package nodemeta

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// retryInterval spaces the attempts while the kubelet has not registered
// the Node yet; the manager asks for readiness far more often.
const retryInterval = 250 * time.Millisecond

// Diff returns the metadata merge patch that brings n to what is wanted:
// {"labels": {...}, "annotations": {...}} with a nil value removing a key;
// empty when n already is.
type Diff func(n *corev1.Node) map[string]any

// Patcher is the component. It belongs in the phase that waits for the
// node, and is ready once the Node's metadata is as wanted.
type Patcher struct {
	name       string
	kubeconfig string
	nodeName   string
	client     kubernetes.Interface
	diff       Diff
	log        *slog.Logger

	mu      sync.Mutex
	done    bool
	last    time.Time
	lastErr error
}

// New returns the component named name (its log component and error
// prefix) for node nodeName; client may be nil to build one from
// kubeconfig at Init.
func New(name, kubeconfig, nodeName string, client kubernetes.Interface, diff Diff, log *slog.Logger) *Patcher {
	return &Patcher{name: name, kubeconfig: kubeconfig, nodeName: nodeName, client: client, diff: diff, log: log.With("component", name)}
}

func (p *Patcher) Name() string { return p.name }

func (p *Patcher) Init(context.Context) error {
	if p.client != nil {
		return nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", p.kubeconfig)
	if err != nil {
		return fmt.Errorf("%s: loading %s: %w", p.name, p.kubeconfig, err)
	}
	if p.client, err = kubernetes.NewForConfig(rc); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

func (p *Patcher) Start(context.Context) error { return nil }
func (p *Patcher) Stop() error                 { return nil }

// Ready is nil once the Node's metadata is as wanted; until then it says
// why not (most often: not registered yet).
func (p *Patcher) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	if time.Since(p.last) < retryInterval {
		return p.lastErr
	}
	p.last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.lastErr = p.apply(ctx)
	p.done = p.lastErr == nil
	return p.lastErr
}

func (p *Patcher) apply(ctx context.Context) error {
	n, err := p.client.CoreV1().Nodes().Get(ctx, p.nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s not registered yet", p.nodeName)
	}
	if err != nil {
		return fmt.Errorf("%s: getting node %s: %w", p.name, p.nodeName, err)
	}
	meta := p.diff(n)
	if len(meta) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	if _, err := p.client.CoreV1().Nodes().Patch(ctx, p.nodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "skiff"}); err != nil {
		return fmt.Errorf("%s: patching node %s: %w", p.name, p.nodeName, err)
	}
	p.log.Debug("node metadata set", "node", p.nodeName, "patch", meta)
	return nil
}
