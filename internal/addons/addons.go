// Package addons is the one place where skiff's add-ons are wired into a
// server: CoreDNS, metrics-server, local storage, the Helm controller,
// servicelb, the manifests controller and the small controllers a server
// runs for itself.
//
// Each add-on is one Addon value, declared in its own package, that says
// what it deploys (a manifest file), which components it runs while enabled,
// where they run (Placement) and how it is removed when disabled (its
// manifest is deleted from the manifests dir, so the manifests controller
// prunes its objects, and its Cleanup components run). The list of add-ons
// compiled in is package builtin, one line per add-on. Assemble turns the
// list and a server's configuration into the server's components.
//
// The rules for several servers live here too: an add-on placed on
// OneElectedServer runs under a Lease in kube-system (see Elected), and the
// in-process services (CoreDNS, metrics-server) are published through
// per-server EndpointSlices that list every live server (see Endpoints).
package addons

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
)

// Placement says where an add-on's components run.
type Placement int

const (
	// EveryServer runs the components in every server process.
	EveryServer Placement = iota
	// OneElectedServer runs them on one server of the cluster at a time:
	// the holder of the Lease kube-system/skiff-<name>. Another server
	// takes over within a lease duration when the holder dies.
	OneElectedServer
	// EveryNode runs them with this host's node (on a server that runs an
	// agent, in the phase that waits for the node), once per node.
	EveryNode
)

