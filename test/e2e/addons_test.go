package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// hotImage is imported from an archive dropped in while the server runs.
const hotImage = "skiff.local/e2e/hot:1"

// TestAddons covers the add-ons of a server with its node: manifests in
// server/manifests (and its subdirectories) are applied, put back, pruned
// once their file has settled, and skipped; LoadBalancer Services get the
// node's address and answer on it and on the node's loopback; a claim gets a
// local volume that outlives its pod and goes with the claim, writable by a
// non-root pod; an image archive dropped in while the server runs is
// imported; --disable removes what the add-ons had deployed.
func TestAddons(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	s := newServerWith(t)
	buildWebImage(t, filepath.Join(s.DataDir, "agent", "images", "web.tar"))
	// Dropped into the images dir only once the server runs.
	hotArchive := filepath.Join(t.TempDir(), "hot.tar")
	buildWebImageAs(t, hotArchive, hotImage)
	t.Cleanup(func() {
		s.kill()
		if out, err := exec.Command(bin, "killall", "--data-dir", s.DataDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	// Pods with dnsPolicy Default get this file as is. It keeps the host's
	// nameservers, which CoreDNS then forwards to as before.
	resolvConf := filepath.Join(t.TempDir(), "pods-resolv.conf")
	var podResolv strings.Builder
	if host, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		for _, l := range strings.Split(string(host), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "nameserver") {
				podResolv.WriteString(strings.TrimSpace(l) + "\n")
			}
		}
	}
	podResolv.WriteString("options timeout:3 attempts:4\n")
	if err := os.WriteFile(resolvConf, []byte(podResolv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Start("--resolv-conf", resolvConf)
	c := s.Client()
	ctx := context.Background()
	dir := filepath.Join(s.DataDir, "server", "manifests")
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	configMap := func(ns, name string) (*corev1.ConfigMap, error) {
		return c.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	}
	gone := func(err error) bool { return apierrors.IsNotFound(err) }

	t.Run("manifests", func(t *testing.T) {
		app := `apiVersion: v1
kind: ConfigMap
metadata: {name: mf-one}
data: {greeting: hello}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: mf-two, namespace: mf-test}
data: {n: "2"}
---
apiVersion: v1
kind: Namespace
metadata: {name: mf-test}
`
		write("app.yaml", app)
		eventually(t, 30*time.Second, func() (string, error) {
			if _, err := configMap("mf-test", "mf-two"); err != nil {
				return "", err
			}
			_, err := configMap("default", "mf-one")
			return "", err
		})
		cm, _ := configMap("default", "mf-one")
		managed := false
		for _, f := range cm.ManagedFields {
			managed = managed || (f.Manager == "skiff" && f.Operation == metav1.ManagedFieldsOperationApply)
		}
		if !managed {
			t.Errorf("mf-one is not server-side applied by skiff: %+v", cm.ManagedFields)
		}
		sum := sha256.Sum256([]byte(app))
		out := eventually(t, 10*time.Second, func() (string, error) {
			return s.kubectl("get", "addon", "-n", "kube-system", "app", "-o", "jsonpath={.spec.checksum} {.spec.objects[*].name}")
		})
		if want := hex.EncodeToString(sum[:]); !strings.HasPrefix(out, want) || !strings.Contains(out, "mf-one") || !strings.Contains(out, "mf-test") {
			t.Errorf("Addon app = %q, want checksum %s and the three objects", out, want)
		}

		// A hand edit is put back on the next sync; a JSON file applies too.
		if _, err := s.kubectl("patch", "configmap", "mf-one", "--type=merge", "-p", `{"data":{"greeting":"by hand"}}`); err != nil {
			t.Fatal(err)
		}
		write("other.json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"mf-json"},"data":{"from":"json"}}`)
		eventually(t, 30*time.Second, func() (string, error) {
			cm, err := configMap("default", "mf-one")
			if err != nil || cm.Data["greeting"] != "hello" {
				return "mf-one not restored", errNotYet
			}
			_, err = configMap("default", "mf-json")
			return "", err
		})

		out, _ = s.kubectl("get", "addon", "-n", "kube-system", "app", "-o", "jsonpath={.metadata.labels.skiff\\.io/server}")
		if out == "" {
			t.Errorf("Addon app names no server: %q", out)
		}

		// An object moved to another file survives its old file's removal.
		before, err := configMap("default", "mf-json")
		if err != nil {
			t.Fatal(err)
		}
		write("moved.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mf-json}\ndata: {from: moved}\n")
		if err := os.Remove(filepath.Join(dir, "other.json")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() (string, error) {
			if out, err := s.kubectl("get", "addon", "-n", "kube-system", "other"); err == nil {
				return out, errNotYet
			}
			cm, err := configMap("default", "mf-json")
			if err != nil || cm.Data["from"] != "moved" {
				return fmt.Sprint(cm, err), errNotYet
			}
			if cm.UID != before.UID {
				return "", fmt.Errorf("mf-json was deleted and made again while moving between files")
			}
			return "", nil
		})
		// Two files with one Addon name: neither applies, both are named.
		write("app.json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"mf-clash"}}`)
		eventually(t, 30*time.Second, func() (string, error) {
			if !strings.Contains(s.Output(), "these files share an Addon name") {
				return "", errNotYet
			}
			return "", nil
		})
		if _, err := configMap("default", "mf-clash"); !gone(err) {
			t.Errorf("app.json, whose Addon name app.yaml has, was applied: %v", err)
		}
		if _, err := configMap("default", "mf-one"); err != nil {
			t.Errorf("app.yaml's objects went while app.json shared its name: %v", err)
		}
		if err := os.Remove(filepath.Join(dir, "app.json")); err != nil {
			t.Fatal(err)
		}

		// An object removed from the file is pruned; a changed one updated.
		write("app.yaml", strings.Replace(strings.Replace(app, "greeting: hello", "greeting: changed", 1),
			"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mf-two, namespace: mf-test}\ndata: {n: \"2\"}\n---\n", "", 1))
		eventually(t, 30*time.Second, func() (string, error) {
			if _, err := configMap("mf-test", "mf-two"); !gone(err) {
				return "mf-two still there", errNotYet
			}
			if cm, err := configMap("default", "mf-one"); err != nil || cm.Data["greeting"] != "changed" {
				return "mf-one not updated", errNotYet
			}
			return "", nil
		})

		// A file that does not parse changes nothing and is named in the log.
		write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n")
		eventually(t, 30*time.Second, func() (string, error) {
			if !strings.Contains(s.Output(), "broken.yaml") {
				return "", errNotYet
			}
			return "", nil
		})
		if err := os.Remove(filepath.Join(dir, "broken.yaml")); err != nil {
			t.Fatal(err)
		}

		// Skipped: edits and removal of the file leave the objects alone.
		write("app.yaml.skip", "")
		write("app.yaml", strings.Replace(app, "greeting: hello", "greeting: skipped", 1))
		time.Sleep(3 * time.Second)
		if cm, err := configMap("default", "mf-one"); err != nil || cm.Data["greeting"] != "changed" {
			t.Errorf("a skipped file was applied: %v %v", cm.Data, err)
		}
		if err := os.Remove(filepath.Join(dir, "app.yaml")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		if _, err := configMap("default", "mf-one"); err != nil {
			t.Errorf("removing a skipped file pruned its objects: %v", err)
		}

		// Managed again and removed: everything it created goes, its Addon too.
		if err := os.Remove(filepath.Join(dir, "app.yaml.skip")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, func() (string, error) {
			if _, err := configMap("default", "mf-one"); !gone(err) {
				return "mf-one still there", errNotYet
			}
			if _, err := c.CoreV1().Namespaces().Get(ctx, "mf-test", metav1.GetOptions{}); !gone(err) {
				return "namespace mf-test still there", errNotYet
			}
			if out, err := s.kubectl("get", "addon", "-n", "kube-system", "app"); err == nil {
				return out, errNotYet
			}
			return "", nil
		})
	})

	// Deleting waits for a file to settle: one emptied or truncated for a
	// moment and written back loses nothing; the tree is read recursively
	// (subdirectories, symlinked directories, .skip beside a file); a file
	// removed is pruned once it has been gone for the grace period (10 s).
	t.Run("manifests tree and grace", func(t *testing.T) {
		sumOf := func(content string) string {
			h := sha256.Sum256([]byte(content))
			return hex.EncodeToString(h[:])
		}
		addonHas := func(addon, content string) func() (string, error) {
			return func() (string, error) {
				out, err := s.kubectl("get", "addon", "-n", "kube-system", addon, "-o", "jsonpath={.spec.checksum}")
				if err != nil || out != sumOf(content) {
					return out, errNotYet
				}
				return "", nil
			}
		}
		uids := func() string {
			ns, err := c.CoreV1().Namespaces().Get(ctx, "mf-grace", metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			cm, err := configMap("mf-grace", "cfg")
			if err != nil {
				return err.Error()
			}
			return fmt.Sprintf("namespace %s %s, ConfigMap %s", ns.UID, ns.Status.Phase, cm.UID)
		}
		nsDoc := "apiVersion: v1\nkind: Namespace\nmetadata: {name: mf-grace}\n"
		full := nsDoc + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: mf-grace}\ndata: {k: v}\n"
		write("grace.yaml", full)
		eventually(t, 30*time.Second, addonHas("grace", full))
		before := uids()
		if !strings.Contains(before, "Active") {
			t.Fatalf("grace.yaml applied, yet: %s", before)
		}
		for what, transient := range map[string]string{"emptied": "", "truncated to its first document": nsDoc} {
			write("grace.yaml", transient)
			eventually(t, 30*time.Second, addonHas("grace", transient)) // seen by skiff
			write("grace.yaml", full)
			eventually(t, 30*time.Second, addonHas("grace", full))
			if now := uids(); now != before {
				t.Errorf("grace.yaml %s and written back within the grace period: %s, was %s", what, now, before)
			}
		}

		// Nested and symlinked directories; a .skip beside a nested file.
		outside := t.TempDir()
		if err := os.WriteFile(filepath.Join(outside, "linked.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mf-linked}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "nested", "deeper"), 0o700); err != nil {
			t.Fatal(err)
		}
		write("nested/skipped.yaml.skip", "")
		write("nested/skipped.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mf-skipped}\n")
		if err := os.Symlink(outside, filepath.Join(dir, "linked")); err != nil {
			t.Fatal(err)
		}
		write("nested/deeper/deep.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mf-deep}\n")
		eventually(t, 30*time.Second, func() (string, error) {
			if _, err := configMap("default", "mf-deep"); err != nil {
				return "", err
			}
			_, err := configMap("default", "mf-linked")
			return "", err
		})
		if _, err := configMap("default", "mf-skipped"); !gone(err) {
			t.Errorf("nested/skipped.yaml, beside its .skip, was applied: %v", err)
		}
		// The nested directory is watched: a change applies within seconds,
		// not at the next 30 s resync.
		write("nested/deeper/deep.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mf-deep}\ndata: {changed: \"yes\"}\n")
		eventually(t, 10*time.Second, func() (string, error) {
			if cm, err := configMap("default", "mf-deep"); err != nil || cm.Data["changed"] != "yes" {
				return fmt.Sprint(cm, err), errNotYet
			}
			return "", nil
		})

		removed := time.Now()
		if err := os.Remove(filepath.Join(dir, "nested", "deeper", "deep.yaml")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 40*time.Second, func() (string, error) {
			if _, err := configMap("default", "mf-deep"); !gone(err) {
				return "mf-deep still there", errNotYet
			}
			return "", nil
		})
		if took := time.Since(removed); took < 9*time.Second {
			t.Errorf("mf-deep pruned %s after its file was removed, before the 10 s grace period", took)
		}
		for _, f := range []string{"grace.yaml", "linked", "nested"} {
			if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("servicelb", func(t *testing.T) {
		deployWeb(t, c, 1)
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			t.Fatalf("nodes: %v %v", nodes, err)
		}
		nodeIP := internalIP(&nodes.Items[0])
		lb := createLB(t, c, "web-lb", 8088)
		ingress := eventually(t, 30*time.Second, func() (string, error) { return lbIngress(c, lb) })
		if ingress != nodeIP {
			t.Fatalf("web-lb ingress %q, want the node's address %s", ingress, nodeIP)
		}
		out := eventually(t, 30*time.Second, func() (string, error) {
			return httpGet("http://" + net.JoinHostPort(nodeIP, "8088") + "/")
		})
		if !strings.Contains(out, "hello from web-") {
			t.Errorf("web-lb on %s:8088 answered %q", nodeIP, out)
		}
		// And on the node's loopback, as on K3s.
		out = eventually(t, 30*time.Second, func() (string, error) { return httpGet("http://127.0.0.1:8088/") })
		if !strings.Contains(out, "hello from web-") {
			t.Errorf("web-lb on 127.0.0.1:8088 answered %q", out)
		}
		// A port already taken on loopback is reported on the Service.
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		busy := createLB(t, c, "web-busy", int32(taken.Addr().(*net.TCPAddr).Port))
		eventually(t, 30*time.Second, func() (string, error) { return warning(c, busy, "LoopbackPortInUse", "address already in use") })
		if err := c.CoreV1().Services("default").Delete(ctx, busy, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}

		// The same port again: refused with an event, until the port is free.
		second := createLB(t, c, "web-lb2", 8088)
		eventually(t, 30*time.Second, func() (string, error) { return warning(c, second, "PortInUse", "default/web-lb") })
		if ip, _ := lbIngress(c, second); ip != "" {
			t.Errorf("web-lb2 got %q for a port web-lb holds", ip)
		}
		// skiff's own port is never given away.
		api := createLB(t, c, "web-api", int32(s.Port))
		eventually(t, 30*time.Second, func() (string, error) { return warning(c, api, "PortInUse", "supervisor") })
		if err := c.CoreV1().Services("default").Delete(ctx, "web-lb", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() (string, error) { return lbIngress(c, second) })
	})

	t.Run("dns", func(t *testing.T) {
		for name, headless := range map[string]bool{"web": false, "web-headless": true} {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.ServiceSpec{
					Selector: map[string]string{"app": "web"},
					Ports:    []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}},
				},
			}
			if headless {
				svc.Spec.ClusterIP = corev1.ClusterIPNone
			}
			if _, err := c.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		pods, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("web pods: %v %v", pods, err)
		}
		pod := pods.Items[0].Name
		for _, url := range []string{
			"http://web:8080/",                                    // the search path
			"http://web.default.svc.cluster.local:8080/",          // a Service's name
			"http://web-headless.default.svc.cluster.local:8080/", // a headless Service: the pod itself
		} {
			out := eventually(t, time.Minute, func() (string, error) { return s.kubectl("exec", pod, "--", "/web", "fetch", url) })
			if !strings.Contains(out, "hello from "+pod) {
				t.Errorf("%s from a pod: %q", url, out)
			}
		}
		// Offline, an outside name fails with a DNS error, not a hang.
		begin := time.Now()
		out, err := s.kubectl("exec", pod, "--", "/web", "fetch", "http://skiff-e2e.invalid/")
		if err == nil || !strings.Contains(out, "lookup skiff-e2e.invalid") {
			t.Errorf("an outside name: %v %q, want a lookup error", err, out)
		}
		t.Logf("outside name failed in %s", time.Since(begin).Round(time.Millisecond))

		// The node's name resolves to its InternalIP, as with K3s's NodeHosts.
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			t.Fatalf("nodes: %v %v", nodes, err)
		}
		nd := nodes.Items[0]
		if got, want := lookupFrom(t, s, pod, nd.Name), nodeInternalIPs(&nd); got != want {
			t.Errorf("node name %s from a pod resolves to %q, want %q", nd.Name, got, want)
		}

		// A dnsPolicy Default pod gets the --resolv-conf file.
		_, err = c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "dns-default"},
			Spec: corev1.PodSpec{DNSPolicy: corev1.DNSDefault, Containers: []corev1.Container{{
				Name: "web", Image: webImage, ImagePullPolicy: corev1.PullNever,
			}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out = eventually(t, 2*time.Minute, func() (string, error) {
			return s.kubectl("exec", "dns-default", "--", "/web", "cat", "/etc/resolv.conf")
		})
		// The kubelet may reorder options.
		for _, want := range append(strings.Split(strings.TrimSpace(podResolv.String()), "\n"), "timeout:3", "attempts:4") {
			if strings.HasPrefix(want, "options ") {
				continue
			}
			if !strings.Contains(out, want) {
				t.Errorf("a dnsPolicy Default pod's resolv.conf lacks %q from --resolv-conf:\n%s", want, out)
			}
		}
	})

	t.Run("node roles", func(t *testing.T) {
		// Set before the server says it is ready.
		out, err := s.kubectl("get", "nodes", "--no-headers", "-o", "custom-columns=ROLES:.metadata.labels")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, want := range []string{"node-role.kubernetes.io/control-plane:true", "node-role.kubernetes.io/master:true"} {
			if !strings.Contains(out, want) {
				t.Errorf("server node labels lack %s: %s", want, out)
			}
		}
		if strings.Contains(out, "node-role.kubernetes.io/etcd") {
			t.Errorf("etcd role without embedded etcd: %s", out)
		}
		out, _ = s.kubectl("get", "nodes")
		if fields := strings.Fields(strings.Split(out, "\n")[1]); len(fields) < 3 || fields[2] != "control-plane,master" {
			t.Errorf("kubectl get nodes ROLES: %q, want control-plane,master", out)
		}
	})

	t.Run("network policy", func(t *testing.T) {
		webs, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(webs.Items) == 0 || webs.Items[0].Status.PodIP == "" {
			t.Fatalf("web pods: %v %v", webs, err)
		}
		url := "http://" + net.JoinHostPort(webs.Items[0].Status.PodIP, "8080") + "/"
		client := runClientPod(t, c, "np-client", map[string]string{"role": "client"})
		fetch := func() error {
			out, err := s.kubectl("exec", client, "--", "/web", "fetch", url)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
		reaches := func(want bool, why string) {
			t.Helper()
			eventually(t, 30*time.Second, func() (string, error) {
				if err := fetch(); (err == nil) != want {
					return fmt.Sprintf("%s: fetch err = %v", why, err), errNotYet
				}
				return "", nil
			})
			// One failure could be a blip; a policy denies every time.
			if !want {
				if err := fetch(); err == nil {
					t.Errorf("%s: a second fetch got through", why)
				}
			}
		}
		reaches(true, "no policy")

		// Ingress: the web pods accept nothing, then only the client on 8080.
		policy := func(name string, spec networkingv1.NetworkPolicySpec) {
			t.Helper()
			np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
			if _, err := c.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		unpolicy := func(name string) {
			t.Helper()
			if err := c.NetworkingV1().NetworkPolicies("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		web := metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
		clients := metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}
		policy("np-deny", networkingv1.NetworkPolicySpec{PodSelector: web, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}})
		reaches(false, "web denies all ingress")
		// The host's own traffic (kubelet probes) is not subject to policy.
		if _, err := httpGet(url); err != nil {
			t.Errorf("the host cannot reach a pod under a deny-all policy: %v", err)
		}
		port := intstr.FromInt32(8080)
		policy("np-allow", networkingv1.NetworkPolicySpec{
			PodSelector: web, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &clients}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
			}},
		})
		reaches(true, "web allows the client on 8080")

		// Egress: the client may send nothing, whatever web allows.
		policy("np-egress", networkingv1.NetworkPolicySpec{PodSelector: clients, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}})
		reaches(false, "the client may send nothing")
		unpolicy("np-egress")
		reaches(true, "egress policy deleted")
		for _, name := range []string{"np-deny", "np-allow"} {
			unpolicy(name)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			t.Fatalf("nodes: %v %v", nodes, err)
		}
		out := eventually(t, 2*time.Minute, func() (string, error) { return s.kubectl("top", "nodes") })
		if !strings.Contains(out, nodes.Items[0].Name) || !strings.Contains(out, "CPU(cores)") {
			t.Errorf("kubectl top nodes: %q", out)
		}
		out = eventually(t, 2*time.Minute, func() (string, error) {
			out, err := s.kubectl("top", "pods")
			if err == nil && !strings.Contains(out, "web-") {
				return out, errNotYet
			}
			return out, err
		})
		if !strings.Contains(out, "MEMORY(bytes)") {
			t.Errorf("kubectl top pods: %q", out)
		}
	})

	t.Run("local storage", func(t *testing.T) {
		sc, err := c.StorageV1().StorageClasses().Get(ctx, "local-path", metav1.GetOptions{})
		if err != nil || sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
			t.Fatalf("default StorageClass local-path: %v %v", sc, err)
		}
		// No class named: the default one provisions it.
		createClaim(t, c, "data", "64Mi")
		runVolumePod(t, c, "vol")
		if _, err := s.kubectl("exec", "vol", "--", "/web", "write", "/data/f", "persisted"); err != nil {
			t.Fatal(err)
		}
		pvc, err := c.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data", metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimBound {
			t.Fatalf("claim: %v %v", pvc, err)
		}
		dir := filepath.Join(s.DataDir, "storage", pvc.Spec.VolumeName+"_default_data")
		if data, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(data) != "persisted" {
			t.Errorf("the volume's file on the node: %q %v", data, err)
		}
		// A new pod on the claim sees the data.
		if err := c.CoreV1().Pods("default").Delete(ctx, "vol", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, func() (string, error) {
			if _, err := c.CoreV1().Pods("default").Get(ctx, "vol", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return "", errNotYet
			}
			return "", nil
		})
		runVolumePod(t, c, "vol")
		if out, err := s.kubectl("exec", "vol", "--", "/web", "cat", "/data/f"); err != nil || out != "persisted" {
			t.Errorf("after the pod was replaced: %q %v", out, err)
		}
		// Deleting the claim deletes the volume and its directory.
		zero := int64(0)
		if err := c.CoreV1().Pods("default").Delete(ctx, "vol", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		if err := c.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, func() (string, error) {
			if _, err := c.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return "volume still there", errNotYet
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				return "directory still there", errNotYet
			}
			return "", nil
		})
	})

	t.Run("local storage non-root", func(t *testing.T) {
		// A fresh volume is writable by a pod of any user, as with K3s.
		createClaim(t, c, "data-nonroot", "16Mi")
		uid := int64(1000)
		runVolumePodWith(t, c, "vol-nonroot", "data-nonroot", func(p *corev1.PodSpec) {
			p.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid}
		})
		if out, err := s.kubectl("exec", "vol-nonroot", "--", "/web", "write", "/data/f", "by 1000"); err != nil {
			t.Fatalf("a pod running as uid 1000 writing its volume: %v %s", err, out)
		}
		pvc, err := c.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data-nonroot", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(s.DataDir, "storage", pvc.Spec.VolumeName+"_default_data-nonroot")
		st, err := os.Stat(filepath.Join(dir, "f"))
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != 1000 {
			t.Errorf("the file written as uid 1000: %v %v", st, err)
		}
		if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o777 {
			t.Errorf("the volume's directory: %v %v, want mode 0777", st, err)
		}
		zero := int64(0)
		_ = c.CoreV1().Pods("default").Delete(ctx, "vol-nonroot", metav1.DeleteOptions{GracePeriodSeconds: &zero})
		_ = c.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data-nonroot", metav1.DeleteOptions{})
	})

	t.Run("image import while running", func(t *testing.T) {
		data, err := os.ReadFile(hotArchive)
		if err != nil {
			t.Fatal(err)
		}
		dropped := time.Now()
		if err := os.WriteFile(filepath.Join(s.DataDir, "agent", "images", "hot.tar"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() (string, error) {
			out, err := runToExitEnv(t, nil, bin, "ctr", "-n", "k8s.io", "images", "ls", "-q")
			if err != nil || !strings.Contains(out, hotImage) {
				return out, errNotYet
			}
			return "", nil
		})
		t.Logf("imported %s after %s", hotImage, time.Since(dropped).Round(100*time.Millisecond))
		if !strings.Contains(s.Output(), "hot.tar") {
			t.Errorf("no log line for the import of hot.tar")
		}
		runImagePod(t, c, "hot", hotImage)
	})

	t.Run("helm", func(t *testing.T) {
		archive := chartArchive(t)
		apply := func(doc string) {
			t.Helper()
			f := filepath.Join(t.TempDir(), "obj.yaml")
			if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := s.kubectl("apply", "-f", f); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		greeting := func(ns, name, want string) {
			t.Helper()
			eventually(t, time.Minute, func() (string, error) {
				cm, err := configMap(ns, name)
				if err != nil || cm.Data["greeting"] != want || cm.Data["extra"] != "from-set" {
					return fmt.Sprint(cm.Data, err), errNotYet
				}
				return "", nil
			})
		}
		// Installed from chartContent into its target namespace, with set.
		apply(`apiVersion: helm.skiff.io/v1
kind: HelmChart
metadata: {name: e2e, namespace: kube-system}
spec:
  targetNamespace: helm-e2e
  set: {extra: from-set}
  chartContent: ` + base64.StdEncoding.EncodeToString(archive) + "\n")
		greeting("helm-e2e", "e2e-cm", "hello")
		out := eventually(t, 30*time.Second, func() (string, error) {
			out, err := s.kubectl("get", "helmchart", "-n", "kube-system", "e2e", "-o", "jsonpath={.status.phase} {.status.revision}")
			if err == nil && out != "Installed 1" {
				return out, errNotYet
			}
			return out, err
		})
		t.Logf("HelmChart e2e: %s", out)
		if _, err := eventOn(c, "kube-system", "e2e", "Installed"); err != nil {
			t.Errorf("no Installed event on the HelmChart: %v", err)
		}

		// A HelmChartConfig's values win: the release is upgraded.
		apply(`apiVersion: helm.skiff.io/v1
kind: HelmChartConfig
metadata: {name: e2e, namespace: kube-system}
spec:
  valuesContent: "greeting: from-config"
`)
		greeting("helm-e2e", "e2e-cm", "from-config")
		eventually(t, 30*time.Second, func() (string, error) {
			out, err := s.kubectl("get", "helmchart", "-n", "kube-system", "e2e", "-o", "jsonpath={.status.revision}")
			if err == nil && out != "2" {
				return out, errNotYet
			}
			return out, err
		})

		// A chart file in the server's static directory.
		static := filepath.Join(s.DataDir, "server", "static", "charts")
		if err := os.MkdirAll(static, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(static, "e2e.tgz"), archive, 0o600); err != nil {
			t.Fatal(err)
		}
		apply(`apiVersion: helm.skiff.io/v1
kind: HelmChart
metadata: {name: e2e-static, namespace: default}
spec:
  chart: /static/charts/e2e.tgz
  set: {extra: from-set}
`)
		greeting("default", "e2e-static-cm", "hello")

		// A chart that cannot load: Failed, with the reason in status and an event.
		apply(`apiVersion: helm.skiff.io/v1
kind: HelmChart
metadata: {name: e2e-broken, namespace: default}
spec:
  chartContent: not-base64!
`)
		eventually(t, 30*time.Second, func() (string, error) {
			out, err := s.kubectl("get", "helmchart", "e2e-broken", "-o", "jsonpath={.status.phase}: {.status.message}")
			if err == nil && (!strings.HasPrefix(out, "Failed") || !strings.Contains(out, "base64")) {
				return out, errNotYet
			}
			return out, err
		})
		if _, err := eventOn(c, "default", "e2e-broken", "ChartNotLoaded"); err != nil {
			t.Error(err)
		}
		// Logged too, once, with the object's name.
		if n := strings.Count(s.Output(), "helm chart failed helmchart=default/e2e-broken"); n != 1 {
			t.Errorf("e2e-broken's failure logged %d times, want once:\n%s", n, linesWith(s.Output(), "helm"))
		}
		if out, err := s.kubectl("delete", "helmchart", "e2e-broken", "--timeout=60s"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}

		// Deleted: the release is uninstalled, then the object goes.
		if out, err := s.kubectl("delete", "helmchart", "-n", "kube-system", "e2e", "--timeout=60s"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		eventually(t, 30*time.Second, func() (string, error) {
			if _, err := configMap("helm-e2e", "e2e-cm"); !gone(err) {
				return "e2e-cm still there", errNotYet
			}
			return "", nil
		})
	})

	t.Run("helm recovery", func(t *testing.T) {
		// A release interrupted mid-install, by a stop (SIGTERM) and then
		// by a crash (SIGKILL), is installed again at the next start.
		defer func() {
			if t.Failed() {
				t.Logf("helm controller's log:\n%s", linesWith(s.Output(), "helm"))
			}
		}()
		f := filepath.Join(t.TempDir(), "slow.yaml")
		if err := os.WriteFile(f, []byte(`apiVersion: helm.skiff.io/v1
kind: HelmChart
metadata: {name: e2e-slow, namespace: default}
spec:
  set: {enabled: "false", greeting: "hello, world", replicas: "3"}
  chartContent: `+base64.StdEncoding.EncodeToString(slowChartArchive(t))+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := s.kubectl("apply", "-f", f); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		// releaseStates lists the release's revisions' states, as Helm
		// stores them (Secrets labelled owner=helm).
		releaseStates := func() string {
			secrets, err := c.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=e2e-slow"})
			if err != nil {
				return err.Error()
			}
			var states []string
			for _, sec := range secrets.Items {
				states = append(states, sec.Labels["version"]+":"+sec.Labels["status"])
			}
			sort.Strings(states)
			return strings.Join(states, ",")
		}
		status := func() string {
			out, _ := s.kubectl("get", "helmchart", "e2e-slow", "-o", "jsonpath={.status.phase}: {.status.message}")
			return out
		}
		// inHook waits until the install is pending, its hook running.
		inHook := func() {
			t.Helper()
			eventually(t, 2*time.Minute, func() (string, error) {
				if st := releaseStates(); st != "1:pending-install" {
					return st, errNotYet
				}
				// The pod of this install's hook: the one of the install
				// before may still be terminating.
				pods, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=e2e-slow-hook"})
				if err != nil {
					return err.Error(), errNotYet
				}
				running := false
				for _, p := range pods.Items {
					running = running || (p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning)
				}
				if !running {
					return fmt.Sprint("hook pod not running: ", pods.Items), errNotYet
				}
				if st := status(); !strings.HasPrefix(st, "Installing: installing release") {
					return "status " + st, errNotYet
				}
				return "", nil
			})
		}
		inHook()
		// The install in flight must not hold the stop: the Helm
		// controller stops within its own 5 s (else its Runner says
		// "still running"), and the apiserver and datastore after it
		// close in time. The whole stop's duration depends on the
		// machine's load; Stop fails only past 30 s, as a hang guard.
		before := len(s.Output())
		took := s.Stop()
		t.Logf("SIGTERM during an install: stopped in %s", took.Round(time.Millisecond))
		stopLog := s.Output()[before:]
		if !strings.Contains(stopLog, "helm operation interrupted by the stop") {
			t.Errorf("SIGTERM during an install: the Helm controller did not say its install was cut short:\n%s", stopLog)
		}
		if !strings.Contains(stopLog, "stopped in ") {
			t.Errorf("SIGTERM during an install: no end of the stop in the log:\n%s", stopLog)
		}
		for _, bad := range []string{"helm-controller: did not stop", "stopping helm-controller: still running",
			"helm-controller: not stopped", "apiserver: did not stop", "apiserver: not stopped",
			"datastore: did not stop", "datastore: not stopped", "stopping apiserver", "stopping datastore"} {
			if strings.Contains(stopLog, bad) {
				t.Errorf("SIGTERM during an install: %q in the stop's log:\n%s", bad, linesWith(stopLog, "stop"))
			}
		}

		s.Start()
		// Recovered (uninstalled), then installed again: its hook runs anew.
		if err := s.waitFor("helm release recovered", time.Minute); err != nil {
			t.Fatal(err)
		}
		inHook()
		s.kill()

		s.Start()
		msg := eventually(t, 2*time.Minute, func() (string, error) {
			if st := status(); !strings.HasPrefix(st, "Installed:") {
				return st, errNotYet
			}
			return status(), nil
		})
		if !strings.Contains(msg, "recover") || !strings.Contains(msg, "pending-install") {
			t.Errorf("status after recovery: %q, want it to say what was recovered", msg)
		}
		if st := releaseStates(); st != "1:deployed" {
			t.Errorf("release after recovery: %s, want one deployed revision", st)
		}
		// spec.set typed as --set types it, a comma kept.
		cm, err := configMap("default", "e2e-slow-cm")
		if err != nil || cm.Data["enabled"] != "off" || cm.Data["greeting"] != "hello, world" || cm.Data["replicas"] != "int64" {
			t.Errorf("e2e-slow-cm: %v %v", cm, err)
		}

		// A pending revision the controller did not record, forged by
		// whoever may write Secrets in the namespace (the HelmChart's
		// UID label, no operator label), whose manifest names another
		// object: left alone and reported, never recovered (a rollback
		// or uninstall would delete that object).
		victim, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "e2e-victim"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uid, err := s.kubectl("get", "helmchart", "e2e-slow", "-o", "jsonpath={.metadata.uid}")
		if err != nil || uid == "" {
			t.Fatalf("HelmChart UID: %q %v", uid, err)
		}
		forged := &release.Release{Name: "e2e-slow", Namespace: "default", Version: 2,
			Info:     &release.Info{Status: release.StatusPendingUpgrade},
			Manifest: "---\n# Source: forged\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: e2e-victim, namespace: default}\n",
			Labels:   map[string]string{"helm.skiff.io/helmchart-uid": uid}}
		secrets := driver.NewSecrets(c.CoreV1().Secrets("default"))
		if err := secrets.Create("sh.helm.release.v1.e2e-slow.v2", forged); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = secrets.Delete("sh.helm.release.v1.e2e-slow.v2") }()
		// A spec change makes the controller look at the release.
		before = len(s.Output())
		if out, err := s.kubectl("patch", "helmchart", "e2e-slow", "--type=merge", "-p", `{"spec":{"set":{"greeting":"again"}}}`); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		msg = eventually(t, time.Minute, func() (string, error) {
			if st := status(); !strings.HasPrefix(st, "Failed:") {
				return st, errNotYet
			}
			return status(), nil
		})
		if !strings.Contains(msg, "left alone") || !strings.Contains(msg, "revision 2") {
			t.Errorf("status with a forged pending revision: %q, want it reported as left alone", msg)
		}
		if _, err := eventOn(c, "default", "e2e-slow", "ReleaseStuck"); err != nil {
			t.Error(err)
		}
		if n := strings.Count(s.Output()[before:], "helm chart failed helmchart=default/e2e-slow"); n != 1 {
			t.Errorf("the forged release reported in %d log lines, want one:\n%s", n, linesWith(s.Output()[before:], "e2e-slow"))
		}
		if got, err := c.CoreV1().ConfigMaps("default").Get(ctx, "e2e-victim", metav1.GetOptions{}); err != nil || got.UID != victim.UID {
			t.Errorf("the object the forged revision names: %v", err)
		}
		if st := releaseStates(); st != "1:deployed,2:pending-upgrade" {
			t.Errorf("release with a forged revision: %s, want it untouched", st)
		}
		_ = c.CoreV1().ConfigMaps("default").Delete(ctx, "e2e-victim", metav1.DeleteOptions{})
	})

	t.Run("disable", func(t *testing.T) {
		// SIGKILL, not SIGTERM: the queueing rules stay behind as after a
		// crash, so the restart must clear them itself.
		if out := hostOutput(t, "iptables-save", "-t", "mangle"); !strings.Contains(out, "SKIFF-NETPOL") {
			t.Fatalf("network policy on, yet no SKIFF-NETPOL chain:\n%s", out)
		}
		s.kill()
		s.Start("--disable", "servicelb", "--disable", "local-storage", "--disable", "coredns", "--disable", "metrics-server", "--disable-network-policy", "--disable-helm-controller")
		// No queueing rules and no engine table are left on the host.
		eventually(t, 30*time.Second, func() (string, error) {
			if out := hostOutput(t, "iptables-save", "-t", "mangle"); strings.Contains(out, "SKIFF-NETPOL") {
				return "network policy disabled, yet iptables keeps its rules:\n" + out, errNotYet
			}
			if _, err := exec.LookPath("nft"); err != nil {
				return "", nil // no nft, no table to look at (CI installs it)
			}
			if out := hostOutput(t, "nft", "list", "tables"); strings.Contains(out, "skiff-network-policy") {
				return "network policy disabled, yet nftables keeps its table:\n" + out, errNotYet
			}
			return "", nil
		})
		// What the add-ons deployed is pruned: the StorageClass, the kube-dns
		// Service.
		eventually(t, 30*time.Second, func() (string, error) {
			if _, err := c.StorageV1().StorageClasses().Get(ctx, "local-path", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return "local-path still there", errNotYet
			}
			if _, err := c.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return "kube-dns still there", errNotYet
			}
			if out, err := s.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io"); err == nil {
				return out, errNotYet
			}
			// The HelmChart CRDs go (the HelmChart left is let go first).
			if out, err := s.kubectl("get", "crd", "helmcharts.helm.skiff.io"); err == nil {
				return out, errNotYet
			}
			return "", nil
		})
		// A release installed before stays.
		if _, err := configMap("default", "e2e-static-cm"); err != nil {
			t.Errorf("disabling the Helm controller removed a release's objects: %v", err)
		}
		if ip, err := lbIngress(c, "web-lb2"); ip != "" || err == nil {
			t.Errorf("web-lb2 keeps address %q with servicelb disabled", ip)
		}
		// Nor a loopback listener.
		eventually(t, 30*time.Second, func() (string, error) {
			if conn, err := net.DialTimeout("tcp", "127.0.0.1:8088", time.Second); err == nil {
				conn.Close()
				return "127.0.0.1:8088 still answers with servicelb disabled", errNotYet
			}
			return "", nil
		})
		createLB(t, c, "web-lb3", 8089)
		time.Sleep(5 * time.Second)
		if ip, _ := lbIngress(c, "web-lb3"); ip != "" {
			t.Errorf("web-lb3 got %q with servicelb disabled", ip)
		}
	})
}

// linesWith is the lines of out that contain text.
func linesWith(out, text string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, text) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// lookupFrom resolves name inside a pod (its resolv.conf and search path)
// and returns the addresses, sorted and comma-separated.
func lookupFrom(t *testing.T, s *server, pod, name string) string {
	t.Helper()
	out := eventually(t, time.Minute, func() (string, error) { return s.kubectl("exec", pod, "--", "/web", "lookup", name) })
	addrs := strings.Fields(out)
	slices.Sort(addrs)
	return strings.Join(addrs, ",")
}

// nodeInternalIPs are a Node's InternalIPs, sorted and comma-separated.
func nodeInternalIPs(n *corev1.Node) string {
	var ips []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ips = append(ips, a.Address)
		}
	}
	slices.Sort(ips)
	return strings.Join(ips, ",")
}

