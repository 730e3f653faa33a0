// Package lbloopback makes LoadBalancer Services answer on a node's
// loopback address, as they do on K3s.
//
// skiff's service load balancer publishes the nodes' addresses in a
// Service's status, and kube-proxy's rules make the port answer on those
// addresses. Nothing answers on 127.0.0.1: kube-proxy's NAT rules match the
// node's address, and a DNAT of 127.0.0.1 would also need route_localnet and
// would bypass kube-proxy's own rules (NAT happens once per connection). So
// each node runs a small forwarder instead: for every port of a LoadBalancer
// Service whose status lists one of this node's addresses, it listens on the
// loopback address of that family (127.0.0.1 or ::1) and forwards each TCP
// connection, or each UDP client's datagrams, to that node address and port,
// where kube-proxy takes over.
//
// It follows the Services' status and nothing else, so a Service that loses
// its addresses (the port is taken, servicelb is disabled and clears them)
// loses its loopback listeners too, and they end with the skiff process
// (killall). A port already taken on loopback is reported with a Warning
// event on the Service and tried again later.
package lbloopback

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/reconcile"
)

// ReasonPortInUse is the Warning event's reason when a Service's port is
// taken on a node's loopback address.
const ReasonPortInUse = "LoopbackPortInUse"

// resync is how often listeners that could not be opened are tried again
// without any change to the Services.
const resync = 30 * time.Second

// Config is what the forwarder needs.
type Config struct {
	// Kubeconfig may list and watch Services and this Node, and record
	// events: kube-proxy's identity (system:node-proxier) may.
	Kubeconfig string
	NodeName   string
	// Client, when set, replaces the kubeconfig (tests).
	Client kubernetes.Interface
}

// Key is one loopback listener: a protocol, a loopback address and a port.
type Key struct {
	Protocol corev1.Protocol
	Addr     netip.AddrPort
}

func (k Key) String() string { return string(k.Protocol) + " " + k.Addr.String() }

// Want is what a listener forwards to, and for which Service.
type Want struct {
	Target  netip.AddrPort
	Service *corev1.Service
}

// Forwarder is the per-node component.
type Forwarder struct {
	cfg      Config
	log      *slog.Logger
	recorder record.EventRecorder
	services listerscorev1.ServiceLister
	nodes    listerscorev1.NodeLister
	loop     *reconcile.Loop
	// open are the listeners running; failed what each listener that
	// could not open last reported, so that it is reported once.
	open   map[Key]*listener
	failed map[Key]string
	component.Runner
}

// New returns the forwarder.
func New(cfg Config, log *slog.Logger) *Forwarder {
	return &Forwarder{cfg: cfg, log: log.With("component", "lb-loopback"), loop: reconcile.NewLoop(),
		open: map[Key]*listener{}, failed: map[Key]string{}}
}

func (f *Forwarder) Name() string               { return "lb-loopback" }
func (f *Forwarder) Init(context.Context) error { return nil }

func (f *Forwarder) Start(context.Context) error {
	client := f.cfg.Client
	if client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", f.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("lb-loopback: kubeconfig: %w", err)
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("lb-loopback: %w", err)
		}
	}
	svcFactory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", f.cfg.NodeName).String()
	}))
	svc, node := svcFactory.Core().V1().Services(), nodeFactory.Core().V1().Nodes()
	f.services, f.nodes = svc.Lister(), node.Lister()
	handler := f.loop.Handler()
	for _, inf := range []cache.SharedIndexInformer{svc.Informer(), node.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("lb-loopback: %w", err)
		}
	}
	broadcaster := record.NewBroadcaster()
	f.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-lb-loopback", Host: f.cfg.NodeName})
	f.Go(func(ctx context.Context) error {
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		svcFactory.Start(ctx.Done())
		defer svcFactory.Shutdown()
		nodeFactory.Start(ctx.Done())
		defer nodeFactory.Shutdown()
		defer f.closeAll()
		f.loop.Run(ctx, resync, f.reconcile, svc.Informer().HasSynced, node.Informer().HasSynced)
		return nil
	})
	return nil
}

