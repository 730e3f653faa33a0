package coredns

import (
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon is the cluster DNS: served in process on every server, each listed
// in kube-dns's endpoints.
var Addon = addons.Addon{
	Name:      "coredns",
	Manifest:  &addons.Manifest{File: ManifestFile, Bytes: func(e *addons.Env) []byte { return Manifest(envConfig(e)) }},
	Placement: addons.EveryServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(envConfig(e), e.Log)}
	},
	Ports: func(*addons.Env) []addons.Port {
		return []addons.Port{
			{Port: DefaultPort, Protocol: corev1.ProtocolUDP, What: "cluster DNS"},
			{Port: DefaultPort, Protocol: corev1.ProtocolTCP, What: "cluster DNS"},
		}
	},
	Serves: func(*addons.Env) []addons.Service {
		return []addons.Service{{Namespace: "kube-system", Name: "kube-dns", Ports: []addons.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: DefaultPort},
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: DefaultPort},
		}}}
	},
}

func envConfig(e *addons.Env) Config {
	cfg := e.Config
	pods, _ := config.ParseCIDRs(cfg.ClusterCIDR)
	services, _ := config.ParseCIDRs(cfg.ServiceCIDR)
	return Config{
		Kubeconfig: e.Kubeconfig(),
		Domain:     cfg.ClusterDomain,
		ListenIP:   e.AdvertiseIP,
		Port:       DefaultPort,
		ServiceIP:  strings.Split(cfg.ClusterDNS, ",")[0],
		// The networks besides the nodes that may query: pods and Services
		// (both validated with the configuration).
		Clients: append(pods, services...),
		// A given --resolv-conf is the cluster's upstream too, as in K3s, whose
		// CoreDNS pod gets it; otherwise the host's own file, loopback
		// servers included: CoreDNS runs in the host's network namespace.
		ResolvConf: cfg.ResolvConf,
		NodeHosts:  filepath.Join(e.Layout.EtcDir(), "node-hosts"),
	}
}
