package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNoDefaultRoute runs a server with its node in a network namespace
// whose only network is one /24 and no default route (an air-gapped LAN,
// K3s#1144): with nothing but loopback start-up stops at once asking for
// --node-ip or --advertise-address; with the LAN it picks the LAN address,
// and a host process reaches the kubernetes Service's ClusterIP through the
// route skiff adds for the service network.
func TestNoDefaultRoute(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	bin := skiffBin(t)
	const ns, hostLink = "skiff-e2e-noroute", "skne2e0"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	dir := t.TempDir()
	dataDir, kubeconfig, cfgFile := filepath.Join(dir, "data"), filepath.Join(dir, "kubeconfig.yaml"), filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	inNS := func(ctx context.Context, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + ns, "--"}, args...)...)
		cmd.Env = cleanEnv()
		return cmd
	}
	_ = exec.Command("ip", "netns", "delete", ns).Run()
	run("ip", "netns", "add", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := inNS(ctx, bin, "killall", "--data-dir", dataDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
		_ = exec.Command("ip", "netns", "delete", ns).Run()
		_ = exec.Command("ip", "link", "delete", hostLink).Run()
	})
	run("ip", "-n", ns, "link", "set", "lo", "up")
	args := []string{bin, "server", "--data-dir", dataDir, "--write-kubeconfig", kubeconfig, "--config", cfgFile}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := inNS(ctx, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--node-ip or --advertise-address") {
		t.Fatalf("with only loopback: want a refusal naming --node-ip; err=%v output:\n%s", err, out)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir written by a refused start (stat: %v)", err)
	}

	run("ip", "link", "add", hostLink, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run("ip", "addr", "add", "10.79.6.1/24", "dev", hostLink)
	run("ip", "link", "set", hostLink, "up")
	run("ip", "-n", ns, "addr", "add", "10.79.6.2/24", "dev", "eth0")
	run("ip", "-n", ns, "link", "set", "eth0", "up")

	srv := inNS(ctx, args...)
	log := &syncBuffer{}
	srv.Stdout, srv.Stderr = log, log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = srv.Process.Signal(os.Interrupt)
		_ = srv.Wait()
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(log.String(), "skiff server ready in") {
		if time.Now().After(deadline) {
			t.Fatalf("not ready; output:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "url=https://10.79.6.2:6443") {
		t.Errorf("the LAN address was not picked; output:\n%s", log)
	}
	routes, _ := exec.Command("ip", "-n", ns, "route", "show", "proto", "165").CombinedOutput()
	if !strings.Contains(string(routes), "10.43.0.0/16 dev eth0") {
		t.Errorf("no service-network route: %q", routes)
	}
	// kubectl is a host process here; 10.43.0.1 is the kubernetes Service.
	body := eventually(t, 30*time.Second, func() (string, error) {
		out, err := inNS(ctx, bin, "kubectl", "--kubeconfig", kubeconfig, "--server", "https://10.43.0.1", "get", "--raw", "/readyz").CombinedOutput()
		return string(out), err
	})
	if strings.TrimSpace(body) != "ok" {
		t.Errorf("readyz through the ClusterIP: %q", body)
	}
}
