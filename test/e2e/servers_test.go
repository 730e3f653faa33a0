package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// nsServer is `skiff server` running in a node's network and mount
// namespaces (package multinode), as a server on its own machine would: its
// own address, the default ports, its own /run. The host reaches it at the
// node's address through Kubeconfig.
//
// A test makes one with newNSServer, then Start/WaitReady (or StartReady),
// and may Stop, Kill and Restart it; cleanup runs `skiff killall` inside its
// namespaces and kills whatever is left there.
type nsServer struct {
	t    *testing.T
	bin  string
	Node *multinode.Node
	// Port is the supervisor's port (--https-listen-port, 6443 by default).
	Port int
	args []string

	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
	exitErr error
	// outputs are the outputs of the earlier runs, oldest first.
	outputs []string
}

// newNSServer prepares a server in nd with args after the node flags
// (Node.Command gives --data-dir, --node-ip, --node-name and the cgroup
// root). The admin kubeconfig goes to nd.Dir/kubeconfig.yaml (as the server
// sees it) and an empty --config keeps the host's /etc/skiff/config.yaml
// out. nd keeps its /run across restarts (Node.PersistentRun).
func newNSServer(t *testing.T, nd *multinode.Node, args ...string) *nsServer {
	t.Helper()
	s := &nsServer{t: t, bin: skiffBin(t), Node: nd, Port: 6443}
	nd.PersistentRun = true
	for i, a := range args {
		if a == "--https-listen-port" && i+1 < len(args) {
			s.Port, _ = strconv.Atoi(args[i+1])
		}
		if v, ok := strings.CutPrefix(a, "--https-listen-port="); ok {
			s.Port, _ = strconv.Atoi(v)
		}
	}
	cfgFile := filepath.Join(nd.Dir, "no-config.yaml")
	if err := os.MkdirAll(nd.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = append([]string{"--write-kubeconfig", s.innerKubeconfig(), "--config", cfgFile}, args...)
	t.Cleanup(s.cleanup)
	return s
}

// startNSServer starts a server in nd and waits until it is ready.
func startNSServer(t *testing.T, nd *multinode.Node, args ...string) *nsServer {
	t.Helper()
	s := newNSServer(t, nd, args...)
	s.Start()
	s.WaitReady(3 * time.Minute)
	return s
}

// Start runs the server with its args, then extra (this run only). It
// does not wait: see WaitReady.
func (s *nsServer) Start(extra ...string) {
	s.t.Helper()
	if s.Running() {
		s.t.Fatalf("server %s: Start while running", s.Node.Name)
	}
	if s.out != nil {
		s.outputs = append(s.outputs, s.out.String())
	}
	s.cmd = s.Node.Command(s.bin, "server", append(slices.Clone(s.args), extra...)...)
	s.out = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Env = cleanEnv()
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		s.exitErr = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
}

// Running reports whether the process started last still runs.
func (s *nsServer) Running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// WaitReady waits for the "skiff server ready" line, failing the test if
// the server exits first or timeout passes.
func (s *nsServer) WaitReady(timeout time.Duration) {
	s.t.Helper()
	if err := s.waitFor("skiff server ready in", timeout); err != nil {
		s.t.Fatalf("server %s: %v", s.Node.Name, err)
	}
}

func (s *nsServer) waitFor(text string, timeout time.Duration) error {
	return waitForOutput(s.out, s.exited, &s.exitErr, text, timeout)
}

// Wait waits for the process to exit by itself (a refused start) and
// returns its exit error; the test fails if it still runs after timeout.
func (s *nsServer) Wait(timeout time.Duration) error {
	s.t.Helper()
	select {
	case <-s.exited:
		return s.exitErr
	case <-time.After(timeout):
		s.t.Fatalf("server %s still running after %s; output:\n%s", s.Node.Name, timeout, s.out.String())
		return nil
	}
}

// Stop sends SIGTERM and waits for a clean exit (pods keep running, as on
// a machine). The test fails if it does not exit within 30 s or exits
// with an error.
func (s *nsServer) Stop() {
	s.t.Helper()
	if !s.Running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.t.Fatalf("server %s did not exit 30s after SIGTERM; output:\n%s", s.Node.Name, s.out.String())
	}
	if s.exitErr != nil {
		s.t.Fatalf("server %s exited with %v after SIGTERM; output:\n%s", s.Node.Name, s.exitErr, s.out.String())
	}
}

