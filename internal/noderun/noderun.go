// Package noderun assembles a node (containerd, images, kubelet, kube-proxy,
// flannel, the Node Ready wait) for `skiff server` and `skiff agent` alike: it
// checks and adapts the host, unpacks the payload, and returns the start-up
// phases. Credentials are the caller's: a server signs its own node's, an agent
// gets them from the join API.
package noderun

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/checkconfig"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane/args"
	"github.com/skiffkube/skiff/internal/host"
	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/killall"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/node/flannel"
	"github.com/skiffkube/skiff/internal/node/kubelet"
	"github.com/skiffkube/skiff/internal/node/kubeproxy"
	"github.com/skiffkube/skiff/internal/node/lbloopback"
	"github.com/skiffkube/skiff/internal/node/netpol"
	"github.com/skiffkube/skiff/internal/node/nodeaddrs"
	"github.com/skiffkube/skiff/internal/node/nodeready"
	"github.com/skiffkube/skiff/internal/node/runtime"
	"github.com/skiffkube/skiff/internal/nodeip"
	"github.com/skiffkube/skiff/internal/payload"
	"github.com/skiffkube/skiff/internal/registries"
)

// Spec is what the caller decides about the node.
type Spec struct {
	DataDir string
	Node    config.Node
	Cluster join.Cluster
	// DefaultNodeIP is used when Node.NodeIP is empty.
	DefaultNodeIP net.IP
	// FlannelKubeconfig may list nodes and patch node status.
	FlannelKubeconfig string
	// ReadyKubeconfig may read this node and its lease.
	ReadyKubeconfig string
	// KubeletAddress is where the kubelet's API listens: all addresses on a
	// server, loopback on an agent (the server reaches it through the tunnel).
	KubeletAddress string
}

// Plan is what the node runs with, settled before start-up.
type Plan struct {
	spec         Spec
	layout       node.Layout
	payload      payload.Payload
	identity     node.Identity
	criEndpoint  string // unix://...
	ownRuntime   bool   // skiff's containerd, not --container-runtime-endpoint
	proxyMode    string
	cgroupDriver string
	restrictOOM  bool
	pauseImage   string
	// registries is registries.yaml, nil without one.
	registries *registries.Registries
	// release drops the host's node lock.
	release func()
	// nodeIPs are the node's addresses, primary family first.
	nodeIPs []netip.Addr
	// begin is when preparation started, before this process's kubelet existed.
	begin time.Time
}

// Layout is where the node's files live.
func (n *Plan) Layout() node.Layout { return n.layout }

// Identity is who the node is, for its certificates.
func (n *Plan) Identity() node.Identity { return n.identity }

// NodeIPs are the node's addresses, primary family first: one, or one per
// family in a dual-stack cluster.
func (n *Plan) NodeIPs() []netip.Addr { return n.nodeIPs }

// SetCluster sets what the node needs of the cluster's configuration, for an
// agent that learns it from the join only after the host is prepared. It
// settles the node's addresses against the cluster's families (completing a
// single node IP in a dual-stack cluster), and fails naming --node-ip when
// they do not fit.
func (n *Plan) SetCluster(c join.Cluster) error {
	n.spec.Cluster = c
	if err := n.settleNodeIPs(); err != nil {
		return err
	}
	if iface := n.spec.Node.FlannelIface; iface != "" && c.FlannelBackend != "none" {
		v4, v6, err := families("", c.ClusterCIDR)
		if err != nil {
			return err
		}
		return CheckFlannelIface(iface, v4, v6, ifaceAddrs)
	}
	return nil
}

// settleNodeIPs resolves the node's addresses against the cluster CIDR known
// so far and, for a dual-stack cluster, checks that the host can run IPv6.
func (n *Plan) settleNodeIPs() error {
	ips, err := nodeip.Resolve(n.spec.Node.NodeIP, n.spec.DefaultNodeIP, n.spec.Cluster.ClusterCIDR, nodeip.HostInterfaceOf)
	if err != nil {
		return err
	}
	if len(ips) == 2 {
		if err := nodeip.CheckIPv6Host("/proc", n.proxyMode, host.Host{}.HasExecutable); err != nil {
			return err
		}
	}
	n.nodeIPs = ips
	n.identity.NodeIPs = nil
	for _, ip := range ips {
		n.identity.NodeIPs = append(n.identity.NodeIPs, net.IP(ip.AsSlice()))
	}
	return nil
}

