// Package flannel runs the flannel pod network in process: it waits for the node's
// pod CIDR, takes the lease through flannel's Kubernetes subnet manager, sets up the
// VXLAN (or host-gw) backend and flannel's masquerade and forward rules, and then
// writes the node's CNI configuration, which is what makes the node Ready.
//
// Only the vxlan and host-gw backends are linked; the cloud backends would drag in
// SDKs an air-gapped node never uses.
package flannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannel-io/flannel/pkg/backend"
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw"
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/lease"
	"github.com/flannel-io/flannel/pkg/subnet"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr"
	fliptables "github.com/flannel-io/flannel/pkg/trafficmngr/iptables"
	flnftables "github.com/flannel-io/flannel/pkg/trafficmngr/nftables"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/node/cniconf"
)

// AnnotationPrefix namespaces flannel's node annotations. It has no slash: flannel
// builds one of its keys from the raw prefix.
const AnnotationPrefix = "flannel.skiff.io"

// Config says what network to run.
type Config struct {
	// Kubeconfig must allow listing nodes and patching node status.
	Kubeconfig string
	NodeName   string
	// NodeIPs are the node's addresses, primary family first; a dual-stack
	// network needs one of each family, on one interface.
	NodeIPs []netip.Addr
	// Iface, when set (--flannel-iface), is the interface flannel sends pod
	// traffic through, and its addresses the public ones, instead of the
	// node IPs' interface.
	Iface       string
	ClusterCIDR string
	// Backend is "vxlan" or "host-gw".
	Backend string
	// ProxyMode is "iptables" or "nftables": flannel's rules follow kube-proxy's.
	ProxyMode  string
	NetConf    string // net-conf.json, written here
	SubnetFile string // subnet.env
	CNIConfDir string
}

// Flannel is the component.
type Flannel struct {
	cfg   Config
	log   *slog.Logger
	ready atomic.Bool
	state atomic.Pointer[string]
	component.Runner
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *Flannel {
	return &Flannel{cfg: cfg, log: log.With("component", "flannel")}
}

func (f *Flannel) Name() string { return "flannel" }

// Init writes flannel's network configuration.
func (f *Flannel) Init(context.Context) error {
	data, err := NetConf(f.cfg.ClusterCIDR, f.cfg.Backend)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(f.cfg.NetConf, data, 0o644, 0o755); err != nil {
		return fmt.Errorf("writing flannel net-conf %s: %w", f.cfg.NetConf, err)
	}
	return nil
}

// NetConf renders flannel's net-conf.json for the cluster CIDR(s) and backend.
func NetConf(clusterCIDR, backendType string) ([]byte, error) {
	conf := map[string]any{"EnableIPv4": false, "EnableIPv6": false, "Backend": map[string]any{"Type": backendType}}
	for _, c := range strings.Split(clusterCIDR, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("cluster-cidr %q: %w", c, err)
		}
		if p.Addr().Is4() {
			conf["Network"], conf["EnableIPv4"] = p.Masked().String(), true
		} else {
			conf["IPv6Network"], conf["EnableIPv6"] = p.Masked().String(), true
		}
	}
	return json.MarshalIndent(conf, "", "  ")
}

func (f *Flannel) Start(context.Context) error {
	f.setState("waiting for the node's pod CIDR")
	f.Runner.Go(f.run)
	return nil
}

func (f *Flannel) setState(s string) { f.state.Store(&s) }

// Ready is nil once the CNI configuration is written.
func (f *Flannel) Ready() error {
	if f.ready.Load() {
		return nil
	}
	if s := f.state.Load(); s != nil {
		return errors.New(*s)
	}
	return errors.New("not started")
}

func (f *Flannel) Stop() error { return f.Runner.Stop(5 * time.Second) }

