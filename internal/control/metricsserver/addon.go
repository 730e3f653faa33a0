package metricsserver

import (
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
)

// Addon is the resource metrics API: served in process on every server,
// each listed in the metrics-server Service's endpoints.
var Addon = addons.Addon{
	Name:      "metrics-server",
	Manifest:  &addons.Manifest{File: ManifestFile, Bytes: func(e *addons.Env) []byte { return Manifest(envConfig(e)) }},
	Placement: addons.EveryServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(envConfig(e), e.Log)}
	},
	Ports: func(*addons.Env) []addons.Port {
		return []addons.Port{{Port: DefaultPort, Protocol: corev1.ProtocolTCP, What: "metrics API"}}
	},
	Serves: func(*addons.Env) []addons.Service {
		return []addons.Service{{Namespace: "kube-system", Name: "metrics-server", Ports: []addons.ServicePort{
			{Name: "https", Protocol: corev1.ProtocolTCP, Port: DefaultPort},
		}}}
	},
}

func envConfig(e *addons.Env) Config {
	return Config{
		Kubeconfig: e.Kubeconfig(),
		ListenIP:   e.AdvertiseIP,
		Port:       DefaultPort,
		CertDir:    filepath.Join(e.Layout.TLSDir(), "metrics-server"),
		Dial:       e.Dial,
	}
}
