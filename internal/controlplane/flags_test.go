package controlplane

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"k8s.io/apiserver/pkg/server/egressselector"
	"sigs.k8s.io/yaml"

	"github.com/skiffkube/skiff/internal/config"
)

// defaultConfig is a Server with every flag at its default and data-dir in a
// temporary directory.
func defaultConfig(t *testing.T) *config.Server {
	t.Helper()
	cfg := &config.Server{}
	cfg.AddFlags(pflag.NewFlagSet("test", pflag.ContinueOnError))
	cfg.DataDir = t.TempDir()
	return cfg
}

func testPlan(t *testing.T, l Layout) Plan {
	t.Helper()
	cfg := defaultConfig(t)
	cfg.DataDir = l.DataDir
	return Plan{
		Config:      cfg,
		Layout:      l,
		AdvertiseIP: net.ParseIP("192.0.2.10"),
		EtcdServers: []string{"unix://" + filepath.Join(l.DataDir, "kine.sock")},
	}
}

// parseArgs checks the shape of a command line and returns it as a map.
// Every argument must be "--key=value" and no key may repeat: with a repeated
// key the component would take the last one, and which that is would be an
// accident of ordering.
func parseArgs(t *testing.T, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok || k == "" {
			t.Errorf("argument %q is not --key=value", a)
			continue
		}
		if _, dup := m[k]; dup {
			t.Errorf("--%s appears more than once in %q", k, args)
		}
		m[k] = v
	}
	return m
}

func argValue(t *testing.T, args []string, key string) string {
	t.Helper()
	v, ok := parseArgs(t, args)[key]
	if !ok {
		t.Errorf("--%s missing from %q", key, args)
	}
	return v
}

func wantArgs(t *testing.T, what string, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: --%s missing", what, k)
		} else if g != v {
			t.Errorf("%s: --%s=%q, want %q", what, k, g, v)
		}
	}
}

func TestLoopbackURL(t *testing.T) {
	p := Plan{Config: &config.Server{}}
	if got := p.LoopbackURL(); got != "https://127.0.0.1:6444" {
		t.Errorf("LoopbackURL() = %q", got)
	}
	p.Config.KubeAPIServerArgs = []string{"secure-port=7444"}
	if got := p.LoopbackURL(); got != "https://127.0.0.1:7444" {
		t.Errorf("LoopbackURL() with secure-port=7444 = %q", got)
	}
	if !containsArg(p.APIServerArgs(), "--secure-port=7444") {
		t.Errorf("apiserver args do not carry the moved port: %v", p.APIServerArgs())
	}
}

func containsArg(list []string, want string) bool {
	for _, a := range list {
		if a == want {
			return true
		}
	}
	return false
}

func TestAPIServerArgsDefaults(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	p := testPlan(t, l)
	args := p.APIServerArgs()
	got := parseArgs(t, args)

	wantArgs(t, "kube-apiserver", got, map[string]string{
		"authorization-mode":               "Node,RBAC",
		"enable-admission-plugins":         "NodeRestriction",
		"profiling":                        "false",
		"bind-address":                     "127.0.0.1",
		"secure-port":                      "6444",
		"authentication-config":            l.AuthenticationConfig(),
		"egress-selector-config-file":      l.EgressSelectorConfig(),
		"advertise-address":                "192.0.2.10",
		"etcd-servers":                     p.EtcdServers[0],
		"service-cluster-ip-range":         "10.43.0.0/16",
		"service-account-issuer":           "https://kubernetes.default.svc.cluster.local",
		"client-ca-file":                   l.ClientCA().Cert,
		"requestheader-client-ca-file":     l.RequestHeaderCA().Cert,
		"tls-cert-file":                    l.ServingAPIServer().Cert,
		"tls-private-key-file":             l.ServingAPIServer().Key,
		"kubelet-client-certificate":       l.ClientKubeAPIServer().Cert,
		"kubelet-client-key":               l.ClientKubeAPIServer().Key,
		"proxy-client-cert-file":           l.ClientAuthProxy().Cert,
		"proxy-client-key-file":            l.ClientAuthProxy().Key,
		"service-account-key-file":         l.ServiceAccountPub(),
		"service-account-signing-key-file": l.ServiceAccountKey(),
	})
	if _, ok := got["anonymous-auth"]; ok {
		t.Error("--anonymous-auth is set; kube-apiserver refuses it together with --authentication-config")
	}
	if !slices.Contains(strings.Split(got["api-audiences"], ","), got["service-account-issuer"]) {
		t.Errorf("--api-audiences=%q does not include the issuer %q", got["api-audiences"], got["service-account-issuer"])
	}
	// Arguments come out in a stable order, so a restart sees the same
	// command line.
	if again := p.APIServerArgs(); !slices.Equal(args, again) {
		t.Errorf("two calls differ:\n%q\n%q", args, again)
	}
}