// KubeletPort is the kubelet API's port. A --kubelet-arg=port that is not a
// number leaves the default here; the kubelet itself refuses it at start.
func (n *Plan) KubeletPort() int {
	if v, ok := args.Value(n.spec.Node.KubeletArgs, "port"); ok {
		if p, err := strconv.Atoi(v); err == nil {
			return p
		}
	}
	return node.DefaultKubeletPort
}

// Release drops the host's node lock.
func (n *Plan) Release() { n.release() }

// Prepare checks the host, unpacks the node binaries and adapts to what the host
// lacks, logging one line per adaptation. It fails, pointing at check-config, when
// an essential host feature is missing.
func Prepare(spec Spec, log *slog.Logger) (*Plan, error) {
	cfg := spec.Node
	if os.Geteuid() != 0 {
		return nil, errors.New("the node (containerd, kubelet, network) needs root: run skiff as root (a server can run without a node: --disable-agent)")
	}
	hlog := log.With("component", "host")
	loadBridgeNetfilter(hlog)
	checks := checkconfig.Run(host.Host{}, spec.DataDir)
	if err := checkconfig.EssentialError(checks); err != nil {
		return nil, err
	}
	n := &Plan{spec: spec, layout: node.Layout{DataDir: spec.DataDir, RunDir: node.DefaultRunDir}, begin: time.Now()}
	regs, err := LoadRegistries(cfg)
	if err != nil {
		return nil, err
	}
	n.registries = regs
	// The record lets `skiff killall` find this node's mounts and
	// containers whatever data dir and cgroup root it uses.
	// With another runtime the containers are that runtime's to stop.
	cgroupRoot, set := args.Value(cfg.KubeletArgs, "cgroup-root")
	if !set || cgroupRoot == "" {
		cgroupRoot = "/"
	}
	if cfg.ContainerRuntimeEndpoint != "" {
		cgroupRoot = ""
	}
	release, err := lockNode(n.layout, killall.NodeRecord{DataDir: spec.DataDir, KubeletCgroupRoot: cgroupRoot})
	if err != nil {
		return nil, err
	}
	n.release = release
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	if err := checkNodePorts(cfg, spec.KubeletAddress); err != nil {
		return nil, err
	}
	// NOTIFY_SOCKET is out of the environment already (sdnotify.Claim): the
	// in-process kubelet would say READY=1 as soon as it runs.
	name, err := cfg.ResolveNodeName(os.Hostname)
	if err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	n.identity = node.Identity{NodeName: name, Hostname: strings.ToLower(hostname)}

	mode, err := host.ProxyMode()
	if err != nil {
		return nil, err
	}
	n.proxyMode = mode
	if err := n.settleNodeIPs(); err != nil {
		return nil, err
	}
	n.cgroupDriver = host.CgroupDriver()
	if v, err := host.CgroupVersion(); err == nil && v == 1 {
		hlog.Info("cgroup v1 host: the kubelet runs with failCgroupV1=false")
	}
	if ok, err := host.HasBoundingCapability(host.CapSysResource); err == nil && !ok {
		n.restrictOOM = true
		hlog.Info("no CAP_SYS_RESOURCE in the capability bounding set: containerd runs with restrict_oom_score_adj")
	}
	if err := host.EnsureSysctls(hlog); err != nil {
		return nil, err
	}

	n.pauseImage = cfg.PauseImage
	if n.pauseImage == "" {
		n.pauseImage = node.DefaultPauseImage
	}
	if cfg.ContainerRuntimeEndpoint != "" {
		n.criEndpoint = cfg.ContainerRuntimeEndpoint
		if !strings.HasPrefix(n.criEndpoint, "unix://") {
			n.criEndpoint = "unix://" + n.criEndpoint
		}
		ok = true
		return n, nil
	}
	n.ownRuntime = true
	n.criEndpoint = "unix://" + n.layout.ContainerdSocket()
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the skiff executable: %w", err)
	}
	begin := time.Now()
	if n.payload, err = payload.Unpack(spec.DataDir, self, hlog); err != nil {
		return nil, err
	}
	hlog.Debug("node binaries verified", "dir", n.payload.Dir, "took", time.Since(begin))
	ok = true
	return n, nil
}

