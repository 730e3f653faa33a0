package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane/args"
	"github.com/skiffkube/skiff/internal/host"
)

// DefaultAPIServerPort is the apiserver's own port, on loopback only:
// everything from outside comes through the supervisor. A user moves it
// with --kube-apiserver-arg=secure-port=N.
const DefaultAPIServerPort = 6444

// Plan is what every component's command line is derived from.
type Plan struct {
	Config      *config.Server
	Layout      Layout
	AdvertiseIP net.IP
	// EtcdServers are the datastore's etcd endpoints (kine's socket, or
	// embedded etcd's client URL).
	EtcdServers []string
	// EtcdTLS, when set, are the apiserver's etcd client credentials:
	// --etcd-cafile, --etcd-certfile, --etcd-keyfile.
	EtcdTLS *EtcdTLSFiles
	// LeaderElect is false for a datastore that only one server can use
	// (SQLite): electing a leader among one is start-up time for nothing.
	LeaderElect bool
	// EncryptSecrets gives the apiserver the encryption config file
	// (Layout.EncryptionConfig), reloaded when it changes.
	EncryptSecrets bool
}

// EtcdTLSFiles are an etcd client's CA, certificate and key files.
type EtcdTLSFiles struct{ CAFile, CertFile, KeyFile string }

// APIServerPort is the apiserver's loopback port: the user's secure-port if
// given, else DefaultAPIServerPort. config.Server.Validate has checked the
// passthrough syntax, not the value: a bad one is reported by the
// apiserver's own flag parsing.
func (p Plan) APIServerPort() int {
	port := DefaultAPIServerPort
	for _, a := range p.Config.KubeAPIServerArgs {
		if k, v := args.Split(a); k == "secure-port" {
			if n, err := strconv.Atoi(v); err == nil {
				port = n
			}
		}
	}
	return port
}

// Default secure ports of kube-controller-manager and kube-scheduler, on
// loopback: health and metrics only.
const (
	DefaultControllerManagerPort = 10257
	DefaultSchedulerPort         = 10259
)

// ControllerManagerPort is kube-controller-manager's secure port: the user's
// --kube-controller-manager-arg=secure-port if it is a number, else the
// default. 0 means it serves no port.
func (p Plan) ControllerManagerPort() int {
	return userPort(p.Config.KubeControllerManagerArgs, DefaultControllerManagerPort)
}

// SchedulerPort is kube-scheduler's secure port, as ControllerManagerPort.
func (p Plan) SchedulerPort() int { return userPort(p.Config.KubeSchedulerArgs, DefaultSchedulerPort) }

// Ports are the ports kube-apiserver, kube-controller-manager and
// kube-scheduler will listen on, each with the flag that moves it, for
// host.CheckPortsFree before anything is written. A component that is
// disabled or whose secure-port is 0 (serving off) is left out.
func (p Plan) Ports() []host.PortUse {
	c := p.Config
	uses := []host.PortUse{{
		IP: BindAddress(c.KubeAPIServerArgs), Port: p.APIServerPort(),
		What: "kube-apiserver on loopback", Hint: "; move it with --kube-apiserver-arg=secure-port=N",
	}}
	if !c.DisableControllerManager {
		uses = append(uses, host.PortUse{
			IP: BindAddress(c.KubeControllerManagerArgs), Port: p.ControllerManagerPort(),
			What: "kube-controller-manager", Hint: "; move it with --kube-controller-manager-arg=secure-port=N",
		})
	}
	if !c.DisableScheduler {
		uses = append(uses, host.PortUse{
			IP: BindAddress(c.KubeSchedulerArgs), Port: p.SchedulerPort(),
			What: "kube-scheduler", Hint: "; move it with --kube-scheduler-arg=secure-port=N",
		})
	}
	return slices.DeleteFunc(uses, func(u host.PortUse) bool { return u.Port <= 0 || u.Port > 65535 })
}