// --service-node-port-range reaches the apiserver; unset (a Config built
// without flags) is the apiserver's default range.
func TestAPIServerArgsNodePortRange(t *testing.T) {
	p := testPlan(t, Layout{DataDir: t.TempDir()})
	p.Config.ServiceNodePortRange = ""
	wantArgs(t, "kube-apiserver", parseArgs(t, p.APIServerArgs()), map[string]string{"service-node-port-range": "30000-32767"})
	p.Config.ServiceNodePortRange = "20000-22767"
	wantArgs(t, "kube-apiserver", parseArgs(t, p.APIServerArgs()), map[string]string{"service-node-port-range": "20000-22767"})
}

func TestAPIServerArgsCustomDomainAndDualStack(t *testing.T) {
	p := testPlan(t, Layout{DataDir: t.TempDir()})
	p.Config.ClusterDomain = "corp.example"
	p.Config.ServiceCIDR = "10.43.0.0/16,fd00:43::/112"
	p.EtcdServers = []string{"https://a:2379", "https://b:2379"}
	got := parseArgs(t, p.APIServerArgs())
	wantArgs(t, "kube-apiserver", got, map[string]string{
		"service-account-issuer":   "https://kubernetes.default.svc.corp.example",
		"service-cluster-ip-range": "10.43.0.0/16,fd00:43::/112",
		"etcd-servers":             "https://a:2379,https://b:2379",
	})
}

// An external etcd gets --datastore-cafile, -certfile and -keyfile as the
// apiserver's etcd TLS files; kine's socket gets none.
func TestAPIServerArgsExternalEtcdTLS(t *testing.T) {
	p := testPlan(t, Layout{DataDir: t.TempDir()})
	p.Config.DatastoreEndpoint = "https://etcd1:2379,https://etcd2:2379"
	p.Config.DatastoreCAFile, p.Config.DatastoreCertFile, p.Config.DatastoreKeyFile = "/ca.pem", "/c.pem", "/k.pem"
	got := parseArgs(t, p.APIServerArgs())
	wantArgs(t, "kube-apiserver", got, map[string]string{
		"etcd-cafile": "/ca.pem", "etcd-certfile": "/c.pem", "etcd-keyfile": "/k.pem",
	})
	p.Config.DatastoreEndpoint = "postgres://u:p@db/skiff"
	for _, f := range []string{"etcd-cafile", "etcd-certfile", "etcd-keyfile"} {
		if v, ok := parseArgs(t, p.APIServerArgs())[f]; ok {
			t.Errorf("postgres datastore: kube-apiserver got --%s=%s, want none (kine's socket)", f, v)
		}
	}
}

// The issuer's discovery document must name a jwks_uri that pods and other
// machines can fetch: the supervisor on the advertise address, never the
// apiserver's loopback port. A user's issuer, jwks URI or audiences win, and
// the default audiences follow the user's issuer.
func TestAPIServerArgsServiceAccountIssuerDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name      string
		advertise string
		port      int
		user      []string
		want      map[string]string
	}{
		{"defaults", "192.0.2.10", 6443, nil, map[string]string{
			"service-account-issuer":   "https://kubernetes.default.svc.cluster.local",
			"service-account-jwks-uri": "https://192.0.2.10:6443/openid/v1/jwks",
			"api-audiences":            "https://kubernetes.default.svc.cluster.local,skiff",
		}},
		{"other supervisor port", "10.1.2.3", 7443, nil, map[string]string{
			"service-account-jwks-uri": "https://10.1.2.3:7443/openid/v1/jwks",
		}},
		{"IPv6 advertise address", "fd00::5", 6443, nil, map[string]string{
			"service-account-jwks-uri": "https://[fd00::5]:6443/openid/v1/jwks",
		}},
		{"user issuer", "192.0.2.10", 6443, []string{"service-account-issuer=https://issuer.example"}, map[string]string{
			"service-account-issuer":   "https://issuer.example",
			"service-account-jwks-uri": "https://192.0.2.10:6443/openid/v1/jwks",
			"api-audiences":            "https://issuer.example,skiff",
		}},
		{"user jwks uri", "192.0.2.10", 6443, []string{"--service-account-jwks-uri=https://keys.example/jwks"}, map[string]string{
			"service-account-jwks-uri": "https://keys.example/jwks",
		}},
		{"user audiences", "192.0.2.10", 6443, []string{"api-audiences=a,b"}, map[string]string{
			"api-audiences": "a,b",
		}},
	} {
		p := testPlan(t, Layout{DataDir: t.TempDir()})
		p.AdvertiseIP = net.ParseIP(tc.advertise)
		p.Config.HTTPSListenPort = tc.port
		p.Config.KubeAPIServerArgs = tc.user
		wantArgs(t, "kube-apiserver ("+tc.name+")", parseArgs(t, p.APIServerArgs()), tc.want)
	}
}