// hostOutput runs a command on the host and fails the test if it fails.
func hostOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// chartArchive builds a small chart: a ConfigMap <release>-cm with the
// values greeting and extra.
func chartArchive(t *testing.T) []byte {
	t.Helper()
	return archiveOf(t, map[string]string{
		"e2e/Chart.yaml":        "apiVersion: v2\nname: e2e\nversion: 0.1.0\n",
		"e2e/values.yaml":       "greeting: hello\nextra: none\n",
		"e2e/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  extra: {{ .Values.extra | quote }}\n",
	})
}

// slowChartArchive builds a chart whose pre-install hook, a Job of the web
// image, sleeps for a while: its release stays pending-install meanwhile.
// Its ConfigMap <release>-cm shows how spec.set values arrive.
func slowChartArchive(t *testing.T) []byte {
	t.Helper()
	return archiveOf(t, map[string]string{
		"slow/Chart.yaml":  "apiVersion: v2\nname: slow\nversion: 0.1.0\n",
		"slow/values.yaml": "enabled: true\ngreeting: hello\nsleep: 8s\n",
		"slow/templates/hook.yaml": `apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-hook
  annotations: {helm.sh/hook: pre-install}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: sleep, image: ` + webImage + `, imagePullPolicy: Never, args: [sleep, {{ .Values.sleep | quote }}]}
`,
		"slow/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  enabled: {{ if .Values.enabled }}\"on\"{{ else }}\"off\"{{ end }}\n  greeting: {{ .Values.greeting | quote }}\n  replicas: {{ kindOf .Values.replicas | quote }}\n",
	})
}

