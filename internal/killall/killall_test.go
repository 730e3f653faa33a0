package killall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeHost is a node in a temporary directory: a /proc with stat, cmdline
// and exe of each process and a mountinfo, and the host paths killall
// cleans. Its system and Exec change only the fake.
type fakeHost struct {
	t                 *testing.T
	root              string
	procRoot          string
	dataDir, runDir   string
	kubeletDir, netns string
	stateDirs         []string

	stubborn   map[int]bool // ignore SIGTERM
	unkillable map[int]bool // survive SIGKILL (stuck in the kernel)
	zombie     map[int]bool // become zombies instead of vanishing
	failMount  map[string]error
	signals    []string
	unmounts   []string

	installed map[string]bool
	outputs   map[string]string
	calls     []string
	stdin     map[string]string
	onRun     func(cmd string) // called for each command run
}

func newFakeHost(t *testing.T) *fakeHost {
	root := t.TempDir()
	h := &fakeHost{
		t: t, root: root,
		procRoot:   filepath.Join(root, "proc"),
		dataDir:    filepath.Join(root, "var/lib/skiff"),
		runDir:     filepath.Join(root, "run/skiff"),
		kubeletDir: filepath.Join(root, "var/lib/kubelet"),
		netns:      filepath.Join(root, "run/netns"),
		stubborn:   map[int]bool{}, unkillable: map[int]bool{}, zombie: map[int]bool{}, failMount: map[string]error{},
		installed: map[string]bool{}, outputs: map[string]string{}, stdin: map[string]string{},
	}
	h.stateDirs = []string{filepath.Join(root, "var/lib/cni"), h.runDir, filepath.Join(root, "run/flannel")}
	for _, d := range append([]string{h.procRoot + "/self", h.dataDir + "/server", h.netns}, h.stateDirs...) {
		must(t, os.MkdirAll(d, 0o755))
	}
	for _, f := range []string{"cni-aaa", "cni-bbb", "other"} {
		must(t, os.WriteFile(filepath.Join(h.netns, f), nil, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(root, "var/lib/cni/last_reserved_ip.0"), []byte("10.42.0.7"), 0o644))
	return h
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (h *fakeHost) addProc(pid, ppid int, exe string, argv ...string) {
	dir := filepath.Join(h.procRoot, strconv.Itoa(pid))
	must(h.t, os.MkdirAll(dir, 0o755))
	h.writeStat(pid, ppid, 'S')
	must(h.t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644))
	if exe != "" {
		must(h.t, os.Symlink(exe, filepath.Join(dir, "exe")))
	}
}

func (h *fakeHost) writeStat(pid, ppid int, state byte) {
	stat := fmt.Sprintf("%d (p %d) %c %d 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", pid, pid, state, ppid, 1000+pid)
	must(h.t, os.WriteFile(filepath.Join(h.procRoot, strconv.Itoa(pid), "stat"), []byte(stat), 0o644))
}

func (h *fakeHost) setMounts(points ...string) {
	var b strings.Builder
	for i, p := range points {
		fmt.Fprintf(&b, "%d 1 0:%d / %s rw shared:%d - tmpfs tmpfs rw\n", 100+i, i, strings.ReplaceAll(p, " ", `\040`), i)
	}
	must(h.t, os.WriteFile(filepath.Join(h.procRoot, "self/mountinfo"), []byte(b.String()), 0o644))
}

func (h *fakeHost) Kill(pid int, sig syscall.Signal) error {
	h.signals = append(h.signals, fmt.Sprintf("%d:%s", pid, sig))
	dir := filepath.Join(h.procRoot, strconv.Itoa(pid))
	if _, err := os.Stat(dir); err != nil {
		return syscall.ESRCH
	}
	if (sig == syscall.SIGTERM && h.stubborn[pid]) || h.unkillable[pid] {
		return nil
	}
	if h.zombie[pid] {
		h.writeStat(pid, 1, 'Z')
		return nil
	}
	return os.RemoveAll(dir)
}

func (h *fakeHost) Unmount(target string) error {
	h.unmounts = append(h.unmounts, target)
	if err := h.failMount[target]; err != nil {
		return err
	}
	path := filepath.Join(h.procRoot, "self/mountinfo")
	b, err := os.ReadFile(path)
	must(h.t, err)
	lines := strings.SplitAfter(string(b), "\n")
	esc := strings.ReplaceAll(target, " ", `\040`)
	for i := len(lines) - 1; i >= 0; i-- { // the topmost of stacked mounts
		if f := strings.Fields(lines[i]); len(f) > 4 && f[4] == esc {
			lines = slices.Delete(lines, i, i+1)
			return os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
		}
	}
	return syscall.EINVAL
}

func (h *fakeHost) Remove(path string) error    { return os.Remove(path) }
func (h *fakeHost) RemoveAll(path string) error { return os.RemoveAll(path) }

func (h *fakeHost) LookPath(name string) (string, error) {
	if h.installed[name] {
		return "/usr/sbin/" + name, nil
	}
	return "", fmt.Errorf("%s: %w", name, errors.New("executable file not found in $PATH"))
}

func (h *fakeHost) Run(_ context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	h.calls = append(h.calls, cmd)
	if h.onRun != nil {
		h.onRun(cmd)
	}
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		h.stdin[cmd] = string(b)
	}
	if out, ok := h.outputs[cmd]; ok {
		return []byte(out), nil
	}
	return nil, nil
}

