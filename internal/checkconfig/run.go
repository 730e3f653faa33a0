package checkconfig

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/skiffkube/skiff/internal/host"
)

// MinFreeSpace is the free space below which the data dir gets a warning:
// room for the datastore, the images of the packaged add-ons and some pods.
const MinFreeSpace = 2 << 30

// Run checks host h and returns one Check per feature, in a fixed order.
// dataDir is the node's data dir, measured for free space; empty skips that.
func Run(h host.Host, dataDir string) []Check {
	mods := h.Modules()
	var checks []Check
	checks = append(checks, kernelCheck(h))
	checks = append(checks, cgroupChecks(h)...)
	checks = append(checks, namespaceChecks(h)...)
	checks = append(checks,
		overlayCheck(h, mods),
		bridgeNetfilterCheck(h, mods),
		moduleCheck(mods, "bridge", "CONFIG_BRIDGE", true, "the CNI bridge plugin puts pods on a bridge"),
		moduleCheck(mods, "veth", "CONFIG_VETH", true, "pods are wired to the bridge with veth pairs"),
		moduleCheck(mods, "vxlan", "CONFIG_VXLAN", true, "flannel's default backend carries pod traffic between nodes in VXLAN"),
		moduleCheck(mods, "nf_tables", "CONFIG_NF_TABLES", false, "iptables-nft and nft need it; iptables-legacy does not"),
		packetFilterCheck(h),
		conntrackCheck(h),
		ipForwardCheck(h),
		sysResourceCheck(h),
		kmsgCheck(h),
		swapCheck(h),
	)
	if dataDir != "" {
		checks = append(checks, freeSpaceCheck(h, dataDir))
	}
	return checks
}

func kernelCheck(h host.Host) Check {
	c := Check{Name: "kernel"}
	release, err := h.KernelRelease()
	if err != nil {
		c.Status, c.Detail, c.Fix = Warning, err.Error(), "mount procfs at /proc"
		return c
	}
	c.Detail = release
	return c
}

// controller is a cgroup controller the kubelet or runc needs, with the
// kernel option that provides it.
type controller struct {
	name, option string
	essential    bool
	// v2 explains how cgroup v2 provides a v1-only controller; empty when v2
	// lists it in cgroup.controllers.
	v2 string
}

var controllers = []controller{
	{name: "cpu", option: "CONFIG_CGROUP_SCHED", essential: true},
	{name: "cpuacct", option: "CONFIG_CGROUP_CPUACCT", essential: true, v2: "part of the cpu controller in cgroup v2"},
	{name: "cpuset", option: "CONFIG_CPUSETS", essential: true},
	{name: "memory", option: "CONFIG_MEMCG", essential: true},
	{name: "pids", option: "CONFIG_CGROUP_PIDS", essential: true},
	{name: "devices", option: "CONFIG_CGROUP_DEVICE", essential: true, v2: "eBPF device filters in cgroup v2"},
	{name: "freezer", option: "CONFIG_CGROUP_FREEZER", essential: true, v2: "cgroup.freeze in cgroup v2"},
	{name: "hugetlb", option: "CONFIG_CGROUP_HUGETLB"},
}

func cgroupChecks(h host.Host) []Check {
	version, err := h.CgroupVersion()
	if err != nil {
		return []Check{{Name: "cgroup hierarchy", Detail: err.Error(), Status: Missing, Essential: true,
			Fix: "mount -t cgroup2 none /sys/fs/cgroup"}}
	}
	detail := "v2 (unified)"
	if version == 1 {
		detail = "v1"
		if h.HybridCgroup() {
			detail = "v1 (hybrid: cgroup2 also at /sys/fs/cgroup/unified, unused)"
		}
	}
	checks := []Check{{Name: "cgroup hierarchy", Detail: detail + ", driver " + h.CgroupDriver()}}
	if version == 2 {
		return append(checks, v2ControllerChecks(h)...)
	}
	return append(checks, v1ControllerChecks(h)...)
}

func v1ControllerChecks(h host.Host) []Check {
	found, err := h.CgroupV1Controllers()
	// On a hybrid host, controllers no v1 hierarchy holds sit on cgroup2.
	onUnified := map[string]bool{}
	if data, err := os.ReadFile(h.SysPath("fs/cgroup/unified/cgroup.controllers")); err == nil {
		for _, name := range strings.Fields(string(data)) {
			onUnified[name] = true
		}
	}
	var checks []Check
	for _, ctl := range controllers {
		c := Check{Name: "cgroup " + ctl.name, Essential: ctl.essential}
		v, listed := found[ctl.name]
		switch {
		case err != nil:
			c.Status, c.Detail, c.Fix = Missing, err.Error(), "mount procfs at /proc"
		case !listed:
			c.Status, c.Detail, c.Fix = Missing, "not in /proc/cgroups", "enable "+ctl.option
		case !v.Enabled:
			c.Status, c.Detail, c.Fix = Missing, "disabled at boot", "remove cgroup_disable="+ctl.name+" from the kernel command line"
		case v.Hierarchy == 0:
			c.Status, c.Detail = Missing, "enabled but not mounted as a cgroup v1 hierarchy"
			if onUnified[ctl.name] {
				c.Detail += " (it is on the hybrid cgroup2 hierarchy, which the kubelet does not use on v1)"
			}
			c.Fix = fmt.Sprintf("mount -t cgroup -o %[1]s cgroup /sys/fs/cgroup/%[1]s", ctl.name)
		default:
			c.Detail = fmt.Sprintf("hierarchy %d", v.Hierarchy)
		}
		checks = append(checks, demote(c))
	}
	return checks
}

