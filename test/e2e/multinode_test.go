package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// nsAgent is an agent running in its own namespaces (package multinode).
type nsAgent struct {
	*agentProc
	node *multinode.Node
}

// startNSAgent starts `skiff agent` in nd's namespaces; cleanup runs
// `skiff killall` inside them.
func startNSAgent(t *testing.T, nd *multinode.Node, args ...string) *nsAgent {
	t.Helper()
	bin := skiffBin(t)
	a := &agentProc{out: &syncBuffer{}, exited: make(chan struct{})}
	a.cmd = nd.Command(bin, "agent", args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.Env = cleanEnv()
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		if report := nd.Stop(bin, a.cmd.Process.Pid); t.Failed() {
			t.Logf("cleanup of %s:\n%s", nd.Name, report)
		}
		select {
		case <-a.exited:
		case <-time.After(10 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
		if t.Failed() {
			t.Logf("agent %s output:\n%s", nd.Name, a.out.String())
		}
	})
	return &nsAgent{agentProc: a, node: nd}
}

// runNSAgentToExit runs an agent that must be refused, and returns its output.
func runNSAgentToExit(t *testing.T, nd *multinode.Node, args ...string) string {
	t.Helper()
	cmd := nd.Command(skiffBin(t), "agent", args...)
	cmd.Env = cleanEnv()
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("refused agent still running after 2m:\n%s", out)
	}
	if err == nil {
		t.Fatalf("agent %v was not refused:\n%s", args, out)
	}
	return string(out)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

var errNotYet = errors.New("not yet")

// TestMultiNode runs a server and two agents, each agent in its own network
// and mount namespace: all three nodes Ready, a Deployment spread over them,
// pod-to-pod and ClusterIP traffic across nodes, logs and exec into an agent's
// pod while nothing but the tunnel reaches its kubelet, refusals of a wrong
// token and a taken node name, and a server restart that agents and their
// pods ride out.
func TestMultiNode(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if testing.Short() {
		t.Skip("multi-node: root end-to-end test")
	}
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("ske2e", "10.78.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	gw := nw.Gateway.String()

	s := newServerWith(t, "--advertise-address", gw, "--node-name", "server")
	webTar := filepath.Join(s.DataDir, "agent", "images", "web.tar")
	buildWebImage(t, webTar)
	t.Cleanup(func() {
		s.kill()
		if out, err := exec.Command(skiffBin(t), "killall", "--data-dir", s.DataDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	s.Start()
	tok := readToken(t, s.DataDir)
	serverURL := "https://" + net.JoinHostPort(gw, strconv.Itoa(s.Port))

	var agents []*nsAgent
	for _, name := range []string{"agent1", "agent2"} {
		nd, err := nw.AddNode(name, filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, webTar, filepath.Join(nd.DataDir(), "agent", "images", "web.tar"))
		agents = append(agents, startNSAgent(t, nd, "--server", serverURL, "--token", tok))
	}
	for _, a := range agents {
		a.waitFor(t, "skiff agent ready in", 3*time.Minute)
	}
	c := s.Client()
	ctx := context.Background()
	eventually(t, time.Minute, func() (string, error) {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		var ready []string
		for i := range nodes.Items {
			if nodeReady(&nodes.Items[i]) {
				ready = append(ready, nodes.Items[i].Name)
			}
		}
		slices.Sort(ready)
		if !slices.Equal(ready, []string{"agent1", "agent2", "server"}) {
			return strings.Join(ready, ","), errNotYet
		}
		return "", nil
	})

	pods := deployWeb(t, c, 3, spreadAcrossNodes)
	byNode := map[string]corev1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = p
	}
	if len(byNode) != 3 {
		t.Fatalf("web pods not spread over the three nodes: %v", podNodes(pods))
	}
	svc, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := byNode["agent1"]
	fetchFrom := func(p corev1.Pod, url string) (string, error) {
		return s.kubectl("exec", p.Name, "--", "/web", "fetch", url)
	}

	crossNode := func(t *testing.T) {
		// Pod to pod, from agent1 to each other node.
		for _, node := range []string{"agent2", "server"} {
			target := byNode[node]
			out := eventually(t, time.Minute, func() (string, error) {
				return fetchFrom(from, "http://"+net.JoinHostPort(target.Status.PodIP, "8080")+"/")
			})
			if !strings.Contains(out, "hello from "+target.Name) {
				t.Errorf("agent1 -> pod on %s: %q", node, out)
			}
		}
		// Cluster DNS (served by the server process) from a pod on an agent.
		out := eventually(t, time.Minute, func() (string, error) { return fetchFrom(from, "http://web.default.svc.cluster.local/") })
		if !strings.Contains(out, "hello from web-") {
			t.Errorf("agent1 -> web by name: %q", out)
		}
		// Every node's name, from a pod on an agent: the servers' CoreDNS
		// follows the nodes as they join.
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range nodes.Items {
			if got, want := lookupFrom(t, s, from.Name, nodes.Items[i].Name), nodeInternalIPs(&nodes.Items[i]); got != want {
				t.Errorf("node name %s from a pod on agent1 resolves to %q, want %q", nodes.Items[i].Name, got, want)
			}
			_, role := nodes.Items[i].Labels["node-role.kubernetes.io/control-plane"]
			if role != (nodes.Items[i].Name == "server") {
				t.Errorf("node %s: control-plane role %v", nodes.Items[i].Name, role)
			}
		}
		// And back, from agent2 to agent1.
		out = eventually(t, time.Minute, func() (string, error) {
			return fetchFrom(byNode["agent2"], "http://"+net.JoinHostPort(from.Status.PodIP, "8080")+"/")
		})
		if !strings.Contains(out, "hello from "+from.Name) {
			t.Errorf("agent2 -> pod on agent1: %q", out)
		}
		// ClusterIP: every backend answers, whichever node it is on.
		seen := map[string]bool{}
		var lastErr error
		for i := 0; i < 60 && len(seen) < 3; i++ {
			out, err := fetchFrom(from, "http://"+svc.Spec.ClusterIP+"/")
			if err != nil {
				lastErr = err
				continue
			}
			seen[strings.TrimSpace(strings.TrimPrefix(out, "hello from "))] = true
		}
		for _, p := range pods {
			if !seen[p.Name] {
				t.Errorf("ClusterIP from agent1 never reached %s on %s (saw %v; last error %v)", p.Name, p.Spec.NodeName, seen, lastErr)
			}
		}
	}

	logsAndExec := func(t *testing.T) {
		for _, a := range agents {
			p := byNode[a.node.Name]
			// Nothing but the tunnel reaches the agent's kubelet.
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort(a.node.IP.String(), "10250"), 2*time.Second); err == nil {
				conn.Close()
				t.Errorf("the server reaches %s's kubelet at %s:10250 directly", a.node.Name, a.node.IP)
			}
			out := eventually(t, time.Minute, func() (string, error) { return s.kubectl("logs", p.Name) })
			if !strings.Contains(out, "listening on :8080") {
				t.Errorf("kubectl logs %s on %s: %q", p.Name, a.node.Name, out)
			}
			out = eventually(t, time.Minute, func() (string, error) {
				return fetchFrom(p, "http://127.0.0.1:8080/")
			})
			if !strings.Contains(out, "hello from "+p.Name) {
				t.Errorf("kubectl exec into %s on %s: %q", p.Name, a.node.Name, out)
			}
			if out := portForward(t, s, p.Name); !strings.Contains(out, "hello from "+p.Name) {
				t.Errorf("kubectl port-forward to %s on %s: %q", p.Name, a.node.Name, out)
			}
			out = eventually(t, time.Minute, func() (string, error) {
				return s.kubectl("get", "--raw", "/api/v1/nodes/"+a.node.Name+"/proxy/metrics/resource")
			})
			if !strings.Contains(out, "node_cpu_usage_seconds_total") {
				t.Errorf("kubelet resource metrics of %s through the API: %.300q", a.node.Name, out)
			}
		}
	}

	t.Run("metrics of every node", func(t *testing.T) {
		// The server's metrics-server scrapes the agents' kubelets through
		// their tunnels.
		out := eventually(t, 2*time.Minute, func() (string, error) {
			out, err := s.kubectl("top", "nodes")
			if err == nil && (!strings.Contains(out, "agent1") || !strings.Contains(out, "agent2") || !strings.Contains(out, "server")) {
				return out, errNotYet
			}
			return out, err
		})
		t.Logf("kubectl top nodes:\n%s", out)
	})
	t.Run("cross-node traffic", crossNode)
	t.Run("logs and exec through the tunnel", logsAndExec)

	t.Run("load balancer on every node's loopback", func(t *testing.T) {
		lb := createLB(t, c, "web-lb", 8090)
		eventually(t, 30*time.Second, func() (string, error) {
			ips, err := lbIngress(c, lb)
			if err != nil || strings.Count(ips, ",") != 2 {
				return ips, errNotYet
			}
			return ips, nil
		})
		for _, a := range agents {
			// bash's /dev/tcp, inside the agent's network namespace.
			eventually(t, 30*time.Second, func() (string, error) {
				out, err := a.node.Exec(a.cmd.Process.Pid, "bash", "-c",
					`exec 3<>/dev/tcp/127.0.0.1/8090 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3`).CombinedOutput()
				if err != nil || !strings.Contains(string(out), "hello from web-") {
					return fmt.Sprintf("127.0.0.1:8090 on %s: %v %s", a.node.Name, err, out), errNotYet
				}
				return "", nil
			})
		}
		out := eventually(t, 30*time.Second, func() (string, error) { return httpGet("http://127.0.0.1:8090/") })
		if !strings.Contains(out, "hello from web-") {
			t.Errorf("127.0.0.1:8090 on the server: %q", out)
		}
		if err := c.CoreV1().Services("default").Delete(ctx, lb, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("local storage on an agent, non-root", func(t *testing.T) {
		// The volume's directory is made on the agent the pod lands on,
		// writable by a pod of any user.
		createClaim(t, c, "data-agent", "16Mi")
		uid := int64(1000)
		runVolumePodWith(t, c, "vol-agent", "data-agent", func(p *corev1.PodSpec) {
			p.NodeSelector = map[string]string{corev1.LabelHostname: "agent1"}
			p.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid}
		})
		if out, err := s.kubectl("exec", "vol-agent", "--", "/web", "write", "/data/f", "by 1000"); err != nil {
			t.Fatalf("a pod running as uid 1000 on agent1 writing its volume: %v %s", err, out)
		}
		if out, err := s.kubectl("exec", "vol-agent", "--", "/web", "cat", "/data/f"); err != nil || out != "by 1000" {
			t.Errorf("reading it back: %q %v", out, err)
		}
		zero := int64(0)
		_ = c.CoreV1().Pods("default").Delete(ctx, "vol-agent", metav1.DeleteOptions{GracePeriodSeconds: &zero})
		_ = c.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data-agent", metav1.DeleteOptions{})
	})

	t.Run("network policy across nodes", func(t *testing.T) {
		target := byNode["agent2"]
		url := "http://" + net.JoinHostPort(target.Status.PodIP, "8080") + "/"
		if out, err := s.kubectl("label", "pod", target.Name, "np=target"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		deny := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "np-target"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"np": "target"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			},
		}
		if _, err := c.NetworkingV1().NetworkPolicies("default").Create(context.Background(), deny, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// agent2's engine drops what agent1's pod sends it; agent1's own
		// (it knows the policy too) may drop it first.
		eventually(t, 30*time.Second, func() (string, error) {
			if out, err := fetchFrom(from, url); err == nil {
				return out, errNotYet
			}
			return "", nil
		})
		if out, err := s.kubectl("delete", "networkpolicy", "np-target"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		eventually(t, 30*time.Second, func() (string, error) { return fetchFrom(from, url) })
	})

	t.Run("refusals", func(t *testing.T) {
		nd, err := nw.AddNode("agent3", filepath.Join(t.TempDir(), "agent3"))
		if err != nil {
			t.Fatal(err)
		}
		pin, _, _ := strings.Cut(tok, "::")
		out := runNSAgentToExit(t, nd, "--server", serverURL, "--token", pin+"::server:not-the-secret")
		if !strings.Contains(out, "token not accepted") {
			t.Errorf("wrong token: want a message naming the token, got:\n%s", out)
		}
		out = runNSAgentToExit(t, nd, "--server", serverURL, "--token", tok, "--node-name", "agent1")
		if !strings.Contains(out, `node name "agent1" is taken by another machine`) || !strings.Contains(out, "kubectl delete node agent1") {
			t.Errorf("reused node name: want a message saying how to free it, got:\n%s", out)
		}
	})

	t.Run("server restart", func(t *testing.T) {
		before := podState(t, c)
		s.Stop()
		// The agents' pods keep serving while the server is down.
		for _, a := range agents {
			p := byNode[a.node.Name]
			out, err := httpGet("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/")
			if err != nil || !strings.Contains(out, "hello from "+p.Name) {
				t.Errorf("with the server down, %s on %s: %q %v", p.Name, a.node.Name, out, err)
			}
		}
		s.Start()
		for _, a := range agents {
			eventually(t, time.Minute, func() (string, error) {
				if !strings.Contains(s.Output(), "agent tunnel connected node="+a.node.Name) {
					return s.Output(), errNotYet
				}
				return "", nil
			})
		}
		logsAndExec(t)
		crossNode(t)
		if after := podState(t, c); !maps.Equal(before, after) {
			t.Errorf("pods changed across the server restart:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// portForward forwards a local port to the pod's 8080 with kubectl and
// fetches / through it.
func portForward(t *testing.T, s *server, pod string) string {
	t.Helper()
	cmd := exec.Command(s.bin, "kubectl", "--kubeconfig", s.Kubeconfig, "port-forward", "pod/"+pod, ":8080")
	cmd.Env = cleanEnv()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// "Forwarding from 127.0.0.1:40123 -> 8080"
		if _, rest, ok := strings.Cut(out.String(), "Forwarding from 127.0.0.1:"); ok {
			port, _, _ := strings.Cut(rest, " ")
			body, err := httpGet("http://127.0.0.1:" + port + "/")
			if err != nil {
				return err.Error()
			}
			return body
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "no forwarding after 30s: " + out.String()
}

func podNodes(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name+"@"+p.Spec.NodeName)
	}
	return out
}