func (h *fakeHost) runner(t *testing.T, self int) *runner {
	return h.runnerFor(t, self, h.dataDir)
}

// runnerFor runs with --data-dir dataDir ("": none given).
func (h *fakeHost) runnerFor(t *testing.T, self int, dataDir string) *runner {
	r, err := newRunner(Options{
		DataDir: dataDir, RunDir: h.runDir, KubeletDir: h.kubeletDir, ProcRoot: h.procRoot, Exec: h,
	}, h, self, "/usr/local/bin/skiff")
	must(t, err)
	r.netnsDir = h.netns
	r.stateDirs = h.stateDirs
	r.cniDir = h.stateDirs[0]
	r.grace, r.poll = 200*time.Millisecond, 5*time.Millisecond
	return r
}

func TestRun(t *testing.T) {
	h := newFakeHost(t)
	shim := h.dataDir + "/data/" + testHash + "/bin/containerd-shim-runc-v2"
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(20, 1, "/usr/bin/bash", "-bash")
	h.addProc(99, 20, "/usr/local/bin/skiff", "skiff", "killall", "--data-dir", h.dataDir) // self
	h.addProc(30, 1, "/usr/bin/tail", "tail", "-f", h.dataDir+"/server/log")
	h.addProc(40, 1, "/usr/local/bin/skiff", "skiff", "server", "--data-dir", h.dataDir)
	h.addProc(41, 40, "/usr/local/bin/skiff", "containerd", "--config", h.dataDir+"/agent/etc/containerd/config.toml")
	h.addProc(50, 1, shim, shim, "-id", "aaa")
	h.addProc(51, 50, "/pause", "/pause")
	h.addProc(52, 50, "/app", "/app") // ignores SIGTERM
	h.addProc(53, 50, "/sidecar", "/sidecar")
	h.stubborn[52] = true
	h.zombie[53] = true

	pods := h.kubeletDir + "/pods/uid1/volumes/kubernetes.io~empty-dir/my cache"
	h.setMounts(
		h.runDir,
		h.runDir+"/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs",
		h.netns+"/cni-aaa",
		h.netns+"/other",
		pods,
		h.kubeletDir+"/plugins/kubernetes.io/csi/pv/p1/globalmount",
		h.dataDir+"/agent/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs",
		h.root+"/home",
	)

	for _, b := range []string{"ip", "iptables-save", "iptables-restore", "nft"} {
		h.installed[b] = true // ip6tables is not installed
	}
	h.outputs["ip -o link show"] = sampleIPLinks
	h.outputs["iptables-save"] = sampleSave
	h.outputs["nft list tables"] = "table inet filter\ntable ip kube-proxy\ntable ip flannel-ipv4\ntable ip6 flannel-ipv6\n"
	// The service route of a host without a default route; no IPv6 one.
	h.outputs["ip route show proto 165"] = "10.43.0.0/16 dev eth0 proto 165 scope link src 192.168.5.7 \n"

	rep, err := h.runner(t, 99).run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	want := Report{
		ProcessesKilled: 6, MountsUnmounted: 6, NetnsRemoved: 2, LinksDeleted: 4, RoutesDeleted: 1,
		RulesRemoved: 25, ChainsRemoved: 17, NftTablesDeleted: 3, DirsRemoved: 3,
	}
	if rep != want {
		t.Errorf("report = %+v\nwant       %+v", rep, want)
	}

	wantSignals := []string{
		"40:terminated", "41:terminated", "50:terminated", "51:terminated", "52:terminated", "53:terminated",
		"52:killed",
	}
	if !slices.Equal(h.signals, wantSignals) {
		t.Errorf("signals = %v, want %v", h.signals, wantSignals)
	}
	for _, pid := range []int{1, 20, 30, 99} {
		if _, err := os.Stat(filepath.Join(h.procRoot, strconv.Itoa(pid))); err != nil {
			t.Errorf("process %d was killed", pid)
		}
	}

	wantUnmounts := []string{
		h.dataDir + "/agent/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs",
		h.kubeletDir + "/plugins/kubernetes.io/csi/pv/p1/globalmount",
		pods,
		h.runDir + "/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs",
		h.netns + "/cni-aaa",
		h.runDir,
	}
	if !slices.Equal(h.unmounts, wantUnmounts) {
		t.Errorf("unmounts =\n%s\nwant\n%s", strings.Join(h.unmounts, "\n"), strings.Join(wantUnmounts, "\n"))
	}
	if _, err := os.Stat(h.netns + "/other"); err != nil {
		t.Error("a network namespace not made by CNI was removed")
	}

	wantCalls := []string{
		"ip -o link show",
		"ip link delete veth3f1c2a4b", "ip link delete veth9a8b7c6d", "ip link delete cni0", "ip link delete flannel.1",
		"ip route show proto 165", "ip route flush proto 165", "ip -6 route show proto 165",
		"iptables-save", "iptables-restore",
		"nft list tables", "nft delete table ip kube-proxy", "nft delete table ip flannel-ipv4", "nft delete table ip6 flannel-ipv6",
	}
	if !slices.Equal(h.calls, wantCalls) {
		t.Errorf("commands =\n%s\nwant\n%s", strings.Join(h.calls, "\n"), strings.Join(wantCalls, "\n"))
	}
	if got := h.stdin["iptables-restore"]; got != sampleSaveKept {
		t.Errorf("iptables-restore input =\n%s\nwant\n%s", got, sampleSaveKept)
	}

	for _, d := range h.stateDirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists", d)
		}
	}
	if _, err := os.Stat(h.dataDir + "/server"); err != nil {
		t.Errorf("data dir was touched: %v", err)
	}
}

