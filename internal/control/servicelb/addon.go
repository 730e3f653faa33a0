package servicelb

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
)

// Addon gives LoadBalancer Services the nodes' addresses. One elected server
// writes their status; `--disable servicelb` takes the addresses back off.
var Addon = addons.Addon{
	Name:      "servicelb",
	Placement: addons.OneElectedServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(envConfig(e), e.Log)}
	},
	Cleanup: func(e *addons.Env) []component.Component {
		return []component.Component{NewCleanup(envConfig(e), e.Log)}
	},
}

func envConfig(e *addons.Env) Config {
	cfg := Config{Kubeconfig: e.Kubeconfig()}
	for _, p := range e.Ports {
		cfg.Reserved = append(cfg.Reserved, Reserved{Port: p.Port, Protocol: p.Protocol, What: p.What})
	}
	return cfg
}
