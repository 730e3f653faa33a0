package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/datastore/etcd"
	"github.com/skiffkube/skiff/internal/datastore/etcdmember"
	"github.com/skiffkube/skiff/internal/host"
	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/serverjoin"
	"github.com/skiffkube/skiff/internal/token"
)

// datastorePlan is the datastore this start runs, decided (and, for a
// joining server, fetched and checked) before anything is written.
type datastorePlan struct {
	// embedded is true for embedded etcd.
	embedded bool
	// kind is the kine datastore kind ("sqlite", "postgres", ...) otherwise.
	kind string
	// join is the bootstrap a joining server writes once it holds the lock.
	join *serverjoin.Response
	// etcd is the embedded etcd member's configuration.
	etcd etcd.Config
}

// planDatastore decides between kine (SQLite or --datastore-endpoint) and
// embedded etcd: a data dir with etcd data keeps running etcd (as K3s,
// without --cluster-init); --cluster-init starts a new cluster; --server
// joins one, whose bootstrap data is fetched and checked here (token pin,
// settings, conflicting files), so that every refusal comes before the
// first write.
func planDatastore(ctx context.Context, cfg *config.Server, l controlplane.Layout, advertiseIP net.IP, given *token.Token, log *slog.Logger) (*datastorePlan, error) {
	if cfg.DatastoreEndpoint != "" && etcd.HasData(l) {
		return nil, fmt.Errorf("datastore-endpoint: data-dir %s holds embedded etcd data (%s): this server is a member of an etcd cluster; drop --datastore-endpoint, or take a new data-dir", cfg.DataDir, l.EtcdDataDir())
	}
	if cfg.DatastoreEndpoint == "" && !cfg.EmbeddedEtcd() && etcd.Unfinished(l) {
		return nil, fmt.Errorf("data-dir %s holds an etcd member that never started (%s has no WAL: a join or a first --cluster-init that died): "+
			"start with --server and --token to join again, or with --cluster-init for a new cluster", cfg.DataDir, l.EtcdDataDir())
	}
	if cfg.DatastoreEndpoint != "" || (!cfg.EmbeddedEtcd() && !etcd.HasData(l)) {
		kind, err := config.DatastoreKind(cfg.DatastoreEndpoint)
		if err != nil {
			return nil, err
		}
		return &datastorePlan{kind: kind}, nil
	}
	if err := etcd.CheckArgs(cfg.EtcdArgs); err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	nodeName, err := cfg.Node.ResolveNodeName(os.Hostname)
	if err != nil {
		if !cfg.DisableAgent {
			return nil, err
		}
		nodeName = strings.ToLower(hostname)
	}
	name := etcd.MemberName(l)
	if name == "" {
		if name, err = etcd.NewMemberName(nodeName); err != nil {
			return nil, err
		}
	}
	p := &datastorePlan{embedded: true, etcd: etcd.Config{
		Layout:        l,
		MemberName:    name,
		AdvertiseIP:   advertiseIP,
		Hostname:      strings.ToLower(hostname),
		Args:          cfg.EtcdArgs,
		ExposeMetrics: cfg.EtcdExposeMetrics,
	}}
	if datastore.HasSQLiteData(cfg.DataDir) {
		if cfg.Server != "" && !etcd.HasData(l) {
			return nil, fmt.Errorf("data-dir %s holds SQLite data (%s): a server joining another cluster would drop it; "+
				"start it without --server (or with --cluster-init, which migrates it into etcd), or take a new data-dir", cfg.DataDir, datastore.SQLitePath(cfg.DataDir))
		}
		// A first --cluster-init on SQLite data, or one interrupted before
		// the SQLite files were set aside: the keys move into etcd.
		p.etcd.Seed = func(ctx context.Context, cli *clientv3.Client) error {
			n, err := datastore.MigrateSQLite(ctx, cfg.DataDir, cli, log)
			if err != nil {
				return err
			}
			log.Info("migrated the SQLite datastore into etcd", "component", "etcd", "keys", n, "kept", datastore.SQLitePath(cfg.DataDir)+datastore.MigratedSuffix)
			return nil
		}
	}
	if etcd.HasData(l) || cfg.Server == "" {
		// A restart (the member and its cluster are in the data), or a new
		// cluster.
		return p, nil
	}
	if given == nil {
		return nil, fmt.Errorf("server %s: joining a cluster needs --token, the server token from <data-dir>/server/token of one of its servers", cfg.Server)
	}
	resp, pinned, err := serverjoin.Fetch(ctx, cfg.Server, *given, l)
	if err != nil {
		return nil, err
	}
	if !pinned {
		log.Warn("the token pins no CA: trusting the server's CA as presented; use the full token (SK10...) to verify it", "component", "join", "server", cfg.Server)
	}
	if err := resp.Check(clusterSettings(cfg), l, cfg.Server); err != nil {
		return nil, err
	}
	agentToken, err := bootstrap.ReadAgentToken(cfg.AgentToken, cfg.AgentTokenFile)
	if err != nil {
		return nil, err
	}
	if err := resp.Bootstrap.CheckAgentToken(l, agentToken); err != nil {
		return nil, fmt.Errorf("joining %s: %w", cfg.Server, err)
	}
	p.join = resp
	p.etcd.Join = resp.EtcdMembers
	return p, nil
}