func TestRunKeepsGoingAndKeepsMountedDirs(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	stuck := h.runDir + "/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs"
	h.setMounts(h.runDir, stuck)
	h.failMount[stuck] = syscall.EPERM
	h.failMount[h.runDir] = syscall.EPERM

	rep, err := h.runner(t, 99).run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unmounting "+stuck) {
		t.Fatalf("err = %v, want the failed unmount named", err)
	}
	if !strings.Contains(err.Error(), "not removing "+h.runDir) {
		t.Errorf("err = %v, want the run dir kept because of its mount", err)
	}
	if _, err := os.Stat(h.runDir); err != nil {
		t.Errorf("run dir with a mount left in it was removed")
	}
	// The steps after the failure still ran: the other state dirs are gone.
	if rep.DirsRemoved != 2 {
		t.Errorf("dirs removed = %d, want 2", rep.DirsRemoved)
	}
	// No network tools installed: skipped without error or command.
	if len(h.calls) != 0 {
		t.Errorf("ran %v with no tools installed", h.calls)
	}
	if len(h.signals) != 0 {
		t.Errorf("signalled %v on a node with nothing running", h.signals)
	}
}

func TestRunEmptiesAStateDirThatIsAMountPoint(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	cni := h.stateDirs[0]
	if err := os.MkdirAll(filepath.Join(cni, "networks", "cbr0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cni, "networks", "cbr0", "10.42.0.5"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its own disk or a bind mount: the mount stays, the leases go.
	h.setMounts(cni)
	rep, err := h.runner(t, 99).run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.DirsEmptied != 1 || !strings.Contains(rep.String(), "emptied 1 (mount points)") {
		t.Errorf("report %+v / %q: want the mount point counted as emptied", rep, rep)
	}
	entries, err := os.ReadDir(cni)
	if err != nil {
		t.Fatalf("the mount point itself was removed: %v", err)
	}
	if len(entries) != 0 {
		t.Errorf("%s still holds %v", cni, entries)
	}
}

func TestRunCancelled(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	h.setMounts()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := h.runner(t, 99).run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	for _, d := range h.stateDirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed after cancellation", d)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{DataDir: "/"},
		{DataDir: "var/lib/skiff"},
		{DataDir: "/var/lib/skiff", RunDir: "/"},
		{DataDir: "/var/lib/skiff", KubeletDir: "relative"},
		{DataDir: "/var/lib/skiff", RunDir: "/run/../"},
	} {
		if _, err := newRunner(o, hostSystem{}, 1, ""); err == nil {
			t.Errorf("newRunner(%+v): want an error", o)
		}
	}
	if r, err := newRunner(Options{}, hostSystem{}, 1, ""); err != nil || r.dataDir != "" {
		t.Errorf("no data dir: %v, %q; want none, and no error", err, r.dataDir)
	}
	r, err := newRunner(Options{DataDir: "/var/lib/skiff/"}, hostSystem{}, 1, "")
	must(t, err)
	if r.dataDir != "/var/lib/skiff" || r.runDir != DefaultRunDir || r.kubeletDir != DefaultKubeletDir || r.procRoot != DefaultProcRoot {
		t.Errorf("defaults: %+v", r)
	}
}

func TestReadProcs(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(7, 1, "/bin/x (deleted)", "x", "--flag", "")
	must(t, os.MkdirAll(filepath.Join(h.procRoot, "8"), 0o755)) // exited while we read
	ps, err := ReadProcs(h.procRoot)
	must(t, err)
	if len(ps) != 1 {
		t.Fatalf("ReadProcs = %+v, want one process", ps)
	}
	p := ps[0]
	if p.PID != 7 || p.PPID != 1 || p.Exe != "/bin/x (deleted)" || p.StartTime != 1007 || !slices.Equal(p.Cmdline, []string{"x", "--flag"}) {
		t.Errorf("ReadProcs = %+v", p)
	}
}

func TestAliveRejectsZombiesAndReusedPIDs(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(7, 1, "/bin/x", "x")
	r := h.runner(t, 99)
	p := Proc{PID: 7, PPID: 1, StartTime: 1007}
	if !r.alive(p) {
		t.Fatal("running process reported dead")
	}
	if r.alive(Proc{PID: 7, StartTime: 5}) {
		t.Error("a PID reused by a later process counts as the old one")
	}
	h.writeStat(7, 1, 'Z')
	if r.alive(p) {
		t.Error("zombie counts as alive")
	}
	if sent, err := r.signal(p, syscall.SIGTERM); sent || err != nil || len(h.signals) != 0 {
		t.Errorf("signal to a zombie: sent=%v err=%v signals=%v", sent, err, h.signals)
	}
}

// The case: a server ran with --data-dir /some/dir and stopped; its
// shims and pods run on. killall without --data-dir finds them by what they
// are and the snapshot mounts through the node record.
func TestRunWithoutDataDir(t *testing.T) {
	h := newFakeHost(t)
	other := filepath.Join(h.root, "some/dir")
	shim := other + "/data/" + testHash + "/bin/containerd-shim-runc-v2"
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	h.addProc(50, 1, shim, shim, "-namespace", "k8s.io", "-id", "aaa", "-address", h.runDir+"/containerd/containerd.sock")
	h.addProc(51, 50, "/pause", "/pause")
	lock, err := os.Create(filepath.Join(h.runDir, NodeLockFile))
	must(t, err)
	must(t, WriteNodeRecord(lock, NodeRecord{DataDir: filepath.Join(h.root, "recorded"), KubeletCgroupRoot: "/"}))
	must(t, lock.Close())
	snapshots := "/agent/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs"
	h.setMounts(h.runDir+"/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs",
		other+snapshots, h.root+"/recorded"+snapshots, h.dataDir+snapshots)

	rep, err := h.runnerFor(t, 99, "").run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.ProcessesKilled != 2 {
		t.Errorf("killed %d processes, want the shim and its pod", rep.ProcessesKilled)
	}
	// The default data dir is nobody's here: its mount is not ours.
	want := []string{other + snapshots, h.runDir + "/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs", h.root + "/recorded" + snapshots}
	if !slices.Equal(h.unmounts, want) {
		t.Errorf("unmounts =\n%s\nwant\n%s", strings.Join(h.unmounts, "\n"), strings.Join(want, "\n"))
	}
}

// A node process that outlives SIGKILL keeps everything it uses: removing
// its rules, links and mounts would leave it running half dismantled.
func TestRunKeepsHostStateWhileANodeRuns(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall", "--data-dir", "/some/empty/dir")
	h.addProc(40, 1, "/usr/local/bin/skiff", "skiff", "server")
	h.unkillable[40] = true
	h.setMounts(h.runDir + "/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs")
	for _, b := range []string{"ip", "iptables-save", "iptables-restore", "nft"} {
		h.installed[b] = true
	}
	r := h.runnerFor(t, 99, "/some/empty/dir")
	r.grace = 20 * time.Millisecond
	_, err := r.run(context.Background())
	if !errors.Is(err, errNodeRunning) || !strings.Contains(err.Error(), "40 (skiff server)") {
		t.Fatalf("err = %v, want the surviving server named", err)
	}
	if want := []string{"40:terminated", "40:killed"}; !slices.Equal(h.signals[:2], want) {
		t.Errorf("signals = %v, want %v first", h.signals, want)
	}
	if len(h.unmounts) != 0 || len(h.calls) != 0 {
		t.Errorf("dismantled a running node: unmounts %v, commands %v", h.unmounts, h.calls)
	}
	for _, d := range h.stateDirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed while the node runs", d)
		}
	}
}