// Kill sends SIGKILL, as a crash would, and waits for the process to go.
// What it started (containerd, shims, pods) is left running.
func (s *nsServer) Kill() {
	if !s.Running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// Restart starts the server again with its args (after Stop or Kill) and
// waits until it is ready.
func (s *nsServer) Restart() {
	s.t.Helper()
	s.Start()
	s.WaitReady(3 * time.Minute)
}

// Output is what the current (last) run printed.
func (s *nsServer) Output() string {
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// DataDir is the server's --data-dir.
func (s *nsServer) DataDir() string { return s.Node.DataDir() }

// URL is the supervisor's URL at the node's address.
func (s *nsServer) URL() string {
	return "https://" + net.JoinHostPort(s.Node.IP.String(), strconv.Itoa(s.Port))
}

func (s *nsServer) innerKubeconfig() string { return filepath.Join(s.Node.Dir, "kubeconfig.yaml") }

// Kubeconfig is the path of an admin kubeconfig the host can use: the one
// the server wrote, pointed at the node's address instead of its loopback.
// It is rewritten on every call, so it follows a server that re-issued its
// credentials.
func (s *nsServer) Kubeconfig() string {
	s.t.Helper()
	cfg, err := clientcmd.LoadFromFile(s.innerKubeconfig())
	if err != nil {
		s.t.Fatalf("server %s: %v", s.Node.Name, err)
	}
	for _, c := range cfg.Clusters {
		c.Server = s.URL()
	}
	path := filepath.Join(s.Node.Dir, "host-kubeconfig.yaml")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// Client is a clientset with the admin credentials, through the node's
// address.
func (s *nsServer) Client() *kubernetes.Clientset {
	s.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
	if err != nil {
		s.t.Fatal(err)
	}
	cfg.Timeout = 15 * time.Second
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// Kubectl runs `skiff kubectl` on the host against this server.
func (s *nsServer) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(s.bin, append([]string{"kubectl", "--kubeconfig", s.Kubeconfig()}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Exec runs a command inside the server's namespaces while it runs.
func (s *nsServer) Exec(name string, args ...string) *exec.Cmd {
	return s.Node.Exec(s.cmd.Process.Pid, name, args...)
}

// cleanup runs `skiff killall` in the node (while the server runs), kills
// what is left in its cgroup and network namespace, and logs the outputs
// when the test failed.
func (s *nsServer) cleanup() {
	pid := 0
	if s.Running() {
		pid = s.cmd.Process.Pid
	}
	report := s.Node.Stop(s.bin, pid)
	if s.exited != nil {
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.t.Failed() {
		s.t.Logf("cleanup of server %s:\n%s", s.Node.Name, report)
		for i, o := range s.outputs {
			s.t.Logf("server %s, run %d:\n%s", s.Node.Name, i+1, o)
		}
		s.t.Logf("server %s, last run:\n%s", s.Node.Name, s.Output())
	}
}

// runNSServerToExit runs a server in nd that must be refused: it returns
// its output, failing the test if it starts or runs past timeout.
func runNSServerToExit(t *testing.T, nd *multinode.Node, timeout time.Duration, args ...string) string {
	t.Helper()
	s := newNSServer(t, nd, args...)
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.Kill()
		t.Fatalf("server %s %v still running after %s (not refused):\n%s", nd.Name, args, timeout, s.Output())
	}
	if s.exitErr == nil {
		t.Fatalf("server %s %v was not refused:\n%s", nd.Name, args, s.Output())
	}
	return s.Output()
}

// TestServerInNamespace runs a full server (with its node) in its own
// network and mount namespaces and reaches it from the host at the node's
// address: its node gets Ready; after a SIGKILL it starts again on the same
// /run and data dir and its node is Ready again; a clean stop ends it.
func TestServerInNamespace(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sknss", "10.80.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	dir, err := os.MkdirTemp("", "sk-nss-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	nd, err := nw.AddNode("srv1", filepath.Join(dir, "srv1"))
	if err != nil {
		t.Fatal(err)
	}
	s := startNSServer(t, nd)
	nodeReadyThrough := func(s *nsServer) {
		t.Helper()
		c := s.Client()
		eventually(t, 2*time.Minute, func() (string, error) {
			n, err := c.CoreV1().Nodes().Get(context.Background(), "srv1", metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			if !nodeReady(n) {
				return "not Ready", errNotYet
			}
			if got := internalIP(n); got != nd.IP.String() {
				return got, fmt.Errorf("node srv1 has InternalIP %s, want the namespace's %s", got, nd.IP)
			}
			return "", nil
		})
	}
	nodeReadyThrough(s)
	if out, err := s.Kubectl("get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("kubectl through %s: %v: %s", s.URL(), err, out)
	}

	s.Kill()
	s.Restart()
	nodeReadyThrough(s)
	s.Stop()
	if s.Running() {
		t.Fatal("server still running after Stop")
	}
}