// BindAddress is the address a component listens on: its bind-address from
// the user's passthrough args, else 127.0.0.1 (what skiff passes).
func BindAddress(user []string) string {
	if v, ok := args.Value(user, "bind-address"); ok && net.ParseIP(v) != nil {
		return v
	}
	return "127.0.0.1"
}

func userPort(user []string, def int) int {
	if v, ok := args.Value(user, "secure-port"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

// LoopbackURL is where in-process components reach the apiserver.
func (p Plan) LoopbackURL() string { return "https://127.0.0.1:" + strconv.Itoa(p.APIServerPort()) }

func (p Plan) serviceAccountIssuer() string {
	return "https://kubernetes.default.svc." + p.Config.ClusterDomain
}

// ServiceAccountJWKSURI is where the service-account issuer's discovery
// document (/.well-known/openid-configuration) says the signing keys are:
// the supervisor's port on the advertise address, the address pods and other
// machines reach. Left to itself the apiserver would publish its own
// external address, which is its loopback-only port.
func (p Plan) ServiceAccountJWKSURI() string {
	return "https://" + net.JoinHostPort(p.AdvertiseIP.String(), strconv.Itoa(p.Config.HTTPSListenPort)) + "/openid/v1/jwks"
}

// APIServerArgs is kube-apiserver's command line: secure by default (Node and
// RBAC authorizers, NodeRestriction, anonymous access only to health
// endpoints, profiling off), then --kube-apiserver-arg on top.
func (p Plan) APIServerArgs() []string {
	l := p.Layout
	g := map[string]string{
		"advertise-address":        p.AdvertiseIP.String(),
		"allow-privileged":         "true",
		"api-audiences":            p.apiAudiences(),
		"authorization-mode":       "Node,RBAC",
		"bind-address":             "127.0.0.1",
		"secure-port":              strconv.Itoa(DefaultAPIServerPort),
		"cert-dir":                 l.TLSDir() + "/temporary-certs",
		"client-ca-file":           l.ClientCA().Cert,
		"enable-admission-plugins": "NodeRestriction",
		// Every live server is listed in the kubernetes Service's endpoints
		// (a lease per apiserver, 15 s TTL); the apiserver component makes
		// it publish the supervisor's port, not the loopback one.
		"endpoint-reconciler-type": "lease",
		// Aggregated APIs (metrics-server) are dialled at their endpoints, not
		// their Service IP: a server without a node has no kube-proxy.
		"enable-aggregator-routing":     "true",
		"etcd-servers":                  strings.Join(p.EtcdServers, ","),
		"kubelet-certificate-authority": l.ServerCA().Cert,
		"kubelet-client-certificate":    l.ClientKubeAPIServer().Cert,
		"kubelet-client-key":            l.ClientKubeAPIServer().Key,
		// A node name need not resolve; its InternalIP is in the kubelet's
		// serving certificate.
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"profiling":                          "false",
		"proxy-client-cert-file":             l.ClientAuthProxy().Cert,
		"proxy-client-key-file":              l.ClientAuthProxy().Key,
		"requestheader-allowed-names":        "system:auth-proxy",
		"requestheader-client-ca-file":       l.RequestHeaderCA().Cert,
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		"service-account-issuer":             p.serviceAccountIssuer(),
		"service-account-jwks-uri":           p.ServiceAccountJWKSURI(),
		"service-account-key-file":           l.ServiceAccountPub(),
		"service-account-signing-key-file":   l.ServiceAccountKey(),
		"service-cluster-ip-range":           p.Config.ServiceCIDR,
		"service-node-port-range":            cmp.Or(p.Config.ServiceNodePortRange, "30000-32767"),
		"storage-backend":                    "etcd3",
		"tls-cert-file":                      l.ServingAPIServer().Cert,
		"tls-private-key-file":               l.ServingAPIServer().Key,
	}
	if t := p.EtcdTLS; t != nil {
		g["etcd-cafile"], g["etcd-certfile"], g["etcd-keyfile"] = t.CAFile, t.CertFile, t.KeyFile
	}
	// An external etcd is the apiserver's own datastore: it gets the TLS
	// files too (kine's socket needs none).
	if kind, _ := config.DatastoreKind(p.Config.DatastoreEndpoint); kind == "etcd" {
		for flag, v := range map[string]string{"etcd-cafile": p.Config.DatastoreCAFile, "etcd-certfile": p.Config.DatastoreCertFile, "etcd-keyfile": p.Config.DatastoreKeyFile} {
			if v != "" {
				g[flag] = v
			}
		}
	}
	// Anonymous requests are refused except on health endpoints; a user who
	// configures authentication themselves takes over that decision.
	user := p.Config.KubeAPIServerArgs
	if !args.Has(user, "anonymous-auth") && !args.Has(user, "authentication-config") {
		g["authentication-config"] = l.AuthenticationConfig()
	}
	if p.EncryptSecrets {
		g["encryption-provider-config"] = l.EncryptionConfig()
		g["encryption-provider-config-automatic-reload"] = "true"
	}
	if !args.Has(user, "egress-selector-config-file") {
		g["egress-selector-config-file"] = l.EgressSelectorConfig()
	}
	return args.Build(g, user)
}

// apiAudiences are the audiences the apiserver accepts in tokens: the issuer
// that signs them (the user's --kube-apiserver-arg=service-account-issuer when
// given, as upstream defaults the audiences to it) and "skiff".
func (p Plan) apiAudiences() string {
	issuer := p.serviceAccountIssuer()
	if v, ok := args.Value(p.Config.KubeAPIServerArgs, "service-account-issuer"); ok && v != "" {
		issuer = v
	}
	return issuer + ",skiff"
}

// authenticationConfig allows anonymous requests on the health endpoints
// only, so load balancers and probes work while the API stays closed.
const authenticationConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /healthz
  - path: /livez
  - path: /readyz
`

// egressSelectorConfig sends the apiserver's connections into the cluster
// (kubelets, pods, services, webhooks) through skiff's CONNECT proxy, which
// uses an agent's tunnel for that agent's addresses; agents expose no port.
func egressSelectorConfig(l Layout) string {
	return `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: ` + strconv.Quote(l.EgressSocket()) + "\n"
}

// WriteAPIServerConfigs writes the files APIServerArgs points at.
func WriteAPIServerConfigs(l Layout) error {
	if err := os.MkdirAll(l.EtcDir(), 0o700); err != nil {
		return err
	}
	for path, content := range map[string]string{
		l.AuthenticationConfig(): authenticationConfig,
		l.EgressSelectorConfig(): egressSelectorConfig(l),
	} {
		if cur, err := os.ReadFile(path); err == nil && string(cur) == content {
			continue
		}
		if err := atomicfile.Write(path, []byte(content), 0o600, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// ControllerManagerArgs is kube-controller-manager's command line.
func (p Plan) ControllerManagerArgs() []string {
	l := p.Layout
	g := map[string]string{
		"kubeconfig":                       l.ControllerKubeconfig(),
		"authentication-kubeconfig":        l.ControllerKubeconfig(),
		"authorization-kubeconfig":         l.ControllerKubeconfig(),
		"bind-address":                     "127.0.0.1",
		"secure-port":                      strconv.Itoa(DefaultControllerManagerPort),
		"profiling":                        "false",
		"leader-elect":                     strconv.FormatBool(p.LeaderElect),
		"allocate-node-cidrs":              "true",
		"cluster-cidr":                     p.Config.ClusterCIDR,
		"service-cluster-ip-range":         p.Config.ServiceCIDR,
		"configure-cloud-routes":           "false",
		"controllers":                      "*,tokencleaner",
		"root-ca-file":                     l.ServerCA().Cert,
		"service-account-private-key-file": l.ServiceAccountKey(),
		"use-service-account-credentials":  "true",
		// Client certificates for kubelets are signed by the client CA,
		// serving certificates by the server CA.
		"cluster-signing-kube-apiserver-client-cert-file": l.ClientCA().Cert,
		"cluster-signing-kube-apiserver-client-key-file":  l.ClientCA().Key,
		"cluster-signing-kubelet-client-cert-file":        l.ClientCA().Cert,
		"cluster-signing-kubelet-client-key-file":         l.ClientCA().Key,
		"cluster-signing-kubelet-serving-cert-file":       l.ServerCA().Cert,
		"cluster-signing-kubelet-serving-key-file":        l.ServerCA().Key,
		"cluster-signing-legacy-unknown-cert-file":        l.ServerCA().Cert,
		"cluster-signing-legacy-unknown-key-file":         l.ServerCA().Key,
	}
	// Dual-stack: each family's node pod-CIDR size, as K3s sets them
	// (upstream refuses these two flags on a single-stack cluster).
	if config.IsDualStack(p.Config.ClusterCIDR) {
		g["node-cidr-mask-size-ipv4"] = strconv.Itoa(config.DefaultNodeMaskIPv4)
		g["node-cidr-mask-size-ipv6"] = strconv.Itoa(config.DefaultNodeMaskIPv6)
	}
	return args.Build(g, p.Config.KubeControllerManagerArgs)
}

// SchedulerArgs is kube-scheduler's command line.
func (p Plan) SchedulerArgs() []string {
	l := p.Layout
	g := map[string]string{
		"kubeconfig":                l.SchedulerKubeconfig(),
		"authentication-kubeconfig": l.SchedulerKubeconfig(),
		"authorization-kubeconfig":  l.SchedulerKubeconfig(),
		"bind-address":              "127.0.0.1",
		"secure-port":               strconv.Itoa(DefaultSchedulerPort),
		"profiling":                 "false",
		"leader-elect":              strconv.FormatBool(p.LeaderElect),
	}
	return args.Build(g, p.Config.KubeSchedulerArgs)
}

// DetectAdvertiseIP picks the address other machines reach this one on: the
// --advertise-address, else the (first) --node-ip, else --bind-address when
// it is a specific address, else the address of the interface that holds the
// default route, else the first address of an up interface. With none of
// these (no network but loopback) it is an error: a server that advertised
// 127.0.0.1 would not work.
func DetectAdvertiseIP(cfg *config.Server) (net.IP, error) {
	for _, f := range []struct{ flag, value string }{
		{"advertise-address", cfg.AdvertiseAddress},
		// Before the node IP: a server bound to one address listens only
		// there, and the kubernetes Service and the issuer's jwks_uri
		// must name an address it answers on.
		{"bind-address", cfg.BindAddress},
		{"node-ip", strings.TrimSpace(strings.Split(cfg.NodeIP, ",")[0])},
	} {
		if f.value == "" {
			continue
		}
		ip := net.ParseIP(f.value)
		if ip == nil {
			return nil, fmt.Errorf("%s: invalid IP %q", f.flag, f.value)
		}
		if !ip.IsUnspecified() {
			return ip, nil
		}
	}
	if ip := defaultRouteIP(); ip != nil {
		return ip, nil
	}
	if ifaces, err := listInterfaces(); err == nil {
		if a, ok := firstUsableAddress(ifaces); ok {
			return net.IP(a.AsSlice()), nil
		}
	}
	return nil, errors.New("no address to use: no default route, and no up interface with an address other than loopback")
}

// defaultRouteIP reads /proc/net/route rather than dialling out, which
// would need a route to somewhere and may be watched on closed networks.
func defaultRouteIP() net.IP {
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 2 || f[1] != "00000000" {
			continue
		}
		iface, err := net.InterfaceByName(f[0])
		if err != nil {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				return n.IP
			}
		}
	}
	return nil
}
