// Package etcdmember removes a server's embedded etcd member when its Node
// is deleted (`kubectl delete node S`), as K3s does. Every server on
// embedded etcd runs it; the member a Node stands for is named in its
// annotation MemberAnnotation, which the server sets on its own Node
// (noderoles). Several servers may race to remove the same member: a member
// already gone is success.
//
// A kubelet may write any annotation on its own Node (NodeRestriction), so
// the annotation alone is not trusted: a member is removed only for a Node
// with the role label node-role.kubernetes.io/etcd (which NodeRestriction
// keeps kubelets from setting; the server sets it, noderoles) and only when
// one of the member's peer URLs is on one of the Node's InternalIP
// addresses.
package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
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
			if err := c.Remove(ctx, n); err != nil {
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

// EtcdLabel marks a server node with an embedded etcd member; kubelets
// cannot set it (NodeRestriction), the server does (noderoles).
const EtcdLabel = noderoles.EtcdLabel

// Remove removes the etcd member that the deleted Node n's annotation
// MemberAnnotation names, retrying briefly while the cluster has no leader.
// A member that is not there is success: another server removed it first.
// Nothing is removed, with a warning, when n lacks the label EtcdLabel or
// when none of the member's peer URLs is on one of n's InternalIP addresses:
// the annotation is writable by the node's own kubelet.
func (c *Controller) Remove(ctx context.Context, n *corev1.Node) error {
	member := n.Annotations[MemberAnnotation]
	if member == "" {
		return nil
	}
	if n.Labels[EtcdLabel] != "true" {
		c.log.Warn("a deleted node names an etcd member but has no etcd role label: leaving the member", "node", n.Name, "member", member, "label", EtcdLabel)
		return nil
	}
	var ips []net.IP
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		}
	}
	for {
		err := c.removeOnce(ctx, n.Name, member, ips)
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

// onNode reports whether one of peerURLs has its host among ips.
func onNode(peerURLs []string, ips []net.IP) bool {
	for _, p := range peerURLs {
		u, err := url.Parse(p)
		if err != nil {
			continue
		}
		host := net.ParseIP(u.Hostname())
		for _, ip := range ips {
			if host != nil && host.Equal(ip) {
				return true
			}
		}
	}
	return false
}

func (c *Controller) removeOnce(ctx context.Context, node, member string, ips []net.IP) error {
	list, err := c.members.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("listing etcd members: %w", err)
	}
	for _, m := range list.Members {
		if m.Name != member {
			continue
		}
		if !onNode(m.PeerURLs, ips) {
			c.log.Warn("a deleted node names an etcd member whose peer URLs are not on the node's internal IPs: leaving the member", "node", node, "member", member, "peerURLs", m.PeerURLs, "internalIPs", ips)
			return nil
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
