package host

import (
	"bytes"
	"compress/gzip"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeHost returns a Host rooted in a temp dir, whose statfs answers
// fsTypes by path relative to the sys root (missing paths fail).
func fakeHost(t *testing.T, fsTypes map[string]int64) (Host, string) {
	t.Helper()
	dir := t.TempDir()
	h := Host{
		ProcRoot: filepath.Join(dir, "proc"),
		SysRoot:  filepath.Join(dir, "sys"),
		Root:     dir,
		LookPath: func(string) (string, error) { return "", errors.New("not found") },
		Statfs: func(path string, st *unix.Statfs_t) error {
			rel, _ := filepath.Rel(filepath.Join(dir, "sys"), path)
			typ, ok := fsTypes[rel]
			if !ok {
				return unix.ENOENT
			}
			st.Type = typ
			return nil
		},
	}
	return h, dir
}

// writeFile writes content to root/rel, making parent directories.
func writeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCgroupVersion(t *testing.T) {
	tests := []struct {
		name       string
		types      map[string]int64
		want       int
		wantErr    bool
		wantHybrid bool
	}{
		{name: "unified", types: map[string]int64{"fs/cgroup": unix.CGROUP2_SUPER_MAGIC}, want: 2},
		{name: "v1 tmpfs", types: map[string]int64{"fs/cgroup": unix.TMPFS_MAGIC}, want: 1},
		{name: "hybrid", types: map[string]int64{"fs/cgroup": unix.TMPFS_MAGIC, "fs/cgroup/unified": unix.CGROUP2_SUPER_MAGIC}, want: 1, wantHybrid: true},
		{name: "nothing mounted", types: map[string]int64{"fs/cgroup": unix.SYSFS_MAGIC}, wantErr: true},
		{name: "no directory", types: map[string]int64{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := fakeHost(t, tt.types)
			got, err := h.CgroupVersion()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("CgroupVersion() = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
			if hy := h.HybridCgroup(); hy != tt.wantHybrid {
				t.Errorf("HybridCgroup() = %v, want %v", hy, tt.wantHybrid)
			}
		})
	}
}

func TestCgroupDriver(t *testing.T) {
	tests := []struct {
		name       string
		fsType     int64
		comm       string
		runSystemd bool
		want       string
	}{
		{name: "v2 systemd comm", fsType: unix.CGROUP2_SUPER_MAGIC, comm: "systemd\n", want: "systemd"},
		{name: "v2 run/systemd/system", fsType: unix.CGROUP2_SUPER_MAGIC, comm: "init\n", runSystemd: true, want: "systemd"},
		{name: "v2 no systemd", fsType: unix.CGROUP2_SUPER_MAGIC, comm: "tini\n", want: "cgroupfs"},
		{name: "v1 systemd", fsType: unix.TMPFS_MAGIC, comm: "systemd\n", runSystemd: true, want: "cgroupfs"},
		{name: "no cgroups", fsType: unix.SYSFS_MAGIC, comm: "systemd\n", want: "cgroupfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, dir := fakeHost(t, map[string]int64{"fs/cgroup": tt.fsType})
			writeFile(t, dir, "proc/1/comm", tt.comm)
			if tt.runSystemd {
				if err := os.MkdirAll(filepath.Join(dir, "run/systemd/system"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if got := h.CgroupDriver(); got != tt.want {
				t.Errorf("CgroupDriver() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCgroupControllers(t *testing.T) {
	h, dir := fakeHost(t, nil)
	writeFile(t, dir, "proc/cgroups", "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t52\t0\nhugetlb\t0\t1\t1\n")
	writeFile(t, dir, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
	v1, err := h.CgroupV1Controllers()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]V1Controller{"cpu": {1, true}, "memory": {4, false}, "hugetlb": {0, true}}
	if len(v1) != len(want) {
		t.Fatalf("CgroupV1Controllers() = %v, want %v", v1, want)
	}
	for k, w := range want {
		if v1[k] != w {
			t.Errorf("controller %s = %+v, want %+v", k, v1[k], w)
		}
	}
	v2, err := h.CgroupV2Controllers()
	if err != nil {
		t.Fatal(err)
	}
	if !v2["pids"] || !v2["cpuset"] || v2["devices"] {
		t.Errorf("CgroupV2Controllers() = %v", v2)
	}
	writeFile(t, dir, "proc/cgroups", "cpu 1\n")
	if _, err := h.CgroupV1Controllers(); err == nil {
		t.Error("malformed /proc/cgroups: want an error")
	}
}

func TestHasBoundingCapability(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		cap     int
		want    bool
		wantErr bool
	}{
		{name: "full set", status: "Name:\tskiff\nCapBnd:\t0000003fffffffff\n", cap: CapSysResource, want: true},
		{name: "without sys_resource", status: "CapBnd:\t0000003ffeffffff\n", cap: CapSysResource, want: false},
		{name: "other bit kept", status: "CapBnd:\t0000003ffeffffff\n", cap: 21, want: true},
		{name: "high bit", status: "CapBnd:\t000001fffeffffff\n", cap: 40, want: true},
		{name: "no line", status: "Name:\tskiff\n", cap: 24, wantErr: true},
		{name: "garbage", status: "CapBnd:\tzz\n", cap: 24, wantErr: true},
		{name: "out of range", status: "CapBnd:\t0000003fffffffff\n", cap: 64, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, dir := fakeHost(t, nil)
			writeFile(t, dir, "proc/self/status", tt.status)
			got, err := h.HasBoundingCapability(tt.cap)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("HasBoundingCapability(%d) = %v, %v; want %v, error %v", tt.cap, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestProxyMode(t *testing.T) {
	tests := []struct {
		name    string
		onPath  []string
		want    string
		wantErr bool
	}{
		{name: "both prefers iptables", onPath: []string{"iptables", "nft"}, want: ProxyModeIPTables},
		{name: "iptables only", onPath: []string{"iptables"}, want: ProxyModeIPTables},
		{name: "nft only", onPath: []string{"nft"}, want: ProxyModeNFTables},
		{name: "neither", onPath: []string{"conntrack"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Host{LookPath: func(file string) (string, error) {
				for _, p := range tt.onPath {
					if p == file {
						return "/usr/sbin/" + file, nil
					}
				}
				return "", errors.New("not found")
			}}
			got, err := h.ProxyMode()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ProxyMode() = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), "iptables") || !strings.Contains(err.Error(), "skiff check-config")) {
				t.Errorf("error %q should name iptables and skiff check-config", err)
			}
		})
	}
}

func TestEnsureSysctls(t *testing.T) {
	const (
		fwd  = "net/ipv4/ip_forward"
		nf4  = "net/bridge/bridge-nf-call-iptables"
		nf6  = "net/bridge/bridge-nf-call-ip6tables"
		fwd6 = "net/ipv6/conf/all/forwarding"
	)
	tests := []struct {
		name    string
		before  map[string]string // relative to /proc/sys
		want    map[string]string
		logs    []string
		wantErr string
	}{
		{
			name:   "fresh machine",
			before: map[string]string{fwd: "0\n", nf4: "0\n", nf6: "0\n", fwd6: "0\n"},
			want:   map[string]string{fwd: "1", nf4: "1", nf6: "1", fwd6: "1"},
			logs: []string{"set net.ipv4.ip_forward=1 (was 0)", "set net.bridge.bridge-nf-call-iptables=1 (was 0)",
				"set net.bridge.bridge-nf-call-ip6tables=1 (was 0)", "set net.ipv6.conf.all.forwarding=1 (was 0)"},
		},
		{
			name:   "only ip_forward differs",
			before: map[string]string{fwd: "0\n", nf4: "1\n", nf6: "1\n", fwd6: "1\n"},
			want:   map[string]string{fwd: "1", nf4: "1\n", nf6: "1\n", fwd6: "1\n"},
			logs:   []string{"set net.ipv4.ip_forward=1 (was 0)"},
		},
		{
			name:   "already prepared",
			before: map[string]string{fwd: "1\n", nf4: "1\n", nf6: "1\n", fwd6: "1\n"},
			want:   map[string]string{fwd: "1\n", nf4: "1\n", nf6: "1\n", fwd6: "1\n"},
		},
		{
			name:   "no ipv6",
			before: map[string]string{fwd: "0\n", nf4: "1\n", nf6: "1\n"},
			want:   map[string]string{fwd: "1", nf4: "1\n", nf6: "1\n"},
			logs:   []string{"set net.ipv4.ip_forward=1 (was 0)"},
		},
		{
			name:    "no br_netfilter changes nothing",
			before:  map[string]string{fwd: "0\n", fwd6: "0\n"},
			want:    map[string]string{fwd: "0\n", fwd6: "0\n"},
			wantErr: "br_netfilter",
		},
		{
			name:    "missing sysctl is an error, not a new file",
			before:  map[string]string{fwd: "1\n", nf4: "1\n"},
			want:    map[string]string{fwd: "1\n", nf4: "1\n"},
			wantErr: "net.bridge.bridge-nf-call-ip6tables",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, dir := fakeHost(t, nil)
			for k, v := range tt.before {
				writeFile(t, dir, filepath.Join("proc/sys", k), v)
			}
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
						return slog.Attr{}
					}
					return a
				},
			}))
			err := h.EnsureSysctls(log)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("EnsureSysctls: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("EnsureSysctls error = %v, want one naming %s", err, tt.wantErr)
			}
			for k, w := range tt.want {
				got, err := os.ReadFile(filepath.Join(dir, "proc/sys", k))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != w {
					t.Errorf("%s = %q, want %q", k, got, w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "proc/sys", nf6)); tt.before[nf6] == "" && err == nil {
				t.Errorf("%s was created", nf6)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if l != "" {
					lines = append(lines, l)
				}
			}
			if len(lines) != len(tt.logs) {
				t.Fatalf("logged %q, want %q", lines, tt.logs)
			}
			for i, l := range lines {
				if !strings.Contains(l, `msg="`+tt.logs[i]+`"`) {
					t.Errorf("log line %d = %q, want message %q", i, l, tt.logs[i])
				}
			}
		})
	}
}

func TestModules(t *testing.T) {
	const release = "6.1.0-test"
	gzConfig := func(t *testing.T, root, rel, content string) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(content))
		zw.Close()
		writeFile(t, root, rel, b.String())
	}
	type lookup struct {
		name, option string
		want         ModuleState
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		lookups []lookup
	}{
		{
			name: "module tree",
			setup: func(t *testing.T, dir string) {
				mods := "lib/modules/" + release
				writeFile(t, dir, mods+"/modules.builtin", "kernel/drivers/net/veth.ko\nkernel/fs/overlayfs/overlay.ko\n")
				writeFile(t, dir, mods+"/modules.dep", "kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n"+
					"kernel/net/bridge/br_netfilter.ko.zst: kernel/net/bridge/bridge.ko.zst\nkernel/net/bridge/bridge.ko.zst:\n"+
					"kernel/net/netfilter/nf-tables.ko:\n")
				writeFile(t, dir, "sys/module/bridge/initstate", "live\n")
			},
			lookups: []lookup{
				{"veth", "CONFIG_VETH", ModuleBuiltin},
				{"overlay", "", ModuleBuiltin},
				{"vxlan", "CONFIG_VXLAN", ModuleLoadable},
				{"br_netfilter", "", ModuleLoadable},
				{"bridge", "CONFIG_BRIDGE", ModuleLoaded},
				{"nf_tables", "", ModuleLoadable}, // dash in the file name
				{"ip_vs", "CONFIG_IP_VS", ModuleMissing},
			},
		},
		{
			name: "built in with parameters shows in /sys/module",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "sys/module/vxlan/parameters/udp_port", "4789\n")
			},
			lookups: []lookup{
				{"vxlan", "CONFIG_VXLAN", ModuleBuiltin},
				{"veth", "CONFIG_VETH", ModuleUnknown}, // nothing else to ask
			},
		},
		{
			name: "kernel config only",
			setup: func(t *testing.T, dir string) {
				gzConfig(t, dir, "proc/config.gz", "CONFIG_VETH=y\nCONFIG_VXLAN=m\n# CONFIG_IP_VS is not set\n")
			},
			lookups: []lookup{
				{"veth", "CONFIG_VETH", ModuleBuiltin},
				{"vxlan", "CONFIG_VXLAN", ModuleLoadable},
				{"ip_vs", "CONFIG_IP_VS", ModuleMissing},
				{"ip_vs", "", ModuleUnknown},
			},
		},
		{
			name: "boot config",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "boot/config-"+release, "CONFIG_BRIDGE=y\n")
			},
			lookups: []lookup{
				{"bridge", "CONFIG_BRIDGE", ModuleBuiltin},
				{"veth", "CONFIG_VETH", ModuleMissing},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, dir := fakeHost(t, nil)
			writeFile(t, dir, "proc/sys/kernel/osrelease", release+"\n")
			tt.setup(t, dir)
			m := h.Modules()
			for _, l := range tt.lookups {
				got := m.Lookup(l.name, l.option)
				if got.State != l.want {
					t.Errorf("Lookup(%s, %q) = %v (%s), want %v", l.name, l.option, got.State, got.Evidence, l.want)
				}
				if got.Evidence == "" {
					t.Errorf("Lookup(%s) gave no evidence", l.name)
				}
			}
		})
	}
}

