// Package netpol enforces NetworkPolicies on a node with
// sigs.k8s.io/kube-network-policies, in process. The engine sends the first
// packet of every new connection to or from a pod to a netfilter queue and
// decides in user space from its caches of pods, namespaces and policies;
// established connections stay in the kernel.
//
// The engine asks nftables to queue those packets. A kernel without nft's
// queue expression (CONFIG_NFT_QUEUE unset, as on some minimal VM kernels)
// refuses that table; skiff then queues the same packets to the same queue
// with iptables' NFQUEUE target, so policies hold on such a kernel too.
//
// The engine fails open: while skiff is down (a restart, an upgrade) new
// connections pass unchecked instead of every pod going dark, in keeping
// with pods that keep running across a skiff restart.
package netpol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"

	"github.com/skiffkube/skiff/internal/component"
)

// QueueID is the netfilter queue the engine reads. Not the engine's default
// (100), nor its table name below: a standalone kube-network-policies on
// the same host keeps its own.
const QueueID = 1730

// Chain is the iptables chain (mangle table) of the fallback rules.
const Chain = "SKIFF-NETPOL"

// NFTable is the engine's nftables table.
const NFTable = "skiff-network-policy"

// Config is what the engine needs.
type Config struct {
	// Kubeconfig may read pods, namespaces and NetworkPolicies.
	Kubeconfig string
	NodeName   string
	// ClusterCIDRs are the pods' addresses: the fallback queues connections
	// from or to them.
	ClusterCIDRs []netip.Prefix
	// ProxyMode is kube-proxy's, "iptables" or "nftables": the fallback
	// needs iptables.
	ProxyMode string
}

// Controller is the network policy component.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	fallback bool
	ipt      []utiliptables.Interface
	synced   []cache.InformerSynced
	component.Runner
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, log: log.With("component", "network-policy")}
}

func (c *Controller) Name() string { return "network-policy" }

// Init finds out whether the kernel can queue from nftables.
func (c *Controller) Init(context.Context) error {
	if err := probeNftQueue(); err == nil {
		return nil
	} else if c.cfg.ProxyMode != "iptables" {
		return fmt.Errorf("network policy: nftables refuses the engine's queue rule (%v; a kernel without CONFIG_NFT_QUEUE?), and the iptables NFQUEUE fallback needs the iptables tool, which this host lacks (kube-proxy runs in nftables mode): install iptables, or run with --disable-network-policy", err)
	} else {
		c.log.Info("kernel lacks nftables' queue expression: queueing through iptables NFQUEUE instead", "reason", err)
	}
	c.fallback = true
	for _, p := range c.cfg.ClusterCIDRs {
		proto := utiliptables.ProtocolIPv4
		if p.Addr().Is6() {
			proto = utiliptables.ProtocolIPv6
		}
		c.ipt = append(c.ipt, utiliptables.New(proto))
	}
	return nil
}

func (c *Controller) Start(context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("network policy: kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	if err := detachNRI(); err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	f := informers.NewSharedInformerFactory(client, 0)
	pols, nss, pods, nodes := f.Networking().V1().NetworkPolicies(), f.Core().V1().Namespaces(), f.Core().V1().Pods(), f.Core().V1().Nodes()
	ctrl, err := networkpolicy.NewController(client, pols, nss, pods, nodes, nil, nil, nil, networkpolicy.Config{
		FailOpen:    true,
		QueueID:     QueueID,
		NodeName:    c.cfg.NodeName,
		NFTableName: NFTable,
	})
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	c.synced = []cache.InformerSynced{pols.Informer().HasSynced, nss.Informer().HasSynced, pods.Informer().HasSynced}
	if c.fallback {
		if err := c.ensureQueueRules(); err != nil {
			return err
		}
	}
	c.Go(func(ctx context.Context) error {
		f.Start(ctx.Done())
		defer f.Shutdown()
		err := ctrl.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("network policy engine stopped: %w", err)
	})
	return nil
}

// Ready once the engine's caches hold the cluster's policies.
func (c *Controller) Ready() error {
	for _, s := range c.synced {
		if !s() {
			return errors.New("policies and pods not listed yet")
		}
	}
	return nil
}

// Stop ends the engine (which removes its nftables table) and the fallback
// rules: with no reader on the queue they would only cost a lookup.
func (c *Controller) Stop() error {
	err := c.Runner.Stop(5 * time.Second)
	if c.fallback {
		err = errors.Join(err, c.removeQueueRules())
	}
	return err
}

// queueRules mirror the engine's nftables chain: IPv6 neighbour discovery
// and the host's root traffic (kubelet probes) pass, established connections
// pass, and a new connection from or to a pod goes to the queue.
func queueRules(p netip.Prefix) [][]string {
	queue := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(QueueID), "--queue-bypass"}
	rules := [][]string{}
	if p.Addr().Is6() {
		rules = append(rules, []string{"-p", "ipv6-icmp", "-j", "RETURN"})
	}
	rules = append(rules,
		[]string{"-m", "owner", "--uid-owner", "0", "-j", "RETURN"},
		[]string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"},
		append([]string{"-s", p.String()}, queue...),
		append([]string{"-d", p.String()}, queue...),
	)
	return rules
}

