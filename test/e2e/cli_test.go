package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVersionNamesSkiffAndKubernetes(t *testing.T) {
	out, err := runToExit(t, 30*time.Second, "--version")
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "skiff version ") || !strings.Contains(out, "kubernetes v1.37.") {
		t.Fatalf("--version output %q", out)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"server", "--help"}, {"kubectl", "--help"}, {"version", "--help"}} {
		out, err := runToExit(t, 30*time.Second, args...)
		if err != nil || !strings.Contains(out, "Usage:") {
			t.Errorf("skiff %v: err=%v\n%s", args, err, out)
		}
	}
}

// TestKubectlThroughSymlinkUsesServerKubeconfig runs the binary as
// `kubectl` and as `skiff kubectl` against a running server.
func TestKubectlThroughSymlinkUsesServerKubeconfig(t *testing.T) {
	s := newServer(t)
	s.Start()
	link := filepath.Join(t.TempDir(), "kubectl")
	if err := os.Symlink(skiffBin(t), link); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{
		{link, "--kubeconfig", s.Kubeconfig, "get", "namespace", "kube-system", "-o", "name"},
		{skiffBin(t), "kubectl", "--kubeconfig", s.Kubeconfig, "get", "namespace", "kube-system", "-o", "name"},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "namespace/kube-system" {
			t.Errorf("%v: err=%v output %q", argv, err, out)
		}
	}
	// With no kubeconfig chosen, skiff kubectl reads SKIFF_WRITE_KUBECONFIG
	// (else the default path) so that it needs no flags on a server.
	cmd := exec.Command(skiffBin(t), "kubectl", "get", "namespace", "default", "-o", "name")
	cmd.Env = append(cleanEnv(), "SKIFF_WRITE_KUBECONFIG="+s.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "namespace/default" {
		t.Errorf("skiff kubectl with no flags: err=%v output %q", err, out)
	}
	s.Stop()
}

// TestCheckConfig runs `skiff check-config` on this host, which can run a node:
// every essential check passes, and the report names what it checked.
func TestCheckConfig(t *testing.T) {
	out, err := runToExit(t, time.Minute, "check-config", "--data-dir", t.TempDir())
	if err != nil {
		t.Fatalf("check-config failed on a host that runs the node tests: %v\n%s", err, out)
	}
	for _, want := range []string{"overlay", "br_netfilter", "vxlan", "iptables"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
}
