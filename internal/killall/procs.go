package killall

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one process in a snapshot of /proc.
type Proc struct {
	PID, PPID int
	// Exe is where /proc/<pid>/exe points; empty for kernel threads and
	// processes we may not inspect.
	Exe string
	// Cmdline is the process's argv.
	Cmdline []string
	// StartTime (clock ticks after boot) tells a process from a later one
	// that reused its PID while we waited.
	StartTime uint64
	// MntNS and NetNS name the process's mount and network namespaces as
	// /proc/<pid>/ns/{mnt,net} do ("mnt:[4026531841]"); empty when unreadable.
	MntNS, NetNS string
	// Cgroups are the process's cgroup paths, one per hierarchy, from
	// /proc/<pid>/cgroup ("/kubepods/besteffort/pod<uid>/<container>").
	Cgroups []string
}

// Identity says how skiff's processes are recognised, whatever data dir
// their node uses.
type Identity struct {
	// SkiffExes are paths of skiff binaries: the running one and the targets
	// of the multicall links in the unpacked payloads. A binary named
	// "skiff" counts as well.
	SkiffExes []string
	// RunDir is skiff's run dir: a containerd shim whose -address is the
	// containerd socket under it is skiff's.
	RunDir string
	// CgroupRoots are the kubelet cgroup roots ("/" by default) that the
	// nodes recorded in RunDir use: a process in <root>/kubepods is one of
	// their containers even after its shim is gone.
	CgroupRoots []string
	// PodUIDs are the UIDs of the pods this node's kubelet has a directory
	// for (<kubelet root>/pods/<uid>). A process in <root>/kubepods counts
	// only when its pod is one of them: another kubelet sharing the host's
	// cgroup namespace (a second kubelet, CI runners in pods) uses the same
	// cgroup paths for its own pods.
	PodUIDs map[string]bool
	// MntNS and NetNS are killall's own namespaces. A skiff node process
	// that shares neither is another node's (test/e2e/multinode runs agents
	// that way, as a container runtime would): killall can neither see its
	// mounts nor its links and rules, so it leaves it alone.
	MntNS, NetNS string
}

// Roles of skiff's processes.
const (
	roleServer     = "server"
	roleAgent      = "agent"
	roleContainerd = "containerd"
	rolePayload    = "payload"   // runs from an unpacked payload: shim, runc, CNI plugin
	roleShim       = "shim"      // a shim of skiff's containerd run from elsewhere
	roleContainer  = "container" // in the recorded kubelet's pod cgroups
)

// Selection is what SelectProcesses found.
type Selection struct {
	// Stop are the processes to stop, in snapshot order: skiff's servers,
	// agents, containerd, shims and containers in killall's namespaces, and
	// everything they started.
	Stop []Proc
	// Nodes are the processes among Stop that keep a node running (server,
	// agent, containerd, shims and other payload binaries): while one of
	// them lives, the node's host state must stay.
	Nodes []Proc
	// Elsewhere are skiff node processes in other mount and network
	// namespaces, left alone.
	Elsewhere []Proc
	// DataDirs are the data dirs that the processes in Stop name, in the
	// order found: where containerd may have left mounts.
	DataDirs []string
}

// SelectProcesses finds skiff's processes by what they are, not by which
// data dir they use:
//   - `skiff server` and `skiff agent`, and containerd run by skiff's binary
//     under the multicall name "containerd";
//   - whatever runs from an unpacked payload (<data-dir>/data/<hash>/bin/:
//     shims, runc, CNI plugins);
//   - shims whose -address is skiff's containerd socket under id.RunDir;
//   - processes in the pod cgroups of the kubelets recorded in id.RunDir
//     whose pods this node's kubelet has (containers whose shim died);
//
// and everything those started (the pods' processes under their shims).
// Node processes count only in a namespace killall shares (see
// Identity.MntNS); the rest are returned as Elsewhere. self and self's
// ancestors are never chosen, nor PID 1: `sudo skiff killall` run from a
// shell inside a pod must not kill the sudo or the shell.
func SelectProcesses(procs []Proc, self int, id Identity) Selection {
	byPID := make(map[int]Proc, len(procs))
	children := make(map[int][]int, len(procs))
	for _, p := range procs {
		byPID[p.PID] = p
		children[p.PPID] = append(children[p.PPID], p.PID)
	}
	protected := map[int]bool{0: true, 1: true}
	// The loop is bounded by the snapshot's size: a snapshot taken while
	// processes come and go can hold a ppid cycle.
	for pid, n := self, 0; n <= len(procs) && !protected[pid]; n++ {
		protected[pid] = true
		p, ok := byPID[pid]
		if !ok {
			break
		}
		pid = p.PPID
	}

	var sel Selection
	// Walk down from our processes. A protected one (killall run from a
	// shell inside a pod) is passed through, not chosen, so the rest of its
	// pod still goes.
	ours := make(map[int]bool)
	node := make(map[int]bool)
	var queue []int
	for _, p := range procs {
		role := processRole(p, id)
		if role == "" {
			continue
		}
		if role != roleContainer && !sharesNamespace(p, id) {
			sel.Elsewhere = append(sel.Elsewhere, p)
			continue
		}
		ours[p.PID] = true
		node[p.PID] = role != roleContainer
		queue = append(queue, p.PID)
		for _, d := range namedDataDirs(p, role) {
			if !slices.Contains(sel.DataDirs, d) {
				sel.DataDirs = append(sel.DataDirs, d)
			}
		}
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if !ours[c] {
				ours[c] = true
				queue = append(queue, c)
			}
		}
	}
	for _, p := range procs {
		if ours[p.PID] && !protected[p.PID] {
			sel.Stop = append(sel.Stop, p)
			if node[p.PID] {
				sel.Nodes = append(sel.Nodes, p)
			}
		}
	}
	return sel
}

