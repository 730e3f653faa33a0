// Package coredns serves the cluster's DNS from the server process: CoreDNS,
// embedded as a library with only the plugins a cluster DNS needs, answers
// for the cluster domain from the API (Services, headless Services, pods),
// answers node names with their InternalIPs, and forwards other names to the
// host's resolvers.
//
// Pods reach it through the usual kube-dns Service at --cluster-dns. That
// Service has no selector: each server's EndpointSlice (published by package
// addons) points at its address and Port, where this component listens, so
// no pod and no image are involved, and a host DNS server on port 53 is left
// alone.
package coredns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	// The plugins the Corefile below uses, and nothing else.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
)

// DefaultPort is where CoreDNS listens on the server's address.
const DefaultPort = 10053

// ManifestFile is the add-on's file in the manifests dir.
const ManifestFile = "coredns.yaml"

// directives is the plugins' execution order, as CoreDNS's plugin.cfg has it,
// but for hosts, which comes before cache: node names are answered from
// memory anyway, and a node that joins, leaves or moves is then answered
// at once rather than after a cached answer (or a cached NXDOMAIN from the
// upstream resolvers) expires.
var directives = []string{"bind", aclPlugin, "errors", "hosts", "cache", "loadbalance", "kubernetes", "forward"}

// Config is what the DNS server needs.
type Config struct {
	Kubeconfig string
	// Domain is the cluster domain.
	Domain string
	// ListenIP and Port are where CoreDNS listens: the address the kube-dns
	// EndpointSlice names.
	ListenIP net.IP
	Port     int
	// ServiceIP is the kube-dns Service's cluster IP (--cluster-dns).
	ServiceIP string
	// ResolvConf names the upstream resolvers; /etc/resolv.conf by default.
	ResolvConf string
	// NodeHosts is the hosts file skiff keeps with the nodes' names and
	// InternalIPs, which CoreDNS serves.
	NodeHosts string
	// Clients are the sources besides the nodes' addresses that may query:
	// the cluster's pod and Service CIDRs. Loopback and ListenIP always may.
	Clients []netip.Prefix
}

// Server is the DNS component.
type Server struct {
	cfg      Config
	log      *slog.Logger
	corefile string
	inst     *caddy.Instance
	acl      *sourceACL
	hosts    *nodeHosts
	nodes    cache.SharedIndexInformer
	stop     context.CancelFunc
}

// New returns the DNS component.
func New(cfg Config, log *slog.Logger) *Server {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	return &Server{cfg: cfg, log: log.With("component", "coredns")}
}

func (s *Server) Name() string { return "coredns" }

func (s *Server) Init(context.Context) error {
	upstream := hasNameserver(s.cfg.ResolvConf)
	if !upstream {
		s.log.Warn("no nameserver in the host's resolver config: only cluster names resolve", "file", s.cfg.ResolvConf)
	}
	s.corefile = Corefile(s.cfg, upstream)
	fixed := append([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, s.cfg.Clients...)
	if ip, ok := netip.AddrFromSlice(s.cfg.ListenIP); ok {
		fixed = append(fixed, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
	}
	s.acl = newSourceACL(fixed)
	if s.cfg.NodeHosts == "" {
		// An empty path would have the hosts plugin serve the host's /etc/hosts.
		return errors.New("coredns: no node hosts file configured")
	}
	s.hosts = newNodeHosts(s.cfg.NodeHosts, s.cfg.Domain, s.log)
	if err := s.hosts.write(); err != nil {
		return err
	}
	return dnsserver.SetDirectives(directives)
}

// Corefile is CoreDNS's configuration.
func Corefile(cfg Config, upstream bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".:%d {\n", cfg.Port)
	fmt.Fprintf(&b, "    bind %s\n", cfg.ListenIP)
	b.WriteString("    " + aclPlugin + "\n")
	b.WriteString("    errors\n")
	b.WriteString(hostsStanza(cfg.NodeHosts))
	fmt.Fprintf(&b, "    kubernetes %s in-addr.arpa ip6.arpa {\n", cfg.Domain)
	fmt.Fprintf(&b, "        kubeconfig %q\n", cfg.Kubeconfig)
	b.WriteString("        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }\n")
	if upstream {
		fmt.Fprintf(&b, "    forward . %q\n", cfg.ResolvConf)
	}
	b.WriteString("    cache 30\n    loadbalance\n}\n")
	return b.String()
}

// hostsStanza serves node names from the node hosts file, as K3s's
// NodeHosts: other names fall through to the plugins below. reload is how
// soon a rewritten file is served.
func hostsStanza(path string) string {
	return fmt.Sprintf("    hosts %q {\n        ttl 30\n        reload 1s\n        fallthrough\n    }\n", path)
}

// hasNameserver reports whether a resolv.conf names a nameserver.
func hasNameserver(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "nameserver" {
			return true
		}
	}
	return false
}

