package killall

import (
	"bytes"
	"context"
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
}

// SelectProcesses returns the processes of the skiff node that uses one of
// dataDirs (the data dir and its symlink-resolved form): what runs from
// <data-dir>/data/ (containerd shims, runc), a containerd or `skiff server`
// whose argv names the data dir, and every descendant of those (the pods'
// processes under their shims). self and self's ancestors are never chosen,
// nor PID 1: `sudo skiff killall --data-dir X` must not kill the sudo or the
// shell that ran it, even though its argv names the data dir.
//
// selfExe is the running skiff binary: a `skiff server` without --data-dir
// uses DefaultDataDir, so it is ours when that is among dataDirs.
//
// The result is in snapshot order.
func SelectProcesses(procs []Proc, self int, selfExe string, dataDirs ...string) []Proc {
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

	// Walk down from our processes. A protected one (killall run from a
	// shell inside a pod) is passed through, not chosen, so the rest of its
	// pod still goes.
	ours := make(map[int]bool)
	var queue []int
	for _, p := range procs {
		if isOurs(p, selfExe, dataDirs) {
			ours[p.PID] = true
			queue = append(queue, p.PID)
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
	var out []Proc
	for _, p := range procs {
		if ours[p.PID] && !protected[p.PID] {
			out = append(out, p)
		}
	}
	return out
}

func isOurs(p Proc, selfExe string, dataDirs []string) bool {
	// A binary replaced on disk (an upgrade) reads as "<path> (deleted)".
	exe := strings.TrimSuffix(p.Exe, " (deleted)")
	for _, d := range dataDirs {
		if exe != "" && under(exe, filepath.Join(d, "data")) && exe != filepath.Join(d, "data") {
			return true
		}
	}
	// Matching any argv that mentions the data dir would kill an admin's
	// `tail -f /var/lib/skiff/...`; only our own programs count.
	sub := subcommand(p.Cmdline)
	isContainerd := len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == "containerd"
	isNode := sub == "server" || sub == "agent"
	if !isContainerd && !isNode {
		return false
	}
	for _, arg := range p.Cmdline[1:] {
		if _, v, ok := strings.Cut(arg, "="); ok && strings.HasPrefix(arg, "-") {
			arg = v
		}
		for _, d := range dataDirs {
			if under(arg, d) {
				return true
			}
		}
	}
	if isNode && !hasFlag(p.Cmdline, "data-dir") && slices.Contains(dataDirs, DefaultDataDir) {
		return filepath.Base(exe) == "skiff" || (selfExe != "" && exe == selfExe)
	}
	return false
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

func hasFlag(argv []string, name string) bool {
	for _, a := range argv {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
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
	return p, nil
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

// stopProcesses asks our processes to stop, waits, then kills what is left.
// It looks again a few times because a dying server or containerd may have
// started a child in between.
func (r *runner) stopProcesses(ctx context.Context, rep *Report) error {
	start := time.Now()
	dataDirs := aliases(r.dataDir)
	type key struct {
		pid   int
		start uint64
	}
	killed := map[key]bool{}
	var errs []error
	for round := 0; round < killRounds; round++ {
		procs, err := ReadProcs(r.procRoot)
		if err != nil {
			errs = append(errs, err)
			break
		}
		var remaining []Proc
		for _, p := range SelectProcesses(procs, r.self, r.selfExe, dataDirs...) {
			// A process that outlived SIGKILL (stuck in the kernel) is not
			// waited for again; later rounds are for newcomers.
			if !killed[key{p.PID, p.StartTime}] {
				remaining = append(remaining, p)
			}
		}
		if len(remaining) == 0 {
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
	r.log.Info("stopped processes", "killed", rep.ProcessesKilled, "took", time.Since(start).Round(time.Millisecond))
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
