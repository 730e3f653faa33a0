package host

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeSysctls writes the kubelet's kernel defaults under a fake /proc.
func fakeSysctls(t *testing.T) Host {
	t.Helper()
	h := Host{ProcRoot: t.TempDir()}
	for _, d := range KernelDefaults {
		p := h.sysctlPath(d.Key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strconv.Itoa(d.Value)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestCheckKernelDefaults(t *testing.T) {
	h := fakeSysctls(t)
	if err := h.CheckKernelDefaults(); err != nil {
		t.Fatalf("all settings as the kubelet wants them: %v", err)
	}

	// A differing setting is named with its value and the needed one.
	if err := os.WriteFile(h.sysctlPath("kernel.panic"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := h.CheckKernelDefaults()
	if err == nil {
		t.Fatal("kernel.panic=0 accepted")
	}
	for _, want := range []string{"protect-kernel-defaults", "kernel.panic is 0", "needs 10", "sysctl -w kernel.panic=10"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}

	// A missing sysctl is named too.
	if err := os.Remove(h.sysctlPath("vm.overcommit_memory")); err != nil {
		t.Fatal(err)
	}
	if err := h.CheckKernelDefaults(); err == nil || !strings.Contains(err.Error(), "vm.overcommit_memory") {
		t.Errorf("missing vm.overcommit_memory: %v", err)
	}
}
