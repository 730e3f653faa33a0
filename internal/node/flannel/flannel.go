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
	Kubeconfig  string
	NodeName    string
	NodeIP      string
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
	ext, err := ipmatch.LookupExtIface(f.cfg.NodeIP, "", "", stack, ipmatch.PublicIPOpts{})
	if err != nil {
		return fmt.Errorf("flannel: finding the interface of node IP %s: %w", f.cfg.NodeIP, err)
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
	prevNet := readSubnetVar(f.cfg.SubnetFile, "FLANNEL_NETWORK")
	prevSubnet := readSubnetVar(f.cfg.SubnetFile, "FLANNEL_SUBNET")
	if err := tm.SetupAndEnsureMasqRules(ctx, netCfg.Network, prevSubnet, prevNet,
		netCfg.IPv6Network, ip.IP6Net{}, ip.IP6Net{}, bn.Lease(), 60, false); err != nil {
		return fmt.Errorf("flannel: masquerade rules: %w", err)
	}
	tm.SetupAndEnsureForwardRules(ctx, netCfg.Network, netCfg.IPv6Network, 50)
	lease := bn.Lease()
	if err := subnet.WriteSubnetFile(f.cfg.SubnetFile, netCfg, true, lease.Subnet, lease.IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("flannel: writing %s: %w", f.cfg.SubnetFile, err)
	}

	bridge := cniconf.Bridge{MTU: bn.MTU()}
	if netCfg.EnableIPv4 {
		bridge.PodCIDRs = append(bridge.PodCIDRs, netip.MustParsePrefix(lease.Subnet.String()))
		bridge.ClusterCIDRs = append(bridge.ClusterCIDRs, netip.MustParsePrefix(netCfg.Network.String()))
	}
	if netCfg.EnableIPv6 {
		bridge.PodCIDRs = append(bridge.PodCIDRs, netip.MustParsePrefix(lease.IPv6Subnet.String()))
		bridge.ClusterCIDRs = append(bridge.ClusterCIDRs, netip.MustParsePrefix(netCfg.IPv6Network.String()))
	}
	if _, err := cniconf.Write(f.cfg.CNIConfDir, bridge); err != nil {
		return err
	}
	f.log.Info("pod network up", "backend", netCfg.BackendType, "subnet", lease.Subnet.String(), "mtu", bn.MTU(), "interface", ext.Iface.Name)
	f.ready.Store(true)
	bn.Run(ctx)
	return ctx.Err()
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

// readSubnetVar reads a CIDR from a previous subnet.env, so that rules of an old
// lease can be replaced. A missing file or value gives the zero network.
func readSubnetVar(path, key string) ip.IP4Net {
	data, err := os.ReadFile(path)
	if err != nil {
		return ip.IP4Net{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			var n ip.IP4Net
			if err := n.UnmarshalJSON([]byte(`"` + strings.TrimSpace(v) + `"`)); err == nil {
				return n
			}
		}
	}
	return ip.IP4Net{}
}
