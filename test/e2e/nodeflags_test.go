package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffkube/skiff/internal/host"
	"github.com/skiffkube/skiff/internal/node/nodeaddrs"
	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// TestNodeFlags runs one server, in its own namespaces with a second
// interface, with K3s's node flags of issue 14 at once:
//   - --node-external-ip: the Node gets the ExternalIP (set by the cloud
//     node controller from the node's annotations, taint removed) beside
//     its InternalIP, a LoadBalancer Service's ingress is the external IP,
//     and metrics-server still has the node's metrics;
//   - --flannel-iface: flannel's public IP is the second interface's
//     address, not the node IP;
//   - --service-node-port-range: a NodePort inside is accepted, one outside
//     refused by the apiserver;
//   - --protect-kernel-defaults: with kernel settings as the kubelet wants
//     them the node starts, and its kubelet runs with
//     protectKernelDefaults. The settings are the node's own (fake sysctls
//     bound over /proc/sys in its mount namespace), so the test does not
//     depend on what the host's settings are or which test set them.
func TestNodeFlags(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sknfl", "10.96.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	dir, err := os.MkdirTemp("", "sk-nfl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	nd, err := nw.AddNode("nfl1", filepath.Join(dir, "nfl1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.FakeSysctls(kubeletKernelDefaults()); err != nil {
		t.Fatal(err)
	}
	// The second interface, for pod traffic only (a veth pair inside the
	// node's namespace: the kernel here may lack the dummy type).
	const podIfaceIP = "10.97.0.5"
	for _, step := range [][]string{
		{"-n", nd.NetNS(), "link", "add", "pods0", "type", "veth", "peer", "name", "pods0p"},
		{"-n", nd.NetNS(), "addr", "add", podIfaceIP + "/24", "dev", "pods0"},
		{"-n", nd.NetNS(), "link", "set", "pods0p", "up"},
		{"-n", nd.NetNS(), "link", "set", "pods0", "up"},
	} {
		if out, err := exec.Command("ip", step...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", step, err, out)
		}
	}
	const externalIP = "203.0.113.7"
	s := startNSServer(t, nd, "--node-external-ip", externalIP, "--flannel-iface", "pods0",
		"--service-node-port-range", "31000-31100", "--protect-kernel-defaults")
	c := s.Client()
	ctx := context.Background()

	// --node-external-ip: addresses from the controller, taint gone.
	eventually(t, 2*time.Minute, func() (string, error) {
		n, err := c.CoreV1().Nodes().Get(ctx, nd.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if n.Annotations[nodeaddrs.ExternalIPAnnotation] != externalIP || n.Annotations[nodeaddrs.InternalIPAnnotation] != nd.IP.String() {
			return fmtNode(n), errNotYet
		}
		ext := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeExternalIP {
				ext = a.Address
			}
		}
		for _, tn := range n.Spec.Taints {
			if tn.Key == "node.cloudprovider.kubernetes.io/uninitialized" {
				return fmtNode(n), errNotYet
			}
		}
		if ext != externalIP || internalIP(n) != nd.IP.String() || !nodeReady(n) || n.Spec.ProviderID != "skiff://"+nd.Name {
			return fmtNode(n), errNotYet
		}
		return "", nil
	})
	createLB(t, c, "ext-lb", 8088)
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := lbIngress(c, "ext-lb")
		if err != nil {
			return got, err
		}
		if got != externalIP {
			return got, errNotYet
		}
		return "", nil
	})

	// An agent with its own external IP (and protected kernel defaults):
	// its Node is initialised the same way, and servicelb publishes both
	// nodes' external IPs.
	ndA, err := nw.AddNode("nfl2", filepath.Join(dir, "nfl2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ndA.FakeSysctls(kubeletKernelDefaults()); err != nil {
		t.Fatal(err)
	}
	const agentExternalIP = "203.0.113.8"
	a := startNSAgent(t, ndA, "--server", s.URL(), "--token", readToken(t, nd.DataDir()),
		"--node-external-ip", agentExternalIP, "--protect-kernel-defaults")
	a.waitFor(t, "skiff agent ready in", 4*time.Minute)
	eventually(t, 2*time.Minute, func() (string, error) {
		n, err := c.CoreV1().Nodes().Get(ctx, ndA.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeExternalIP && a.Address == agentExternalIP && internalIP(n) == ndA.IP.String() && nodeReady(n) {
				return "", nil
			}
		}
		return fmtNode(n), errNotYet
	})
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := lbIngress(c, "ext-lb")
		if err != nil || got != externalIP+","+agentExternalIP {
			return got, errNotYet
		}
		return "", nil
	})

	// metrics-server still scrapes the node's kubelet (by its InternalIP).
	eventually(t, 3*time.Minute, func() (string, error) {
		out, err := c.RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes/" + nd.Name).DoRaw(ctx)
		if err != nil {
			return string(out), errNotYet
		}
		return "", nil
	})

	// --flannel-iface: flannel's public IP is the interface's address.
	eventually(t, 2*time.Minute, func() (string, error) {
		n, err := c.CoreV1().Nodes().Get(ctx, nd.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if got := n.Annotations["flannel.skiff.io/public-ip"]; got != podIfaceIP {
			return got, errNotYet
		}
		return "", nil
	})

	// --service-node-port-range.
	nodePort := func(name string, port int32) error {
		_, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: port}}},
		}, metav1.CreateOptions{})
		return err
	}
	if err := nodePort("np-inside", 31050); err != nil {
		t.Errorf("NodePort 31050 inside --service-node-port-range=31000-31100 refused: %v", err)
	}
	if err := nodePort("np-outside", 30080); err == nil || !strings.Contains(err.Error(), "31000-31100") {
		t.Errorf("NodePort 30080 outside --service-node-port-range=31000-31100: %v, want a refusal naming the range", err)
	}

	// --protect-kernel-defaults reached the kubelet.
	kc, err := os.ReadFile(filepath.Join(nd.DataDir(), "agent", "kubelet.yaml"))
	if err != nil || !strings.Contains(string(kc), "protectKernelDefaults: true") {
		t.Errorf("kubelet configuration without protectKernelDefaults: %v\n%s", err, kc)
	}
}