var jump = []string{"-m", "comment", "--comment", "skiff network policy", "-j", Chain}

func (c *Controller) ensureQueueRules() error {
	for i, ipt := range c.ipt {
		if _, err := ipt.EnsureChain(utiliptables.TableMangle, Chain); err != nil {
			return fmt.Errorf("network policy: creating %s: %w", Chain, err)
		}
		// Rewritten whole: the cluster CIDR may have changed.
		if err := ipt.FlushChain(utiliptables.TableMangle, Chain); err != nil {
			return fmt.Errorf("network policy: flushing %s: %w", Chain, err)
		}
		for _, r := range queueRules(c.cfg.ClusterCIDRs[i]) {
			if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableMangle, Chain, r...); err != nil {
				return fmt.Errorf("network policy: adding a rule to %s: %w", Chain, err)
			}
		}
		if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableMangle, utiliptables.ChainPostrouting, jump...); err != nil {
			return fmt.Errorf("network policy: jumping to %s: %w", Chain, err)
		}
	}
	return nil
}

func (c *Controller) removeQueueRules() error {
	var errs []error
	for _, ipt := range c.ipt {
		if err := ipt.DeleteRule(utiliptables.TableMangle, utiliptables.ChainPostrouting, jump...); err != nil {
			errs = append(errs, err)
		}
		if err := ipt.FlushChain(utiliptables.TableMangle, Chain); err != nil {
			errs = append(errs, err)
		}
		if err := ipt.DeleteChain(utiliptables.TableMangle, Chain); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network policy: removing the %s rules: %w", Chain, errors.Join(errs...))
	}
	return nil
}

// probeNftQueue adds and removes a table whose one rule queues, which a
// kernel without the queue expression refuses.
func probeNftQueue() error {
	nft, err := nftables.New()
	if err != nil {
		return err
	}
	table := nft.AddTable(&nftables.Table{Name: "skiff-queue-probe", Family: nftables.TableFamilyINet})
	chain := nft.AddChain(&nftables.Chain{Name: "probe", Table: table})
	nft.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Queue{Num: QueueID, Flag: expr.QueueFlagBypass},
	}})
	probeErr := nft.Flush()
	nft.DelTable(table)
	if err := nft.Flush(); err != nil && probeErr == nil {
		return fmt.Errorf("removing the probe table: %w", err)
	}
	return probeErr
}

// detachNRI keeps the engine's NRI plugin from registering with a runtime.
// Its NRIdisabled option cannot be used: the engine then dereferences its
// nil plugin for the first packet from an address that is not a pod's (v0.8.0,
// getPodAssignedToIP). Enabled, the plugin dials the default NRI socket,
// which is the host's containerd's, not skiff's (whose containerd is built
// without NRI). Handed a socket whose peer is closed, it ends at once and the
// engine takes pods from the API alone. The variable is set after skiff's
// containerd has started, so no runtime process inherits it.
func detachNRI() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("NRI stand-in socket: %w", err)
	}
	unix.Close(fds[1])
	return os.Setenv("NRI_PLUGIN_SOCKET", strconv.Itoa(fds[0]))
}

// RemoveLeftovers removes the queueing rules and the engine's table that a
// node stopped without cleaning up left behind, for a node that no longer
// enforces policies: with nobody reading the queue, bypass lets packets
// through, but --disable-network-policy should leave no trace.
func RemoveLeftovers(log *slog.Logger) {
	for _, proto := range []utiliptables.Protocol{utiliptables.ProtocolIPv4, utiliptables.ProtocolIPv6} {
		ipt := utiliptables.New(proto)
		if ok, err := ipt.ChainExists(utiliptables.TableMangle, Chain); err != nil || !ok {
			continue
		}
		c := &Controller{ipt: []utiliptables.Interface{ipt}}
		if err := c.removeQueueRules(); err != nil {
			log.Warn("removing leftover network policy rules", "component", "network-policy", "err", err)
		}
	}
	nft, err := nftables.New()
	if err != nil {
		return
	}
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return
	}
	for _, t := range tables {
		if t.Name == NFTable {
			nft.DelTable(t)
			if err := nft.Flush(); err != nil {
				log.Warn("removing the network policy engine's leftover nftables table", "component", "network-policy", "err", err)
			}
		}
	}
}
