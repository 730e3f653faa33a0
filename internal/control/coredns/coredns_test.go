package coredns

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func TestCorefile(t *testing.T) {
	cfg := Config{Kubeconfig: "/d/admin.kubeconfig", Domain: "cluster.local", ListenIP: net.ParseIP("192.0.2.7"), Port: 10053, ResolvConf: "/etc/resolv.conf"}
	got := Corefile(cfg, true)
	for _, want := range []string{".:10053 {", "bind 192.0.2.7", "kubernetes cluster.local in-addr.arpa ip6.arpa {", `kubeconfig "/d/admin.kubeconfig"`, `forward . "/etc/resolv.conf"`} {
		if !strings.Contains(got, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(Corefile(cfg, false), "forward") {
		t.Error("forwards with no upstream nameserver")
	}
}

func TestHasNameserver(t *testing.T) {
	dir := t.TempDir()
	with, without := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	_ = os.WriteFile(with, []byte("# x\nsearch example\nnameserver 10.0.0.53\n"), 0o644)
	_ = os.WriteFile(without, []byte("search example\n"), 0o644)
	if !hasNameserver(with) || hasNameserver(without) || hasNameserver(filepath.Join(dir, "missing")) {
		t.Error("hasNameserver misreads resolv.conf")
	}
}

func TestManifestPointsTheServiceAtTheServer(t *testing.T) {
	data := Manifest(Config{ServiceIP: "10.43.0.10", ListenIP: net.ParseIP("192.0.2.7"), Port: 10053})
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var svc corev1.Service
	var slice discoveryv1.EndpointSlice
	if err := dec.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&slice); err != nil {
		t.Fatal(err)
	}
	if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != "10.43.0.10" || svc.Spec.Selector != nil || len(svc.Spec.Ports) != 2 {
		t.Errorf("service %+v", svc)
	}
	if slice.Labels[discoveryv1.LabelServiceName] != "kube-dns" || slice.AddressType != discoveryv1.AddressTypeIPv4 ||
		slice.Endpoints[0].Addresses[0] != "192.0.2.7" || *slice.Ports[0].Port != 10053 || *slice.Ports[0].Name != svc.Spec.Ports[0].Name {
		t.Errorf("endpoint slice %+v", slice)
	}
}
