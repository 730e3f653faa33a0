package host

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ModuleState says how a kernel feature that can be a module is present.
type ModuleState int

const (
	// ModuleUnknown means nothing readable could tell: no /sys/module entry,
	// and no modules.builtin, modules.dep or kernel config (a container, or a
	// kernel without CONFIG_IKCONFIG_PROC and no /boot/config).
	ModuleUnknown ModuleState = iota
	// ModuleMissing means the kernel has neither the code nor the module.
	ModuleMissing
	// ModuleBuiltin means the code is compiled into the kernel.
	ModuleBuiltin
	// ModuleLoaded means a loadable module is loaded.
	ModuleLoaded
	// ModuleLoadable means a module is installed but not loaded; the kernel
	// loads most on first use, br_netfilter being the notable exception.
	ModuleLoadable
)

func (s ModuleState) String() string {
	switch s {
	case ModuleMissing:
		return "missing"
	case ModuleBuiltin:
		return "built in"
	case ModuleLoaded:
		return "loaded module"
	case ModuleLoadable:
		return "loadable module"
	}
	return "unknown"
}

// Present reports whether the feature is there or can be loaded.
func (s ModuleState) Present() bool {
	return s == ModuleBuiltin || s == ModuleLoaded || s == ModuleLoadable
}

// ModuleStatus is a module's state and the evidence for it, for the user.
type ModuleStatus struct {
	State    ModuleState
	Evidence string
}

// Modules is what the kernel and its module tree say about modules, read
// once because modules.dep runs to megabytes on distribution kernels.
type Modules struct {
	sysModule    string
	modulesDir   string // "" when /lib/modules/<release> is absent
	builtin      map[string]bool
	loadable     map[string]bool
	config       map[string]string // CONFIG_X -> "y" or "m"; nil when unreadable
	configSource string
}

// Modules reads /lib/modules/<release>/modules.builtin and modules.dep and
// the kernel config (/proc/config.gz, else /boot/config-<release>). Sources
// that are absent are skipped; Lookup says ModuleUnknown when none were read.
func (h Host) Modules() *Modules {
	m := &Modules{sysModule: h.SysPath("module"), builtin: map[string]bool{}, loadable: map[string]bool{}}
	release, err := h.KernelRelease()
	if err != nil {
		return m
	}
	dir := h.RootPath("lib/modules", release)
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		m.modulesDir = dir
		readModuleList(filepath.Join(dir, "modules.builtin"), m.builtin)
		readModuleList(filepath.Join(dir, "modules.dep"), m.loadable)
	}
	for _, p := range []string{h.ProcPath("config.gz"), h.RootPath("boot", "config-"+release)} {
		if cfg, err := readKernelConfig(p); err == nil {
			m.config, m.configSource = cfg, p
			break
		}
	}
	return m
}

// Lookup tells how module name is present. configOption (CONFIG_VXLAN) lets
// the kernel config answer when there is no module tree; it may be empty.
//
// /sys/module/<name> is asked first because it describes the running kernel
// itself: a loadable module there has an initstate file, a built-in one
// (listed when it has parameters) does not.
func (m *Modules) Lookup(name, configOption string) ModuleStatus {
	name = normalizeModule(name)
	sys := filepath.Join(m.sysModule, name)
	if fi, err := os.Stat(sys); err == nil && fi.IsDir() {
		if _, err := os.Stat(filepath.Join(sys, "initstate")); err == nil {
			return ModuleStatus{ModuleLoaded, "loaded (" + sys + ")"}
		}
		return ModuleStatus{ModuleBuiltin, "built in (" + sys + ")"}
	}
	if m.builtin[name] {
		return ModuleStatus{ModuleBuiltin, "built in (modules.builtin)"}
	}
	cfg := ""
	if configOption != "" && m.config != nil {
		cfg = m.config[configOption]
	}
	if cfg == "y" {
		return ModuleStatus{ModuleBuiltin, fmt.Sprintf("built in (%s=y)", configOption)}
	}
	if m.loadable[name] {
		return ModuleStatus{ModuleLoadable, "module, not loaded (modules.dep)"}
	}
	if cfg == "m" {
		return ModuleStatus{ModuleLoadable, fmt.Sprintf("module, not loaded (%s=m)", configOption)}
	}
	var read []string
	if m.modulesDir != "" {
		read = append(read, "modules.builtin", "modules.dep")
	}
	if m.config != nil && configOption != "" {
		read = append(read, m.configSource)
	}
	if len(read) == 0 {
		return ModuleStatus{ModuleUnknown, "cannot tell: no modules.builtin, modules.dep or kernel config to read"}
	}
	return ModuleStatus{ModuleMissing, "not in /sys/module, " + strings.Join(read, ", ")}
}

// normalizeModule spells a module name as the kernel does, with underscores.
func normalizeModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

// readModuleList adds the module names of modules.builtin or modules.dep
// ("kernel/drivers/net/vxlan/vxlan.ko.xz: deps...") to into.
func readModuleList(file string, into map[string]bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		p, _, _ := strings.Cut(sc.Text(), ":")
		base := filepath.Base(strings.TrimSpace(p))
		if i := strings.Index(base, ".ko"); i > 0 {
			into[normalizeModule(base[:i])] = true
		}
	}
}

// readKernelConfig parses a kernel .config, gzipped or not, into the options
// set to y or m.
func readKernelConfig(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(file, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("reading kernel config %s: %w", file, err)
		}
		defer gz.Close()
		r = gz
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.HasPrefix(k, "CONFIG_") && (v == "y" || v == "m") {
			cfg[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading kernel config %s: %w", file, err)
	}
	return cfg, nil
}