// processRole says which of skiff's processes p is, or "" for none.
func processRole(p Proc, id Identity) string {
	// A binary replaced on disk (an upgrade) reads as "<path> (deleted)".
	exe := strings.TrimSuffix(p.Exe, " (deleted)")
	if exe != "" && payloadDataDir(exe) != "" {
		return rolePayload
	}
	if exe != "" && len(p.Cmdline) > 0 && isSkiffExe(exe, id.SkiffExes) {
		// Matching any skiff command would kill an admin's `skiff kubectl
		// logs -f`; only the node's long-running processes count.
		if filepath.Base(p.Cmdline[0]) == "containerd" {
			return roleContainerd
		}
		switch sub := subcommand(p.Cmdline); sub {
		case roleServer, roleAgent:
			return sub
		}
	}
	if len(p.Cmdline) > 0 && strings.HasPrefix(filepath.Base(p.Cmdline[0]), "containerd-shim") && id.RunDir != "" {
		if addr, ok := flagValue(p.Cmdline, "address"); ok && addr == filepath.Join(id.RunDir, "containerd", "containerd.sock") {
			return roleShim
		}
	}
	for _, cg := range p.Cgroups {
		for _, root := range id.CgroupRoots {
			// cgroupfs names the pods' parent kubepods, systemd kubepods.slice.
			for _, parent := range []string{"kubepods", "kubepods.slice"} {
				base := filepath.Join(root, parent)
				if under(cg, base) && id.PodUIDs[podUIDFromCgroup(cg[len(base):])] {
					return roleContainer
				}
			}
		}
	}
	return ""
}

// podUIDFromCgroup finds the pod UID in a cgroup path below kubepods, as
// the kubelet names pods' cgroups: "/besteffort/pod<uid>/<container>" with
// the cgroupfs driver, and
// "/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _ for ->.slice/..."
// with the systemd driver. It returns "" when the path names no pod.
func podUIDFromCgroup(rel string) string {
	for seg := range strings.SplitSeq(rel, "/") {
		if uid, ok := strings.CutPrefix(seg, "pod"); ok && uid != "" {
			return uid
		}
		if name, ok := strings.CutSuffix(seg, ".slice"); ok {
			if i := strings.LastIndex(name, "-pod"); i >= 0 && i+4 < len(name) {
				return strings.ReplaceAll(name[i+4:], "_", "-")
			}
		}
	}
	return ""
}

// podUIDs lists the pods the kubelet rooted at kubeletDir has directories
// for; none when it has no pods dir.
func podUIDs(kubeletDir string) map[string]bool {
	entries, err := os.ReadDir(filepath.Join(kubeletDir, "pods"))
	if err != nil {
		return nil
	}
	uids := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			uids[e.Name()] = true
		}
	}
	return uids
}

func isSkiffExe(exe string, skiffExes []string) bool {
	return filepath.Base(exe) == "skiff" || slices.Contains(skiffExes, exe)
}

// payloadDataDir returns D when exe is D/data/<hash>/bin/<name>, the layout
// of an unpacked payload (internal/payload), and "" otherwise. The hash is
// 32 hex digits, so an unrelated .../data/x/bin/ is not taken for ours.
func payloadDataDir(exe string) string {
	bin := filepath.Dir(exe)
	hash := filepath.Dir(bin)
	data := filepath.Dir(hash)
	if filepath.Base(bin) != "bin" || filepath.Base(data) != "data" || !isPayloadHash(filepath.Base(hash)) {
		return ""
	}
	return filepath.Dir(data)
}

