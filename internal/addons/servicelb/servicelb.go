// Package servicelb gives Services of type LoadBalancer the addresses of the
// cluster's nodes, as K3s's service load balancer does, without a pod per
// node: kube-proxy already forwards traffic for a Service's load-balancer
// addresses, so publishing the nodes' addresses in status.loadBalancer makes
// the port answer on every node.
//
// A port that an older LoadBalancer Service (or skiff itself) uses on the
// nodes is refused with a Warning event on the Service, which then gets no
// addresses until the port is free.
package servicelb

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/reconcile"
)

// EnableLabel on some nodes limits the load balancer to those nodes.
const EnableLabel = "svccontroller.skiff.io/enablelb"

// Reserved is a port skiff itself serves on the nodes.
type Reserved struct {
	Port     int32
	Protocol corev1.Protocol
	What     string
}

// Config is what the controller needs.
type Config struct {
	Kubeconfig string
	// Reserved ports are never given to a Service: kube-proxy would take
	// the nodes' traffic for them.
	Reserved []Reserved
	// Server names this server in the status writes' field manager (see
	// FieldManager); "" leaves the name out.
	Server string
	// Client, when set, replaces the kubeconfig (tests).
	Client kubernetes.Interface
}

// FieldManager is the field manager of servicelb's status writes on
// server: "skiff-servicelb@<server>", or "skiff-servicelb" when server is
// "". A Service's metadata.managedFields thus name the server that wrote
// its status.loadBalancer.
func FieldManager(server string) string {
	if server == "" {
		return "skiff-servicelb"
	}
	return "skiff-servicelb@" + server
}

// Controller is the service load balancer component.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	client   kubernetes.Interface
	services listerscorev1.ServiceLister
	nodes    listerscorev1.NodeLister
	recorder record.EventRecorder
	loop     *reconcile.Loop
	// reported is the conflict last recorded as an event per Service, so
	// that a conflict is reported once and not at every pass.
	reported map[types.UID]string
	component.Runner
}

// New returns the controller.
func New(cfg Config, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, log: log.With("component", "servicelb"), loop: reconcile.NewLoop()}
}

func (c *Controller) Name() string               { return "servicelb" }
func (c *Controller) Init(context.Context) error { return nil }

func (c *Controller) Start(context.Context) error {
	c.client = c.cfg.Client
	if c.client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		if c.client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	f := informers.NewSharedInformerFactory(c.client, 10*time.Minute)
	svc, node := f.Core().V1().Services(), f.Core().V1().Nodes()
	c.services, c.nodes = svc.Lister(), node.Lister()
	handler := c.loop.Handler()
	if _, err := svc.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	if _, err := node.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster()
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-servicelb"})
	c.Go(func(ctx context.Context) error {
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		f.Start(ctx.Done())
		defer f.Shutdown()
		c.loop.Run(ctx, time.Minute, c.reconcile, svc.Informer().HasSynced, node.Informer().HasSynced)
		return nil
	})
	return nil
}

func (c *Controller) Ready() error { return c.loop.Ready() }

func (c *Controller) Stop() error { return c.Runner.Stop(5 * time.Second) }

// reconcile sets every LoadBalancer Service's addresses; ports are granted
// oldest Service first.
func (c *Controller) reconcile(ctx context.Context) {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	addrs := NodeAddresses(nodes)
	all, err := c.services.List(labels.Everything())
	if err != nil {
		return
	}
	var lbs []*corev1.Service
	for _, s := range all {
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil {
			lbs = append(lbs, s)
		}
	}
	if c.reported == nil {
		c.reported = map[types.UID]string{}
	}
	seen := map[types.UID]bool{}
	for svc, conflict := range Assign(lbs, c.cfg.Reserved) {
		seen[svc.UID] = true
		var ingress []corev1.LoadBalancerIngress
		if conflict == "" {
			ingress = ingressFor(svc, addrs)
			delete(c.reported, svc.UID)
		} else if c.reported[svc.UID] != conflict {
			c.recorder.Event(svc, corev1.EventTypeWarning, "PortInUse", conflict)
			c.reported[svc.UID] = conflict
		}
		if equalIngress(svc.Status.LoadBalancer.Ingress, ingress) {
			continue
		}
		upd := svc.DeepCopy()
		upd.Status.LoadBalancer.Ingress = ingress
		if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager(c.cfg.Server)}); err != nil {
			c.log.Warn("updating load balancer status", "service", svc.Namespace+"/"+svc.Name, "err", err)
			continue
		}
		c.log.Info("load balancer addresses", "service", svc.Namespace+"/"+svc.Name, "ingress", ingressIPs(ingress), "conflict", conflict)
	}
	for uid := range c.reported {
		if !seen[uid] {
			delete(c.reported, uid)
		}
	}
}

