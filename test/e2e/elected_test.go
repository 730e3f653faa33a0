package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/skiffkube/skiff/internal/addons/servicelb"
	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// electedLeases are the Leases of what runs on one server of the cluster
// at a time (docs/design.md, "Add-ons: one registry").
var electedLeases = []string{"skiff-helm-controller", "skiff-servicelb", "skiff-local-storage", "skiff-node-passwords", "skiff-server-endpoints", "skiff-cloud-node-controller"}

// leaseHolder is a Lease's holder in kube-system, "" when it has none.
func leaseHolder(c kubernetes.Interface, name string) (string, error) {
	l, err := c.CoordinationV1().Leases("kube-system").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return ptr.Deref(l.Spec.HolderIdentity, ""), nil
}

// kubernetesEndpoints lists the addresses of the kubernetes Service's
// EndpointSlice as ip:port, sorted.
func kubernetesEndpoints(c kubernetes.Interface) ([]string, error) {
	s, err := c.DiscoveryV1().EndpointSlices("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			for _, p := range s.Ports {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(ptr.Deref(p.Port, 0)))))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// serviceAddresses lists the endpoint addresses of every slice of a
// Service, sorted.
func serviceAddresses(c kubernetes.Interface, ns, svc string) ([]string, error) {
	list, err := c.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			out = append(out, e.Addresses...)
		}
	}
	sort.Strings(out)
	return out, nil
}

// loadBalancerWriters are the field managers that own a Service's
// status.loadBalancer through the status subresource.
func loadBalancerWriters(s *corev1.Service) ([]string, error) {
	var out []string
	for _, e := range s.ManagedFields {
		if e.Subresource != "status" || e.FieldsV1 == nil {
			continue
		}
		var fields map[string]map[string]any
		if err := json.Unmarshal(e.FieldsV1.Raw, &fields); err != nil {
			return nil, fmt.Errorf("managedFields of %s: %w", e.Manager, err)
		}
		if _, ok := fields["f:status"]["f:loadBalancer"]; ok {
			out = append(out, e.Manager)
		}
	}
	sort.Strings(out)
	return out, nil
}