func TestNodeRecord(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadNodeRecord(dir); ok || err != nil {
		t.Errorf("no record: ok=%v err=%v, want neither", ok, err)
	}
	f, err := os.Create(filepath.Join(dir, NodeLockFile))
	must(t, err)
	defer f.Close()
	if _, ok, err := ReadNodeRecord(dir); ok || err != nil {
		t.Errorf("empty lock of an older skiff: ok=%v err=%v, want neither", ok, err)
	}
	must(t, WriteNodeRecord(f, NodeRecord{DataDir: "/a/much/longer/data/dir", KubeletCgroupRoot: "/x"}))
	want := NodeRecord{DataDir: "/d", KubeletCgroupRoot: "/"}
	must(t, WriteNodeRecord(f, want)) // a restart rewrites it, shorter
	got, ok, err := ReadNodeRecord(dir)
	if !ok || err != nil || got != want {
		t.Errorf("ReadNodeRecord = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	must(t, os.WriteFile(filepath.Join(dir, NodeLockFile), []byte(`{"dataDir":"relative","kubeletCgroupRoot":"x"}`), 0o600))
	if got, ok, err := ReadNodeRecord(dir); !ok || err != nil || got != (NodeRecord{}) {
		t.Errorf("relative paths: %+v, %v, %v; want them dropped", got, ok, err)
	}
	must(t, os.WriteFile(filepath.Join(dir, NodeLockFile), []byte("{"), 0o600))
	if _, _, err := ReadNodeRecord(dir); err == nil {
		t.Error("broken record: want an error")
	}
}

// setNS puts pid ("self" for killall) in the mount and network namespaces
// mnt and net, and makes its root directory root (/proc/<pid>/root).
func (h *fakeHost) setNS(pid, mnt, net, root string) {
	dir := filepath.Join(h.procRoot, pid)
	must(h.t, os.MkdirAll(filepath.Join(dir, "ns"), 0o755))
	must(h.t, os.Symlink(mnt, filepath.Join(dir, "ns", "mnt")))
	must(h.t, os.Symlink(net, filepath.Join(dir, "ns", "net")))
	if root != "" {
		must(h.t, os.Symlink(root, filepath.Join(dir, "root")))
	}
}

// A node in other namespaces that shares the host's /run and /var/lib/cni
// (`unshare --mount --net` with no tmpfs on /run) keeps its state dirs; one
// with a private /run does not keep the host's.
func TestRunKeepsStateDirsANodeElsewhereUses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		shared   bool
		wantKept int
	}{
		{"shared /run", true, 3},
		{"private /run", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t)
			h.addProc(1, 0, "/sbin/init", "/sbin/init")
			h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
			h.setNS("self", "mnt:[1]", "net:[1]", "")
			h.addProc(40, 1, "/usr/local/bin/skiff", "skiff", "agent", "--data-dir", "/srv/agent")
			root := "/"
			if !tc.shared {
				// The node's own tree, with directories at the same paths.
				root = filepath.Join(h.root, "agent-root")
				for _, d := range h.stateDirs {
					must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
				}
			}
			h.setNS("40", "mnt:[2]", "net:[2]", root)
			// cni-aaa is a pod of a node here; cni-bbb, mounted out of
			// sight, may be the other node's.
			h.setMounts(h.netns + "/cni-aaa")

			rep, err := h.runnerFor(t, 99, "").run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.NodesElsewhere != 1 || rep.ProcessesKilled != 0 {
				t.Errorf("report %+v, want the agent left alone", rep)
			}
			if rep.DirsInUseElsewhere != tc.wantKept || rep.DirsRemoved != 3-tc.wantKept {
				t.Errorf("kept %d, removed %d state dirs; want %d kept", rep.DirsInUseElsewhere, rep.DirsRemoved, tc.wantKept)
			}
			for _, d := range h.stateDirs {
				_, err := os.Stat(d)
				if exists := err == nil; exists != tc.shared {
					t.Errorf("%s exists: %v, want %v", d, exists, tc.shared)
				}
			}
			if _, err := os.Stat(h.netns + "/cni-bbb"); (err == nil) != tc.shared {
				t.Errorf("network namespace file of another node: %v, want kept only with a shared /run", err)
			}
			if _, err := os.Stat(h.netns + "/cni-aaa"); err == nil {
				t.Error("network namespace file whose mount was ours is left")
			}
			if tc.shared && !strings.Contains(rep.String(), "kept 3 state dirs those nodes use") {
				t.Errorf("report line %q does not say the dirs were kept", rep.String())
			}
		})
	}
}