// Assign decides which Services get their ports: the oldest holder of a
// port keeps it. The result maps each Service to "" or why it got none.
func Assign(lbs []*corev1.Service, reserved []Reserved) map[*corev1.Service]string {
	sorted := slices.Clone(lbs)
	slices.SortFunc(sorted, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	type key struct {
		port  int32
		proto corev1.Protocol
	}
	holder := map[key]string{}
	for _, r := range reserved {
		holder[key{r.Port, r.Protocol}] = "skiff's " + r.What
	}
	out := map[*corev1.Service]string{}
	for _, s := range sorted {
		var conflicts []string
		for _, p := range s.Spec.Ports {
			proto := cmp.Or(p.Protocol, corev1.ProtocolTCP)
			if h, taken := holder[key{p.Port, proto}]; taken {
				conflicts = append(conflicts, fmt.Sprintf("port %d/%s is already used by %s", p.Port, proto, h))
			}
		}
		if len(conflicts) > 0 {
			out[s] = strings.Join(conflicts, "; ") + " on the nodes: this Service gets no load balancer address until it is free"
			continue
		}
		for _, p := range s.Spec.Ports {
			holder[key{p.Port, cmp.Or(p.Protocol, corev1.ProtocolTCP)}] = "LoadBalancer Service " + s.Namespace + "/" + s.Name
		}
		out[s] = ""
	}
	return out
}

// NodeAddresses are the addresses Services get: each Ready node's external
// IP, else its internal IP; only the nodes labelled EnableLabel=true when any
// node is.
func NodeAddresses(nodes []*corev1.Node) []netip.Addr {
	labelled := slices.ContainsFunc(nodes, func(n *corev1.Node) bool { return n.Labels[EnableLabel] == "true" })
	var out []netip.Addr
	for _, n := range nodes {
		if labelled && n.Labels[EnableLabel] != "true" || !ready(n) {
			continue
		}
		var ext, in []netip.Addr
		for _, a := range n.Status.Addresses {
			ip, err := netip.ParseAddr(a.Address)
			if err != nil {
				continue
			}
			switch a.Type {
			case corev1.NodeExternalIP:
				ext = append(ext, ip)
			case corev1.NodeInternalIP:
				in = append(in, ip)
			}
		}
		if len(ext) > 0 {
			out = append(out, ext...)
		} else {
			out = append(out, in...)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ingressFor keeps the families the Service asks for.
func ingressFor(s *corev1.Service, addrs []netip.Addr) []corev1.LoadBalancerIngress {
	want4, want6 := len(s.Spec.IPFamilies) == 0, false
	for _, f := range s.Spec.IPFamilies {
		want4 = want4 || f == corev1.IPv4Protocol
		want6 = want6 || f == corev1.IPv6Protocol
	}
	vip := corev1.LoadBalancerIPModeVIP
	var out []corev1.LoadBalancerIngress
	for _, a := range addrs {
		if a.Is4() && want4 || a.Is6() && want6 {
			out = append(out, corev1.LoadBalancerIngress{IP: a.String(), IPMode: &vip})
		}
	}
	return out
}

func equalIngress(a, b []corev1.LoadBalancerIngress) bool {
	return slices.Equal(ingressIPs(a), ingressIPs(b))
}

func ingressIPs(in []corev1.LoadBalancerIngress) []string {
	out := make([]string, 0, len(in))
	for _, i := range in {
		out = append(out, i.IP)
	}
	return out
}