// TestServersShareElectedAddons runs three servers (each with its node,
// each in its own namespaces) on one datastore: the kubernetes Service and
// the kube-dns Service list all three; each elected add-on runs on one of
// them; a HelmChart is installed once and a LoadBalancer Service's status
// has one writer, the servicelb leader (its field manager names the server,
// and no other server logged a write). Then the servicelb leader is killed
// (SIGKILL): the survivors take its leases over, the dead server leaves the
// kubernetes and kube-dns endpoints, new work (another chart, another
// LoadBalancer Service, again with one writer) is done by the new leaders,
// and the first chart is not installed again.
func TestServersShareElectedAddons(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("skreg", "10.86.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	endpoint, files := startExternalEtcd(t, nw.Gateway)
	etcdFlags := []string{"--datastore-endpoint", endpoint,
		"--datastore-cafile", files.CA, "--datastore-certfile", files.Cert, "--datastore-keyfile", files.Key}
	// Short: kine's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "sk-reg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	var nodes []*multinode.Node
	for _, name := range []string{"reg1", "reg2", "reg3"} {
		nd, err := nw.AddNode(name, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
	}
	s1 := startNSServer(t, nodes[0], etcdFlags...)
	// The other servers get the CAs, keys and token from the datastore's
	// bootstrap data.
	token := readToken(t, nodes[0].DataDir())
	servers := map[string]*nsServer{"reg1": s1}
	for _, nd := range nodes[1:] {
		servers[nd.Name] = startNSServer(t, nd, append(etcdFlags, "--token", token)...)
	}
	c := s1.Client()
	ctx := context.Background()

	// ips are the addresses of the named servers' nodes, sorted, and
	// supervisors their supervisor addresses.
	ips := func(names ...string) []string {
		var out []string
		for _, nd := range nodes {
			if slices.Contains(names, nd.Name) {
				out = append(out, nd.IP.String())
			}
		}
		sort.Strings(out)
		return out
	}
	supervisors := func(ips []string) []string {
		var out []string
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, "6443"))
		}
		return out
	}
	all := ips("reg1", "reg2", "reg3")
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := kubernetesEndpoints(c)
		if err == nil && !slices.Equal(got, supervisors(all)) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	eventually(t, time.Minute, func() (string, error) {
		got, err := serviceAddresses(c, "kube-system", "kube-dns")
		if err == nil && !slices.Equal(got, all) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	holders := map[string]string{}
	eventually(t, time.Minute, func() (string, error) {
		for _, l := range electedLeases {
			h, err := leaseHolder(c, l)
			if err != nil {
				return l, err
			}
			if servers[h] == nil {
				return l + " held by " + h, errNotYet
			}
			holders[l] = h
		}
		return "", nil
	})
	t.Logf("lease holders: %v", holders)

	chart := func(name string) {
		t.Helper()
		f := filepath.Join(dir, name+".yaml")
		doc := `apiVersion: helm.skiff.io/v1
kind: HelmChart
metadata: {name: ` + name + `, namespace: kube-system}
spec:
  targetNamespace: reg-helm
  chartContent: ` + base64.StdEncoding.EncodeToString(chartArchive(t)) + "\n"
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, func() (string, error) {
			for _, s := range servers {
				if s.Running() {
					return s.Kubectl("apply", "-f", f)
				}
			}
			return "", fmt.Errorf("no server running")
		})
	}
	installed := func(c kubernetes.Interface, name string) {
		t.Helper()
		eventually(t, 3*time.Minute, func() (string, error) {
			if _, err := c.CoreV1().ConfigMaps("reg-helm").Get(ctx, name+"-cm", metav1.GetOptions{}); err != nil {
				return "", err
			}
			_, err := c.CoreV1().Secrets("reg-helm").Get(ctx, "sh.helm.release.v1."+name+".v1", metav1.GetOptions{})
			return "", err
		})
	}
	// Installed once: revision 1 and no other.
	onlyRevisionOne := func(c kubernetes.Interface, name string) {
		t.Helper()
		list, err := c.CoreV1().Secrets("reg-helm").List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range list.Items {
			got = append(got, s.Name)
		}
		if !slices.Equal(got, []string{"sh.helm.release.v1." + name + ".v1"}) {
			t.Errorf("release %s revisions %v, want only v1", name, got)
		}
	}
	loadBalancer := func(c kubernetes.Interface, name string, port int32) {
		t.Helper()
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(8080)}}},
		}
		eventually(t, time.Minute, func() (string, error) {
			_, err := c.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				err = nil
			}
			return "", err
		})
		eventually(t, 2*time.Minute, func() (string, error) {
			s, err := c.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
			if err == nil && len(s.Status.LoadBalancer.Ingress) == 0 {
				return "no ingress yet", errNotYet
			}
			return "", err
		})
	}
	// One writer: the Service's status.loadBalancer is owned by the field
	// manager of writer's servicelb alone, and of the running servers
	// only writer logged a write of it.
	oneWriter := func(c kubernetes.Interface, name, writer string) {
		t.Helper()
		s, err := c.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := loadBalancerWriters(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{servicelb.FieldManager(writer)}; !slices.Equal(got, want) {
			t.Errorf("service %s: status.loadBalancer written by %q, want only %q (managedFields %+v)", name, got, want, s.ManagedFields)
		}
		t.Logf("service %s: status.loadBalancer written by %q", name, got)
		wrote := "servicelb: load balancer addresses service=default/" + name + " "
		for n, srv := range servers {
			if !srv.Running() {
				continue
			}
			if logged := strings.Contains(srv.Output(), wrote); logged != (n == writer) {
				t.Errorf("service %s: server %s logged its load balancer addresses: %v, want %v (the servicelb leader is %s)", name, n, logged, n == writer, writer)
			}
		}
	}

	chart("reg-one")
	installed(c, "reg-one")
	onlyRevisionOne(c, "reg-one")
	loadBalancer(c, "reg-lb-one", 18081)
	oneWriter(c, "reg-lb-one", holders["skiff-servicelb"])

	leader := holders["skiff-servicelb"]
	var alive []string
	for n := range servers {
		if n != leader {
			alive = append(alive, n)
		}
	}
	sort.Strings(alive)
	servers[leader].Kill()
	killed := time.Now()
	ca := servers[alive[0]].Client()

	// Every lease moves to or stays with a surviving server; those the
	// dead server held change hands.
	eventually(t, 2*time.Minute, func() (string, error) {
		for _, l := range electedLeases {
			h, err := leaseHolder(ca, l)
			if err != nil {
				return l, err
			}
			if !slices.Contains(alive, h) {
				return l + " held by " + h, errNotYet
			}
			holders[l] = h
		}
		return "", nil
	})
	t.Logf("leases handed over %s after the kill: %v", time.Since(killed).Round(time.Second), holders)
	// The dead server leaves the kubernetes and kube-dns endpoints.
	survivors := ips(alive...)
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := kubernetesEndpoints(ca)
		if err == nil && !slices.Equal(got, supervisors(survivors)) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	t.Logf("the kubernetes endpoints dropped the dead server %s after the kill", time.Since(killed).Round(time.Second))
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := serviceAddresses(ca, "kube-system", "kube-dns")
		if err == nil && !slices.Equal(got, survivors) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	t.Logf("the kube-dns endpoints dropped the dead server %s after the kill", time.Since(killed).Round(time.Second))
	// The new leaders do the new work, and not the old work again.
	chart("reg-two")
	installed(ca, "reg-two")
	loadBalancer(ca, "reg-lb-two", 18082)
	oneWriter(ca, "reg-lb-two", holders["skiff-servicelb"])
	onlyRevisionOne(ca, "reg-one")
	onlyRevisionOne(ca, "reg-two")
	for _, n := range alive {
		if out := servers[n].Output(); strings.Contains(out, "panic") {
			t.Errorf("the surviving server %s panicked:\n%s", n, out)
		}
	}
}
