package checkconfig

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/skiffkube/skiff/internal/host"
)

const release = "6.1.0-18-amd64"

// fakeTree describes a host; healthy() is one where every check passes.
type fakeTree struct {
	files   map[string]string // relative to the root; proc/... and sys/... included
	cgroup  int64             // file-system type at sys/fs/cgroup
	onPath  map[string]bool
	freeGiB uint64
}

func healthy() fakeTree {
	return fakeTree{
		files: map[string]string{
			"proc/sys/kernel/osrelease": release + "\n",
			"proc/cgroups": "#subsys_name\thierarchy\tnum_cgroups\tenabled\n" +
				"cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t4\t52\t1\ndevices\t5\t1\t1\n" +
				"freezer\t6\t1\t1\nhugetlb\t9\t1\t1\npids\t8\t1\t1\n",
			"sys/fs/cgroup/cgroup.controllers":            "cpuset cpu io memory hugetlb pids\n",
			"proc/filesystems":                            "nodev\tsysfs\nnodev\toverlay\n\text4\n",
			"proc/sys/net/bridge/bridge-nf-call-iptables": "1\n",
			"proc/sys/net/ipv4/ip_forward":                "1\n",
			"proc/sys/user/max_user_namespaces":           "15000\n",
			"proc/self/status":                            "Name:\tskiff\nCapBnd:\t0000003fffffffff\n",
			"proc/swaps":                                  "Filename\tType\tSize\tUsed\tPriority\n",
			"lib/modules/" + release + "/modules.builtin": "kernel/net/bridge/bridge.ko\nkernel/drivers/net/veth.ko\n" +
				"kernel/drivers/net/vxlan/vxlan.ko\nkernel/net/netfilter/nf_tables.ko\n",
			"lib/modules/" + release + "/modules.dep": "",
			"dev/kmsg":         "",
			"proc/self/ns/mnt": "", "proc/self/ns/pid": "", "proc/self/ns/net": "",
			"proc/self/ns/ipc": "", "proc/self/ns/uts": "", "proc/self/ns/user": "",
		},
		cgroup:  unix.TMPFS_MAGIC,
		onPath:  map[string]bool{"iptables": true, "iptables-save": true, "iptables-restore": true, "conntrack": true},
		freeGiB: 50,
	}
}

func (f fakeTree) host(t *testing.T) (host.Host, string) {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range f.files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return host.Host{
		ProcRoot: filepath.Join(dir, "proc"),
		SysRoot:  filepath.Join(dir, "sys"),
		Root:     dir,
		LookPath: func(file string) (string, error) {
			if f.onPath[file] {
				return "/usr/sbin/" + file, nil
			}
			return "", errors.New("not found")
		},
		Statfs: func(path string, st *unix.Statfs_t) error {
			switch path {
			case filepath.Join(dir, "sys/fs/cgroup"):
				st.Type = f.cgroup
			case filepath.Join(dir, "sys/fs/cgroup/unified"):
				return unix.ENOENT
			default:
				st.Bavail, st.Bsize = f.freeGiB<<30/4096, 4096
			}
			return nil
		},
	}, dir
}

