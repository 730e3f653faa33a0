package host

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CgroupVersion returns 2 when /sys/fs/cgroup is a cgroup2 mount (the unified
// hierarchy) and 1 when it holds v1 hierarchies (a tmpfs of controller
// mounts, possibly with cgroup2 beside them at unified/, the "hybrid" layout).
func (h Host) CgroupVersion() (int, error) {
	dir := h.SysPath("fs/cgroup")
	st, err := h.statfs(dir)
	if err != nil {
		return 0, fmt.Errorf("reading the cgroup mount at %s: %w", dir, err)
	}
	switch int64(st.Type) {
	case unix.CGROUP2_SUPER_MAGIC:
		return 2, nil
	case unix.TMPFS_MAGIC, unix.CGROUP_SUPER_MAGIC:
		return 1, nil
	}
	return 0, fmt.Errorf("no cgroup file system is mounted at %s (file system type %#x)", dir, st.Type)
}

// HybridCgroup reports whether a cgroup v1 host also mounts cgroup2 at
// /sys/fs/cgroup/unified. Only v1 hierarchies are used by the kubelet then;
// this is reported so the user knows why cgroup2 files exist.
func (h Host) HybridCgroup() bool {
	if v, err := h.CgroupVersion(); err != nil || v != 1 {
		return false
	}
	st, err := h.statfs(h.SysPath("fs/cgroup/unified"))
	return err == nil && int64(st.Type) == unix.CGROUP2_SUPER_MAGIC
}

// CgroupDriver returns the cgroup driver the kubelet and containerd must
// both use: "systemd" only on cgroup v2 with systemd as PID 1, because only
// then does systemd own the cgroup tree and expect delegation through it;
// everywhere else (v1, or no systemd) it is "cgroupfs", as in K3s.
func (h Host) CgroupDriver() string {
	if v, err := h.CgroupVersion(); err == nil && v == 2 && h.SystemdIsInit() {
		return "systemd"
	}
	return "cgroupfs"
}

// SystemdIsInit reports whether PID 1 is systemd, by the same two signs
// systemd's own sd_booted and the kubelet's tooling look at.
func (h Host) SystemdIsInit() bool {
	if comm, err := os.ReadFile(h.ProcPath("1/comm")); err == nil && strings.TrimSpace(string(comm)) == "systemd" {
		return true
	}
	fi, err := os.Stat(h.RootPath("run/systemd/system"))
	return err == nil && fi.IsDir()
}

// V1Controller is one row of /proc/cgroups.
type V1Controller struct {
	// Hierarchy is the ID of the v1 hierarchy the controller is mounted in;
	// 0 means none (unmounted, or given to cgroup2 on a hybrid host).
	Hierarchy int
	// Enabled is false when the controller was disabled at boot
	// (cgroup_disable=).
	Enabled bool
}

// CgroupV1Controllers parses /proc/cgroups, keyed by controller name.
func (h Host) CgroupV1Controllers() (map[string]V1Controller, error) {
	path := h.ProcPath("cgroups")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cgroup controllers: %w", err)
	}
	out := map[string]V1Controller{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		// subsys_name hierarchy num_cgroups enabled
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("parsing %s: malformed line %q", path, line)
		}
		hier, err1 := strconv.Atoi(f[1])
		enabled, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("parsing %s: malformed line %q", path, line)
		}
		out[f[0]] = V1Controller{Hierarchy: hier, Enabled: enabled == 1}
	}
	return out, nil
}

// CgroupV2Controllers returns the controllers the root cgroup2 hierarchy
// offers, from /sys/fs/cgroup/cgroup.controllers.
func (h Host) CgroupV2Controllers() (map[string]bool, error) {
	data, err := os.ReadFile(h.SysPath("fs/cgroup/cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("reading cgroup2 controllers: %w", err)
	}
	out := map[string]bool{}
	for _, c := range strings.Fields(string(data)) {
		out[c] = true
	}
	return out, nil
}
