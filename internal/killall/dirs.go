package killall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// removeStateDirs removes runtime and network state that a fresh start
// rebuilds: IPAM leases for pods that no longer exist would otherwise leak
// addresses. The data dir is not among them.
//
// A directory with a mount still under it is left alone: removing it
// recursively would delete the mounted filesystem's contents (a pod's
// host-path volume, say) instead of the mount. A directory that is itself a
// mount point (its own disk, a bind mount) is emptied and kept.
//
// A directory that a skiff node in other namespaces also uses (one started
// with `unshare --mount --net` and no private /run) is kept whole: it holds
// that node's containerd socket, lock and leases.
func (r *runner) removeStateDirs(_ context.Context, rep *Report) error {
	start := time.Now()
	mounts, err := r.readMounts()
	if err != nil {
		return fmt.Errorf("checking for mounts left before removing state: %w", err)
	}
	var errs []error
	for _, dir := range r.stateDirs {
		if pid, ok := r.usedElsewhere(dir); ok {
			rep.DirsInUseElsewhere++
			r.log.Info("keeping a state dir a skiff node in other namespaces uses", "path", dir, "pid", pid)
			continue
		}
		if m, ok := firstMountUnder(mounts, aliases(dir)); ok {
			if m, deeper := mountBelow(mounts, aliases(dir)); deeper {
				errs = append(errs, fmt.Errorf("not removing %s: %s is still mounted", dir, m))
				continue
			}
			if err := r.emptyDir(dir); err != nil {
				errs = append(errs, fmt.Errorf("emptying %s (a mount point, %s): %w", dir, m, err))
				continue
			}
			rep.DirsEmptied++
			continue
		}
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := r.sys.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
			continue
		}
		if dir != r.runDir || !r.madeRunDir {
			rep.DirsRemoved++
		}
		r.log.Debug("removed", "path", dir)
	}
	r.log.Info("removed state dirs", "dirs", rep.DirsRemoved, "emptied", rep.DirsEmptied, "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// usedElsewhere reports whether dir is the very directory (same device and
// inode) that one of the skiff node processes left alone in other
// namespaces sees at the same path, and names that process. A process that
// has exited, or a dir that does not exist here, counts as unused.
func (r *runner) usedElsewhere(dir string) (int, bool) {
	if len(r.elsewhere) == 0 {
		return 0, false
	}
	here, err := os.Stat(dir)
	if err != nil {
		return 0, false
	}
	for _, p := range r.elsewhere {
		// /proc/<pid>/root resolves paths in p's mount namespace.
		there, err := os.Stat(filepath.Join(r.procRoot, strconv.Itoa(p.PID), "root", dir))
		if err == nil && os.SameFile(here, there) {
			return p.PID, true
		}
	}
	return 0, false
}

// mountBelow finds a mount strictly inside one of dirs.
func mountBelow(mounts []Mount, dirs []string) (string, bool) {
	for _, m := range mounts {
		for _, d := range dirs {
			if m.MountPoint != d && under(m.MountPoint, d) {
				return m.MountPoint, true
			}
		}
	}
	return "", false
}

// emptyDir removes what is inside dir, not dir.
func (r *runner) emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := r.sys.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	r.log.Debug("emptied mount point", "path", dir)
	return errors.Join(errs...)
}

func firstMountUnder(mounts []Mount, dirs []string) (string, bool) {
	for _, m := range mounts {
		for _, d := range dirs {
			if under(m.MountPoint, d) {
				return m.MountPoint, true
			}
		}
	}
	return "", false
}