func TestRun(t *testing.T) {
	tests := []struct {
		name string
		edit func(f *fakeTree)
		// want maps check names to the status expected; unlisted checks are OK.
		want          map[string]Status
		wantEssential []string
	}{
		{name: "healthy v1"},
		{name: "healthy v2", edit: func(f *fakeTree) { f.cgroup = unix.CGROUP2_SUPER_MAGIC }},
		{
			name: "v2 without pids or hugetlb",
			edit: func(f *fakeTree) {
				f.cgroup = unix.CGROUP2_SUPER_MAGIC
				f.files["sys/fs/cgroup/cgroup.controllers"] = "cpuset cpu memory\n"
			},
			want:          map[string]Status{"cgroup pids": Missing, "cgroup hugetlb": Warning},
			wantEssential: []string{"cgroup pids"},
		},
		{
			name:          "no cgroup mount",
			edit:          func(f *fakeTree) { f.cgroup = unix.SYSFS_MAGIC },
			want:          map[string]Status{"cgroup hierarchy": Missing},
			wantEssential: []string{"cgroup hierarchy"},
		},
		{
			name: "v1 memory disabled, hugetlb unmounted",
			edit: func(f *fakeTree) {
				f.files["proc/cgroups"] = "cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t0\t1\t0\ndevices\t5\t1\t1\n" +
					"freezer\t6\t1\t1\nhugetlb\t0\t1\t1\npids\t8\t1\t1\n"
			},
			want:          map[string]Status{"cgroup memory": Missing, "cgroup hugetlb": Warning},
			wantEssential: []string{"cgroup memory"},
		},
		{
			name: "vxlan missing, veth a loadable module",
			edit: func(f *fakeTree) {
				f.files["lib/modules/"+release+"/modules.builtin"] = "kernel/net/bridge/bridge.ko\nkernel/net/netfilter/nf_tables.ko\n"
				f.files["lib/modules/"+release+"/modules.dep"] = "kernel/drivers/net/veth.ko.xz:\n"
			},
			want:          map[string]Status{"vxlan": Missing},
			wantEssential: []string{"vxlan"},
		},
		{
			name: "nothing tells about modules",
			edit: func(f *fakeTree) {
				delete(f.files, "lib/modules/"+release+"/modules.builtin")
				delete(f.files, "lib/modules/"+release+"/modules.dep")
			},
			want: map[string]Status{"bridge": Warning, "veth": Warning, "vxlan": Warning, "nf_tables": Warning},
		},
		{
			name: "no br_netfilter, no overlay",
			edit: func(f *fakeTree) {
				delete(f.files, "proc/sys/net/bridge/bridge-nf-call-iptables")
				f.files["proc/filesystems"] = "nodev\tsysfs\n"
			},
			want:          map[string]Status{"br_netfilter": Missing, "overlay filesystem": Missing},
			wantEssential: []string{"overlay filesystem", "br_netfilter"},
		},
		{
			name:          "no packet filter tool",
			edit:          func(f *fakeTree) { f.onPath = map[string]bool{} },
			want:          map[string]Status{"iptables/nft": Missing, "conntrack": Warning},
			wantEssential: []string{"iptables/nft"},
		},
		{name: "nft only", edit: func(f *fakeTree) { f.onPath = map[string]bool{"nft": true, "conntrack": true} }},
		{
			name: "iptables without restore",
			edit: func(f *fakeTree) { delete(f.onPath, "iptables-restore") },
			want: map[string]Status{"iptables/nft": Warning},
		},
		{
			name: "fresh VM: warnings only",
			edit: func(f *fakeTree) {
				f.files["proc/sys/net/ipv4/ip_forward"] = "0\n"
				f.files["proc/self/status"] = "CapBnd:\t0000003ffeffffff\n"
				f.files["proc/swaps"] += "/swapfile\tfile\t1024\t0\t-2\n"
				f.files["proc/sys/user/max_user_namespaces"] = "0\n"
				delete(f.files, "dev/kmsg")
				f.freeGiB = 1
			},
			want: map[string]Status{"ip_forward": Warning, "CAP_SYS_RESOURCE": Warning, "swap": Warning,
				"user namespaces": Warning, "/dev/kmsg": Warning, "data dir space": Warning},
		},
		{
			name:          "no pid namespace",
			edit:          func(f *fakeTree) { delete(f.files, "proc/self/ns/pid") },
			want:          map[string]Status{"namespaces": Missing},
			wantEssential: []string{"namespaces"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := healthy()
			if tt.edit != nil {
				tt.edit(&f)
			}
			h, dir := f.host(t)
			checks := Run(h, filepath.Join(dir, "var/lib/skiff"))
			seen := map[string]bool{}
			for _, c := range checks {
				if seen[c.Name] {
					t.Errorf("check %q appears twice", c.Name)
				}
				seen[c.Name] = true
				want := tt.want[c.Name] // OK when unlisted
				if c.Status != want {
					t.Errorf("%s: status %v (%s), want %v", c.Name, c.Status, c.Detail, want)
				}
				if c.Status != OK && c.Fix == "" {
					t.Errorf("%s: status %v without a fix", c.Name, c.Status)
				}
				if c.Status == Missing && !c.Essential {
					t.Errorf("%s: missing but not essential; optional features warn", c.Name)
				}
			}
			for name := range tt.want {
				if !seen[name] {
					t.Errorf("no check named %q", name)
				}
			}
			var got []string
			for _, c := range Essential(checks) {
				got = append(got, c.Name)
			}
			if !reflect.DeepEqual(got, tt.wantEssential) {
				t.Errorf("Essential() = %q, want %q", got, tt.wantEssential)
			}
			if t.Failed() {
				var buf bytes.Buffer
				Print(&buf, checks)
				t.Log("\n" + buf.String())
			}
		})
	}
}