// Orphaned containers are told from another kubelet's, which shares the
// host's cgroup namespace and layout, by the pod dirs of this node's kubelet.
func TestRunKillsOnlyThisKubeletsOrphanedContainers(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	h.addProc(10, 1, "/web", "/web")
	h.addProc(20, 1, "/ci-runner", "/ci-runner")
	must(t, os.WriteFile(filepath.Join(h.procRoot, "10", "cgroup"), []byte("12:pids:/kubepods/besteffort/pod0f1e-22/c1\n0::/\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(h.procRoot, "20", "cgroup"), []byte("12:pids:/kubepods/besteffort/podc1c1-33/c2\n0::/\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(h.kubeletDir, "pods", "0f1e-22", "volumes"), 0o755))
	lock, err := os.Create(filepath.Join(h.runDir, NodeLockFile))
	must(t, err)
	must(t, WriteNodeRecord(lock, NodeRecord{DataDir: h.dataDir, KubeletCgroupRoot: "/"}))
	must(t, lock.Close())
	h.setMounts()

	rep, err := h.runner(t, 99).run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10:terminated"}; !slices.Equal(h.signals, want) || rep.ProcessesKilled != 1 {
		t.Errorf("signals %v (killed %d), want %v", h.signals, rep.ProcessesKilled, want)
	}
}

