package servicelb

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Cleanup is what `--disable servicelb` runs instead of the controller: it
// takes the nodes' addresses off LoadBalancer Services once, so that a
// disabled load balancer leaves no address behind (another implementation
// may then give its own). Addresses that are not a node's are left alone.
type Cleanup struct {
	cfg  Config
	log  *slog.Logger
	done bool
}

// NewCleanup returns the one-shot cleanup component.
func NewCleanup(cfg Config, log *slog.Logger) *Cleanup {
	return &Cleanup{cfg: cfg, log: log.With("component", "servicelb")}
}

func (c *Cleanup) Name() string               { return "servicelb-cleanup" }
func (c *Cleanup) Init(context.Context) error { return nil }
func (c *Cleanup) Ready() error               { return nil }
func (c *Cleanup) Stop() error                { return nil }

// Start removes the addresses before start-up goes on; a failure is logged,
// not fatal: it only leaves stale addresses.
func (c *Cleanup) Start(ctx context.Context) error {
	client := c.cfg.Client
	if client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if n, err := RemoveNodeAddresses(cctx, client); err != nil {
		c.log.Warn("removing load balancer addresses of the disabled servicelb", "err", err)
	} else if n > 0 {
		c.log.Info("servicelb disabled: load balancer addresses removed", "services", n)
	}
	return nil
}

// RemoveNodeAddresses takes every node's address off the class-less
// LoadBalancer Services and says how many Services changed.
func RemoveNodeAddresses(ctx context.Context, client kubernetes.Interface) (int, error) {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	var ours []string
	for i := range nodes.Items {
		for _, a := range nodes.Items[i].Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ours = append(ours, ip.String())
			}
		}
	}
	svcs, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	changed := 0
	for i := range svcs.Items {
		s := &svcs.Items[i]
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer || s.Spec.LoadBalancerClass != nil {
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(s.Status.LoadBalancer.Ingress), func(in corev1.LoadBalancerIngress) bool {
			return slices.Contains(ours, in.IP)
		})
		if len(kept) == len(s.Status.LoadBalancer.Ingress) {
			continue
		}
		s.Status.LoadBalancer.Ingress = kept
		if _, err := client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
			return changed, fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
		changed++
	}
	return changed, nil
}
