package manifests

import (
	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon is the manifests controller (K3s's auto-deploy) on every server: it
// writes the enabled add-ons' manifests, deletes the disabled ones' and
// applies the directory. Every server applies (as in K3s); a server prunes
// only what its own files dropped, never what another server's Addon
// record still holds.
var Addon = addons.Addon{
	Name:      "manifests",
	Disabled:  func(*config.Server) bool { return false },
	Placement: addons.EveryServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(Config{
			Dir:        e.Layout.ManifestsDir(),
			Kubeconfig: e.Kubeconfig(),
			Files:      e.Files,
			Removed:    e.Removed,
			Server:     e.Server,
		}, e.Log)}
	},
}