func (f *Flannel) run(ctx context.Context) error {
	restCfg, err := clientcmd.BuildConfigFromFlags("", f.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("flannel: loading %s: %w", f.cfg.Kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	if err := waitForPodCIDR(ctx, client, f.cfg.NodeName); err != nil {
		return err
	}
	f.setState("taking the subnet lease")
	// flannel's subnet manager reads the node name from the environment.
	os.Setenv("NODE_NAME", f.cfg.NodeName)
	sm, err := kube.NewSubnetManager(ctx, "", f.cfg.Kubeconfig, AnnotationPrefix, f.cfg.NetConf, false)
	if err != nil {
		return fmt.Errorf("flannel: subnet manager: %w", err)
	}
	netCfg, err := sm.GetNetworkConfig(ctx)
	if err != nil {
		return fmt.Errorf("flannel: network config: %w", err)
	}
	stack, err := ipmatch.GetIPFamily(netCfg.EnableIPv4, netCfg.EnableIPv6)
	if err != nil {
		return fmt.Errorf("flannel: %w", err)
	}
	ext, err := f.extIface(netCfg.EnableIPv4, netCfg.EnableIPv6, stack)
	if err != nil {
		return err
	}
	be, err := backend.NewManager(ctx, sm, ext).GetBackend(netCfg.BackendType)
	if err != nil {
		return fmt.Errorf("flannel: backend %s: %w", netCfg.BackendType, err)
	}
	bn, err := be.RegisterNetwork(ctx, &sync.WaitGroup{}, netCfg)
	if err != nil {
		return fmt.Errorf("flannel: registering the %s network: %w", netCfg.BackendType, err)
	}

	tm, other := f.trafficManagers()
	// A switch between iptables and nftables must not leave the old rules behind.
	if err := other.CleanUp(ctx); err != nil {
		f.log.Debug("cleaning up the other rule set", "err", err)
	}
	if err := tm.Init(ctx); err != nil {
		return fmt.Errorf("flannel: %s rules: %w", f.cfg.ProxyMode, err)
	}
	prev := readPrevious(f.cfg.SubnetFile)
	if err := tm.SetupAndEnsureMasqRules(ctx, netCfg.Network, prev.subnet, prev.network,
		netCfg.IPv6Network, prev.subnet6, prev.network6, bn.Lease(), 60, false); err != nil {
		return fmt.Errorf("flannel: masquerade rules: %w", err)
	}
	tm.SetupAndEnsureForwardRules(ctx, netCfg.Network, netCfg.IPv6Network, 50)
	lease := bn.Lease()
	if err := subnet.WriteSubnetFile(f.cfg.SubnetFile, netCfg, true, lease.Subnet, lease.IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("flannel: writing %s: %w", f.cfg.SubnetFile, err)
	}

	bridge, err := bridgeConfig(netCfg, lease, bn.MTU())
	if err != nil {
		return err
	}
	if _, err := cniconf.Write(f.cfg.CNIConfDir, bridge); err != nil {
		return err
	}
	attrs := []any{"backend", netCfg.BackendType}
	if netCfg.EnableIPv4 {
		attrs = append(attrs, "subnet", lease.Subnet.String())
	}
	if netCfg.EnableIPv6 {
		attrs = append(attrs, "ipv6-subnet", lease.IPv6Subnet.String())
	}
	f.log.Info("pod network up", append(attrs, "mtu", bn.MTU(), "interface", ext.Iface.Name)...)
	f.ready.Store(true)
	bn.Run(ctx)
	return ctx.Err()
}

// bridgeConfig is the CNI bridge for flannel's lease: one host-local range
// per enabled family, primary (IPv4) first, and a route to each cluster
// network.
func bridgeConfig(netCfg *subnet.Config, l *lease.Lease, mtu int) (cniconf.Bridge, error) {
	b := cniconf.Bridge{MTU: mtu}
	add := func(podCIDR, network string) error {
		p, err := netip.ParsePrefix(podCIDR)
		if err != nil {
			return fmt.Errorf("flannel: lease subnet %q: %w", podCIDR, err)
		}
		n, err := netip.ParsePrefix(network)
		if err != nil {
			return fmt.Errorf("flannel: network %q: %w", network, err)
		}
		b.PodCIDRs, b.ClusterCIDRs = append(b.PodCIDRs, p), append(b.ClusterCIDRs, n)
		return nil
	}
	if netCfg.EnableIPv4 {
		if err := add(l.Subnet.String(), netCfg.Network.String()); err != nil {
			return b, err
		}
	}
	if netCfg.EnableIPv6 {
		if err := add(l.IPv6Subnet.String(), netCfg.IPv6Network.String()); err != nil {
			return b, err
		}
	}
	return b, nil
}

func (f *Flannel) trafficManagers() (use, other trafficmngr.TrafficManager) {
	if f.cfg.ProxyMode == "nftables" {
		return &flnftables.NFTablesManager{}, &fliptables.IPTablesManager{}
	}
	return &fliptables.IPTablesManager{}, &flnftables.NFTablesManager{}
}

// waitForPodCIDR waits until the controller-manager has given the node a pod CIDR:
// flannel's lease fails outright without one.
func waitForPodCIDR(ctx context.Context, client kubernetes.Interface, nodeName string) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// extIface finds the interface and public addresses flannel uses: those of
// --flannel-iface when set (its first address of each family the network
// has, as flannel picks them), else the node IPs' interface.
func (f *Flannel) extIface(v4, v6 bool, stack int) (*backend.ExternalInterface, error) {
	if f.cfg.Iface != "" {
		ext, err := ipmatch.LookupExtIface(f.cfg.Iface, "", "", stack, ipmatch.PublicIPOpts{})
		if err != nil {
			return nil, fmt.Errorf("flannel: flannel-iface %s: %w", f.cfg.Iface, err)
		}
		return ext, nil
	}
	iface, opts, err := externalAddrs(f.cfg.NodeIPs, v4, v6)
	if err != nil {
		return nil, err
	}
	ext, err := ipmatch.LookupExtIface(iface, "", "", stack, opts)
	if err != nil {
		return nil, fmt.Errorf("flannel: finding the interface of node IP %s: %w", iface, err)
	}
	return ext, nil
}

// externalAddrs says how flannel finds its interface and public addresses:
// by the primary node IP, with the IPv6 node IP as the public IPv6 address of
// a dual-stack network (flannel checks both are on one interface). An
// IPv6-only network is found by its IPv6 address.
func externalAddrs(nodeIPs []netip.Addr, v4, v6 bool) (iface string, opts ipmatch.PublicIPOpts, err error) {
	var ip4, ip6 netip.Addr
	for _, a := range nodeIPs {
		if a.Is4() && !ip4.IsValid() {
			ip4 = a
		} else if a.Is6() && !ip6.IsValid() {
			ip6 = a
		}
	}
	if v4 && !ip4.IsValid() {
		return "", opts, fmt.Errorf("flannel: the pod network has IPv4 but the node has no IPv4 node IP (%v); set --node-ip", nodeIPs)
	}
	if v6 && !ip6.IsValid() {
		return "", opts, fmt.Errorf("flannel: the pod network has IPv6 but the node has no IPv6 node IP (%v); set --node-ip to an IPv4,IPv6 pair", nodeIPs)
	}
	switch {
	case v4 && v6:
		return ip4.String(), ipmatch.PublicIPOpts{PublicIPv6: ip6.String()}, nil
	case v6:
		return ip6.String(), opts, nil
	default:
		return ip4.String(), opts, nil
	}
}

// previous is what a previous subnet.env says about the lease flannel held,
// so that the masquerade rules of an old lease can be replaced.
type previous struct {
	network, subnet   ip.IP4Net
	network6, subnet6 ip.IP6Net
}

// readPrevious reads subnet.env. A missing file or value gives the zero
// network, and the IPv6 ones a zero address rather than none: flannel
// compares them with its current lease and would dereference nil.
func readPrevious(path string) previous {
	p := previous{
		network6: ip.IP6Net{IP: (*ip.IP6)(big.NewInt(0))},
		subnet6:  ip.IP6Net{IP: (*ip.IP6)(big.NewInt(0))},
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return p
	}
	for _, line := range strings.Split(string(data), "\n") {
		key, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		quoted := []byte(`"` + strings.TrimSpace(v) + `"`)
		var n4 ip.IP4Net
		var n6 ip.IP6Net
		switch key {
		case "FLANNEL_NETWORK":
			if n4.UnmarshalJSON(quoted) == nil {
				p.network = n4
			}
		case "FLANNEL_SUBNET":
			if n4.UnmarshalJSON(quoted) == nil {
				p.subnet = n4
			}
		case "FLANNEL_IPV6_NETWORK":
			if n6.UnmarshalJSON(quoted) == nil {
				p.network6 = n6
			}
		case "FLANNEL_IPV6_SUBNET":
			if n6.UnmarshalJSON(quoted) == nil {
				p.subnet6 = n6
			}
		}
	}
	return p
}
