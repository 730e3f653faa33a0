// Package etcdmember removes a server's embedded etcd member when its Node
// is deleted (`kubectl delete node S`), as K3s does. Every server on
// embedded etcd runs it; the member a Node stands for is named in its
// annotation MemberAnnotation, which the server sets on its own Node
// (noderoles). Several servers may race to remove the same member: a member
// already gone is success.
package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/addons/noderoles"
	"github.com/skiffkube/skiff/internal/component"
)

// MemberAnnotation on a server's Node names its etcd member.
const MemberAnnotation = noderoles.EtcdMemberAnnotation

// Members is the part of the etcd cluster API the controller needs.
type Members interface {
	MemberList(ctx context.Context, opts ...clientv3.OpOption) (*clientv3.MemberListResponse, error)
	MemberRemove(ctx context.Context, id uint64) (*clientv3.MemberRemoveResponse, error)
}

// Config says where the API and etcd are.
type Config struct {
	// Kubeconfig may watch Nodes (the admin's).
	Kubeconfig string
	// Etcd reaches the local member (etcd.ClientConfig).
	Etcd func() (clientv3.Config, error)
}

// Controller is the component.
type Controller struct {
	component.Runner
	cfg     Config
	log     *slog.Logger
	client  kubernetes.Interface
	members Members
	closeFn func()
	synced  func() bool
}

// New returns the controller. client and members may be nil to be built
// from cfg.
func New(cfg Config, client kubernetes.Interface, members Members, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, client: client, members: members, log: log.With("component", "etcd-member-removal")}
}

func (c *Controller) Name() string { return "etcd-member-removal" }

func (c *Controller) Init(context.Context) error {
	if c.client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("etcd member removal: loading %s: %w", c.cfg.Kubeconfig, err)
		}
		if c.client, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("etcd member removal: %w", err)
		}
	}
	if c.members == nil {
		cc, err := c.cfg.Etcd()
		if err != nil {
			return fmt.Errorf("etcd member removal: %w", err)
		}
		cli, err := clientv3.New(cc)
		if err != nil {
			return fmt.Errorf("etcd member removal: %w", err)
		}
		c.members, c.closeFn = cli, func() { cli.Close() }
	}
	return nil
}

func (c *Controller) Start(context.Context) error {
	factory := informers.NewSharedInformerFactory(c.client, 0)
	inf := factory.Core().V1().Nodes().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			n, ok := obj.(*corev1.Node)
			if !ok || n.Annotations[MemberAnnotation] == "" {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Remove(ctx, n.Name, n.Annotations[MemberAnnotation]); err != nil {
				c.log.Warn("removing the etcd member of a deleted node", "node", n.Name, "err", err)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("etcd member removal: %w", err)
	}
	c.synced = inf.HasSynced
	c.Go(func(ctx context.Context) error {
		factory.Start(ctx.Done())
		<-ctx.Done()
		factory.Shutdown()
		return nil
	})
	return nil
}

func (c *Controller) Ready() error {
	if c.synced == nil || !c.synced() {
		return errors.New("node cache not synced")
	}
	return nil
}

func (c *Controller) Stop() error {
	err := c.Runner.Stop(5 * time.Second)
	if c.closeFn != nil {
		c.closeFn()
	}
	return err
}

// Remove removes the etcd member named member (node's), retrying briefly
// while the cluster has no leader. A member that is not there is success:
// another server removed it first.
func (c *Controller) Remove(ctx context.Context, node, member string) error {
	for {
		err := c.removeOnce(ctx, node, member)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

func (c *Controller) removeOnce(ctx context.Context, node, member string) error {
	list, err := c.members.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("listing etcd members: %w", err)
	}
	for _, m := range list.Members {
		if m.Name != member {
			continue
		}
		_, err := c.members.MemberRemove(ctx, m.ID)
		if err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			return fmt.Errorf("removing etcd member %s: %w", member, err)
		}
		c.log.Info("removed the etcd member of a deleted node", "node", node, "member", member)
		return nil
	}
	return nil
}
