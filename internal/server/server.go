// Package server assembles `skiff server`: it checks what can be checked
// before anything is written, then starts the datastore, certificates,
// apiserver and controllers in order through the component manager, and
// writes the admin kubeconfig once the cluster answers.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/addons/builtin"
	certrenewal "github.com/skiffkube/skiff/internal/certs"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/controlplane/apiserver"
	"github.com/skiffkube/skiff/internal/controlplane/controllermanager"
	"github.com/skiffkube/skiff/internal/controlplane/scheduler"
	"github.com/skiffkube/skiff/internal/controlplane/supervisor"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/datastore/dsstatus"
	"github.com/skiffkube/skiff/internal/host"
	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/metrics"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/noderun"
	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/internal/sdnotify"
	"github.com/skiffkube/skiff/internal/secretsencrypt"
	"github.com/skiffkube/skiff/internal/serverjoin"
	"github.com/skiffkube/skiff/internal/tokenrotate"
	"github.com/skiffkube/skiff/internal/tunnel"
)

// StopTimeout bounds a graceful stop; past it the process exits anyway.
const StopTimeout = 10 * time.Second

// Run starts the server and blocks until ctx ends (a signal) or a component
// fails, then stops everything in reverse order.
func Run(ctx context.Context, cfg *config.Server, log *slog.Logger) error {
	begin := time.Now()
	l := controlplane.Layout{DataDir: cfg.DataDir}
	metrics.Register()

	// Everything that can be refused is refused before the first write.
	given, err := controlplane.GivenToken(cfg)
	if err != nil {
		return err
	}
	if err := node.CheckResolvConf(cfg.ResolvConf); err != nil {
		return err
	}
	if !cfg.DisableAgent {
		if err := noderun.Preflight(cfg.Node, cfg.ClusterCIDR); err != nil {
			return err
		}
		if _, err := noderun.LoadRegistries(cfg.Node); err != nil {
			return err
		}
	}
	kind, err := config.DatastoreKind(cfg.DatastoreEndpoint)
	if err != nil {
		return err
	}
	for _, sock := range []string{datastore.SocketPath(cfg.DataDir), l.EgressSocket()} {
		if err := socketPathOK(sock); err != nil {
			return err
		}
	}
	advertiseIP, err := controlplane.DetectAdvertiseIP(cfg)
	if err != nil {
		return fmt.Errorf("finding this server's address: %w; set --node-ip or --advertise-address", err)
	}
	if given, err = settleGivenToken(cfg, l, kind, given, log); err != nil {
		return err
	}
	// Embedded etcd or kine; a joining server's bootstrap is fetched and
	// checked here, before anything is written.
	dsPlan, err := planDatastore(ctx, cfg, l, advertiseIP, given, log)
	if err != nil {
		return err
	}
	if !cfg.DisableAgent {
		if _, err := cfg.Node.ResolveNodeName(os.Hostname); err != nil {
			return err
		}
	}
	if err := dataDirInUse(l); err != nil {
		return err
	}
	if cfg.ClusterReset {
		return clusterReset(ctx, cfg, l, advertiseIP, log)
	}
	ln, err := listen(cfg.BindAddress, cfg.HTTPSListenPort)
	if err != nil {
		return err
	}
	// The supervisor closes it when it stops; this covers the returns before.
	defer ln.Close()
	plan := controlplane.Plan{
		Config:      cfg,
		Layout:      l,
		AdvertiseIP: advertiseIP,
		EtcdServers: dsPlan.etcdServers(cfg),
		EtcdTLS:     dsPlan.etcdTLS(l),
		LeaderElect: dsPlan.leaderElect(),
	}
	ports := append(serverPorts(cfg, plan, advertiseIP), dsPlan.ports()...)
	if !cfg.DisableAgent {
		ports = append(ports, noderun.Ports(cfg.Node, "")...)
	}
	if err := host.CheckPortsFree(ports); err != nil {
		return err
	}
	if err := checkDataDir(l); err != nil {
		return err
	}
	release, err := lockDataDir(l)
	if err != nil {
		return err
	}
	defer release()
	if err := dsPlan.writeBootstrap(l, log); err != nil {
		return err
	}
	plan.EncryptSecrets = cfg.SecretsEncryption || secretsencrypt.Exists(l)
	ds := datastore.New(datastore.Config{DataDir: cfg.DataDir, Endpoint: cfg.DatastoreEndpoint,
		CAFile: cfg.DatastoreCAFile, CertFile: cfg.DatastoreCertFile, KeyFile: cfg.DatastoreKeyFile}, log)
	encStartup, encrypt := secretsEncryption(cfg, l, dsPlan, ds, plan.EncryptSecrets, log)
	var nd *noderun.Plan
	if !cfg.DisableAgent {
		if nd, err = prepareNode(cfg, l, advertiseIP, log); err != nil {
			return err
		}
		defer nd.Release()
	}
	certs := &certificates{layout: l, loopbackURL: plan.LoopbackURL(), cfg: cfg, advertiseIP: advertiseIP, given: given, node: nd, log: log}
	api := apiserver.New(apiserver.Config{
		Args:           plan.APIServerArgs(),
		ReadyzURL:      plan.LoopbackURL() + "/readyz",
		CAFile:         l.ServerCA().Cert,
		ClientCertFile: l.ClientAdmin().Cert,
		ClientKeyFile:  l.ClientAdmin().Key,
		EndpointPort:   cfg.HTTPSListenPort,
	}, log)
	localNode := ""
	if nd != nil {
		localNode = nd.Identity().NodeName
	}
	tun := tunnel.NewServer(tunnel.ServerConfig{
		ClientCAFile: l.ClientCA().Cert,
		SocketPath:   l.EgressSocket(),
		Kubeconfig:   l.AdminKubeconfig(),
		LocalNode:    localNode,
	}, log)
	rotation, rotationFollower := tokenRotation(cfg, l, kind, dsPlan.embedded, ds, log)
	agentJoin := newJoinServer(cfg, l, rotation.Replaced, log)
	sup := supervisor.New(supervisor.Config{
		Listener:     ln,
		CertFile:     l.ServingAPIServer().Cert,
		KeyFile:      l.ServingAPIServer().Key,
		ServerCAFile: l.ServerCA().Cert,
		ClientCAFile: l.ClientCA().Cert,
		APIServer:    api.Handler,
		Routes: map[string]http.Handler{
			"POST " + join.Path:       agentJoin,
			"GET " + serverjoin.Path:  dsPlan.serverJoinHandler(cfg, l, agentJoin, rotation.Replaced, log),
			"GET " + tunnel.Path:      tun,
			"PUT " + tokenrotate.Path: rotation,
			secretsencrypt.PathPrefix: encrypt,
		},
	}, log)
	env := &addons.Env{
		Config:       cfg,
		Layout:       l,
		AdvertiseIP:  advertiseIP,
		Server:       serverName(localNode),
		LocalNode:    localNode,
		Dial:         func(ctx context.Context, _, addr string) (net.Conn, error) { return tun.Dial(ctx, addr) },
		Log:          log,
		EmbeddedEtcd: dsPlan.embedded,
		EtcdMember:   dsPlan.memberName(),
	}
	addonParts, err := addons.Assemble(builtin.Addons(), env, fixedPorts(cfg), addons.DefaultElection)
	if err != nil {
		return err
	}
	// Leaf certificates renewed while running; the admin kubeconfig
	// embeds a copy of the admin certificate, written again when it
	// changed (renewed here, or by `skiff certificate rotate`).
	adminCopy := &adminKubeconfig{cfg: cfg, l: l, caPEM: func() []byte { return certs.serverCAPEM }, log: log}
	renewal := certrenewal.NewRenewer(certrenewal.RenewerConfig{
		DataDir: cfg.DataDir, NodeName: localNode, Kubeconfig: l.AdminKubeconfig(),
		OnRenewed: func([]string) {
			if err := adminCopy.write(true); err != nil {
				log.Error("rewriting the admin kubeconfig after a renewal", "component", "certificates", "err", err)
			}
		},
	}, log)
	controllers := append([]component.Component{sup, encrypt, renewal}, addonParts.Server...)
	controllers = append(controllers, dsPlan.controllers(l, log)...)
	controllers = append(controllers, datastoreStatus(cfg, plan, log))
	controllers = append(controllers, rotationFollower...)
	if snap := snapshotComponent(cfg, l, serverName(localNode), log); snap != nil {
		controllers = append(controllers, snap)
	}
	if !cfg.DisableControllerManager {
		controllers = append(controllers, controllermanager.New(controllermanager.Config{Args: plan.ControllerManagerArgs()}, log))
	}
	if !cfg.DisableScheduler {
		controllers = append(controllers, scheduler.New(scheduler.Config{Args: plan.SchedulerArgs()}, log))
	}

	phases := []component.Phase{
		{Name: "datastore", Components: []component.Component{dsPlan.component(ds, log)}},
		{Name: "certificates", Components: []component.Component{certs, encStartup}},
		// After the apiserver in the list, so stopped before it: the apiserver's
		// shutdown waits for the tunnel's Node watch to end. The egress
		// socket listens from Init on, before the apiserver dials a kubelet.
		// The admin kubeconfig is written as soon as the API answers, so that
		// while a later phase is slow or failing `kubectl get events` can say why.
		{Name: "apiserver", Components: []component.Component{api, tun}, AfterReady: func() error {
			return adminCopy.write(false)
		}},
		{Name: "controllers", Components: controllers},
	}
	// Servers sharing an external datastore share its bootstrap data.
	phases = slices.Insert(phases, 1, externalBootstrapPhases(cfg, l, kind, given, advertiseIP, ds, log)...)
	if nd != nil {
		nodePhases, err := nd.Phases(log)
		if err != nil {
			return err
		}
		// The server's node gets the every-node add-ons (its role labels,
		// which its kubelet may not set) in the phase that waits for it.
		last := &nodePhases[len(nodePhases)-1]
		last.Components = append(last.Components, addonParts.Node...)
		phases = append(phases, nodePhases...)
	}
	mgr := component.NewManager(log, phases...)
	mgr.OnPhaseReady(func(phase string) {
		metrics.StartupPhaseSeconds.WithLabelValues(phase).Set(time.Since(begin).Seconds())
	})
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	metrics.StartupPhaseSeconds.WithLabelValues("ready").Set(time.Since(begin).Seconds())
	log.Info(fmt.Sprintf("skiff server ready in %s", component.FormatDuration(time.Since(begin))),
		"kubeconfig", cfg.WriteKubeconfig, "url", "https://"+net.JoinHostPort(advertiseIP.String(), strconv.Itoa(cfg.HTTPSListenPort)))
	// Ready means what the line above says: the API serves, and with an
	// agent the node is Ready.
	sdnotify.Ready(log)
	mgr.BeforeStop(func() { sdnotify.Stopping(log) })

	return mgr.Serve(ctx, StopTimeout)
}