func TestAPIServerArgsUserAuthentication(t *testing.T) {
	for _, tc := range []struct {
		user []string
		want map[string]string
		gone string
	}{
		{[]string{"anonymous-auth=true"}, map[string]string{"anonymous-auth": "true"}, "authentication-config"},
		{[]string{"--anonymous-auth=false"}, map[string]string{"anonymous-auth": "false"}, "authentication-config"},
		{[]string{"authentication-config=/etc/mine.yaml"}, map[string]string{"authentication-config": "/etc/mine.yaml"}, "anonymous-auth"},
	} {
		p := testPlan(t, Layout{DataDir: t.TempDir()})
		p.Config.KubeAPIServerArgs = tc.user
		got := parseArgs(t, p.APIServerArgs())
		wantArgs(t, "kube-apiserver "+strings.Join(tc.user, " "), got, tc.want)
		if v, ok := got[tc.gone]; ok {
			t.Errorf("with %q: --%s=%q is set, want it absent", tc.user, tc.gone, v)
		}
	}
}

func TestAPIServerArgsUserOverrides(t *testing.T) {
	p := testPlan(t, Layout{DataDir: t.TempDir()})
	p.Config.KubeAPIServerArgs = []string{"profiling=true", "audit-log-path=/var/log/audit.log", "enable-admission-plugins=NodeRestriction,PodSecurity"}
	args := p.APIServerArgs()
	got := parseArgs(t, args)
	wantArgs(t, "kube-apiserver", got, map[string]string{
		"profiling":                "true",
		"audit-log-path":           "/var/log/audit.log",
		"enable-admission-plugins": "NodeRestriction,PodSecurity",
		"authorization-mode":       "Node,RBAC", // untouched
	})
	if last := args[len(args)-1]; last != "--audit-log-path=/var/log/audit.log" {
		t.Errorf("a user argument skiff does not generate should come last, got %q", last)
	}

	// A bare key is a boolean flag set to true.
	p.Config.KubeAPIServerArgs = []string{"profiling"}
	if v := argValue(t, p.APIServerArgs(), "profiling"); v != "true" {
		t.Errorf("bare profiling: --profiling=%q, want true", v)
	}
}

