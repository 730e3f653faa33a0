package killall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Mount is one line of /proc/<pid>/mountinfo.
type Mount struct {
	ID, ParentID int
	// MountPoint is unescaped: "\040" in the file is a space here.
	MountPoint string
	FSType     string
	Source     string
}

// ParseMountInfo reads mountinfo (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// The optional fields before "-" vary in number, so the filesystem type and
// source are found after the separator.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed %q", n, line)
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, Mount{
			ID:         id,
			ParentID:   parent,
			MountPoint: unescapeMountPath(f[4]),
			FSType:     f[sep+1],
			Source:     unescapeMountPath(f[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountPath undoes the kernel's octal escapes of space, tab,
// newline and backslash ("\040", "\011", "\012", "\134").
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SelectMounts returns the mounts at or under any of roots, plus the CNI
// network namespaces (netnsDir/cni-*), deepest first so that a mount is
// undone before the one it sits on. Mounts stacked on one point all appear:
// each unmount removes the topmost.
func SelectMounts(mounts []Mount, roots []string, netnsDir string) []Mount {
	var out []Mount
	for _, m := range mounts {
		if isNetns(m.MountPoint, netnsDir) {
			out = append(out, m)
			continue
		}
		for _, r := range roots {
			if under(m.MountPoint, r) {
				out = append(out, m)
				break
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		di, dj := depth(out[i].MountPoint), depth(out[j].MountPoint)
		if di != dj {
			return di > dj
		}
		if out[i].MountPoint != out[j].MountPoint {
			return out[i].MountPoint > out[j].MountPoint
		}
		// Later mounts on one point sit on top; IDs are a fair guess of order.
		return out[i].ID > out[j].ID
	})
	return out
}

func isNetns(p, netnsDir string) bool {
	return filepath.Dir(p) == netnsDir && strings.HasPrefix(filepath.Base(p), "cni-")
}

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

func (r *runner) readMounts() ([]Mount, error) {
	path := filepath.Join(r.procRoot, "self", "mountinfo")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	ms, err := ParseMountInfo(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return ms, nil
}

// mountRoots are the trees whose mounts are ours: containerd's state and
// rootfs mounts, the kubelet's volume and plugin mounts, the snapshots of
// every data dir known (given, recorded or named by a stopped process).
func (r *runner) mountRoots() []string {
	paths := []string{
		r.runDir,
		filepath.Join(r.kubeletDir, "pods"),
		filepath.Join(r.kubeletDir, "plugins"),
	}
	for _, d := range r.knownDataDirs() {
		paths = append(paths, filepath.Join(d, "agent", "containerd"))
	}
	var roots []string
	for _, p := range paths {
		roots = append(roots, aliases(p)...)
	}
	return roots
}

func (r *runner) unmount(_ context.Context, rep *Report) error {
	start := time.Now()
	mounts, err := r.readMounts()
	if err != nil {
		return err
	}
	var errs []error
	unmounted := map[string]bool{}
	for _, m := range SelectMounts(mounts, r.mountRoots(), r.netnsDir) {
		unmounted[m.MountPoint] = true
		if err := r.sys.Unmount(m.MountPoint); err != nil {
			// Detaching a parent also took its children; a stacked
			// duplicate may already be gone.
			if isGone(err) {
				r.log.Debug("mount already gone", "path", m.MountPoint)
				continue
			}
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m.MountPoint, err))
			continue
		}
		rep.MountsUnmounted++
		r.log.Debug("unmounted", "path", m.MountPoint, "type", m.FSType)
	}
	// A network namespace is a file bind-mounted onto itself; with the mount
	// gone the file is an empty placeholder that would fool a later CNI ADD.
	files, err := filepath.Glob(filepath.Join(r.netnsDir, "cni-*"))
	if err != nil {
		errs = append(errs, fmt.Errorf("listing %s: %w", r.netnsDir, err))
	}
	// A skiff node in other namespaces sharing this dir (no private /run)
	// has its pods' namespaces mounted on files here, out of our sight:
	// only the files whose mounts were ours go.
	_, shared := r.usedElsewhere(r.netnsDir)
	for _, f := range files {
		if shared && !unmounted[f] {
			continue
		}
		if err := r.sys.Remove(f); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("removing network namespace %s: %w", f, err))
			continue
		}
		rep.NetnsRemoved++
	}
	r.log.Info("unmounted", "mounts", rep.MountsUnmounted, "netns", rep.NetnsRemoved, "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}
