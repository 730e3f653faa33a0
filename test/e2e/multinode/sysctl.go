package multinode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// sysctlName is a dotted sysctl name (kernel.panic, vm.overcommit_memory):
// dot-separated words, so that its /proc/sys path stays under /proc/sys.
var sysctlName = regexp.MustCompile(`^[a-z0-9_-]+(\.[a-z0-9_-]+)*$`)

// FakeSysctls writes values (dotted sysctl name → value) to files under
// dir, one per sysctl, and returns the bind mounts, as source and target
// pairs in name order, that show them at /proc/sys/<name> in a mount
// namespace that makes them. The host's settings are not touched: a
// process in that namespace reads (and writes) the files instead. Every
// sysctl must exist on the host (the file is bound over it).
func FakeSysctls(dir string, values map[string]string) ([]string, error) {
	names := make([]string, 0, len(values))
	for name := range values {
		if !sysctlName.MatchString(name) {
			return nil, fmt.Errorf("fake sysctl %q: not a dotted sysctl name", name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var binds []string
	for _, name := range names {
		target := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
		if _, err := os.Stat(target); err != nil {
			return nil, fmt.Errorf("fake sysctl %s: %w", name, err)
		}
		src := filepath.Join(dir, name)
		if err := os.WriteFile(src, []byte(values[name]+"\n"), 0o644); err != nil {
			return nil, err
		}
		binds = append(binds, src, target)
	}
	return binds, nil
}

// bindScript mounts its first argument's count of source and target pairs
// that follow, then execs the rest of its arguments. Paths come as
// arguments, never inside the script: Go's %q is not shell quoting.
const bindScript = `n=$1; shift
while [ "$n" -gt 0 ]; do mount --bind "$1" "$2"; shift 2; n=$((n-1)); done
exec "$@"
`

// WithFakeSysctls is a command that runs name with args in a private mount
// namespace of its own in which /proc/sys shows values (FakeSysctls under
// dir) instead of the host's settings, so that a test can run skiff with a
// kernel setting of its choosing without changing the host's.
func WithFakeSysctls(dir string, values map[string]string, name string, args ...string) (*exec.Cmd, error) {
	binds, err := FakeSysctls(dir, values)
	if err != nil {
		return nil, err
	}
	full := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-ec", bindScript, "sh", strconv.Itoa(len(binds) / 2)}
	full = append(full, binds...)
	full = append(full, name)
	return exec.Command("unshare", append(full, args...)...), nil
}

// FakeSysctls makes the node's processes, started by Command afterwards,
// see values (dotted sysctl name → value) at /proc/sys instead of the
// host's settings: files under the node's directory bound over the
// host's sysctls in the node's mount namespace. What the node's kubelet
// writes to them stays in the files.
func (nd *Node) FakeSysctls(values map[string]string) error {
	binds, err := FakeSysctls(filepath.Join(nd.Dir, "host", "sysctl"), values)
	if err != nil {
		return fmt.Errorf("node %s: %w", nd.Name, err)
	}
	nd.sysctlBinds = binds
	return nil
}
