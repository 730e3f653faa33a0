package noderoles

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon gives a server's own Node its role labels, in the phase that waits
// for the node.
var Addon = addons.Addon{
	Name:      "node-roles",
	Disabled:  func(*config.Server) bool { return false },
	Placement: addons.EveryNode,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(Config{Kubeconfig: e.Kubeconfig(), NodeName: e.LocalNode, EmbeddedEtcd: e.EmbeddedEtcd, EtcdMember: e.EtcdMember}, nil, e.Log)}
	},
}