// TestProtectKernelDefaultsRefused runs a server with
// --protect-kernel-defaults where one kernel setting the kubelet checks
// differs (kernel.panic=0, a fake sysctl bound over /proc/sys in a mount
// namespace of the server's own: the host's settings are not touched) and
// sees it refuse to start naming it, before it writes its data dir; and a
// server with a --flannel-iface that does not exist refused likewise.
func TestProtectKernelDefaultsRefused(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) to give skiff kernel settings of its own")
	}
	sysctls := kubeletKernelDefaults()
	sysctls["kernel.panic"] = "0"
	srv := newServerWith(t)
	dataDir := srv.DataDir
	if err := os.WriteFile(filepath.Join(filepath.Dir(dataDir), "no-config.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, err := multinode.WithFakeSysctls(filepath.Join(t.TempDir(), "sysctl"), sysctls, skiffBin(t), append(srv.Args(), "--protect-kernel-defaults")...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCmdToExit(t, time.Minute, cmd)
	if err == nil {
		t.Fatalf("server started with kernel.panic=0 and --protect-kernel-defaults:\n%s", out)
	}
	if !strings.Contains(out, "kernel.panic is 0, the kubelet needs 10") {
		t.Errorf("refusal does not name kernel.panic and its value:\n%s", out)
	}
	if _, err := os.Stat(dataDir); err == nil {
		t.Errorf("the refused server wrote %s", dataDir)
	}

	out, err = runToExit(t, time.Minute, append(srv.Args(), "--flannel-iface", "skiffnope0")...)
	if err == nil || !strings.Contains(out, `flannel-iface: no interface "skiffnope0"`) {
		t.Errorf("missing --flannel-iface: %v\n%s", err, out)
	}
	if _, err := os.Stat(dataDir); err == nil {
		t.Errorf("the refused server wrote %s", dataDir)
	}
}

// fmtNode says what a test waits for on a Node.
func fmtNode(n *corev1.Node) string {
	return fmt.Sprintf("addresses %v, taints %v, provider ID %q, annotations %v", n.Status.Addresses, n.Spec.Taints, n.Spec.ProviderID, n.Annotations)
}

// kubeletKernelDefaults are the kernel settings the kubelet wants
// (host.KernelDefaults), as dotted sysctl name → value for FakeSysctls.
func kubeletKernelDefaults() map[string]string {
	m := map[string]string{}
	for _, d := range host.KernelDefaults {
		m[d.Key] = strconv.Itoa(d.Value)
	}
	return m
}

// runCmdToExit runs cmd, which must exit within timeout, with the test
// environment, and returns its output.
func runCmdToExit(t *testing.T, timeout time.Duration, cmd *exec.Cmd) (string, error) {
	t.Helper()
	cmd.Env = cleanEnv()
	var buf syncBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return buf.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit within %s; output:\n%s", cmd.Args, timeout, buf.String())
		return "", nil
	}
}
