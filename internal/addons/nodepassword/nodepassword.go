// Package nodepassword frees a node name when its Node is deleted: it removes the
// node password Secret the join API keeps, so that the machine (or a new one) can
// join under that name again. `kubectl delete node X` is how a node leaves.
package nodepassword

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/join"
)

// Controller is the component.
type Controller struct {
	kubeconfig string
	client     kubernetes.Interface
	log        *slog.Logger
	synced     func() bool
	component.Runner
}

// New returns the controller; client may be nil to build one from kubeconfig.
func New(kubeconfig string, client kubernetes.Interface, log *slog.Logger) *Controller {
	return &Controller{kubeconfig: kubeconfig, client: client, log: log.With("component", "node-passwords")}
}

func (c *Controller) Name() string { return "node-passwords" }

func (c *Controller) Init(context.Context) error {
	if c.client != nil {
		return nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return fmt.Errorf("node-passwords: loading %s: %w", c.kubeconfig, err)
	}
	if c.client, err = kubernetes.NewForConfig(rc); err != nil {
		return fmt.Errorf("node-passwords: %w", err)
	}
	return nil
}

func (c *Controller) Start(context.Context) error {
	factory := informers.NewSharedInformerFactory(c.client, 0)
	nodes := factory.Core().V1().Nodes().Informer()
	if _, err := nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.nodeDeleted}); err != nil {
		return err
	}
	c.synced = nodes.HasSynced
	c.Go(func(ctx context.Context) error {
		factory.Start(ctx.Done())
		<-ctx.Done()
		factory.Shutdown()
		return nil
	})
	return nil
}

func (c *Controller) nodeDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	node, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := join.PasswordSecretName(node.Name)
	err := c.client.CoreV1().Secrets(join.PasswordSecretNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case err == nil:
		c.log.Info("node deleted: its name is free to join again", "node", node.Name)
	case !apierrors.IsNotFound(err):
		c.log.Warn("node deleted but its password secret remains", "node", node.Name, "secret", name, "err", err)
	}
}

func (c *Controller) Ready() error {
	if c.synced == nil || !c.synced() {
		return errors.New("node informer not synced")
	}
	return nil
}

func (c *Controller) Stop() error { return c.Runner.Stop(5 * time.Second) }