// LoadRegistries reads --private-registry (registries.yaml). Without the file
// at the default path there is no registry configuration; a file given
// with --private-registry must exist. Errors name the file and the key;
// callers check it before they write anything.
func LoadRegistries(cfg config.Node) (*registries.Registries, error) {
	if cfg.PrivateRegistry == "" {
		return nil, nil
	}
	return registries.Load(cfg.PrivateRegistry, cfg.PrivateRegistry == config.DefaultPrivateRegistry)
}

// loadBridgeNetfilter loads br_netfilter where it is a module that is not loaded:
// without it bridged pod traffic bypasses kube-proxy's rules.
func loadBridgeNetfilter(log *slog.Logger) {
	if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
		return
	}
	if out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput(); err != nil {
		log.Debug("modprobe br_netfilter", "err", err, "output", strings.TrimSpace(string(out)))
		return
	}
	log.Info("loaded kernel module br_netfilter")
}

// lockNode makes sure one node runs on this host: nodes share the run dir
// (containerd's socket), the kubelet's directories and ports. A second server on
// another data dir is refused here, before it can take the socket over.
func lockNode(l node.Layout, rec killall.NodeRecord) (func(), error) {
	// killall takes the same lock while it dismantles a node's host state:
	// a node started meanwhile is refused here rather than losing its
	// network halfway.
	path := filepath.Join(l.RunDir, killall.NodeLockFile)
	f, err := killall.LockNode(l.RunDir)
	if errors.Is(err, killall.ErrNodeLocked) {
		return nil, fmt.Errorf("another skiff node runs on this host, or skiff killall is stopping one (lock %s): stop it, or start this server with --disable-agent", path)
	}
	if err != nil {
		return nil, err
	}
	if err := killall.WriteNodeRecord(f, rec); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// checkNodePorts refuses a start whose kubelet or kube-proxy port is taken: the
// kubelet would otherwise exit the whole process when it fails to listen.
func checkNodePorts(cfg config.Node, kubeletAddress string) error {
	return host.CheckPortsFree(Ports(cfg, kubeletAddress))
}

// Ports are the ports the node's kubelet and kube-proxy listen on, with the
// --kubelet-arg or --kube-proxy-arg that moves each; a port the user set to
// 0 (off) is left out. kubeletAddress is where the kubelet's API listens
// (Spec.KubeletAddress; empty means all addresses). Callers check them with
// host.CheckPortsFree before they write anything.
func Ports(cfg config.Node, kubeletAddress string) []host.PortUse {
	const hint = "; is another Kubernetes node running here? Move it with %s, or start with --disable-agent"
	type port struct {
		ip, what string
		port     int
		flag     string
	}
	ports := []port{
		{cmp.Or(kubeletAddress, "0.0.0.0"), "kubelet API", node.DefaultKubeletPort, "--kubelet-arg=port=N"},
		{"127.0.0.1", "kubelet health", 10248, "--kubelet-arg=healthz-port=N"},
	}
	if v, ok := args.Value(cfg.KubeletArgs, "port"); ok {
		ports[0].port = atoiOr(v, ports[0].port)
	}
	if v, ok := args.Value(cfg.KubeletArgs, "healthz-port"); ok {
		ports[1].port = atoiOr(v, ports[1].port)
	}
	// kube-proxy's addresses are IP:port, as skiff passes them.
	for _, p := range []struct {
		key, what string
		def       int
	}{
		{"healthz-bind-address", "kube-proxy health", 10256},
		{"metrics-bind-address", "kube-proxy metrics", 10249},
	} {
		pp := port{"127.0.0.1", p.what, p.def, "--kube-proxy-arg=" + p.key + "=127.0.0.1:N"}
		if v, ok := args.Value(cfg.KubeProxyArgs, p.key); ok {
			h, portText, err := net.SplitHostPort(v)
			if err != nil {
				continue // kube-proxy itself says what is wrong with it
			}
			pp.ip, pp.port = cmp.Or(h, "0.0.0.0"), atoiOr(portText, 0)
		}
		ports = append(ports, pp)
	}
	var uses []host.PortUse
	for _, p := range ports {
		if p.port <= 0 || p.port > 65535 {
			continue
		}
		uses = append(uses, host.PortUse{IP: p.ip, Port: p.port, What: p.what, Hint: fmt.Sprintf(hint, p.flag)})
	}
	return uses
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// podResolvConf chooses the resolv.conf the kubelet gives pods, writes it when
// it is skiff's own, and says once (at every start) what was wrong with the
// host's.
func podResolvConf(l node.Layout, given string, clusterDNS []string, log *slog.Logger) (string, error) {
	c, err := node.ChooseResolvConf(node.ResolvConfInput{
		Given:      given,
		Host:       node.HostResolvConf,
		Resolved:   node.ResolvedResolvConf,
		Generated:  filepath.Join(l.EtcDir(), "resolv.conf"),
		ClusterDNS: clusterDNS,
	})
	if err != nil {
		return "", err
	}
	if c.Content != nil {
		if err := atomicfile.Write(c.Path, c.Content, 0o644, 0o700); err != nil {
			return "", fmt.Errorf("writing the pods' resolv.conf: %w", err)
		}
	}
	if c.Warning != "" {
		log.Warn(c.Warning, "component", "kubelet")
	}
	return c.Path, nil
}

// Phases are the node's start-up phases.
func (n *Plan) Phases(log *slog.Logger) (_ []component.Phase, retErr error) {
	cfg, cluster := n.spec.Node, n.spec.Cluster
	var phases []component.Phase
	containerdSocket := ""
	if n.ownRuntime {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the skiff executable: %w", err)
		}
		containerdSocket = n.layout.ContainerdSocket()
		// --system-default-registry names the built-in images under the
		// registry too; the import tags them so, so air-gap keeps working.
		pause := n.pauseImage
		aliases := map[string]string{}
		if reg := cluster.SystemDefaultRegistry; reg != "" {
			aliases[node.DefaultPauseImage] = node.SystemImage(node.DefaultPauseImage, reg)
			if cfg.PauseImage == "" {
				pause = aliases[node.DefaultPauseImage]
			}
		}
		proxy, err := registries.Listen(n.registries.Routes(), log)
		if err != nil {
			return nil, err
		}
		// The proxy's listeners are the manager's to close once the
		// phases are returned.
		defer func() {
			if retErr != nil {
				proxy.Close()
			}
		}()
		rc := n.registries.Containerd(proxy.Endpoints())
		if err := registries.WriteHosts(node.RegistryConfigDir(n.layout), rc.Hosts); err != nil {
			return nil, err
		}
		containerdComponents := []component.Component{runtime.NewContainerd(runtime.ContainerdConfig{
			Self:       self,
			ConfigFile: n.layout.ContainerdConfig(),
			Config: node.ContainerdConfig(node.ContainerdPlan{
				Layout: n.layout, BinDir: n.payload.BinDir, SystemdCgroup: n.cgroupDriver == "systemd",
				RestrictOOMScoreAdj: n.restrictOOM, PauseImage: pause,
				RegistryAuthTOML: registries.CRIAuthTOML("io.containerd.cri.v1.images", rc.Auths),
			}),
			Socket:  containerdSocket,
			BinDir:  n.payload.BinDir,
			LogFile: n.layout.ContainerdLog(),
		}, log)}
		if len(proxy.Endpoints()) > 0 {
			containerdComponents = append(containerdComponents, proxy)
		}
		phases = append(phases,
			component.Phase{Name: "containerd", Components: containerdComponents},
			component.Phase{Name: "images", Components: []component.Component{runtime.NewImages(runtime.ImagesConfig{
				Socket:    containerdSocket,
				Archives:  []string{n.payload.PauseArchive},
				Aliases:   aliases,
				Dir:       n.layout.ImagesDir(),
				StateFile: n.layout.ImportState(),
			}, log)}},
		)
	}

	if !n.ownRuntime && n.registries != nil {
		log.Warn("registries.yaml is for skiff's own containerd; the runtime at --container-runtime-endpoint keeps its own registry configuration", "component", "containerd", "file", n.registries.File)
	}
	if err := ensureServiceRoutes(cluster.ServiceCIDR, n.nodeIPs, log.With("component", "host")); err != nil {
		return nil, err
	}

	resolv, err := podResolvConf(n.layout, cfg.ResolvConf, strings.Split(cluster.ClusterDNS, ","), log)
	if err != nil {
		return nil, err
	}
	kplan := node.KubeletPlan{
		Layout:        n.layout,
		NodeName:      n.identity.NodeName,
		NodeIP:        config.JoinIPs(n.nodeIPs),
		Labels:        cfg.NodeLabels,
		Taints:        cfg.NodeTaints,
		CgroupDriver:  n.cgroupDriver,
		CRIEndpoint:   n.criEndpoint,
		ClusterDNS:    strings.Split(cluster.ClusterDNS, ","),
		ClusterDomain: cluster.ClusterDomain,
		ResolvConf:    resolv,
		Address:       cmp.Or(n.spec.KubeletAddress, "0.0.0.0"),
		ExtraArgs:     cfg.KubeletArgs,
		// Only a node with an external IP is initialised by the cloud node
		// controller; the others keep today's start-up (issue 14).
		ProtectKernelDefaults: cfg.ProtectKernelDefaults,
		ExternalCloudProvider: len(cfg.ExternalIPs()) > 0,
	}
	kc, err := node.KubeletConfig(kplan)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(n.layout.KubeletConfig(), kc, 0o600, 0o700); err != nil {
		return nil, fmt.Errorf("writing kubelet config: %w", err)
	}
	for _, dir := range []string{n.layout.StaticPodDir(), n.layout.KubeletDropinDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	nodeComponents := []component.Component{
		kubelet.New(kubelet.Config{ConfigFile: n.layout.KubeletConfig(), DropinDir: n.layout.KubeletDropinDir(), Args: node.KubeletArgs(kplan), ContainerdSocket: containerdSocket}, log),
		kubeproxy.New(kubeproxy.Config{Args: node.KubeProxyArgs(node.KubeProxyPlan{
			Layout: n.layout, NodeName: n.identity.NodeName, ClusterCIDR: cluster.ClusterCIDR, Mode: n.proxyMode, ExtraArgs: cfg.KubeProxyArgs,
		})}, log),
	}
	// LoadBalancer Services answer on this node's loopback too; kube-proxy's
	// identity may watch Services and this Node.
	nodeComponents = append(nodeComponents, lbloopback.New(lbloopback.Config{
		Kubeconfig: n.layout.KubeProxyKubeconfig(), NodeName: n.identity.NodeName,
	}, log))
	if cluster.FlannelBackend != "none" {
		nodeComponents = append(nodeComponents, flannel.New(flannel.Config{
			Kubeconfig:  n.spec.FlannelKubeconfig,
			NodeName:    n.identity.NodeName,
			NodeIPs:     n.nodeIPs,
			Iface:       cfg.FlannelIface,
			ClusterCIDR: cluster.ClusterCIDR,
			Backend:     cluster.FlannelBackend,
			ProxyMode:   n.proxyMode,
			NetConf:     n.layout.FlannelNetConf(),
			SubnetFile:  n.layout.FlannelSubnetFile(),
			CNIConfDir:  n.layout.CNIConfDir(),
		}, log))
	}
	if !cluster.DisableNetworkPolicy {
		cidrs, err := config.ParseCIDRs(cluster.ClusterCIDR)
		if err != nil {
			return nil, fmt.Errorf("cluster CIDR: %w", err)
		}
		nodeComponents = append(nodeComponents, netpol.New(netpol.Config{
			Kubeconfig:   n.spec.FlannelKubeconfig,
			NodeName:     n.identity.NodeName,
			ClusterCIDRs: cidrs,
			ProxyMode:    n.proxyMode,
		}, log))
	} else {
		netpol.RemoveLeftovers(log)
	}
	phases = append(phases,
		component.Phase{Name: "kubelet", Components: nodeComponents},
		component.Phase{Name: "node", Components: []component.Component{
			nodeready.New(n.spec.ReadyKubeconfig, n.identity.NodeName, cluster.FlannelBackend == "none" || !n.ownRuntime, n.begin, log),
			nodeaddrs.New(nodeaddrs.Config{
				Kubeconfig: n.layout.KubeletKubeconfig(), NodeName: n.identity.NodeName,
				InternalIPs: n.nodeIPs, ExternalIPs: cfg.ExternalIPs(), Hostname: n.identity.NodeName,
			}, nil, log),
		}},
	)
	return phases, nil
}

// ensureServiceRoutes lets host processes reach ClusterIPs on a host without
// a default route (host.EnsureServiceRoutes). nodeIPs are the node's
// addresses, one per family.
func ensureServiceRoutes(serviceCIDR string, nodeIPs []netip.Addr, log *slog.Logger) error {
	cidrs, err := config.ParseCIDRs(serviceCIDR)
	if err != nil {
		return fmt.Errorf("service CIDR: %w", err)
	}
	return host.EnsureServiceRoutes(cidrs, nodeIPs, log)
}
