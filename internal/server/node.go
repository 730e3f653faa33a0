package server

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/noderun"
	"github.com/skiffkube/skiff/internal/pki"
)

// prepareNode plans the server's own node.
func prepareNode(cfg *config.Server, l controlplane.Layout, advertiseIP net.IP, log *slog.Logger) (*noderun.Plan, error) {
	layout := node.Layout{DataDir: cfg.DataDir, RunDir: node.DefaultRunDir}
	return noderun.Prepare(noderun.Spec{
		DataDir:           cfg.DataDir,
		Node:              cfg.Node,
		Cluster:           clusterConfig(cfg),
		DefaultNodeIP:     advertiseIP,
		FlannelKubeconfig: layout.FlannelKubeconfig(),
		ReadyKubeconfig:   l.AdminKubeconfig(),
	}, log)
}

// clusterConfig is what every node needs of the server's configuration; agents
// get it from the join API.
func clusterConfig(cfg *config.Server) join.Cluster {
	return join.Cluster{
		ClusterCIDR:           cfg.ClusterCIDR,
		ServiceCIDR:           cfg.ServiceCIDR,
		ClusterDNS:            cfg.ClusterDNS,
		ClusterDomain:         cfg.ClusterDomain,
		FlannelBackend:        cfg.FlannelBackend,
		DisableNetworkPolicy:  cfg.DisableNetworkPolicy,
		SystemDefaultRegistry: cfg.SystemDefaultRegistry,
	}
}

// supervisorLocalURL is how this host's node reaches the API: through the
// supervisor, like any agent, rather than the apiserver's loopback port. The
// supervisor's connections are skiff's to close at stop; the kubelet, which cannot
// be stopped in process, would otherwise hold the apiserver's own listener open.
func supervisorLocalURL(cfg *config.Server) string {
	return controlplane.LocalURL(cfg.BindAddress, cfg.HTTPSListenPort)
}

// nodeCertificates issues the server node's certificates from the server's CAs,
// and writes flannel's kubeconfig: on a server, flannel uses the admin identity
// (it lists nodes and patches their status).
func nodeCertificates(n *noderun.Plan, l controlplane.Layout, apiserverURL string) ([]string, error) {
	clientCA, _, err := pki.LoadOrCreateCA(l.ClientCA().Cert, l.ClientCA().Key, "skiff-client-ca")
	if err != nil {
		return nil, err
	}
	serverCA, _, err := pki.LoadOrCreateCA(l.ServerCA().Cert, l.ServerCA().Key, "skiff-server-ca")
	if err != nil {
		return nil, err
	}
	layout := n.Layout()
	issued, err := node.EnsureCertificates(layout, node.CAs{Client: clientCA, Server: serverCA}, n.Identity(), apiserverURL, time.Now())
	if err != nil {
		return issued, err
	}
	if _, err := pki.WriteKubeconfig(pki.KubeconfigSpec{
		Path: layout.FlannelKubeconfig(), ServerURL: apiserverURL, CAPEM: serverCA.CertPEM,
		CertPath: l.ClientAdmin().Cert, KeyPath: l.ClientAdmin().Key, Mode: 0o600,
	}); err != nil {
		return issued, fmt.Errorf("writing %s: %w", layout.FlannelKubeconfig(), err)
	}
	return issued, nil
}