func TestRunNamesModuleKind(t *testing.T) {
	f := healthy()
	f.files["lib/modules/"+release+"/modules.dep"] = "kernel/drivers/net/veth.ko.xz:\n"
	f.files["lib/modules/"+release+"/modules.builtin"] = "kernel/drivers/net/vxlan/vxlan.ko\n"
	h, _ := f.host(t)
	details := map[string]string{}
	for _, c := range Run(h, "") {
		details[c.Name] = c.Detail
	}
	if !strings.Contains(details["vxlan"], "built in") || !strings.Contains(details["veth"], "module") {
		t.Errorf("vxlan %q should say built in, veth %q module", details["vxlan"], details["veth"])
	}
	if _, ok := details["data dir space"]; ok {
		t.Error("an empty data dir should skip the space check")
	}
}

func TestPrint(t *testing.T) {
	checks := []Check{
		{Name: "overlay filesystem", Detail: "in /proc/filesystems", Essential: true},
		{Name: "vxlan", Detail: "not in /sys/module", Status: Missing, Fix: "enable CONFIG_VXLAN", Essential: true},
		{Name: "swap", Detail: "on", Status: Warning, Fix: "swapoff -a"},
		{Name: "br_netfilter", Detail: "no /proc/sys/net/bridge", Status: Missing, Fix: "modprobe br_netfilter", Essential: true},
	}
	var buf bytes.Buffer
	Print(&buf, checks)
	want := `ok       overlay filesystem  in /proc/filesystems
missing  vxlan               not in /sys/module  (fix: enable CONFIG_VXLAN)
warning  swap                on  (fix: swapoff -a)
missing  br_netfilter        no /proc/sys/net/bridge  (fix: modprobe br_netfilter)

4 checks: 1 ok, 1 warnings, 2 missing
skiff cannot run a node here: missing essential vxlan, br_netfilter
`
	if buf.String() != want {
		t.Errorf("Print wrote\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestEssentialError(t *testing.T) {
	tests := []struct {
		name   string
		checks []Check
		want   string
	}{
		{name: "none", checks: []Check{{Name: "swap", Status: Warning}, {Name: "kernel", Essential: true}}},
		{
			name: "two",
			checks: []Check{
				{Name: "vxlan", Status: Missing, Essential: true},
				{Name: "hugetlb", Status: Warning},
				{Name: "iptables/nft", Status: Missing, Essential: true},
			},
			want: "missing essential host features: vxlan, iptables/nft; run `skiff check-config` for details",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := EssentialError(tt.checks)
			if tt.want == "" {
				if err != nil {
					t.Errorf("EssentialError = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("EssentialError = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRunRealHost runs against this machine. It asserts only what holds on
// every host, and logs the table for a person to read with -v.
func TestRunRealHost(t *testing.T) {
	checks := Run(host.Host{}, t.TempDir())
	if len(checks) == 0 {
		t.Fatal("Run returned no checks")
	}
	for _, c := range checks {
		if c.Name == "" || c.Status.String() == "" || strings.HasPrefix(c.Status.String(), "Status(") {
			t.Errorf("malformed check %+v", c)
		}
	}
	var buf bytes.Buffer
	Print(&buf, checks)
	t.Log("\n" + buf.String())
}