func (p Placement) String() string {
	switch p {
	case EveryServer:
		return "every server"
	case OneElectedServer:
		return "one elected server"
	case EveryNode:
		return "every node"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}

// Env is what an add-on's components are built from: the server's
// configuration and what the server has set up before the add-ons start.
type Env struct {
	Config *config.Server
	Layout controlplane.Layout
	// AdvertiseIP is this server's address, where in-process add-ons listen.
	AdvertiseIP net.IP
	// Server names this server where servers must be told apart (its node
	// name, else its host name).
	Server string
	// LocalNode is this server's node name, "" without an agent.
	LocalNode string
	// EmbeddedEtcd is whether this server runs an etcd member, and
	// EtcdMember that member's name (for the node's annotation).
	EmbeddedEtcd bool
	EtcdMember   string
	// Dial reaches kubelets, through agents' tunnels.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Files and Removed are the manifests of the enabled add-ons by file
	// name, and the files of the disabled ones; filled by Assemble before
	// any component is built (for the manifests controller).
	Files   map[string][]byte
	Removed []string
	// Ports are the ports skiff serves on every node's address: the fixed
	// ones and those of the enabled add-ons; filled by Assemble.
	Ports []Port
	Log   *slog.Logger
}

// Kubeconfig is the admin kubeconfig the add-ons use.
func (e *Env) Kubeconfig() string { return e.Layout.AdminKubeconfig() }

// Port is a port skiff serves on every node's address, which no
// LoadBalancer Service may take.
type Port struct {
	Port     int32
	Protocol corev1.Protocol
	What     string
}

// Manifest is a file an add-on writes into the manifests dir.
type Manifest struct {
	File  string
	Bytes func(e *Env) []byte
}

// Service is a Service in the cluster that this server serves from its own
// process: each server publishes an EndpointSlice naming its address, and
// one elected server removes the slices of servers that died.
type Service struct {
	Namespace, Name string
	Ports           []ServicePort
}

// ServicePort is one port of a Service a server serves.
type ServicePort struct {
	Name     string
	Protocol corev1.Protocol
	Port     int32
}

// Addon is one add-on's declaration.
type Addon struct {
	// Name is the add-on's --disable name when it has one, and the name of
	// its Lease (skiff-<Name>) when it is elected.
	Name string
	// Disabled reports whether the server's configuration turns it off;
	// nil means `--disable <Name>`. An add-on that cannot be turned off
	// returns false.
	Disabled func(cfg *config.Server) bool
	// Manifest, when set, is written while enabled and deleted (its objects
	// pruned) while disabled.
	Manifest *Manifest
	// Placement says where Components run.
	Placement Placement
	// Components are the add-on's controllers while it is enabled, built
	// afresh each time they start (an elected add-on's are rebuilt at each
	// new term).
	Components func(e *Env) []component.Component
	// Cleanup are one-shot components run while it is disabled, on the
	// server that has it disabled.
	Cleanup func(e *Env) []component.Component
	// Ports are served on every node's address while it is enabled.
	Ports func(e *Env) []Port
	// Serves are Services this server serves while it is enabled.
	Serves func(e *Env) []Service
}

func (a *Addon) disabled(cfg *config.Server) bool {
	if a.Disabled != nil {
		return a.Disabled(cfg)
	}
	return cfg.Disabled(a.Name)
}

// Election are the lease timings of elected add-ons, as K3s's and the
// controller-manager's: a dead leader is replaced within LeaseDuration (plus
// RetryPeriod).
type Election struct {
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// DefaultElection is 15 s lease, 10 s renew deadline, 2 s retry.
var DefaultElection = Election{LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}

// Components are a server's add-on components by where they run.
type Components struct {
	// Server go in the server's controllers phase: the every-server
	// components, one Elected wrapper per elected add-on, and the endpoint
	// publication of the served Services.
	Server []component.Component
	// Node go in the phase that waits for this host's node (nil when the
	// server runs no agent: there is no node).
	Node []component.Component
}

// Assemble builds the server's add-on components from the list of add-ons
// compiled in, in list order. It fills env's Files, Removed and Ports first,
// so that a component can depend on the other add-ons' (the manifests
// controller, servicelb). fixed are the ports skiff serves whatever the
// add-ons. Names must be unique; a duplicate is a programming error.
func Assemble(list []Addon, env *Env, fixed []Port, el Election) (Components, error) {
	seen := map[string]bool{}
	env.Files, env.Removed = map[string][]byte{}, nil
	env.Ports = append([]Port(nil), fixed...)
	var services []Service
	for i := range list {
		a := &list[i]
		if a.Name == "" || seen[a.Name] {
			return Components{}, fmt.Errorf("add-ons: empty or duplicate name %q", a.Name)
		}
		seen[a.Name] = true
		off := a.disabled(env.Config)
		if a.Manifest != nil {
			if off {
				env.Removed = append(env.Removed, a.Manifest.File)
			} else {
				env.Files[a.Manifest.File] = a.Manifest.Bytes(env)
			}
		}
		if off {
			continue
		}
		if a.Ports != nil {
			env.Ports = append(env.Ports, a.Ports(env)...)
		}
		if a.Serves != nil {
			services = append(services, a.Serves(env)...)
		}
	}
	var out Components
	for i := range list {
		a := &list[i]
		if a.disabled(env.Config) {
			if a.Cleanup != nil {
				out.Server = append(out.Server, a.Cleanup(env)...)
			}
			continue
		}
		if a.Components == nil {
			continue
		}
		switch a.Placement {
		case EveryServer:
			out.Server = append(out.Server, a.Components(env)...)
		case OneElectedServer:
			build := a.Components
			out.Server = append(out.Server, NewElected(ElectedConfig{
				Name:       a.Name,
				Identity:   env.Server,
				Kubeconfig: env.Kubeconfig(),
				Election:   el,
				Build:      func() []component.Component { return build(env) },
			}, env.Log))
		case EveryNode:
			if env.LocalNode != "" {
				out.Node = append(out.Node, a.Components(env)...)
			}
		default:
			return Components{}, fmt.Errorf("add-on %s: unknown placement %v", a.Name, a.Placement)
		}
	}
	pub := EndpointsConfig{
		Kubeconfig: env.Kubeconfig(),
		Server:     env.Server,
		IP:         env.AdvertiseIP,
		Services:   services,
		Election:   el,
	}
	out.Server = append(out.Server, NewEndpoints(pub, env.Log))
	// The slices of dead servers go by one writer.
	out.Server = append(out.Server, NewElected(ElectedConfig{
		Name:       "server-endpoints",
		Identity:   env.Server,
		Kubeconfig: env.Kubeconfig(),
		Election:   el,
		Build: func() []component.Component {
			return []component.Component{NewEndpointsReaper(pub, env.Log)}
		},
	}, env.Log))
	return out, nil
}