func TestWriteAPIServerConfigs(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	if err := WriteAPIServerConfigs(l); err != nil {
		t.Fatal(err)
	}
	path := l.AuthenticationConfig()
	wantPerm(t, path, 0o600)
	wantPerm(t, l.EtcDir(), 0o700)

	// Strict: a misspelt field would be ignored by a lenient decoder but
	// refused by kube-apiserver.
	var cfg apiserverv1.AuthenticationConfiguration
	if err := yaml.UnmarshalStrict(readFileT(t, path), &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if cfg.Kind != "AuthenticationConfiguration" || cfg.APIVersion != "apiserver.config.k8s.io/v1" {
		t.Errorf("kind %q apiVersion %q", cfg.Kind, cfg.APIVersion)
	}
	if cfg.Anonymous == nil || !cfg.Anonymous.Enabled {
		t.Fatalf("anonymous = %+v, want enabled", cfg.Anonymous)
	}
	var paths []string
	for _, c := range cfg.Anonymous.Conditions {
		paths = append(paths, c.Path)
	}
	if want := []string{"/healthz", "/livez", "/readyz"}; !slices.Equal(sortedCopy(paths), want) {
		t.Errorf("anonymous paths %q, want exactly %q", paths, want)
	}
	if len(cfg.JWT) != 0 {
		t.Errorf("unexpected JWT authenticators: %+v", cfg.JWT)
	}

	// The apiserver's own loader and validation accept the egress selector,
	// and it sends the cluster's traffic to skiff's socket.
	egress, err := egressselector.ReadEgressSelectorConfiguration(l.EgressSelectorConfig())
	if err != nil {
		t.Fatal(err)
	}
	if errs := egressselector.ValidateEgressSelectorConfiguration(egress); len(errs) > 0 {
		t.Fatalf("egress selector invalid: %v", errs.ToAggregate())
	}
	if len(egress.EgressSelections) != 1 || egress.EgressSelections[0].Name != "cluster" ||
		egress.EgressSelections[0].Connection.ProxyProtocol != "HTTPConnect" ||
		egress.EgressSelections[0].Connection.Transport == nil || egress.EgressSelections[0].Connection.Transport.UDS == nil ||
		egress.EgressSelections[0].Connection.Transport.UDS.UDSName != l.EgressSocket() {
		t.Fatalf("egress selections %+v, want cluster over HTTP CONNECT to %s", egress.EgressSelections, l.EgressSocket())
	}

	// Unchanged content is not rewritten.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if err := WriteAPIServerConfigs(l); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if !fi.ModTime().Equal(old) {
		t.Errorf("second call rewrote the file: mtime %v, want %v", fi.ModTime(), old)
	}

	// Changed content is put back.
	want := readFileT(t, path)
	if err := os.WriteFile(path, []byte("kind: Something\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteAPIServerConfigs(l); err != nil {
		t.Fatal(err)
	}
	if got := readFileT(t, path); string(got) != string(want) {
		t.Errorf("edited file was not restored:\n%s", got)
	}
}

func TestControllerManagerArgs(t *testing.T) {
	for _, elect := range []bool{false, true} {
		l := Layout{DataDir: t.TempDir()}
		p := testPlan(t, l)
		p.LeaderElect = elect
		args := p.ControllerManagerArgs()
		got := parseArgs(t, args)
		want := map[string]string{
			"leader-elect":              map[bool]string{false: "false", true: "true"}[elect],
			"kubeconfig":                l.ControllerKubeconfig(),
			"authentication-kubeconfig": l.ControllerKubeconfig(),
			"authorization-kubeconfig":  l.ControllerKubeconfig(),
			"bind-address":              "127.0.0.1",
			"profiling":                 "false",
			"cluster-cidr":              "10.42.0.0/16",
			"service-cluster-ip-range":  "10.43.0.0/16",
			"root-ca-file":              l.ServerCA().Cert,
			// Must be the key the apiserver signs with, and kubelet client
			// certificates must come from the CA the apiserver trusts.
			"service-account-private-key-file":          argValue(t, p.APIServerArgs(), "service-account-signing-key-file"),
			"cluster-signing-kubelet-client-cert-file":  argValue(t, p.APIServerArgs(), "client-ca-file"),
			"cluster-signing-kubelet-client-key-file":   l.ClientCA().Key,
			"cluster-signing-kubelet-serving-cert-file": l.ServerCA().Cert,
			"cluster-signing-kubelet-serving-key-file":  l.ServerCA().Key,
		}
		wantArgs(t, "kube-controller-manager", got, want)
		for k, v := range got {
			if strings.HasSuffix(k, "-file") || strings.HasSuffix(k, "kubeconfig") {
				if !strings.HasPrefix(v, l.DataDir+string(filepath.Separator)) {
					t.Errorf("--%s=%s is outside the data dir", k, v)
				}
			}
		}
	}

	p := testPlan(t, Layout{DataDir: t.TempDir()})
	p.LeaderElect = false
	p.Config.KubeControllerManagerArgs = []string{"leader-elect=true", "controllers=*", "node-monitor-grace-period=20s"}
	wantArgs(t, "kube-controller-manager with user args", parseArgs(t, p.ControllerManagerArgs()), map[string]string{
		"leader-elect":              "true",
		"controllers":               "*",
		"node-monitor-grace-period": "20s",
		"profiling":                 "false",
	})
}

func TestSchedulerArgs(t *testing.T) {
	for _, elect := range []bool{false, true} {
		l := Layout{DataDir: t.TempDir()}
		p := testPlan(t, l)
		p.LeaderElect = elect
		wantArgs(t, "kube-scheduler", parseArgs(t, p.SchedulerArgs()), map[string]string{
			"leader-elect":              map[bool]string{false: "false", true: "true"}[elect],
			"kubeconfig":                l.SchedulerKubeconfig(),
			"authentication-kubeconfig": l.SchedulerKubeconfig(),
			"authorization-kubeconfig":  l.SchedulerKubeconfig(),
			"bind-address":              "127.0.0.1",
			"profiling":                 "false",
		})
	}

	p := testPlan(t, Layout{DataDir: t.TempDir()})
	p.Config.KubeSchedulerArgs = []string{"--profiling=true", "leader-elect=true", "v=4"}
	wantArgs(t, "kube-scheduler with user args", parseArgs(t, p.SchedulerArgs()), map[string]string{
		"profiling":    "true",
		"leader-elect": "true",
		"v":            "4",
	})
}

func TestDetectAdvertiseIP(t *testing.T) {
	// What the fall-through yields on this machine.
	fallback := defaultRouteIP()
	if fallback == nil {
		fallback = net.ParseIP("127.0.0.1")
	}
	for _, tc := range []struct {
		advertise, bind string
		want            net.IP
	}{
		{"192.0.2.10", "198.51.100.1", net.ParseIP("192.0.2.10")},
		{"192.0.2.10", "", net.ParseIP("192.0.2.10")},
		{"2001:db8::10", "0.0.0.0", net.ParseIP("2001:db8::10")},
		{"", "198.51.100.1", net.ParseIP("198.51.100.1")},
		{"", "::1", net.ParseIP("::1")},
		{"0.0.0.0", "198.51.100.1", net.ParseIP("198.51.100.1")},
		{"", "0.0.0.0", fallback},
		{"", "::", fallback},
		{"", "", fallback},
	} {
		cfg := defaultConfig(t)
		cfg.AdvertiseAddress, cfg.BindAddress = tc.advertise, tc.bind
		got, err := DetectAdvertiseIP(cfg)
		if err != nil {
			t.Errorf("advertise %q bind %q: %v", tc.advertise, tc.bind, err)
			continue
		}
		if got == nil || got.IsUnspecified() {
			t.Errorf("advertise %q bind %q: got %v, want a usable address", tc.advertise, tc.bind, got)
			continue
		}
		if !got.Equal(tc.want) {
			t.Errorf("advertise %q bind %q: got %v, want %v", tc.advertise, tc.bind, got, tc.want)
		}
	}
}

func TestDetectAdvertiseIPInvalidNamesFlag(t *testing.T) {
	for _, tc := range []struct{ advertise, bind, flag string }{
		{"nope", "", "advertise-address"},
		{"nope", "198.51.100.1", "advertise-address"},
		{"", "10.0.0.300", "bind-address"},
	} {
		cfg := defaultConfig(t)
		cfg.AdvertiseAddress, cfg.BindAddress = tc.advertise, tc.bind
		ip, err := DetectAdvertiseIP(cfg)
		if err == nil {
			t.Errorf("advertise %q bind %q: got %v, want an error", tc.advertise, tc.bind, ip)
		} else if !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("advertise %q bind %q: error %q does not name %s", tc.advertise, tc.bind, err, tc.flag)
		}
	}
}

// Secrets encryption gives the apiserver the key file, reloaded on change;
// without it the apiserver has no encryption config.
func TestAPIServerArgsSecretsEncryption(t *testing.T) {
	l := Layout{DataDir: t.TempDir()}
	p := testPlan(t, l)
	if containsArg(p.APIServerArgs(), "--encryption-provider-config="+l.EncryptionConfig()) {
		t.Error("encryption config without EncryptSecrets")
	}
	p.EncryptSecrets = true
	args := p.APIServerArgs()
	for _, want := range []string{"--encryption-provider-config=" + l.EncryptionConfig(), "--encryption-provider-config-automatic-reload=true"} {
		if !containsArg(args, want) {
			t.Errorf("no %s in %v", want, args)
		}
	}
	if l.EncryptionConfig() != filepath.Join(l.CredDir(), "encryption-config.json") {
		t.Errorf("encryption config at %s, want in the cred dir", l.EncryptionConfig())
	}
}
