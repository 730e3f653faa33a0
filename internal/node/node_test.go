package node

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/skiffkube/skiff/internal/pki"
)

func testLayout(t *testing.T) Layout {
	dir := t.TempDir()
	return Layout{DataDir: filepath.Join(dir, "data"), RunDir: filepath.Join(dir, "run")}
}

func TestContainerdConfigIsValidTOMLOwnPaths(t *testing.T) {
	l := Layout{DataDir: "/var/lib/skiff", RunDir: DefaultRunDir}
	data := ContainerdConfig(ContainerdPlan{Layout: l, BinDir: "/var/lib/skiff/data/abc/bin", RestrictOOMScoreAdj: true, PauseImage: DefaultPauseImage})
	var cfg map[string]any
	if err := toml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("not TOML: %v\n%s", err, data)
	}
	if cfg["version"] != int64(4) || cfg["root"] != "/var/lib/skiff/agent/containerd" || cfg["state"] != "/run/skiff/containerd" {
		t.Errorf("top level: %v", cfg)
	}
	plugins := cfg["plugins"].(map[string]any)
	get := func(path ...string) any {
		var cur any = plugins
		for _, p := range path {
			cur = cur.(map[string]any)[p]
		}
		return cur
	}
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"io.containerd.server.v1.grpc", "address"}, "/run/skiff/containerd/containerd.sock"},
		{[]string{"io.containerd.server.v1.ttrpc", "address"}, "/run/skiff/containerd/containerd.sock.ttrpc"},
		{[]string{"io.containerd.cri.v1.images", "pinned_images", "sandbox"}, DefaultPauseImage},
		{[]string{"io.containerd.cri.v1.runtime", "restrict_oom_score_adj"}, true},
		{[]string{"io.containerd.cri.v1.runtime", "cni", "conf_dir"}, "/var/lib/skiff/agent/etc/cni/net.d"},
		{[]string{"io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options", "BinaryName"}, "/var/lib/skiff/data/abc/bin/runc"},
		{[]string{"io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options", "SystemdCgroup"}, false},
	}
	for _, c := range checks {
		if got := get(c.path...); got != c.want {
			t.Errorf("%s = %v, want %v", strings.Join(c.path, "."), got, c.want)
		}
	}
	if strings.Contains(string(data), `"/run/containerd`) || strings.Contains(string(data), `"/etc/containerd`) {
		t.Errorf("config refers to the host's containerd paths:\n%s", data)
	}
}

func TestKubeletConfig(t *testing.T) {
	l := testLayout(t)
	p := KubeletPlan{
		Layout: l, NodeName: "n1", NodeIP: "192.0.2.7", CgroupDriver: "cgroupfs",
		CRIEndpoint: "unix:///run/skiff/containerd/containerd.sock", ClusterDNS: []string{"10.43.0.10"},
		ClusterDomain: "cluster.local", ResolvConf: "/etc/resolv.conf", Address: "0.0.0.0",
		Labels: []string{"b=2", "a=1"}, Taints: []string{"dedicated=edge:NoSchedule", "gpu:NoExecute"},
		ExtraArgs: []string{"max-pods=50", "hostname-override=other"},
	}
	data, err := KubeletConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	var kc kubeletv1beta1.KubeletConfiguration
	if err := yaml.UnmarshalStrict(data, &kc); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if kc.Kind != "KubeletConfiguration" || kc.FailCgroupV1 == nil || *kc.FailCgroupV1 {
		t.Errorf("failCgroupV1 must be false: %v", kc.FailCgroupV1)
	}
	if kc.Authentication.Anonymous.Enabled == nil || *kc.Authentication.Anonymous.Enabled ||
		kc.Authentication.X509.ClientCAFile != l.ClientCA() || kc.Authorization.Mode != kubeletv1beta1.KubeletAuthorizationModeWebhook {
		t.Errorf("kubelet API not locked down: %+v %+v", kc.Authentication, kc.Authorization)
	}
	if kc.ReadOnlyPort != 0 || kc.TLSCertFile != l.ServingKubelet().Cert {
		t.Errorf("readOnlyPort %d, tlsCertFile %q", kc.ReadOnlyPort, kc.TLSCertFile)
	}
	if !slices.Equal(kc.ClusterDNS, []string{"10.43.0.10"}) || kc.ClusterDomain != "cluster.local" {
		t.Errorf("DNS: %v %q", kc.ClusterDNS, kc.ClusterDomain)
	}
	if len(kc.RegisterWithTaints) != 2 || kc.RegisterWithTaints[0].Key != "dedicated" || kc.RegisterWithTaints[0].Value != "edge" ||
		kc.RegisterWithTaints[1].Key != "gpu" || kc.RegisterWithTaints[1].Effect != "NoExecute" {
		t.Errorf("taints: %+v", kc.RegisterWithTaints)
	}

	if kc.ProtectKernelDefaults {
		t.Error("protectKernelDefaults set without --protect-kernel-defaults")
	}

	args := KubeletArgs(p)
	for _, want := range []string{"--node-labels=a=1,b=2", "--node-ip=192.0.2.7", "--max-pods=50", "--hostname-override=other"} {
		if !slices.Contains(args, want) {
			t.Errorf("kubelet args %v lack %s", args, want)
		}
	}
	if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--cloud-provider") }) {
		t.Errorf("a node without an external IP runs its kubelet with a cloud provider: %v", args)
	}

	// --protect-kernel-defaults and --node-external-ip.
	p.ProtectKernelDefaults, p.ExternalCloudProvider = true, true
	if data, err = KubeletConfig(p); err != nil {
		t.Fatal(err)
	}
	kc = kubeletv1beta1.KubeletConfiguration{}
	if err := yaml.UnmarshalStrict(data, &kc); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !kc.ProtectKernelDefaults {
		t.Errorf("protectKernelDefaults not set:\n%s", data)
	}
	if args := KubeletArgs(p); !slices.Contains(args, "--cloud-provider=external") {
		t.Errorf("kubelet args %v lack --cloud-provider=external", args)
	}
	if slices.Contains(args, "--hostname-override=n1") {
		t.Errorf("--kubelet-arg did not replace skiff's value: %v", args)
	}

	proxy := KubeProxyArgs(KubeProxyPlan{Layout: l, NodeName: "n1", ClusterCIDR: "10.42.0.0/16", Mode: "nftables", ExtraArgs: []string{"conntrack-max-per-core=100"}})
	for _, want := range []string{"--proxy-mode=nftables", "--cluster-cidr=10.42.0.0/16", "--hostname-override=n1", "--conntrack-max-per-core=100"} {
		if !slices.Contains(proxy, want) {
			t.Errorf("kube-proxy args %v lack %s", proxy, want)
		}
	}
}

