package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore/etcd"
	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// serverLightArgs keep three full servers on two cores: no add-on that the
// test below does not need.
var serverLightArgs = []string{"--disable", "metrics-server", "--disable", "servicelb", "--disable", "local-storage", "--disable", "coredns", "--disable-helm-controller"}

// etcdMembers lists the cluster's members through the etcd members at
// endpoints, with the client credentials of dataDir.
func etcdMembers(dataDir string, endpoints ...string) ([]string, error) {
	cc, err := etcd.ClientConfig(controlplane.Layout{DataDir: dataDir})
	if err != nil {
		return nil, err
	}
	cc.Endpoints = endpoints
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc.Context = ctx
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range list.Members {
		name := m.Name
		if m.IsLearner {
			name += "(learner)"
		}
		if name == "" {
			name = "(unstarted)"
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out, nil
}

// TestEmbeddedEtcdThreeServers runs three servers on embedded etcd (the
// first with --cluster-init, two joining with --server) and an agent, each
// in its own namespaces: all Ready; a wrong token is refused before
// anything is written; the first server, which leads since it started
// alone, stops cleanly and promptly, releasing its controller-manager's and
// scheduler's Leases to another, and restarts into its member; with it
// (the agent's --server) SIGKILLed the API answers and takes writes through
// the other servers and the agent's load balancer, the agent's pod keeps
// running and its Node stays Ready; it restarts into its member again;
// deleting a server's Node removes its member.
func TestEmbeddedEtcdThreeServers(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sketcd", "10.79.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	nodes := map[string]*multinode.Node{}
	for _, name := range []string{"s1", "s2", "s3", "agent"} {
		nd, err := nw.AddNode(name, filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		nodes[name] = nd
	}
	webTar := filepath.Join(nodes["agent"].DataDir(), "agent", "images", "web.tar")
	buildWebImage(t, webTar)

	s1 := startNSServer(t, nodes["s1"], append([]string{"--cluster-init"}, serverLightArgs...)...)
	tok := readToken(t, s1.DataDir())

	// A wrong token: refused with one line, nothing written.
	bad := strings.Replace(tok, "::server:", "::server:x", 1)
	if out := runNSServerToExit(t, nodes["s3"], time.Minute, "--server", s1.URL(), "--token", bad); !strings.Contains(out, "token not accepted") {
		t.Fatalf("a server with a wrong token:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(nodes["s3"].DataDir(), "server", "tls", "server-ca.crt")); !os.IsNotExist(err) {
		t.Fatalf("the refused server wrote its data dir (%v)", err)
	}

	// Both join at once: etcd takes one learner at a time, the other waits.
	aloneUntil := time.Now()
	join := append([]string{"--server", s1.URL(), "--token", tok}, serverLightArgs...)
	s2 := newNSServer(t, nodes["s2"], join...)
	s3 := newNSServer(t, nodes["s3"], join...)
	s2.Start()
	s3.Start()
	a := startNSAgent(t, nodes["agent"], "--server", s1.URL(), "--token", tok)
	s2.WaitReady(4 * time.Minute)
	s3.WaitReady(4 * time.Minute)
	a.waitFor(t, "skiff agent ready in", 4*time.Minute)

	ctx := context.Background()
	c1 := s1.Client()
	eventually(t, 2*time.Minute, func() (string, error) {
		list, err := c1.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		var ready []string
		for i := range list.Items {
			if nodeReady(&list.Items[i]) {
				ready = append(ready, list.Items[i].Name)
			}
		}
		slices.Sort(ready)
		if !slices.Equal(ready, []string{"agent", "s1", "s2", "s3"}) {
			return strings.Join(ready, ","), errNotYet
		}
		return "", nil
	})
	endpoints := []string{etcd.ClientURL(nodes["s1"].IP), etcd.ClientURL(nodes["s2"].IP)}
	members := func() []string {
		m, err := etcdMembers(nodes["s1"].DataDir(), endpoints...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := members(); len(m) != 3 || slices.ContainsFunc(m, func(n string) bool { return strings.Contains(n, "(") }) {
		t.Fatalf("etcd members %v, want three started voters", m)
	}
	memberName := func(node string) string {
		b, err := os.ReadFile(filepath.Join(nodes[node].DataDir(), "server", "db", "etcd", "name"))
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSpace(string(b))
		if !strings.HasPrefix(name, node+"-") || !slices.Contains(members(), name) {
			t.Fatalf("%s's member %q is not among %v", node, name, members())
		}
		return name
	}
	s1Name, s3Name := memberName("s1"), memberName("s3")

	// s1, the leader since it started alone, stops promptly and cleanly
	// and releases its Leases: another server takes over at once.
	stopLeaderReleasesLeases(t, s1, s2.Client(), aloneUntil)
	s1.Restart()

	pods := deployWeb(t, c1, 1, func(spec *corev1.PodSpec) {
		spec.NodeSelector = map[string]string{corev1.LabelHostname: "agent"}
	})
	pod := pods[0]

	// SIGKILL s1, the seed and the agent's --server: s2 and s3 take writes,
	// the agent's load balancer follows them (its kubectl writes, its kubelet
	// renews its lease), its pod keeps running and its Node stays Ready.
	killed := time.Now()
	s1.Kill()
	c2 := s2.Client()
	for i, s := range []*nsServer{s2, s3} {
		c := s.Client()
		eventually(t, 30*time.Second, func() (string, error) {
			_, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("after-kill-%d", i)},
			}, metav1.CreateOptions{})
			return "", err
		})
	}
	agentKubeconfig := filepath.Join(nodes["agent"].DataDir(), "agent", "kubelet.kubeconfig")
	eventually(t, 30*time.Second, func() (string, error) {
		out, err := nodes["agent"].Exec(a.cmd.Process.Pid, bin, "kubectl", "--kubeconfig", agentKubeconfig, "annotate", "--overwrite", "node", "agent", "skiff.test/after-kill=1").CombinedOutput()
		return string(out), err
	})
	eventually(t, 30*time.Second, func() (string, error) {
		lease, err := c2.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if lease.Spec.RenewTime == nil || !lease.Spec.RenewTime.After(killed) {
			return fmt.Sprintf("renewed %v, s1 killed %v", lease.Spec.RenewTime, killed), errNotYet
		}
		return "", nil
	})
	agentKept := func(when string) {
		t.Helper()
		n, err := c2.CoreV1().Nodes().Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !nodeReady(n) || n.Annotations["skiff.test/after-kill"] != "1" {
			t.Fatalf("%s: the agent's Node: ready %v, annotations %v", when, nodeReady(n), n.Annotations)
		}
		got, err := c2.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.UID != pod.UID || got.Status.Phase != corev1.PodRunning || got.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Fatalf("%s: the agent's pod did not keep running: %s %s restarts %d", when, got.UID, got.Status.Phase, got.Status.ContainerStatuses[0].RestartCount)
		}
	}
	agentKept("s1 killed")

	// Restarted with the same flags (--cluster-init on its data), s1 is its
	// member again; the agent rode out s1's whole absence.
	s1.Restart()
	if !strings.Contains(s1.Output(), "etcd member restarted") {
		t.Fatalf("s1 did not restart its member:\n%s", s1.Output())
	}
	if m := members(); len(m) != 3 || !slices.Contains(m, s1Name) {
		t.Fatalf("etcd members after the restart %v, want three with %s", m, s1Name)
	}
	agentKept("s1 restarted")

	// Deleting s3's Node removes its member.
	s3.Stop()
	if strings.Contains(s3.Output(), "stop was not clean") {
		t.Fatalf("s3: stop was not clean:\n%s", s3.Output())
	}
	if err := c1.CoreV1().Nodes().Delete(ctx, "s3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() (string, error) {
		m := members()
		if len(m) != 2 || slices.Contains(m, s3Name) {
			return strings.Join(m, ","), errNotYet
		}
		return "", nil
	})
}

// TestEmbeddedEtcdMigratesSQLite starts a server on SQLite, then with
// --cluster-init on the same data dir: the objects move into etcd and the
// SQLite file is set aside; a restart without the flag stays on etcd.
func TestEmbeddedEtcdMigratesSQLite(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	s := newServer(t)
	s.Start()
	ctx := context.Background()
	if _, err := s.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Stop()

	s.Start("--cluster-init")
	if !strings.Contains(s.Output(), "migrated the SQLite datastore into etcd") {
		t.Fatalf("no migration:\n%s", s.Output())
	}
	if _, err := s.Client().CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace after the migration: %v", err)
	}
	db := filepath.Join(s.DataDir, "server", "db", "state.db")
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Fatalf("%s still in place after the migration (%v)", db, err)
	}
	if _, err := os.Stat(db + ".migrated-to-etcd"); err != nil {
		t.Fatal(err)
	}
	s.Stop()

	s.Start()
	if !strings.Contains(s.Output(), "etcd member restarted") || strings.Contains(s.Output(), "migrated") {
		t.Fatalf("the restart did not stay on etcd:\n%s", s.Output())
	}
	if _, err := s.Client().CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace after the restart: %v", err)
	}
	s.Stop()
}
