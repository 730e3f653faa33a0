package builtin

import (
	"testing"

	"github.com/skiffkube/skiff/internal/config"
)

// Every name --disable accepts turns an add-on off, and nothing else does.
func TestDisableNamesAreDeclared(t *testing.T) {
	byName := map[string]bool{}
	for _, a := range Addons() {
		if byName[a.Name] {
			t.Errorf("add-on %s declared twice", a.Name)
		}
		byName[a.Name] = true
	}
	for _, name := range config.Addons {
		if !byName[name] {
			t.Errorf("--disable %s names no add-on", name)
		}
	}
	for _, a := range Addons() {
		cfg := &config.Server{Disable: append([]string(nil), config.Addons...)}
		wantOff := false
		for _, n := range config.Addons {
			wantOff = wantOff || n == a.Name
		}
		off := cfg.Disabled(a.Name)
		if a.Disabled != nil {
			off = a.Disabled(cfg)
		}
		if off != wantOff {
			t.Errorf("%s: disabled by --disable all = %v, want %v", a.Name, off, wantOff)
		}
	}
	for _, a := range Addons() {
		if a.Name == "helm-controller" && (a.Disabled == nil || !a.Disabled(&config.Server{DisableHelmController: true})) {
			t.Error("--disable-helm-controller does not turn the Helm controller off")
		}
	}
}