// holdNodeLock takes the node lock as a (re)started node would, and lists
// it in the fake /proc/locks under pid.
func (h *fakeHost) holdNodeLock(pid int) *os.File {
	f, err := LockNode(h.runDir)
	must(h.t, err)
	h.t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	must(h.t, err)
	locks := fmt.Sprintf("1: POSIX  ADVISORY  WRITE 5 00:1b:%d 0 EOF\n2: FLOCK  ADVISORY  WRITE %d 00:1b:%d 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 7 00:1b:%d 0 EOF\n",
		fi.Sys().(*syscall.Stat_t).Ino+1, pid, fi.Sys().(*syscall.Stat_t).Ino, fi.Sys().(*syscall.Stat_t).Ino)
	must(h.t, os.WriteFile(filepath.Join(h.procRoot, "locks"), []byte(locks), 0o644))
	return f
}

// A node (re)started after the processes were stopped holds the node lock:
// killall names it and dismantles nothing.
func TestRunRefusesWhenTheNodeLockIsHeld(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	// Not a skiff node by its looks (a wrapper), but it holds the lock.
	h.addProc(77, 1, "/usr/bin/flock", "flock", "-n", h.runDir+"/node.lock", "skiff", "server")
	h.holdNodeLock(77)
	h.setMounts(h.runDir + "/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs")
	for _, b := range []string{"ip", "iptables-save", "iptables-restore", "nft"} {
		h.installed[b] = true
	}
	_, err := h.runner(t, 99).run(context.Background())
	if !errors.Is(err, errNodeRunning) || !strings.Contains(err.Error(), "77 (flock -n "+h.runDir+"/node.lock skiff server) holds the node lock") {
		t.Fatalf("err = %v, want the lock holder named", err)
	}
	if len(h.unmounts) != 0 || len(h.calls) != 0 {
		t.Errorf("dismantled a running node: unmounts %v, commands %v", h.unmounts, h.calls)
	}
	for _, d := range h.stateDirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed while the node runs", d)
		}
	}
}

