package helmcontroller

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon is the HelmChart CRDs and the controller that installs them, which
// one elected server runs. --disable-helm-controller removes the CRDs (the
// finalizers are released first); installed releases stay.
var Addon = addons.Addon{
	Name:      "helm-controller",
	Disabled:  func(cfg *config.Server) bool { return cfg.DisableHelmController },
	Manifest:  &addons.Manifest{File: ManifestFile, Bytes: func(*addons.Env) []byte { return Manifest() }},
	Placement: addons.OneElectedServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(Config{
			Kubeconfig: e.Kubeconfig(),
			StaticDir:  e.Layout.StaticDir(),
			HelmDir:    e.Layout.HelmDir(),
			Server:     e.Server,
			IDFile:     e.Layout.IDFile(),
		}, e.Log)}
	},
	Cleanup: func(e *addons.Env) []component.Component {
		return []component.Component{NewCleanup(e.Kubeconfig(), e.Log)}
	},
}
