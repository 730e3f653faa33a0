package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// skiffNFTables are the nftables tables of skiff's components (the names
// internal/killall's tests read from the bundled modules).
var skiffNFTables = []string{
	"ip kube-proxy", "ip6 kube-proxy", "ip flannel-ipv4", "ip6 flannel-ipv6",
	"ip cni_hostport", "ip6 cni_hostport", "inet skiff-network-policy", "inet skiff-queue-probe",
}

// assertNodeGone checks that nothing of a skiff node with dataDir is left on
// the host: no process, mount, link, firewall rule or table, or run dir.
func assertNodeGone(t *testing.T, dataDir string) {
	t.Helper()
	const sock = "/run/skiff/containerd/containerd.sock"
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		dir := filepath.Join("/proc", e.Name())
		exe, _ := os.Readlink(filepath.Join(dir, "exe"))
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		switch {
		case strings.HasPrefix(exe, dataDir+"/"),
			strings.Contains(string(cmdline), sock),
			strings.Contains(string(cmdline), dataDir) && len(argv) > 1 && (argv[1] == "server" || argv[1] == "agent" || argv[0] == "containerd"):
			t.Errorf("process %s left: %s (%s)", e.Name(), strings.Join(argv, " "), exe)
		}
	}
	if left := shimsUnder(dataDir); len(left) > 0 {
		t.Errorf("pod processes left: %v", left)
	}

	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		for _, root := range []string{"/run/skiff", dataDir, "/var/lib/kubelet/pods", "/var/lib/kubelet/plugins", "/run/netns/cni-"} {
			if strings.HasPrefix(mp, root) {
				t.Errorf("mount left: %s", sc.Text())
			}
		}
	}
	if _, err := os.Stat("/run/skiff"); !os.IsNotExist(err) {
		t.Errorf("/run/skiff left (%v)", err)
	}

	links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	for _, line := range strings.Split(string(links), "\n") {
		if strings.Contains(line, " cni0:") || strings.Contains(line, " flannel.") || strings.Contains(line, " flannel-v6.") || strings.Contains(line, "master cni0") {
			t.Errorf("link left: %s", line)
		}
	}
	if _, err := exec.LookPath("iptables-save"); err == nil {
		rules, _ := exec.Command("iptables-save").CombinedOutput()
		for _, mark := range []string{"KUBE-", "FLANNEL-", "CNI-", "SKIFF-NETPOL", "flanneld"} {
			if strings.Contains(string(rules), mark) {
				t.Errorf("iptables rules with %s left:\n%s", mark, rules)
			}
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		tables, _ := exec.Command("nft", "list", "tables").CombinedOutput()
		for _, line := range strings.Split(string(tables), "\n") {
			for _, ours := range skiffNFTables {
				if strings.TrimSpace(line) == "table "+ours {
					t.Errorf("nftables table %s left", ours)
				}
			}
		}
	}
}

// pathWithoutIPTables returns a PATH whose directories hold links to every
// program on the current PATH but the iptables tools: a host with only nft.
func pathWithoutIPTables(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			name := e.Name()
			if strings.Contains(name, "iptables") || strings.HasPrefix(name, "xtables") || strings.HasPrefix(name, "ebtables") || strings.HasPrefix(name, "arptables") {
				continue
			}
			// The first directory on PATH wins, as it would for exec.
			_ = os.Symlink(filepath.Join(d, name), filepath.Join(dir, name))
		}
	}
	return dir
}

// TestKillallWhileRunningNFTablesOnly: on a host with nft and no iptables
// tool, a server runs flannel and kube-proxy in nftables mode and a pod
// with a host port (portmap's nftables table). `skiff killall` naming
// another, empty data dir while the server runs stops the server (it never
// leaves a running node without its network) and removes every table.
func TestKillallWhileRunningNFTablesOnly(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft")
	}
	path := "PATH=" + pathWithoutIPTables(t)
	s := newServerWith(t, "--disable-network-policy")
	s.env = []string{path}
	t.Cleanup(func() {
		s.kill()
		if out, err := exec.Command(bin, "killall").CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	s.Start()
	deployWeb(t, s.Client(), 1, func(spec *corev1.PodSpec) {
		c := &spec.Containers[0]
		c.Image = "skiff.local/skiff/pause:1.0"
		c.Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: int32(freePort(t))}}
	})
	// The tables must be there for their removal to mean anything.
	tables, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v\n%s", err, tables)
	}
	for _, want := range []string{"ip kube-proxy", "ip flannel-ipv4", "ip6 flannel-ipv6", "ip cni_hostport"} {
		if !strings.Contains(string(tables), "table "+want+"\n") {
			t.Errorf("server in nftables mode made no table %s:\n%s", want, tables)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "killall", "--data-dir", t.TempDir())
	cmd.Env = append(cleanEnv(), path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("killall: %v\n%s", err, out)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the server still runs after killall removed its host state:\n%s", out)
	}
	assertNodeGone(t, s.DataDir)
}