// killall holds the node lock while it dismantles: a node starting then
// is refused by the lock, and gets it once killall is done.
func TestRunHoldsTheNodeLock(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	h.setMounts()
	h.installed["ip"] = true
	r := h.runner(t, 99)
	h.outputs["ip -o link show"] = ""
	var during error
	h.onRun = func(string) {
		f, err := LockNode(h.runDir)
		if err == nil {
			f.Close()
		}
		during = err
	}
	if _, err := r.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(during, ErrNodeLocked) {
		t.Errorf("a node starting while killall ran: %v, want ErrNodeLocked", during)
	}
	f, err := LockNode(h.runDir)
	if err != nil {
		t.Fatalf("after killall: %v", err)
	}
	f.Close()
}

// A node in other namespaces sharing the host's /run holds the lock for
// itself: killall goes on, and keeps the run dir.
func TestRunWithTheLockOfANodeElsewhere(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	h.setNS("self", "mnt:[1]", "net:[1]", "")
	h.addProc(40, 1, "/usr/local/bin/skiff", "skiff", "agent")
	h.setNS("40", "mnt:[2]", "net:[2]", "/")
	h.holdNodeLock(40)
	h.setMounts()
	rep, err := h.runner(t, 99).run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.runDir, NodeLockFile)); err != nil || rep.DirsInUseElsewhere != 3 {
		t.Errorf("the other node's lock: %v; report %+v", err, rep)
	}
}

// On a host where no node ever ran, the run dir killall makes to hold the
// lock is removed again and not reported as a node's state.
func TestRunWithoutRunDir(t *testing.T) {
	h := newFakeHost(t)
	h.addProc(1, 0, "/sbin/init", "/sbin/init")
	h.addProc(99, 1, "/usr/local/bin/skiff", "skiff", "killall")
	h.setMounts()
	must(t, os.RemoveAll(h.runDir))
	rep, err := h.runner(t, 99).run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.runDir); !errors.Is(err, os.ErrNotExist) || rep.DirsRemoved != 2 {
		t.Errorf("run dir: %v; removed %d dirs, want the 2 that were there", err, rep.DirsRemoved)
	}
}