func TestKernelFacts(t *testing.T) {
	h, dir := fakeHost(t, nil)
	writeFile(t, dir, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
	writeFile(t, dir, "proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n\text4\n")
	writeFile(t, dir, "proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1024\t0\t-2\n")
	if r, err := h.KernelRelease(); err != nil || r != "6.1.0-18-amd64" {
		t.Errorf("KernelRelease() = %q, %v", r, err)
	}
	for fs, want := range map[string]bool{"overlay": true, "ext4": true, "btrfs": false, "nodev": false} {
		if got, err := h.HasFilesystem(fs); err != nil || got != want {
			t.Errorf("HasFilesystem(%s) = %v, %v; want %v", fs, got, err, want)
		}
	}
	if n, err := h.SwapDevices(); err != nil || n != 1 {
		t.Errorf("SwapDevices() = %d, %v; want 1", n, err)
	}
}

func TestFreeSpaceMeasuresNearestParent(t *testing.T) {
	dir := t.TempDir()
	var asked string
	h := Host{Statfs: func(path string, st *unix.Statfs_t) error {
		asked = path
		st.Bavail, st.Bsize = 10, 4096
		return nil
	}}
	free, measured, err := h.FreeSpace(filepath.Join(dir, "not", "yet"))
	if err != nil || free != 40960 || measured != dir || asked != dir {
		t.Errorf("FreeSpace = %d, %q, %v (asked %q); want 40960 at %q", free, measured, err, asked, dir)
	}
	// And against the real file system, which has some space.
	if free, _, err := (Host{}).FreeSpace(dir); err != nil || free == 0 {
		t.Errorf("real FreeSpace(%s) = %d, %v", dir, free, err)
	}
}
