package localstorage

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/node"
)

// Addon is the local-path StorageClass and its provisioner, which one
// elected server runs.
var Addon = addons.Addon{
	Name:      "local-storage",
	Manifest:  &addons.Manifest{File: ManifestFile, Bytes: func(*addons.Env) []byte { return Manifest() }},
	Placement: addons.OneElectedServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(Config{
			Kubeconfig:  e.Kubeconfig(),
			StoragePath: e.Config.LocalStoragePath(),
			HelperImage: node.SystemImage(node.DefaultPauseImage, e.Config.SystemDefaultRegistry),
		}, e.Log)}
	},
}
