package killall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
func (r *runner) removeStateDirs(_ context.Context, rep *Report) error {
	start := time.Now()
	mounts, err := r.readMounts()
	if err != nil {
		return fmt.Errorf("checking for mounts left before removing state: %w", err)
	}
	var errs []error
	for _, dir := range r.stateDirs {
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
		rep.DirsRemoved++
		r.log.Debug("removed", "path", dir)
	}
	r.log.Info("removed state dirs", "dirs", rep.DirsRemoved, "emptied", rep.DirsEmptied, "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
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