// datastoreStatus publishes the datastore's size and compaction metrics,
// reading the datastore the way the apiserver does.
func datastoreStatus(cfg *config.Server, plan controlplane.Plan, log *slog.Logger) component.Component {
	c := dsstatus.Config{Endpoints: plan.EtcdServers}
	switch {
	case plan.EtcdTLS != nil:
		c.CAFile, c.CertFile, c.KeyFile = plan.EtcdTLS.CAFile, plan.EtcdTLS.CertFile, plan.EtcdTLS.KeyFile
	case len(c.Endpoints) > 0 && strings.HasPrefix(c.Endpoints[0], "https://"):
		c.CAFile, c.CertFile, c.KeyFile = cfg.DatastoreCAFile, cfg.DatastoreCertFile, cfg.DatastoreKeyFile
	}
	return dsstatus.New(c, log)
}

// serverName names this server where servers must be told apart: its node
// name, else (without an agent) the host name.
func serverName(node string) string {
	if node != "" {
		return node
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	// An empty name would claim every server's Addons.
	return "server-" + strconv.Itoa(os.Getpid())
}

// fixedPorts are the ports skiff serves on every node's address whatever
// the add-ons (theirs are added by the registry): no LoadBalancer Service
// may take them (kube-proxy would redirect them).
func fixedPorts(cfg *config.Server) []addons.Port {
	return []addons.Port{
		{Port: int32(cfg.HTTPSListenPort), Protocol: corev1.ProtocolTCP, What: "supervisor (API and join)"},
		{Port: node.DefaultKubeletPort, Protocol: corev1.ProtocolTCP, What: "kubelet API"},
		{Port: 8472, Protocol: corev1.ProtocolUDP, What: "flannel VXLAN"},
	}
}

// writeAdminKubeconfig writes the kubeconfig users and tools use: it points
// at the supervisor on an address it listens on (loopback, or the
// --bind-address) and embeds the admin credentials, so it can be copied
// elsewhere (with the address changed).
func writeAdminKubeconfig(cfg *config.Server, l controlplane.Layout, caPEM []byte, log *slog.Logger) error {
	if cfg.WriteKubeconfig == "" {
		return nil
	}
	changed, err := pki.WriteKubeconfig(pki.KubeconfigSpec{
		Path:      cfg.WriteKubeconfig,
		ServerURL: controlplane.LocalURL(cfg.BindAddress, cfg.HTTPSListenPort),
		CAPEM:     caPEM,
		CertPath:  l.ClientAdmin().Cert,
		KeyPath:   l.ClientAdmin().Key,
		Embed:     true,
		Mode:      cfg.KubeconfigMode(),
	})
	if err != nil {
		return fmt.Errorf("write-kubeconfig %s: %w", cfg.WriteKubeconfig, err)
	}
	if changed {
		log.Info("wrote the admin kubeconfig", "component", "server", "path", cfg.WriteKubeconfig)
	}
	return nil
}