func TestEnsureCertificates(t *testing.T) {
	l := testLayout(t)
	dir := t.TempDir()
	clientCA, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), "client")
	if err != nil {
		t.Fatal(err)
	}
	serverCA, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), "server")
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{NodeName: "n1", Hostname: "host-1", NodeIPs: []net.IP{net.ParseIP("192.0.2.7")}}
	now := time.Now()
	issued, err := EnsureCertificates(l, CAs{Client: clientCA, Server: serverCA}, id, "https://127.0.0.1:6443", now)
	if err != nil || len(issued) != 3 {
		t.Fatalf("issued %v, %v", issued, err)
	}
	client := readCert(t, l.ClientKubelet().Cert)
	if client.Subject.CommonName != "system:node:n1" || !slices.Equal(client.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("kubelet client identity: %v", client.Subject)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool(clientCA), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client cert does not verify against the client CA: %v", err)
	}
	serving := readCert(t, l.ServingKubelet().Cert)
	if err := serving.VerifyHostname("192.0.2.7"); err != nil {
		t.Errorf("serving cert lacks the node IP: %v", err)
	}
	if err := serving.VerifyHostname("host-1"); err != nil {
		t.Errorf("serving cert lacks the host name: %v", err)
	}
	if proxy := readCert(t, l.ClientKubeProxy().Cert); proxy.Subject.CommonName != "system:kube-proxy" {
		t.Errorf("kube-proxy identity: %v", proxy.Subject)
	}
	for _, f := range []string{l.KubeletKubeconfig(), l.KubeProxyKubeconfig(), l.ClientCA(), l.ServerCA()} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	again, err := EnsureCertificates(l, CAs{Client: clientCA, Server: serverCA}, id, "https://127.0.0.1:6443", now)
	if err != nil || len(again) != 0 {
		t.Errorf("second run reissued %v (%v)", again, err)
	}
	id.NodeIPs = []net.IP{net.ParseIP("192.0.2.8")}
	changed, err := EnsureCertificates(l, CAs{Client: clientCA, Server: serverCA}, id, "https://127.0.0.1:6443", now)
	if err != nil || len(changed) != 1 || !strings.Contains(changed[0], "serving-kubelet") {
		t.Errorf("a new node IP reissued %v (%v), want only the serving certificate", changed, err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(ca *pki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func TestContainerdConfigWithRegistryAuth(t *testing.T) {
	l := Layout{DataDir: "/var/lib/skiff", RunDir: DefaultRunDir}
	data := ContainerdConfig(ContainerdPlan{Layout: l, BinDir: "/b", PauseImage: DefaultPauseImage,
		RegistryAuthTOML: "[plugins.\"io.containerd.cri.v1.images\".registry.configs.\"r.example:5000\".auth]\n  username = \"u\"\n"})
	var cfg struct {
		Plugins map[string]struct {
			Registry struct {
				ConfigPath string `toml:"config_path"`
				Configs    map[string]struct {
					Auth map[string]string `toml:"auth"`
				} `toml:"configs"`
			} `toml:"registry"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("not TOML: %v\n%s", err, data)
	}
	reg := cfg.Plugins["io.containerd.cri.v1.images"].Registry
	if reg.ConfigPath != "/var/lib/skiff/agent/etc/containerd/certs.d" || reg.Configs["r.example:5000"].Auth["username"] != "u" {
		t.Errorf("registry config %+v", reg)
	}
}

func TestSystemImage(t *testing.T) {
	for _, c := range []struct{ ref, reg, want string }{
		{DefaultPauseImage, "", DefaultPauseImage},
		{DefaultPauseImage, "registry.example.com:5000", "registry.example.com:5000/skiff/pause:1.0"},
		{"busybox:1", "r.example", "r.example/library/busybox:1"},
		{"skiff.local/a/b@sha256:" + strings.Repeat("a", 64), "r.example", "r.example/a/b@sha256:" + strings.Repeat("a", 64)},
	} {
		if got := SystemImage(c.ref, c.reg); got != c.want {
			t.Errorf("SystemImage(%q, %q) = %q, want %q", c.ref, c.reg, got, c.want)
		}
	}
}
