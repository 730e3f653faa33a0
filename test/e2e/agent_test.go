package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// agentProc is one `skiff agent` process.
type agentProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	return startAgentEnv(t, nil, args...)
}

// startAgentEnv starts an agent with env added to the clean environment.
func startAgentEnv(t *testing.T, env []string, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{out: &syncBuffer{}, exited: make(chan struct{})}
	a.cmd = exec.Command(skiffBin(t), append([]string{"agent"}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.Env = append(cleanEnv(), env...)
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		select {
		case <-a.exited:
		default:
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
	})
	return a
}

func (a *agentProc) waitFor(t *testing.T, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(a.out.String(), text) {
		select {
		case <-a.exited:
			t.Fatalf("agent exited (%v) before %q; output:\n%s", a.err, text, a.out.String())
		case <-deadline:
			t.Fatalf("no %q after %s; output:\n%s", text, timeout, a.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// internalIP is a node's InternalIP.
func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// TestAgentJoins joins an agent to a control-plane-only server on the same host:
// the agent checks the CA pin, joins with the cluster token, runs the node, and
// a pod runs on it with logs and exec through the API. A token pinning another CA
// is refused with both hashes shown.
func TestAgentJoins(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	s := newServer(t)
	s.Start()
	raw, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(raw))
	agentDir := filepath.Join(t.TempDir(), "agent")
	buildWebImage(t, filepath.Join(agentDir, "agent", "images", "web.tar"))
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "killall", "--data-dir", agentDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})

	t.Run("wrong CA pin", func(t *testing.T) {
		_, secret, _ := strings.Cut(tok, "::")
		wrong := "SK10" + strings.Repeat("0", 64) + "::" + secret
		dir := filepath.Join(t.TempDir(), "a")
		out, err := runToExit(t, time.Minute, "agent", "--server", s.URL(), "--token", wrong, "--data-dir", dir)
		if err == nil || !strings.Contains(out, strings.Repeat("0", 64)) || !strings.Contains(out, "server presented sha256") {
			t.Errorf("agent with a wrong CA pin: %v\n%s", err, out)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("refused agent wrote its data dir %s", dir)
		}
	})

	// The agent joins with a token for agents that expires, as an operator
	// would hand out; it must outlive the token (below).
	out, err := runToExit(t, time.Minute, "token", "create", "--kubeconfig", s.Kubeconfig, "--ttl", "1h")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	agentTok := strings.TrimSpace(out)

	// The server's apiserver has 6444 on this host: the agent's load balancer
	// takes another port.
	lbPort := strconv.Itoa(freePort(t))
	agentArgs := []string{"--server", s.URL(), "--token", agentTok, "--data-dir", agentDir, "--lb-server-port", lbPort}
	// As systemd would for Type=notify: READY=1 only once the agent's Node
	// is Ready (the server has no node of its own).
	notify := listenNotify(t, nodesReadyNow(s.Kubeconfig))
	a := startAgentEnv(t, []string{notify.Env()}, agentArgs...)
	a.waitFor(t, "skiff agent ready in", 2*time.Minute)
	notify.expect(t, "READY=1", 30*time.Second)
	// The node's components reach the API through the agent's load balancer.
	for _, kc := range []string{"kubelet.kubeconfig", "kubeproxy.kubeconfig", "flannel.kubeconfig"} {
		data, err := os.ReadFile(filepath.Join(agentDir, "agent", kc))
		if err != nil || !strings.Contains(string(data), "https://127.0.0.1:"+lbPort) {
			t.Errorf("%s does not point at the load balancer on port %s: %v\n%s", kc, lbPort, err, data)
		}
	}
	c := s.Client()
	nodes, err := c.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 || !nodeReady(&nodes.Items[0]) {
		t.Fatalf("nodes after the agent joined: %v %v", nodes, err)
	}
	// The agent's kubelet listens on loopback only: the apiserver reaches it
	// through the agent's tunnel.
	nodeIP := internalIP(&nodes.Items[0])
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort(nodeIP, "10250"), 2*time.Second); err == nil {
		conn.Close()
		t.Errorf("the agent's kubelet answers on %s:10250; want loopback only", nodeIP)
	}
	if !strings.Contains(a.out.String(), "tunnel connected") || !strings.Contains(s.Output(), "agent tunnel connected") {
		t.Errorf("no tunnel logged; agent:\n%s\nserver:\n%s", a.out.String(), s.Output())
	}
	// --server (127.0.0.1) and the published endpoint (the host's address)
	// are two ways to the same server: both tunnels stay up side by side.
	time.Sleep(5 * time.Second)
	if strings.Contains(a.out.String(), "tunnel down") || strings.Contains(s.Output(), "agent tunnel closed") {
		t.Errorf("the agent's tunnels are flapping; agent:\n%s\nserver:\n%s", a.out.String(), s.Output())
	}
	pods := deployWeb(t, c, 1)
	if out, err := s.kubectl("logs", pods[0].Name); err != nil || !strings.Contains(out, "listening on :8080") {
		t.Errorf("kubectl logs from the agent's pod: %v %q", err, out)
	}
	if out, err := s.kubectl("exec", pods[0].Name, "--", "/web", "fetch", "http://127.0.0.1:8080/"); err != nil || !strings.Contains(out, "hello from") {
		t.Errorf("kubectl exec into the agent's pod: %v %q", err, out)
	}
	checkServerMetrics(t, s, nodes.Items[0].Name)
	stop := func(a *agentProc) {
		_ = a.cmd.Process.Signal(os.Interrupt)
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("agent did not stop 30s after SIGINT")
		}
	}
	stop(a)
	notify.expect(t, "STOPPING=1", 30*time.Second)
	notify.none(t)

	// Tokens are for joining: once its token is deleted, the joined agent
	// restarts on the credentials it holds.
	if out, err := runToExit(t, time.Minute, "token", "delete", "--kubeconfig", s.Kubeconfig, agentTok); err != nil {
		t.Fatalf("token delete: %v\n%s", err, out)
	}
	a = startAgent(t, agentArgs...)
	a.waitFor(t, "skiff agent ready in", 2*time.Minute)
	if !strings.Contains(s.Output(), "node certificate") {
		t.Errorf("the server did not log a rejoin with the node certificate:\n%s", s.Output())
	}
	stop(a)
}