func isPayloadHash(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// sharesNamespace reports whether p is in killall's mount or network
// namespace, where its mounts or its links and rules are the ones killall
// removes. Unknown namespaces count as shared: a process we cannot inspect
// is stopped rather than dismantled around.
func sharesNamespace(p Proc, id Identity) bool {
	if p.MntNS == "" || p.NetNS == "" || id.MntNS == "" || id.NetNS == "" {
		return true
	}
	return p.MntNS == id.MntNS || p.NetNS == id.NetNS
}

// namedDataDirs are the data dirs p's role and argv name.
func namedDataDirs(p Proc, role string) []string {
	var dir string
	switch role {
	case rolePayload:
		dir = payloadDataDir(strings.TrimSuffix(p.Exe, " (deleted)"))
	case roleContainerd:
		cfg, _ := flagValue(p.Cmdline, "config")
		if d, ok := strings.CutSuffix(cfg, "/agent/etc/containerd/config.toml"); ok {
			dir = d
		}
	case roleServer, roleAgent:
		d, ok := flagValue(p.Cmdline, "data-dir")
		if !ok {
			// SKIFF_DATA_DIR or a config file may have moved it; the node
			// records its data dir in the run dir too.
			d = DefaultDataDir
		}
		dir = d
	}
	if dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		return nil
	}
	return []string{filepath.Clean(dir)}
}

// subcommand is argv's first word after the program that is not a flag.
func subcommand(argv []string) string {
	for i := 1; i < len(argv); i++ {
		if !strings.HasPrefix(argv[i], "-") {
			return argv[i]
		}
	}
	return ""
}

// flagValue finds -name or --name in argv, as "--name value" or
// "--name=value".
func flagValue(argv []string, name string) (string, bool) {
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimLeft(a, "-")
		if a == name && i+1 < len(argv) {
			return argv[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// ReadProcs takes a snapshot of the processes in procRoot. Processes that
// exit while it reads are left out.
func ReadProcs(procRoot string) ([]Proc, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", procRoot, err)
	}
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		p, err := readProc(procRoot, pid)
		if err != nil {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

func readProc(procRoot string, pid int) (Proc, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	st, err := readStat(dir)
	if err != nil {
		return Proc{}, err
	}
	p := Proc{PID: pid, PPID: st.ppid, StartTime: st.start}
	p.Exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(b) > 0 {
		p.Cmdline = strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	}
	p.MntNS, _ = os.Readlink(filepath.Join(dir, "ns", "mnt"))
	p.NetNS, _ = os.Readlink(filepath.Join(dir, "ns", "net"))
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.Cgroups = parseCgroups(string(b))
	}
	return p, nil
}

// parseCgroups reads /proc/<pid>/cgroup, "hierarchy-ID:controllers:path" a
// line (cgroup v2's one line is "0::/path"), and returns the paths.
func parseCgroups(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		parts := strings.SplitN(strings.TrimRight(line, "\n"), ":", 3)
		if len(parts) == 3 && strings.HasPrefix(parts[2], "/") && !slices.Contains(out, parts[2]) {
			out = append(out, parts[2])
		}
	}
	return out
}

type procStat struct {
	state byte
	ppid  int
	start uint64
}

func readStat(dir string) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// parseStat reads /proc/<pid>/stat. The command name in parentheses may hold
// spaces and parentheses itself, so the fields are counted from the last ')'.
func parseStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed stat %q", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat %q", s)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat ppid %q: %w", f[1], err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat starttime %q: %w", f[19], err)
	}
	return procStat{state: f[0][0], ppid: ppid, start: start}, nil
}

// alive reports whether p still runs: a zombie has released everything we
// care about, and a new process under p's PID is not p.
func (r *runner) alive(p Proc) bool {
	st, err := readStat(filepath.Join(r.procRoot, strconv.Itoa(p.PID)))
	if err != nil {
		return false
	}
	return st.state != 'Z' && st.state != 'X' && st.start == p.StartTime
}

// errNodeRunning means a node process outlived SIGKILL (or could not be
// signalled): its mounts, links and rules must stay, or it would run on
// half dismantled.
var errNodeRunning = errors.New("a skiff node process still runs")

// identity is how this run recognises skiff's processes: by the running
// binary, the payloads' multicall links, the run dir and what the nodes
// recorded there, and killall's own namespaces.
func (r *runner) identity() Identity {
	id := Identity{RunDir: r.runDir}
	if r.selfExe != "" {
		id.SkiffExes = append(id.SkiffExes, aliases(r.selfExe)...)
	}
	for _, d := range r.knownDataDirs() {
		// The multicall links point at the skiff binary that unpacked the
		// payload, which may be installed under another name.
		links, _ := filepath.Glob(filepath.Join(d, "data", "*", "bin", "containerd"))
		for _, l := range links {
			if t, err := filepath.EvalSymlinks(l); err == nil && !slices.Contains(id.SkiffExes, t) {
				id.SkiffExes = append(id.SkiffExes, t)
			}
		}
	}
	if rec, ok := r.record(); ok && rec.KubeletCgroupRoot != "" {
		id.CgroupRoots = []string{rec.KubeletCgroupRoot}
		id.PodUIDs = podUIDs(r.kubeletDir)
	}
	self := filepath.Join(r.procRoot, "self", "ns")
	id.MntNS, _ = os.Readlink(filepath.Join(self, "mnt"))
	id.NetNS, _ = os.Readlink(filepath.Join(self, "net"))
	return id
}