func (s *Server) Start(context.Context) error {
	if err := s.watchNodes(); err != nil {
		return err
	}
	activeACL.Store(s.acl)
	caddy.Quiet, dnsserver.Quiet = true, true
	// The kubernetes plugin's setup points klog, process-wide, at CoreDNS's
	// logger, which would print every upstream component's lines; skiff's
	// routing is put back once CoreDNS has started.
	skiffKlog := klog.Background()
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(s.corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	klog.SetLoggerWithOptions(skiffKlog, klog.ContextualLogger(true))
	if err != nil {
		s.stop()
		return fmt.Errorf("starting CoreDNS on %s: %w", net.JoinHostPort(s.cfg.ListenIP.String(), strconv.Itoa(s.cfg.Port)), err)
	}
	s.inst = inst
	return nil
}

// watchNodes keeps the source filter's node addresses and the node hosts
// file from the API.
func (s *Server) watchNodes() error {
	rc, err := clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	s.nodes = coreinformers.NewNodeInformer(client, 10*time.Minute, cache.Indexers{})
	set := func(obj interface{}) {
		if n, ok := obj.(*corev1.Node); ok {
			s.acl.setNode(n.Name, n)
			s.hosts.setNode(n.Name, n)
		}
	}
	_, err = s.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj interface{}) { set(obj) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				s.acl.setNode(n.Name, nil)
				s.hosts.setNode(n.Name, nil)
			}
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.nodes.RunWithContext(ctx)
	}()
	s.stop = func() { cancel(); <-done }
	return nil
}

// Ready once the cluster domain answers from the API and the nodes allowed
// to ask are known.
func (s *Server) Ready() error {
	if !s.nodes.HasSynced() {
		return errors.New("nodes not listed yet")
	}
	c := dns.Client{Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn("kubernetes.default.svc."+s.cfg.Domain), dns.TypeA)
	r, _, err := c.Exchange(m, net.JoinHostPort(s.cfg.ListenIP.String(), strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return errors.New("kubernetes.default not resolved yet: " + dns.RcodeToString[r.Rcode])
	}
	return nil
}

// Stop stops the listeners and then the plugins: the shutdown callbacks end
// the kubernetes plugin's watches, which the apiserver's shutdown waits for.
func (s *Server) Stop() error {
	if s.inst == nil {
		return nil
	}
	err := s.inst.Stop()
	errs := append([]error{err}, s.inst.ShutdownCallbacks()...)
	s.stop()
	return errors.Join(errs...)
}

// Manifest is the kube-dns Service, applied through the manifests controller
// so that `--disable coredns` prunes it. It has no selector: every server
// that serves DNS publishes an EndpointSlice with its address (package
// addons).
func Manifest(cfg Config) []byte {
	return []byte(`# Written by skiff at every start; create coredns.yaml.skip to manage it yourself.
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
spec:
  clusterIP: ` + cfg.ServiceIP + `
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`)
}