// Ready once the Services are listed: start-up does not wait for listeners.
func (f *Forwarder) Ready() error { return f.loop.Ready() }

// Stop closes every listener and the connections they carry.
func (f *Forwarder) Stop() error { return f.Runner.Stop(5 * time.Second) }

func (f *Forwarder) reconcile(ctx context.Context) {
	node, err := f.nodes.Get(f.cfg.NodeName)
	if err != nil {
		// Not registered yet: nothing can list it.
		node = &corev1.Node{}
	}
	services, err := f.services.List(labels.Everything())
	if err != nil {
		return
	}
	want := Desired(services, NodeAddresses(node))
	running := map[Key]Want{}
	for k, l := range f.open {
		running[k] = l.want
	}
	closing, opening := Plan(running, want)
	for _, k := range closing {
		f.open[k].close()
		delete(f.open, k)
		f.log.Info("loopback listener closed", "listen", k.String())
	}
	for k := range f.failed {
		if _, ok := want[k]; !ok {
			delete(f.failed, k)
		}
	}
	for _, k := range opening {
		w := want[k]
		l, err := listen(ctx, k, w, f.log)
		if err != nil {
			msg := fmt.Sprintf("port %d/%s cannot be opened on %s of node %s, so the Service does not answer there (it still does on the node's address): %v",
				k.Addr.Port(), k.Protocol, k.Addr.Addr(), f.cfg.NodeName, err)
			if f.failed[k] != msg {
				f.failed[k] = msg
				f.log.Warn("loopback listener", "service", w.Service.Namespace+"/"+w.Service.Name, "listen", k.String(), "err", err)
				f.recorder.Event(w.Service, corev1.EventTypeWarning, ReasonPortInUse, msg)
			}
			continue
		}
		delete(f.failed, k)
		f.open[k] = l
		f.log.Info("loopback listener", "service", w.Service.Namespace+"/"+w.Service.Name, "listen", k.String(), "target", w.Target.String())
	}
}

func (f *Forwarder) closeAll() {
	for k, l := range f.open {
		l.close()
		delete(f.open, k)
	}
}

// NodeAddresses are a Node's internal and external addresses.
func NodeAddresses(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// Desired is the listeners a node with the given addresses runs: one per
// TCP or UDP port of each LoadBalancer Service whose status lists one of
// the addresses, on the loopback address of that address's family,
// forwarding to that address. Should two Services want one listener, the
// older one has it (the service load balancer never gives one port to two).
func Desired(services []*corev1.Service, nodeAddrs []netip.Addr) map[Key]Want {
	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	out := map[Key]Want{}
	for _, s := range sorted {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(in.IP)
			if err != nil || !slices.Contains(nodeAddrs, ip.Unmap()) {
				continue
			}
			ip = ip.Unmap()
			loopback := netip.MustParseAddr("127.0.0.1")
			if ip.Is6() {
				loopback = netip.IPv6Loopback()
			}
			for _, p := range s.Spec.Ports {
				proto := cmp.Or(p.Protocol, corev1.ProtocolTCP)
				if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
					continue
				}
				k := Key{Protocol: proto, Addr: netip.AddrPortFrom(loopback, uint16(p.Port))}
				if _, taken := out[k]; !taken {
					out[k] = Want{Target: netip.AddrPortFrom(ip, uint16(p.Port)), Service: s}
				}
			}
		}
	}
	return out
}

// Plan compares the running listeners with the wanted ones: those to close
// (no longer wanted, or forwarding elsewhere or for another Service) and
// those to open (wanted and not running, including the ones closed for a
// change), each sorted.
func Plan(running, want map[Key]Want) (closing, opening []Key) {
	for k, r := range running {
		w, ok := want[k]
		if !ok || w.Target != r.Target || w.Service.UID != r.Service.UID {
			closing = append(closing, k)
		}
	}
	for k := range want {
		if _, ok := running[k]; !ok || slices.Contains(closing, k) {
			opening = append(opening, k)
		}
	}
	less := func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), a.Addr.Compare(b.Addr))
	}
	slices.SortFunc(closing, less)
	slices.SortFunc(opening, less)
	return closing, opening
}