// stopProcesses asks our processes to stop, waits, then kills what is left.
// It looks again a few times because a dying server or containerd may have
// started a child in between. It returns errNodeRunning (wrapped) when a
// node process survives.
func (r *runner) stopProcesses(ctx context.Context, rep *Report) error {
	start := time.Now()
	type key struct {
		pid   int
		start uint64
	}
	killed := map[key]bool{}
	elsewhere := map[int]bool{}
	var errs []error
	var nodes []Proc
	for round := 0; round <= killRounds; round++ {
		procs, err := ReadProcs(r.procRoot)
		if err != nil {
			return errors.Join(append(errs, err, errNodeRunning)...)
		}
		// Each round knows the data dirs the last one found, and with them
		// the skiff binaries their payloads link to.
		sel := SelectProcesses(procs, r.self, r.identity())
		r.addDataDirs(sel.DataDirs)
		for _, p := range sel.Elsewhere {
			if !elsewhere[p.PID] {
				elsewhere[p.PID] = true
				r.elsewhere = append(r.elsewhere, p)
				r.log.Info("leaving alone a skiff process in other namespaces", "pid", p.PID, "cmd", strings.Join(p.Cmdline, " "))
			}
		}
		nodes = sel.Nodes
		var remaining []Proc
		for _, p := range sel.Stop {
			// A process that outlived SIGKILL (stuck in the kernel) is not
			// waited for again; later rounds are for newcomers.
			if !killed[key{p.PID, p.StartTime}] {
				remaining = append(remaining, p)
			}
		}
		if len(remaining) == 0 || round == killRounds {
			break
		}
		sig := syscall.SIGTERM
		if round > 0 {
			// A newcomer was started by a dying parent: no more grace.
			sig = syscall.SIGKILL
		}
		var signalled []Proc
		for _, p := range remaining {
			sent, err := r.signal(p, sig)
			if err != nil {
				errs = append(errs, err)
			}
			if !sent {
				continue
			}
			signalled = append(signalled, p)
			killed[key{p.PID, p.StartTime}] = true
			r.log.Debug("signalled process", "pid", p.PID, "signal", sig.String(), "cmd", strings.Join(p.Cmdline, " "))
		}
		left := r.waitGone(ctx, signalled)
		if sig == syscall.SIGTERM && len(left) > 0 {
			r.log.Debug("killing processes that ignored SIGTERM", "count", len(left))
			for _, p := range left {
				if _, err := r.signal(p, syscall.SIGKILL); err != nil {
					errs = append(errs, err)
				}
			}
			r.waitGone(ctx, left)
		}
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
	}
	rep.ProcessesKilled = len(killed)
	rep.NodesElsewhere = len(elsewhere)
	r.log.Info("stopped processes", "killed", rep.ProcessesKilled, "took", time.Since(start).Round(time.Millisecond))
	var running []string
	for _, p := range nodes {
		if r.alive(p) {
			running = append(running, fmt.Sprintf("%d (%s)", p.PID, strings.Join(p.Cmdline, " ")))
		}
	}
	if len(running) > 0 {
		errs = append(errs, fmt.Errorf("%w: %s; its mounts, links, rules and state are kept", errNodeRunning, strings.Join(running, ", ")))
	}
	return errors.Join(errs...)
}

// signal sends sig to p unless p has gone (or is a zombie) or its PID now
// names another process, and reports whether it did.
func (r *runner) signal(p Proc, sig syscall.Signal) (bool, error) {
	if !r.alive(p) {
		return false, nil
	}
	if err := r.sys.Kill(p.PID, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("sending %s to process %d (%s): %w", sig, p.PID, p.Exe, err)
	}
	return true, nil
}

// waitGone waits up to the grace period for procs to exit and returns those
// still alive.
func (r *runner) waitGone(ctx context.Context, procs []Proc) []Proc {
	deadline := time.Now().Add(r.grace)
	left := procs
	for {
		left = slices.DeleteFunc(slices.Clone(left), func(p Proc) bool { return !r.alive(p) })
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		select {
		case <-ctx.Done():
			return left
		case <-time.After(r.poll):
		}
	}
}
