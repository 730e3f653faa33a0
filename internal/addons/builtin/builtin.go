// Package builtin lists the add-ons compiled into skiff, one line each, in
// the order their components start. Adding an add-on is one package that
// declares an addons.Addon and one line here.
package builtin

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/control/coredns"
	"github.com/skiffkube/skiff/internal/control/helmcontroller"
	"github.com/skiffkube/skiff/internal/control/localstorage"
	"github.com/skiffkube/skiff/internal/control/manifests"
	"github.com/skiffkube/skiff/internal/control/metricsserver"
	"github.com/skiffkube/skiff/internal/control/nodepassword"
	"github.com/skiffkube/skiff/internal/control/noderoles"
	"github.com/skiffkube/skiff/internal/control/rbacbootstrap"
	"github.com/skiffkube/skiff/internal/control/servicelb"
)

// Addons returns the add-ons compiled in, in start order: the manifests
// controller before the Helm controller, whose CRDs it applies.
func Addons() []addons.Addon {
	return []addons.Addon{
		rbacbootstrap.Addon,
		nodepassword.Addon,
		coredns.Addon,
		metricsserver.Addon,
		localstorage.Addon,
		manifests.Addon,
		servicelb.Addon,
		helmcontroller.Addon,
		noderoles.Addon,
	}
}