func v2ControllerChecks(h host.Host) []Check {
	found, err := h.CgroupV2Controllers()
	var checks []Check
	for _, ctl := range controllers {
		c := Check{Name: "cgroup " + ctl.name, Essential: ctl.essential}
		switch {
		case ctl.v2 != "":
			c.Detail = ctl.v2
		case err != nil:
			c.Status, c.Detail, c.Fix = Missing, err.Error(), "mount -t cgroup2 none /sys/fs/cgroup"
		case !found[ctl.name]:
			c.Status, c.Detail = Missing, "not in /sys/fs/cgroup/cgroup.controllers"
			c.Fix = "enable " + ctl.option + " and mount no cgroup v1 hierarchy with " + ctl.name
		default:
			c.Detail = "in cgroup.controllers"
		}
		checks = append(checks, demote(c))
	}
	return checks
}

// demote turns a missing optional feature into a warning: Missing is kept
// for what stops skiff.
func demote(c Check) Check {
	if c.Status == Missing && !c.Essential {
		c.Status = Warning
	}
	return c
}

func namespaceChecks(h host.Host) []Check {
	// Every container needs these; runc fails without any one of them.
	var absent []string
	for _, ns := range []string{"mnt", "pid", "net", "ipc", "uts"} {
		if _, err := os.Lstat(h.ProcPath("self/ns", ns)); err != nil {
			absent = append(absent, ns)
		}
	}
	core := Check{Name: "namespaces", Detail: "mnt, pid, net, ipc, uts", Essential: true}
	if len(absent) > 0 {
		core.Status, core.Detail = Missing, "no "+strings.Join(absent, ", ")+" namespace"
		core.Fix = "enable CONFIG_NAMESPACES with the MNT/PID/NET/IPC/UTS namespace options"
	}
	// Only pods with hostUsers: false use user namespaces.
	user := Check{Name: "user namespaces", Detail: "available"}
	if _, err := os.Lstat(h.ProcPath("self/ns/user")); err != nil {
		user.Status, user.Detail, user.Fix = Warning, "not in the kernel (pods with hostUsers: false cannot run)", "enable CONFIG_USER_NS"
	} else if v, err := h.Sysctl("user.max_user_namespaces"); err == nil && v == "0" {
		user.Status, user.Detail, user.Fix = Warning, "user.max_user_namespaces is 0 (pods with hostUsers: false cannot run)", "sysctl -w user.max_user_namespaces=15000"
	}
	return []Check{core, user}
}

func overlayCheck(h host.Host, mods *host.Modules) Check {
	c := Check{Name: "overlay filesystem", Essential: true}
	if ok, err := h.HasFilesystem("overlay"); err == nil && ok {
		c.Detail = "in /proc/filesystems"
		return c
	}
	// Mounting overlay loads the module itself (fs-overlay alias).
	st := mods.Lookup("overlay", "CONFIG_OVERLAY_FS")
	c.Detail = st.Evidence
	switch st.State {
	case host.ModuleLoadable:
		c.Detail += "; loaded on first mount"
	case host.ModuleUnknown:
		c.Status, c.Fix = Warning, "check the kernel has CONFIG_OVERLAY_FS"
	case host.ModuleMissing:
		c.Status, c.Fix = Missing, "enable CONFIG_OVERLAY_FS"
	}
	return c
}

// bridgeNetfilterCheck asks for the net.bridge sysctls, not the module,
// because they are what skiff sets at start and they appear only once
// br_netfilter is loaded, which, unlike most modules, nothing loads on use.
func bridgeNetfilterCheck(h host.Host, mods *host.Modules) Check {
	c := Check{Name: "br_netfilter", Essential: true, Detail: "loaded (/proc/sys/net/bridge)"}
	if _, err := os.Stat(h.ProcPath("sys/net/bridge")); err == nil {
		return c
	}
	st := mods.Lookup("br_netfilter", "CONFIG_BRIDGE_NETFILTER")
	c.Status, c.Detail = Missing, "no /proc/sys/net/bridge; "+st.Evidence
	switch st.State {
	case host.ModuleLoadable, host.ModuleUnknown:
		c.Fix = "modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/skiff.conf"
	default:
		c.Fix = "enable CONFIG_BRIDGE_NETFILTER"
	}
	return c
}