// archiveOf packs files into a .tgz.
func archiveOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// eventOn waits for an event of the reason on an object and returns its message.
func eventOn(c kubernetes.Interface, ns, name, reason string) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := c.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err == nil {
			for _, e := range evs.Items {
				if e.Reason == reason {
					return e.Message, nil
				}
			}
		}
		time.Sleep(time.Second)
	}
	return "", fmt.Errorf("no %s event on %s/%s", reason, ns, name)
}

// runClientPod runs the web image as a pod with the given labels and waits
// until it runs.
func runClientPod(t *testing.T, c kubernetes.Interface, name string, labels map[string]string) string {
	t.Helper()
	return runPod(t, c, name, webImage, labels)
}

// runImagePod runs an image (never pulled) as a pod and waits until it runs.
func runImagePod(t *testing.T, c kubernetes.Interface, name, image string) string {
	t.Helper()
	return runPod(t, c, name, image, nil)
}

func runPod(t *testing.T, c kubernetes.Interface, name, image string, labels map[string]string) string {
	t.Helper()
	ctx := context.Background()
	_, err := c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "web", Image: image, ImagePullPolicy: corev1.PullNever,
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, func() (string, error) {
		p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Sprint(p.Status.Phase, err), errNotYet
		}
		return "", nil
	})
	return name
}

