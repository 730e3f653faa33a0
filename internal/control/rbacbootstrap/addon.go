package rbacbootstrap

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon creates skiff's own RBAC objects; every server does it at start
// (the writes are idempotent), so that a server never waits for another.
var Addon = addons.Addon{
	Name:      "rbac",
	Disabled:  func(*config.Server) bool { return false },
	Placement: addons.EveryServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(e.Kubeconfig(), nil, e.Log)}
	},
}
