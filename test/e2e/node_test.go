package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/skiffkube/skiff/internal/imagearchive"
)

const webImage = "skiff.local/e2e/web:1"

// buildWebImage compiles test/e2e/testimage/web and packs it as an image archive.
func buildWebImage(t *testing.T, dest string) {
	t.Helper()
	buildWebImageAs(t, dest, webImage)
}

// buildWebImageAs packs the web program as an image named ref, with extra
// files beside it.
func buildWebImageAs(t *testing.T, dest, ref string, extra ...imagearchive.File) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "web")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./testimage/web")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the web image program: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := imagearchive.Write(&buf, imagearchive.Image{
		Ref:        ref,
		Files:      append([]imagearchive.File{{Path: "/web", Mode: 0o755, Data: data}}, extra...),
		Entrypoint: []string{"/web"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dest, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs containers and changes the host's network")
	}
}

// TestNode runs a server with its node: air-gap images, a Deployment behind a
// Service, logs and exec through the supervisor, a restart that leaves pods alone,
// and killall.
func TestNode(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	s := newServerWith(t, "--node-label", "skiff.io/e2e=node", "--node-taint", "skiff.io/e2e=node:PreferNoSchedule")
	imagesDir := filepath.Join(s.DataDir, "agent", "images")
	buildWebImage(t, filepath.Join(imagesDir, "web.tar"))
	if err := os.WriteFile(filepath.Join(imagesDir, "broken.tar.gz"), []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A KubeletConfiguration drop-in setting a field that has no flag.
	dropin := filepath.Join(s.DataDir, "agent", "etc", "kubelet.conf.d", "50-e2e.conf")
	if err := os.MkdirAll(filepath.Dir(dropin), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dropin, []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageMaximumGCAge: 6h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever happened, leave the host as it was.
		s.kill()
		out, err := exec.Command(bin, "killall", "--data-dir", s.DataDir).CombinedOutput()
		if err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})

	// As systemd would for Type=notify: READY=1 only once the Node is Ready.
	notify := listenNotify(t, nodesReadyNow(s.Kubeconfig))
	s.env = append(s.env, notify.Env())
	s.Start()
	notify.expect(t, "READY=1", 30*time.Second)
	for _, phase := range []string{"containerd ready in", "images ready in", "kubelet ready in", "node ready in"} {
		if !strings.Contains(s.Output(), phase) {
			t.Errorf("start-up output lacks %q", phase)
		}
	}
	if !strings.Contains(s.Output(), "broken.tar.gz") {
		t.Errorf("no warning names the corrupt archive; output:\n%s", s.Output())
	}
	c := s.Client()
	ctx := context.Background()
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v, %v", nodes, err)
	}
	n := nodes.Items[0]
	if !nodeReady(&n) {
		t.Fatalf("node not Ready after `skiff server ready`: %+v", n.Status.Conditions)
	}
	if n.Labels["skiff.io/e2e"] != "node" {
		t.Errorf("--node-label not applied: %v", n.Labels)
	}
	// The kubelet runs with the drop-in's value (its /configz, through the API).
	configz, err := c.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", n.Name, "proxy", "configz").DoRaw(ctx)
	if err != nil || !strings.Contains(string(configz), `"imageMaximumGCAge":"6h0m0s"`) {
		t.Errorf("kubelet drop-in not in effect: %v\n%s", err, configz)
	}
	// The node controller's own taints (not-ready, briefly) may be there too.
	tainted := false
	for _, taint := range n.Spec.Taints {
		tainted = tainted || (taint.Key == "skiff.io/e2e" && taint.Value == "node" && taint.Effect == corev1.TaintEffectPreferNoSchedule)
	}
	if !tainted {
		t.Errorf("--node-taint not applied: %v", n.Spec.Taints)
	}
	if n.Spec.PodCIDR == "" || n.Annotations["flannel.skiff.io/backend-type"] != "vxlan" {
		t.Errorf("no pod CIDR or flannel lease: podCIDR=%q annotations=%v", n.Spec.PodCIDR, n.Annotations)
	}

	pods := deployWeb(t, c, 3)
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
	serviceURL := "http://" + svc.Spec.ClusterIP + "/"

	t.Run("service from the host", func(t *testing.T) {
		body := eventually(t, 60*time.Second, func() (string, error) { return httpGet(serviceURL) })
		if !strings.HasPrefix(body, "hello from web-") {
			t.Fatalf("service answered %q", body)
		}
	})
	t.Run("service and pod-to-pod from a pod", func(t *testing.T) {
		from, to := pods[0], pods[1]
		out := eventually(t, 30*time.Second, func() (string, error) {
			return s.kubectl("exec", from.Name, "--", "/web", "fetch", serviceURL)
		})
		if !strings.Contains(out, "hello from web-") {
			t.Errorf("service from a pod: %q", out)
		}
		out = eventually(t, 30*time.Second, func() (string, error) {
			return s.kubectl("exec", from.Name, "--", "/web", "fetch", "http://"+to.Status.PodIP+":8080/")
		})
		if !strings.Contains(out, "hello from "+to.Name) {
			t.Errorf("pod %s -> pod %s: %q", from.Name, to.Name, out)
		}
	})
	t.Run("logs", func(t *testing.T) {
		out, err := s.kubectl("logs", pods[0].Name)
		if err != nil || !strings.Contains(out, "listening on :8080") {
			t.Errorf("kubectl logs: %v %q", err, out)
		}
	})
	t.Run("crictl and ctr", func(t *testing.T) {
		out, err := runToExitEnv(t, []string{"SKIFF_DATA_DIR=" + s.DataDir}, bin, "crictl", "pods")
		if err != nil || strings.Count(out, "web-") < 3 {
			t.Errorf("skiff crictl pods: %v\n%s", err, out)
		}
		// It finds the node's containerd by itself: no warning about a
		// missing /etc/crictl.yaml or a default endpoint.
		if strings.Contains(out, "level=warn") || strings.Contains(out, "WARN") {
			t.Errorf("skiff crictl pods warned:\n%s", out)
		}
		out, err = runToExitEnv(t, nil, bin, "ctr", "images", "ls", "-q")
		if err != nil || !strings.Contains(out, webImage) || !strings.Contains(out, "skiff.local/skiff/pause:1.0") {
			t.Errorf("skiff ctr images ls: %v\n%s", err, out)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("restart keeps pods running", func(t *testing.T) {
		before := podState(t, c)
		s.Stop()
		notify.expect(t, "STOPPING=1", 30*time.Second)
		// With skiff stopped, the pods still answer.
		if body, err := httpGet("http://" + pods[0].Status.PodIP + ":8080/"); err != nil || !strings.Contains(body, pods[0].Name) {
			t.Errorf("pod %s while skiff is stopped: %q, %v", pods[0].Name, body, err)
		}
		s.Start()
		notify.expect(t, "READY=1", 30*time.Second)
		notify.none(t)
		if !strings.Contains(s.Output(), "node ready in") {
			t.Error("no node phase on restart")
		}
		after := podState(t, c)
		for name, st := range before {
			if after[name] != st {
				t.Errorf("pod %s changed across the restart: %s -> %s", name, st, after[name])
			}
		}
		eventually(t, 60*time.Second, func() (string, error) { return httpGet(serviceURL) })
	})

	t.Run("killall without --data-dir after a stop", func(t *testing.T) {
		// The server used a data dir of its own and its pods run on
		// without it (issue 12): killall finds them by what they are.
		s.Stop()
		out, err := runToExitEnv(t, nil, bin, "killall")
		if err != nil {
			t.Fatalf("killall: %v\n%s", err, out)
		}
		assertNodeGone(t, s.DataDir)
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// spreadAcrossNodes puts deployWeb's pods on different nodes, at most one
// more on any node than on another.
func spreadAcrossNodes(spec *corev1.PodSpec) {
	spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
		MaxSkew: 1, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.DoNotSchedule,
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
	}}
}

// deployWeb creates the web Deployment and waits until all replicas run.
func deployWeb(t *testing.T, c kubernetes.Interface, replicas int32, opts ...func(*corev1.PodSpec)) []corev1.Pod {
	t.Helper()
	spec := corev1.PodSpec{Containers: []corev1.Container{{
		Name: "web", Image: webImage, ImagePullPolicy: corev1.PullNever,
		Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
	}}}
	for _, o := range opts {
		o(&spec)
	}
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	_, err := c.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       spec,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var running []corev1.Pod
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err == nil {
			running = running[:0]
			for _, p := range list.Items {
				if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
					running = append(running, p)
				}
			}
			if len(running) == int(replicas) {
				return running
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	list, _ := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	events, _ := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	var ev []string
	for _, e := range events.Items {
		ev = append(ev, e.InvolvedObject.Name+": "+e.Reason+": "+e.Message)
	}
	t.Fatalf("%d of %d web pods running after 2m; pods: %v\nevents:\n%s", len(running), replicas, podPhases(list.Items), strings.Join(ev, "\n"))
	return nil
}

func podPhases(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name+"="+string(p.Status.Phase))
	}
	return out
}

// podState identifies each web pod's running container: a restart of the pod or
// the container changes it.
func podState(t *testing.T, c kubernetes.Interface) map[string]string {
	t.Helper()
	list, err := c.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range list.Items {
		for _, cs := range p.Status.ContainerStatuses {
			out[p.Name] = fmt.Sprintf("uid=%s container=%s restarts=%d", p.UID, cs.ContainerID, cs.RestartCount)
		}
	}
	return out
}

// httpGet fetches url directly: a proxy from the environment would not reach
// cluster addresses.
func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(body), err
}

// eventually retries fn until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() (string, error)) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := fn()
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v\n%s", timeout, err, out)
		}
		time.Sleep(time.Second)
	}
}

