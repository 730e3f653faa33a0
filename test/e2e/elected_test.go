package e2e

import (
	"context"
	"encoding/base64"
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

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// electedLeases are the Leases of what runs on one server of the cluster
// at a time (docs/design.md, "Add-ons: one registry").
var electedLeases = []string{"skiff-helm-controller", "skiff-servicelb", "skiff-local-storage", "skiff-node-passwords", "skiff-server-endpoints"}

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

// TestServersShareElectedAddons runs two servers (each with its node, each
// in its own namespaces) on one datastore: the kubernetes Service and the
// kube-dns Service list both; each elected add-on runs on one of them; a
// HelmChart is installed once and a LoadBalancer Service gets its status.
// Then the servicelb leader is killed (SIGKILL): the other server takes its
// leases over, the dead server leaves the kubernetes and kube-dns
// endpoints, new work (another chart, another LoadBalancer Service) is done
// by the new leader, and the first chart is not installed again.
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
	for _, name := range []string{"reg1", "reg2"} {
		nd, err := nw.AddNode(name, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
	}
	s1 := startNSServer(t, nodes[0], etcdFlags...)
	// The second server gets the CAs, keys and token from the datastore's
	// bootstrap data.
	s2 := startNSServer(t, nodes[1], append(etcdFlags, "--token", readToken(t, nodes[0].DataDir()))...)
	servers := map[string]*nsServer{"reg1": s1, "reg2": s2}
	c := s1.Client()
	ctx := context.Background()

	both := []string{nodes[0].IP.String(), nodes[1].IP.String()}
	sort.Strings(both)
	supervisors := []string{net.JoinHostPort(both[0], "6443"), net.JoinHostPort(both[1], "6443")}
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := kubernetesEndpoints(c)
		if err == nil && !slices.Equal(got, supervisors) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	eventually(t, time.Minute, func() (string, error) {
		got, err := serviceAddresses(c, "kube-system", "kube-dns")
		if err == nil && !slices.Equal(got, both) {
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

	chart("reg-one")
	installed(c, "reg-one")
	onlyRevisionOne(c, "reg-one")
	loadBalancer(c, "reg-lb-one", 18081)

	leader := holders["skiff-servicelb"]
	other := map[string]string{"reg1": "reg2", "reg2": "reg1"}[leader]
	dead, alive := servers[leader], servers[other]
	deadIP := nodes[slices.IndexFunc(nodes, func(n *multinode.Node) bool { return n.Name == leader })].IP.String()
	dead.Kill()
	killed := time.Now()
	ca := alive.Client()

	// Everything the dead server held moves to the other one.
	eventually(t, 2*time.Minute, func() (string, error) {
		for _, l := range electedLeases {
			h, err := leaseHolder(ca, l)
			if err != nil {
				return l, err
			}
			if h != other {
				return l + " held by " + h, errNotYet
			}
		}
		return "", nil
	})
	t.Logf("leases handed over %s after the kill", time.Since(killed).Round(time.Second))
	// The dead server leaves the kubernetes and kube-dns endpoints.
	aliveIP := both[0]
	if aliveIP == deadIP {
		aliveIP = both[1]
	}
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := kubernetesEndpoints(ca)
		if err == nil && !slices.Equal(got, []string{net.JoinHostPort(aliveIP, "6443")}) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	t.Logf("the kubernetes endpoints dropped the dead server %s after the kill", time.Since(killed).Round(time.Second))
	eventually(t, 2*time.Minute, func() (string, error) {
		got, err := serviceAddresses(ca, "kube-system", "kube-dns")
		if err == nil && !slices.Equal(got, []string{aliveIP}) {
			return fmt.Sprint(got), errNotYet
		}
		return fmt.Sprint(got), err
	})
	t.Logf("the kube-dns endpoints dropped the dead server %s after the kill", time.Since(killed).Round(time.Second))
	// The new leader does the new work, and not the old work again.
	chart("reg-two")
	installed(ca, "reg-two")
	loadBalancer(ca, "reg-lb-two", 18082)
	onlyRevisionOne(ca, "reg-one")
	onlyRevisionOne(ca, "reg-two")
	if strings.Contains(alive.Output(), "panic") {
		t.Errorf("the surviving server panicked:\n%s", alive.Output())
	}
}
