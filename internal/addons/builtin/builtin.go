// Package builtin lists the add-ons compiled into skiff, one line each, in
// the order their components start. Adding an add-on is one package that
// declares an addons.Addon and one line here.
package builtin

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/addons/cloudnode"
	"github.com/skiffkube/skiff/internal/addons/coredns"
	"github.com/skiffkube/skiff/internal/addons/helmcontroller"
	"github.com/skiffkube/skiff/internal/addons/localstorage"
	"github.com/skiffkube/skiff/internal/addons/manifests"
	"github.com/skiffkube/skiff/internal/addons/metricsserver"
	"github.com/skiffkube/skiff/internal/addons/nodepassword"
	"github.com/skiffkube/skiff/internal/addons/noderoles"
	"github.com/skiffkube/skiff/internal/addons/rbacbootstrap"
	"github.com/skiffkube/skiff/internal/addons/servicelb"
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
		cloudnode.Addon,
	}
}