// kubectl runs `skiff kubectl` against this server.
func (s *server) kubectl(args ...string) (string, error) {
	cmd := exec.Command(s.bin, append([]string{"kubectl", "--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func runToExitEnv(t *testing.T, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// shimsUnder lists live processes whose executable is under dir (shims, runc) and
// the test's pod processes (web, pause).
func shimsUnder(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		name := strings.TrimSpace(string(comm))
		if strings.HasPrefix(exe, dir) || (exe == "/web" && name == "web") || (exe == "/pause" && name == "pause") {
			out = append(out, e.Name()+":"+exe)
		}
	}
	return out
}

// TestNodeBringYourOwnCNI: with --flannel-backend=none skiff writes no CNI config,
// so the Node cannot be Ready; start-up must still finish (the user needs a running
// server to install a CNI), saying why the Node is not Ready.
func TestNodeBringYourOwnCNI(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	s := newServerWith(t, "--flannel-backend", "none")
	t.Cleanup(func() {
		s.kill()
		if out, err := exec.Command(bin, "killall", "--data-dir", s.DataDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	s.Start()
	if !strings.Contains(s.Output(), "not Ready until a CNI network is installed") {
		t.Errorf("no warning that the node waits for a CNI; output:\n%s", s.Output())
	}
	nodes, err := s.Client().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v, %v", nodes, err)
	}
	if nodeReady(&nodes.Items[0]) {
		t.Error("node Ready without any CNI config")
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "agent", "etc", "cni", "net.d", "10-skiff.conflist")); err == nil {
		t.Error("skiff wrote its CNI config with --flannel-backend=none")
	}
}