// createClaim creates claim name in "default" with no class named (the
// default one provisions it), asking for size ("16Mi").
func createClaim(t *testing.T, c kubernetes.Interface, name, size string) {
	t.Helper()
	_, err := c.CoreV1().PersistentVolumeClaims("default").Create(context.Background(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// runVolumePod runs the web image with the claim "data" at /data.
func runVolumePod(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	runVolumePodWith(t, c, name, "data")
}

// runVolumePodWith runs the web image with a claim at /data, the pod spec
// changed by opts.
func runVolumePodWith(t *testing.T, c kubernetes.Interface, name, claim string, opts ...func(*corev1.PodSpec)) {
	t.Helper()
	ctx := context.Background()
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: "web", Image: webImage, ImagePullPolicy: corev1.PullNever,
			VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
		}},
		Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
		}}},
	}
	for _, o := range opts {
		o(&spec)
	}
	_, err := c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, func() (string, error) {
		p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if p.Status.Phase != corev1.PodRunning {
			return string(p.Status.Phase), errNotYet
		}
		return "", nil
	})
}

func createLB(t *testing.T, c kubernetes.Interface, name string, port int32) string {
	t.Helper()
	_, err := c.CoreV1().Services("default").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// lbIngress is a Service's load balancer addresses, an error while it has none.
func lbIngress(c kubernetes.Interface, name string) (string, error) {
	svc, err := c.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	if len(ips) == 0 {
		return "", errNotYet
	}
	return strings.Join(ips, ","), nil
}

// warning finds a Warning event with reason on the Service whose message
// contains text.
func warning(c kubernetes.Interface, service, reason, text string) (string, error) {
	events, err := c.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + service})
	if err != nil {
		return "", err
	}
	var seen []string
	for _, e := range events.Items {
		if e.Type == corev1.EventTypeWarning && e.Reason == reason && strings.Contains(e.Message, text) {
			return e.Message, nil
		}
		seen = append(seen, e.Reason+": "+e.Message)
	}
	return strings.Join(seen, "\n"), errNotYet
}
