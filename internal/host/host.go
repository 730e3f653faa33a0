// Package host reads the facts about the machine that a skiff node depends on
// (cgroups, capabilities, kernel modules, packet-filter tools) and makes the
// few adaptations skiff does itself, such as the sysctls pod networking needs.
//
// Every fact is read through a Host, whose file-system roots, PATH lookup and
// statfs can be pointed at a fake tree, so the logic is tested without root
// and without a particular kernel. The zero Host is the real machine.
package host

import (
	"log/slog"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Host is the machine skiff runs on. Empty fields mean the real thing.
type Host struct {
	// ProcRoot is where procfs is mounted; empty means /proc.
	ProcRoot string
	// SysRoot is where sysfs is mounted; empty means /sys.
	SysRoot string
	// Root prefixes every other path read (/dev, /run, /lib/modules, /boot);
	// empty means /.
	Root string
	// LookPath finds an executable on PATH; nil means exec.LookPath.
	LookPath func(file string) (string, error)
	// Statfs reports on the file system that holds path; nil means
	// unix.Statfs. It is a field because a file-system type (cgroup2, tmpfs)
	// cannot be faked with directories.
	Statfs func(path string, st *unix.Statfs_t) error
}

// ProcPath returns elem joined under the procfs root.
func (h Host) ProcPath(elem ...string) string {
	return filepath.Join(append([]string{orDefault(h.ProcRoot, "/proc")}, elem...)...)
}

// SysPath returns elem joined under the sysfs root.
func (h Host) SysPath(elem ...string) string {
	return filepath.Join(append([]string{orDefault(h.SysRoot, "/sys")}, elem...)...)
}

// RootPath returns elem joined under the file-system root.
func (h Host) RootPath(elem ...string) string {
	return filepath.Join(append([]string{orDefault(h.Root, "/")}, elem...)...)
}

// HasExecutable reports whether file is an executable on PATH.
func (h Host) HasExecutable(file string) bool {
	lookPath := h.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	_, err := lookPath(file)
	return err == nil
}

func (h Host) statfs(path string) (unix.Statfs_t, error) {
	var st unix.Statfs_t
	statfs := h.Statfs
	if statfs == nil {
		statfs = unix.Statfs
	}
	err := statfs(path, &st)
	return st, err
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// The functions below ask the real machine; they are what start-up calls.

// CgroupVersion is Host{}.CgroupVersion.
func CgroupVersion() (int, error) { return Host{}.CgroupVersion() }

// CgroupDriver is Host{}.CgroupDriver.
func CgroupDriver() string { return Host{}.CgroupDriver() }

// HasBoundingCapability is Host{}.HasBoundingCapability.
func HasBoundingCapability(capNumber int) (bool, error) {
	return Host{}.HasBoundingCapability(capNumber)
}

// ProxyMode is Host{}.ProxyMode.
func ProxyMode() (string, error) { return Host{}.ProxyMode() }

// EnsureSysctls is Host{}.EnsureSysctls.
func EnsureSysctls(log *slog.Logger) error { return Host{}.EnsureSysctls(log) }