func moduleCheck(mods *host.Modules, name, option string, essential bool, why string) Check {
	st := mods.Lookup(name, option)
	c := Check{Name: name, Detail: st.Evidence, Essential: essential}
	switch st.State {
	case host.ModuleMissing:
		c.Status, c.Detail, c.Fix = Missing, st.Evidence+" ("+why+")", "enable "+option
	case host.ModuleUnknown:
		c.Status, c.Fix = Warning, "check the kernel has "+option
	}
	return demote(c)
}

func packetFilterCheck(h host.Host) Check {
	var found, absent []string
	for _, bin := range []string{"iptables", "iptables-save", "iptables-restore", "nft"} {
		if h.HasExecutable(bin) {
			found = append(found, bin)
		} else {
			absent = append(absent, bin)
		}
	}
	c := Check{Name: "iptables/nft", Essential: true}
	mode, err := h.ProxyMode()
	if err != nil {
		c.Status, c.Detail, c.Fix = Missing, "neither iptables nor nft is on PATH", "apt-get install iptables"
		return c
	}
	c.Detail = strings.Join(found, ", ") + " on PATH; kube-proxy mode " + mode
	// kube-proxy's iptables mode and CNI port mapping run save and restore.
	if mode == host.ProxyModeIPTables && (!h.HasExecutable("iptables-save") || !h.HasExecutable("iptables-restore")) {
		c.Status, c.Fix = Warning, "apt-get install iptables"
		c.Detail += "; not on PATH: " + strings.Join(absent, ", ")
	}
	return c
}

func conntrackCheck(h host.Host) Check {
	c := Check{Name: "conntrack", Detail: "on PATH"}
	if !h.HasExecutable("conntrack") {
		c.Status, c.Detail, c.Fix = Warning, "not on PATH (used to clear stale UDP connection entries)", "apt-get install conntrack"
	}
	return c
}

func ipForwardCheck(h host.Host) Check {
	c := Check{Name: "ip_forward", Detail: "1"}
	v, err := h.Sysctl("net.ipv4.ip_forward")
	switch {
	case err != nil:
		c.Status, c.Detail, c.Fix = Warning, err.Error(), "mount procfs at /proc"
	case v != "1":
		c.Status, c.Detail, c.Fix = Warning, v+"; skiff sets it at start", "none needed, or sysctl -w net.ipv4.ip_forward=1"
	}
	return c
}

func sysResourceCheck(h host.Host) Check {
	c := Check{Name: "CAP_SYS_RESOURCE", Detail: "in the bounding set"}
	ok, err := h.HasBoundingCapability(host.CapSysResource)
	switch {
	case err != nil:
		c.Status, c.Detail, c.Fix = Warning, err.Error(), "mount procfs at /proc"
	case !ok:
		c.Status, c.Detail = Warning, "not in the bounding set; skiff sets containerd restrict_oom_score_adj"
		c.Fix = "none needed, or run skiff with CAP_SYS_RESOURCE (a privileged container)"
	}
	return c
}

func kmsgCheck(h host.Host) Check {
	c := Check{Name: "/dev/kmsg", Detail: "present"}
	if _, err := os.Stat(h.RootPath("dev/kmsg")); err != nil {
		c.Status, c.Detail = Warning, "absent (the kubelet reads OOM kills from it)"
		c.Fix = "in a container, bind-mount /dev/kmsg from the host"
	}
	return c
}

func swapCheck(h host.Host) Check {
	c := Check{Name: "swap", Detail: "off"}
	n, err := h.SwapDevices()
	switch {
	case err != nil:
		c.Status, c.Detail, c.Fix = Warning, err.Error(), "mount procfs at /proc"
	case n > 0:
		c.Status, c.Detail = Warning, "on ("+strconv.Itoa(n)+" areas in /proc/swaps)"
		c.Fix = "swapoff -a, and drop swap from /etc/fstab"
	}
	return c
}

func freeSpaceCheck(h host.Host, dataDir string) Check {
	c := Check{Name: "data dir space"}
	free, measured, err := h.FreeSpace(dataDir)
	if err != nil {
		c.Status, c.Detail, c.Fix = Warning, err.Error(), "choose another --data-dir"
		return c
	}
	c.Detail = fmt.Sprintf("%.1f GiB free at %s", float64(free)/(1<<30), measured)
	if free < MinFreeSpace {
		c.Status, c.Fix = Warning, "free space, or choose another --data-dir"
		c.Detail += fmt.Sprintf(" (want %d GiB)", MinFreeSpace>>30)
	}
	return c
}
