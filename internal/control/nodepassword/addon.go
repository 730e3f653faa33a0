package nodepassword

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon frees the name of a deleted Node; one elected server does it.
var Addon = addons.Addon{
	Name:      "node-passwords",
	Disabled:  func(*config.Server) bool { return false },
	Placement: addons.OneElectedServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(e.Kubeconfig(), nil, e.Log)}
	},
}
