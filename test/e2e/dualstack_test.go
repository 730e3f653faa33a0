package e2e

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// TestMultiNodeDualStack runs a dual-stack cluster: a server (whose IPv6 node
// address is detected on the interface of its IPv4 one) and an agent in its
// own namespaces given both families with --node-ip. Both nodes get both
// families' addresses and pod CIDRs, pods get an address of each family, a
// RequireDualStack Service gets two cluster IPs, and pod-to-pod traffic
// across the nodes and a ClusterIP work over IPv6; an agent whose --node-ip
// does not fit the cluster's families is refused.
func TestMultiNodeDualStack(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if testing.Short() {
		t.Skip("dual-stack multi-node: root end-to-end test")
	}
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	if err := multinode.CheckIPv6(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("skds", "10.79.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	if err := nw.EnableIPv6("fd00:79::1/64"); err != nil {
		t.Fatal(err)
	}
	gw := nw.Gateway.String()
	clusterCIDRs := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:42::/56")}
	serviceCIDR6 := netip.MustParsePrefix("fd00:43::/112")

	s := newServerWith(t, "--advertise-address", gw, "--node-name", "server",
		"--cluster-cidr", "10.42.0.0/16,fd00:42::/56", "--service-cidr", "10.43.0.0/16,fd00:43::/112")
	webTar := filepath.Join(s.DataDir, "agent", "images", "web.tar")
	buildWebImage(t, webTar)
	t.Cleanup(func() {
		s.kill()
		if out, err := runToExitEnv(t, cleanEnv(), skiffBin(t), "killall", "--data-dir", s.DataDir); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	s.Start()
	nd, err := nw.AddNode("agent1", filepath.Join(t.TempDir(), "agent1"))
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, webTar, filepath.Join(nd.DataDir(), "agent", "images", "web.tar"))
	a := startNSAgent(t, nd, "--server", "https://"+net.JoinHostPort(gw, strconv.Itoa(s.Port)), "--token", readToken(t, s.DataDir))
	a.waitFor(t, "skiff agent ready in", 3*time.Minute)

	c := s.Client()
	ctx := context.Background()
	wantIPs := map[string][]string{"server": {gw, nw.Gateway6.String()}, "agent1": {nd.IP.String(), nd.IP6.String()}}
	eventually(t, time.Minute, func() (string, error) {
		var problems []string
		for name, want := range wantIPs {
			n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			var internal []string
			for _, ad := range n.Status.Addresses {
				if ad.Type == corev1.NodeInternalIP {
					internal = append(internal, ad.Address)
				}
			}
			if !nodeReady(n) || !slices.Equal(internal, want) || !coversFamilies(n.Spec.PodCIDRs, clusterCIDRs) {
				problems = append(problems, name+": ready="+strconv.FormatBool(nodeReady(n))+" InternalIPs="+strings.Join(internal, ",")+" podCIDRs="+strings.Join(n.Spec.PodCIDRs, ","))
			}
		}
		if len(problems) > 0 {
			return strings.Join(problems, "; "), errNotYet
		}
		return "", nil
	})

	pods := deployWeb(t, c, 2, spreadAcrossNodes)
	byNode := map[string]corev1.Pod{}
	ip6 := map[string]string{} // pod name -> its IPv6 address
	for _, p := range pods {
		byNode[p.Spec.NodeName] = p
		var ips []string
		for _, pip := range p.Status.PodIPs {
			ips = append(ips, pip.IP)
		}
		if len(ips) != 2 || !inPrefix(ips[0], clusterCIDRs[0]) || !inPrefix(ips[1], clusterCIDRs[1]) {
			t.Fatalf("pod %s on %s has podIPs %v, want one in %s and one in %s", p.Name, p.Spec.NodeName, ips, clusterCIDRs[0], clusterCIDRs[1])
		}
		ip6[p.Name] = ips[1]
	}
	if len(byNode) != 2 {
		t.Fatalf("web pods not spread over both nodes: %v", podNodes(pods))
	}

	svc, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "web"},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Ports:          []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ClusterIPs) != 2 || !inPrefix(svc.Spec.ClusterIPs[1], serviceCIDR6) {
		t.Fatalf("dual-stack Service got cluster IPs %v, want an IPv4 one and one in %s", svc.Spec.ClusterIPs, serviceCIDR6)
	}

	fetchFrom := func(p corev1.Pod, url string) (string, error) {
		return s.kubectl("exec", p.Name, "--", "/web", "fetch", url)
	}
	// Pod to pod over IPv6, both ways across the nodes (VXLAN over IPv6).
	for _, dir := range [][2]string{{"agent1", "server"}, {"server", "agent1"}} {
		from, to := byNode[dir[0]], byNode[dir[1]]
		out := eventually(t, time.Minute, func() (string, error) {
			return fetchFrom(from, "http://"+net.JoinHostPort(ip6[to.Name], "8080")+"/")
		})
		if !strings.Contains(out, "hello from "+to.Name) {
			t.Errorf("%s -> pod on %s over IPv6: %q", dir[0], dir[1], out)
		}
	}
	// The Service's IPv6 cluster IP reaches both backends, whichever node.
	seen := map[string]bool{}
	var lastErr error
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIPs[1], "80") + "/"
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && len(seen) < 2; {
		out, err := fetchFrom(byNode["agent1"], url)
		if err != nil {
			lastErr = err
			time.Sleep(500 * time.Millisecond)
			continue
		}
		seen[strings.TrimSpace(strings.TrimPrefix(out, "hello from "))] = true
	}
	for _, p := range pods {
		if !seen[p.Name] {
			t.Errorf("IPv6 ClusterIP %s never reached %s on %s (saw %v; last error %v)", url, p.Name, p.Spec.NodeName, seen, lastErr)
		}
	}
	// An agent whose --node-ip does not fit the cluster's families is
	// refused once the join tells it the cluster CIDRs, naming --node-ip.
	nd2, err := nw.AddNode("agent2", filepath.Join(t.TempDir(), "agent2"))
	if err != nil {
		t.Fatal(err)
	}
	out := runNSAgentToExit(t, nd2, "--server", "https://"+net.JoinHostPort(gw, strconv.Itoa(s.Port)), "--token", readToken(t, s.DataDir), "--node-ip", nd2.IP6.String())
	if !strings.Contains(out, "node-ip: "+nd2.IP6.String()+": address 1 is IPv6 but cluster-cidr 10.42.0.0/16,fd00:42::/56 lists IPv4 there") {
		t.Errorf("agent with an IPv6-only node IP: want a refusal naming node-ip, got:\n%s", out)
	}
	if out := s.Output() + a.out.String(); strings.Contains(out, "panic") {
		t.Errorf("a panic was logged:\n%s", out)
	}
}

// coversFamilies reports whether a node's pod CIDRs hold one CIDR inside
// each cluster CIDR, in order.
func coversFamilies(podCIDRs []string, cluster []netip.Prefix) bool {
	if len(podCIDRs) != len(cluster) {
		return false
	}
	for i, s := range podCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil || !cluster[i].Contains(p.Addr()) {
			return false
		}
	}
	return true
}

func inPrefix(ip string, p netip.Prefix) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && p.Contains(a)
}