// clusterSettings are this server's cluster-wide settings.
func clusterSettings(cfg *config.Server) bootstrap.Settings {
	return bootstrap.Settings{ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR, ClusterDNS: cfg.ClusterDNS, ClusterDomain: cfg.ClusterDomain,
		ServiceNodePortRange: cfg.ServiceNodePortRange}
}

// writeBootstrap writes a joining server's bootstrap data; the caller holds
// the data dir's lock.
func (p *datastorePlan) writeBootstrap(l controlplane.Layout, log *slog.Logger) error {
	if p.join == nil {
		return nil
	}
	if err := p.join.Bootstrap.Write(l); err != nil {
		return err
	}
	log.Info("wrote the cluster's bootstrap data", "component", "join", "files", len(p.join.Bootstrap.Files))
	return nil
}

// leaderElect: controller-manager and scheduler elect a leader wherever
// several servers can run.
func (p *datastorePlan) leaderElect() bool { return p.embedded || p.kind != "sqlite" }

// etcdServers are the apiserver's etcd URLs.
func (p *datastorePlan) etcdServers(cfg *config.Server) []string {
	if p.embedded {
		return []string{etcd.LocalClientURL}
	}
	return datastore.EtcdServers(cfg.DataDir, cfg.DatastoreEndpoint)
}

// etcdTLS are the apiserver's etcd client credentials, nil for kine.
func (p *datastorePlan) etcdTLS(l controlplane.Layout) *controlplane.EtcdTLSFiles {
	if !p.embedded {
		return nil
	}
	f := etcd.ClientTLSFiles(l)
	return &controlplane.EtcdTLSFiles{CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile}
}

// ports are embedded etcd's, for the check before anything is written.
func (p *datastorePlan) ports() []host.PortUse {
	if !p.embedded {
		return nil
	}
	ip := p.etcd.AdvertiseIP.String()
	metrics := "127.0.0.1"
	if p.etcd.ExposeMetrics {
		metrics = "0.0.0.0"
	}
	const hint = "; embedded etcd needs it"
	return []host.PortUse{
		{IP: "127.0.0.1", Port: etcd.ClientPort, What: "etcd clients", Hint: hint},
		{IP: ip, Port: etcd.ClientPort, What: "etcd clients", Hint: hint},
		{IP: ip, Port: etcd.PeerPort, What: "etcd peers", Hint: hint},
		{IP: metrics, Port: etcd.MetricsPort, What: "etcd metrics", Hint: hint},
	}
}

// component is the datastore phase's component: embedded etcd, or kine.
func (p *datastorePlan) component(kine *datastore.Kine, log *slog.Logger) component.Component {
	if p.embedded {
		return etcd.New(p.etcd, log)
	}
	return kine
}

// controllers are the datastore's controllers: with embedded etcd, the one
// that removes a deleted server node's member.
func (p *datastorePlan) controllers(l controlplane.Layout, log *slog.Logger) []component.Component {
	if !p.embedded {
		return nil
	}
	return []component.Component{etcdmember.New(etcdmember.Config{
		Kubeconfig: l.AdminKubeconfig(),
		Etcd:       func() (clientv3.Config, error) { return etcd.ClientConfig(l) },
	}, nil, nil, log)}
}

// memberName is this server's etcd member ("" without embedded etcd), for
// its Node's annotation.
func (p *datastorePlan) memberName() string { return p.etcd.MemberName }

// embeddedEtcdClient connects to the embedded etcd member of the server
// whose data dir l is (etcd.ClientConfig); the caller closes the client.
func embeddedEtcdClient(l controlplane.Layout) (*clientv3.Client, error) {
	cc, err := etcd.ClientConfig(l)
	if err != nil {
		return nil, err
	}
	return clientv3.New(cc)
}

// serverJoinHandler serves joining servers: agents' secrets (agentJoin's)
// are told they cannot join a server; the server token is refused while
// replaced reports it.
func (p *datastorePlan) serverJoinHandler(cfg *config.Server, l controlplane.Layout, agentJoin *join.Server, replaced func(secret string) bool, log *slog.Logger) *serverjoin.Handler {
	return &serverjoin.Handler{
		Layout:           l,
		Replaced:         replaced,
		Settings:         clusterSettings(cfg),
		JoinSecrets:      agentJoin.Secrets,
		IsBootstrapToken: agentJoin.Bootstrap,
		Log:              log,
		Members: func(ctx context.Context) ([]string, error) {
			if !p.embedded {
				return nil, serverjoin.ErrNoEmbeddedEtcd
			}
			return etcd.VoterClientURLs(ctx, l)
		},
	}
}
