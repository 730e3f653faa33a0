package killall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockNode takes the node lock after the processes stopped and holds it
// for the rest of the run (run closes it), the way a starting node takes
// it (LockNode): a node started between the last process snapshot and the
// end would otherwise lose its mounts, links and rules halfway. A lock
// someone holds means such a node runs: errNodeRunning, naming it.
//
// A node in other namespaces that shares this run dir (usedElsewhere)
// holds the same lock for itself; killall then goes on without it and
// keeps the run dir.
func (r *runner) lockNode(_ context.Context, _ *Report) error {
	_, statErr := os.Lstat(r.runDir)
	f, err := LockNode(r.runDir)
	if err == nil {
		r.lock = f
		// Made only to hold the lock: not state of a node's to report.
		r.madeRunDir = errors.Is(statErr, fs.ErrNotExist)
		return nil
	}
	if !errors.Is(err, ErrNodeLocked) {
		return err
	}
	if pid, ok := r.usedElsewhere(r.runDir); ok {
		r.log.Info("the node lock is held by a skiff node in other namespaces sharing the run dir; going on without it", "pid", pid)
		return nil
	}
	path := filepath.Join(r.runDir, NodeLockFile)
	return fmt.Errorf("%w: %s holds the node lock %s (started again after killall stopped it?); its mounts, links, rules and state are kept", errNodeRunning, r.lockHolder(path), path)
}

// lockHolder names the process holding the flock on path, from
// /proc/locks ("1: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"),
// as "<pid> (<cmdline>)"; "a process" when it cannot tell.
func (r *runner) lockHolder(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "a process"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "a process"
	}
	f, err := os.Open(filepath.Join(r.procRoot, "locks"))
	if err != nil {
		return "a process"
	}
	defer f.Close()
	ino := ":" + strconv.FormatUint(st.Ino, 10)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A waiter reads "1: -> FLOCK ...": not the holder.
		if len(fields) < 6 || fields[1] != "FLOCK" || !strings.HasSuffix(fields[5], ino) {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil {
			continue
		}
		if p, err := readProc(r.procRoot, pid); err == nil && len(p.Cmdline) > 0 {
			return fmt.Sprintf("%d (%s)", pid, strings.Join(p.Cmdline, " "))
		}
		return strconv.Itoa(pid)
	}
	return "a process"
}
