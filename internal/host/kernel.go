package host

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KernelRelease returns the running kernel's release (uname -r), read from
// /proc so that a fake tree can supply it.
func (h Host) KernelRelease() (string, error) {
	data, err := os.ReadFile(h.ProcPath("sys/kernel/osrelease"))
	if err != nil {
		return "", fmt.Errorf("reading the kernel release: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// HasFilesystem reports whether the kernel lists the file-system type name
// in /proc/filesystems, that is, whether it is built in or already loaded.
func (h Host) HasFilesystem(name string) (bool, error) {
	data, err := os.ReadFile(h.ProcPath("filesystems"))
	if err != nil {
		return false, fmt.Errorf("reading the kernel's file systems: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// "nodev\toverlay" or "\text4"
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[len(f)-1] == name {
			return true, nil
		}
	}
	return false, nil
}

// SwapDevices returns how many swap areas are active, from /proc/swaps.
func (h Host) SwapDevices() (int, error) {
	data, err := os.ReadFile(h.ProcPath("swaps"))
	if err != nil {
		return 0, fmt.Errorf("reading swap areas: %w", err)
	}
	n := 0
	for i, line := range strings.Split(string(data), "\n") {
		if i > 0 && strings.TrimSpace(line) != "" { // line 0 is the header
			n++
		}
	}
	return n, nil
}

// FreeSpace returns the bytes available to unprivileged users on the file
// system that would hold path. A data dir that does not exist yet is
// measured at its nearest existing parent, which is returned as measured.
func (h Host) FreeSpace(path string) (free uint64, measured string, err error) {
	measured = filepath.Clean(path)
	for {
		if _, err := os.Stat(measured); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		parent := filepath.Dir(measured)
		if parent == measured {
			break
		}
		measured = parent
	}
	st, err := h.statfs(measured)
	if err != nil {
		return 0, measured, fmt.Errorf("measuring free space at %s: %w", measured, err)
	}
	return st.Bavail * uint64(st.Bsize), measured, nil
}
