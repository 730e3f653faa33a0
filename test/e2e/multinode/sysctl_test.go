package multinode

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestWithFakeSysctls: the command sees the fake values, and what it
// writes to them stays in the files; the host's settings are unchanged.
func TestWithFakeSysctls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip(err)
	}
	before, err := os.ReadFile("/proc/sys/kernel/panic")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	cmd, err := WithFakeSysctls(dir, map[string]string{"kernel.panic": "1234", "vm.overcommit_memory": "2"},
		"/bin/sh", "-ec", `cat /proc/sys/kernel/panic /proc/sys/vm/overcommit_memory; echo 4321 > /proc/sys/kernel/panic`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "1234\n2\n" {
		t.Fatalf("%v: %q, want the fake values", err, out)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "kernel.panic")); err != nil || strings.TrimSpace(string(data)) != "4321" {
		t.Errorf("write to the fake kernel.panic: %q %v", data, err)
	}
	if after, err := os.ReadFile("/proc/sys/kernel/panic"); err != nil || string(after) != string(before) {
		t.Errorf("host's kernel.panic changed: %q, was %q (%v)", after, before, err)
	}
}

func TestFakeSysctlsRefusesPathsOutsideProcSys(t *testing.T) {
	for _, name := range []string{"../etc/passwd", "kernel/panic", "", "kernel..panic"} {
		if _, err := FakeSysctls(t.TempDir(), map[string]string{name: "1"}); err == nil {
			t.Errorf("%q accepted", name)
		}
	}
}
