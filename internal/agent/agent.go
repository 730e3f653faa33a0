// Package agent assembles `skiff agent`: prepare the host, join the server (CA pin,
// token, node password), then run the node's phases against the server.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/agent/joinclient"
	"github.com/skiffkube/skiff/internal/agent/loadbalancer"
	"github.com/skiffkube/skiff/internal/certs"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/host"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/noderun"
	"github.com/skiffkube/skiff/internal/sdnotify"
	"github.com/skiffkube/skiff/internal/token"
	"github.com/skiffkube/skiff/internal/tunnel"
)

// StopTimeout bounds a graceful stop.
const StopTimeout = 10 * time.Second

// kubeletAddress is where an agent's kubelet listens: the server reaches it
// through the tunnel only.
const kubeletAddress = "127.0.0.1"

// Run joins and runs the node until ctx ends or a component fails.
func Run(ctx context.Context, cfg *config.Agent, log *slog.Logger) error {
	begin := time.Now()
	raw := cfg.Token
	if cfg.TokenFile != "" {
		data, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("token-file: %w", err)
		}
		raw = string(data)
	}
	tok, err := token.Parse(raw)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	if err := node.CheckResolvConf(cfg.ResolvConf); err != nil {
		return err
	}
	if err := noderun.Preflight(cfg.Node, ""); err != nil {
		return err
	}
	if _, err := noderun.LoadRegistries(cfg.Node); err != nil {
		return err
	}
	nodeIP := cfg.NodeIP
	if nodeIP == "" {
		ip, err := controlplane.DetectAdvertiseIP(&config.Server{})
		if err != nil {
			return fmt.Errorf("detecting the node IP (set --node-ip): %w", err)
		}
		nodeIP = ip.String()
	}
	name, err := cfg.Node.ResolveNodeName(os.Hostname)
	if err != nil {
		return err
	}
	// Every port the agent listens on is checked before anything is written.
	ports := append([]host.PortUse{{Port: cfg.LBPort, What: "agent load balancer", Hint: "; move it with --lb-server-port"}},
		noderun.Ports(cfg.Node, kubeletAddress)...)
	if err := host.CheckPortsFree(ports); err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	layout := node.Layout{DataDir: cfg.DataDir, RunDir: node.DefaultRunDir}

	seed, err := hostPort(cfg.Server)
	if err != nil {
		return err
	}
	lbURL := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.LBPort))
	lb := loadbalancer.New(net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.LBPort)), []string{seed}, log)

	// A wrong server or a token for another cluster is refused before the host
	// or the data dir is touched.
	caPEM, pinned, err := joinclient.FetchCA(ctx, cfg.Server, tok)
	if err != nil {
		return err
	}
	joinclient.WarnUnpinned(log, cfg.Server, pinned)

	nodeCfg := cfg.Node
	nodeCfg.NodeName, nodeCfg.NodeIP = name, nodeIP
	plan, err := noderun.Prepare(noderun.Spec{
		DataDir:           cfg.DataDir,
		Node:              nodeCfg,
		FlannelKubeconfig: layout.FlannelKubeconfig(),
		ReadyKubeconfig:   layout.KubeletKubeconfig(),
		KubeletAddress:    kubeletAddress,
	}, log)
	if err != nil {
		return err
	}
	defer plan.Release()

	joinBegin := time.Now()
	// The serving certificate names the addresses known before the join (both
	// families with a dual --node-ip); the servers reach the kubelet through
	// the tunnel by the primary one.
	joinReq := joinclient.Request{
		ServerURL: cfg.Server, APIServerURL: lbURL, Token: tok, NodeName: name,
		Hostname: strings.ToLower(hostname), NodeIPs: ipStrings(plan.NodeIPs()),
	}
	resp, err := joinclient.JoinWithCA(ctx, joinReq, layout, caPEM)
	if err != nil {
		return err
	}
	log.Info(fmt.Sprintf("joined in %s", component.FormatDuration(time.Since(joinBegin))), "component", "join", "server", cfg.Server, "node", name)
	// The cluster's families are known now: a node IP that does not fit them
	// is refused before the node writes its configuration.
	if err := plan.SetCluster(resp.Cluster); err != nil {
		return fmt.Errorf("the server's cluster-cidr %s: %w", resp.Cluster.ClusterCIDR, err)
	}

	nodePhases, err := plan.Phases(log)
	if err != nil {
		return err
	}
	podCIDRs, err := config.ParseCIDRs(resp.Cluster.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("cluster CIDR from the server: %w", err)
	}
	tun := tunnel.NewClient(tunnel.ClientConfig{
		Servers:     lb.Servers,
		CAPEM:       caPEM,
		CertFile:    layout.ClientKubelet().Cert,
		KeyFile:     layout.ClientKubelet().Key,
		NodeIPs:     ipStrings(plan.NodeIPs()),
		KubeletPort: plan.KubeletPort(),
		PodCIDRs:    podCIDRs,
	}, log)
	phases := append([]component.Phase{{Name: "loadbalancer", Components: []component.Component{
		lb, &follower{lb: lb, kubeconfig: layout.KubeletKubeconfig(), seed: seed}, tun,
	}}}, nodePhases...)
	// The node's certificates come from the server: renewed by joining
	// again through the load balancer, on the node's own client certificate.
	renewal := certs.NewRenewer(certs.RenewerConfig{
		DataDir: cfg.DataDir, NodeName: name, Kubeconfig: layout.KubeletKubeconfig(),
		Remote: func(ctx context.Context) error {
			req := joinReq
			req.ServerURL = lbURL
			_, err := joinclient.JoinWithCA(ctx, req, layout, caPEM)
			return err
		},
	}, log)
	phases = append(phases, component.Phase{Name: "certificate-renewal", Components: []component.Component{renewal}})
	mgr := component.NewManager(log, phases...)
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	log.Info(fmt.Sprintf("skiff agent ready in %s", component.FormatDuration(time.Since(begin))), "node", name, "server", cfg.Server)
	sdnotify.Ready(log)
	mgr.BeforeStop(func() { sdnotify.Stopping(log) })

	return mgr.Serve(ctx, StopTimeout)
}

// hostPort is the host:port of a server URL (port 6443 when it names none).
func hostPort(serverURL string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("server %q is not a URL like https://10.0.0.1:6443", serverURL)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "6443"), nil
	}
	return u.Host, nil
}

// follower keeps the load balancer's servers in step with the cluster's.
type follower struct {
	lb         *loadbalancer.LB
	kubeconfig string
	seed       string
	component.Runner
}

func (f *follower) Name() string               { return "server-list" }
func (f *follower) Init(context.Context) error { return nil }
func (f *follower) Start(context.Context) error {
	f.Go(func(ctx context.Context) error { return loadbalancer.Follow(ctx, f.lb, f.kubeconfig, f.seed) })
	return nil
}
func (f *follower) Ready() error { return nil }
func (f *follower) Stop() error  { return f.Runner.Stop(5 * time.Second) }

// ipStrings formats addresses for the join request and the tunnel.
func ipStrings(ips []netip.Addr) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
