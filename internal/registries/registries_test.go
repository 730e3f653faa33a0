package registries

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

const file = "/etc/skiff/registries.yaml"

func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseRefusesBadInputNamingFileAndKey(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	ca := writeCA(t)
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown top key", "mirror: {}", "mirror: unknown key"},
		{"unknown mirror key", `mirrors: {"docker.io": {endpoints: ["https://m"]}}`, `mirrors."docker.io".endpoints: unknown key`},
		{"endpoint not a list", `mirrors: {"docker.io": {endpoint: "https://m"}}`, `mirrors."docker.io".endpoint: want a list of URLs, got a string`},
		{"endpoint not a URL", `mirrors: {"docker.io": {endpoint: ["m.example.com"]}}`, `mirrors."docker.io".endpoint[0]: "m.example.com" is not an http:// or https:// URL`},
		{"endpoint wrong type", `mirrors: {"docker.io": {endpoint: [5]}}`, `mirrors."docker.io".endpoint[0]: want a string, got a number`},
		{"bad regexp", `mirrors: {"docker.io": {endpoint: ["https://m"], rewrite: {"^(lib": "x"}}}`, `mirrors."docker.io".rewrite."^(lib": invalid regular expression`},
		{"bad host", `mirrors: {"https://docker.io": {endpoint: ["https://m"]}}`, `mirrors."https://docker.io": "https://docker.io" is not a registry host`},
		{"dot-dot host", `mirrors: {"..": {endpoint: ["https://m"]}}`, `mirrors."..": ".." is not a registry host`},
		{"dot host", `mirrors: {".": {endpoint: ["https://m"]}}`, `mirrors.".": "." is not a registry host`},
		{"empty host", `mirrors: {"": {endpoint: ["https://m"]}}`, `mirrors."": "" is not a registry host`},
		{"underscore host", `mirrors: {"_default": {endpoint: ["https://m"]}}`, `mirrors._default: "_default" is not a registry host`},
		{"empty label", `mirrors: {"a..example": {}}`, `mirrors."a..example": "a..example" is not a registry host`},
		{"path in config host", `configs: {"r.example/v2": {auth: {username: a}}}`, `configs."r.example/v2": "r.example/v2" is not a registry host`},
		{"bad port", `mirrors: {"r.example:99999": {}}`, `mirrors."r.example:99999": "r.example:99999": invalid port`},
		{"unknown auth key", `configs: {"r.example": {auth: {user: a}}}`, `configs."r.example".auth.user: unknown key`},
		{"auth wrong type", `configs: {"r.example": {auth: {username: [a]}}}`, `configs."r.example".auth.username: want a string, got a list`},
		{"unknown tls key", `configs: {"r.example": {tls: {ca: /x}}}`, `configs."r.example".tls.ca: unknown key`},
		{"skip verify not bool", `configs: {"r.example": {tls: {insecure_skip_verify: "yes"}}}`, `configs."r.example".tls.insecure_skip_verify: want true or false, got a string`},
		{"ca missing", `configs: {"r.example": {tls: {ca_file: /nonexistent/ca.crt}}}`, `configs."r.example".tls.ca_file: open /nonexistent/ca.crt: no such file or directory`},
		{"ca not PEM", `configs: {"r.example": {tls: {ca_file: ` + notPEM + `}}}`, `configs."r.example".tls.ca_file: ` + notPEM + ` holds no PEM certificate`},
		{"cert without key", `configs: {"r.example": {tls: {cert_file: ` + ca + `}}}`, `configs."r.example".tls: cert_file and key_file go together`},
		{"key missing", `configs: {"r.example": {tls: {cert_file: ` + ca + `, key_file: /nonexistent/k}}}`, `configs."r.example".tls.key_file: open /nonexistent/k`},
		{"wildcard config", `configs: {"*": {auth: {username: a}}}`, `configs."*": "*" is for mirrors only`},
		{"duplicate", "mirrors:\n  a.example: {}\n  a.example: {}\n", `mirrors."a.example": key given twice`},
		{"not a mapping", `- a`, `want a mapping with mirrors and configs, got a list`},
		{"mirrors wrong type", `mirrors: [a]`, `mirrors: want a mapping, got a list`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(file, []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), file+": ") || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line %q", err, file+": "+tc.want)
			}
		})
	}
}

func TestParseAndRenderHostsAndAuth(t *testing.T) {
	ca := writeCA(t)
	r, err := Parse(file, []byte(`
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com:5000"]
  registry.example.test:
    endpoint: ["https://127.0.0.1:5443"]
    rewrite:
      "^library/(.*)": "mirror/library/$1"
  "*":
    endpoint: ["http://cache.example.com"]
configs:
  mirror.example.com:5000:
    auth: {username: u, password: "p\"w"}
    tls: {ca_file: `+ca+`}
  "127.0.0.1:5443":
    auth: {auth: dTpw}
    tls: {ca_file: `+ca+`, insecure_skip_verify: true}
  direct.example.com:
    tls: {ca_file: `+ca+`}
`))
	if err != nil {
		t.Fatal(err)
	}
	routes := r.Routes()
	if len(routes) != 1 || routes[0].Registry != "registry.example.test" || routes[0].Endpoint.Host != "127.0.0.1:5443" || routes[0].Auth.Auth != "dTpw" {
		t.Fatalf("routes %+v", routes)
	}
	c := r.Containerd([]Endpoint{{Addr: "127.0.0.1:40000", Token: "t0k"}})
	if got := strings.Join(sortedKeys(c.Hosts), ","); got != "127.0.0.1:5443,_default,direct.example.com,docker.io,mirror.example.com:5000,registry.example.test" {
		t.Fatalf("hosts dirs %s", got)
	}
	type host struct {
		Capabilities []string          `toml:"capabilities"`
		CA           string            `toml:"ca"`
		SkipVerify   bool              `toml:"skip_verify"`
		Header       map[string]string `toml:"header"`
	}
	type hostsFile struct {
		Server string          `toml:"server"`
		CA     string          `toml:"ca"`
		Host   map[string]host `toml:"host"`
	}
	parse := func(name string) hostsFile {
		var h hostsFile
		if err := toml.Unmarshal(c.Hosts[name], &h); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, c.Hosts[name])
		}
		return h
	}
	if h := parse("docker.io"); h.Server != "https://registry-1.docker.io" || h.Host["https://mirror.example.com:5000"].CA != ca || len(h.Host["https://mirror.example.com:5000"].Capabilities) != 2 {
		t.Fatalf("docker.io: %+v", h)
	}
	if h := parse("registry.example.test"); h.Server != "https://registry.example.test" || len(h.Host) != 1 || h.Host["http://127.0.0.1:40000"].Capabilities == nil || h.Host["http://127.0.0.1:40000"].Header[ProxyHeader] != "t0k" {
		t.Fatalf("registry.example.test: %+v\n%s", h, c.Hosts["registry.example.test"])
	}
	if h := parse("_default"); h.Server != "" || h.Host["http://cache.example.com"].Capabilities == nil {
		t.Fatalf("_default: %+v", h)
	}
	if h := parse("direct.example.com"); h.Server != "https://direct.example.com" || h.CA != ca || len(h.Host) != 0 {
		t.Fatalf("direct: %+v", h)
	}

	// Credentials reach the CRI plugin for the endpoint's host and for the proxy.
	var cri struct {
		Plugins map[string]struct {
			Registry struct {
				Configs map[string]struct {
					Auth map[string]string `toml:"auth"`
				} `toml:"configs"`
			} `toml:"registry"`
		} `toml:"plugins"`
	}
	text := CRIAuthTOML("io.containerd.cri.v1.images", c.Auths)
	if err := toml.Unmarshal([]byte(text), &cri); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	got := cri.Plugins["io.containerd.cri.v1.images"].Registry.Configs
	if got["mirror.example.com:5000"].Auth["password"] != `p"w` || got["127.0.0.1:40000"].Auth["auth"] != "dTpw" || got["127.0.0.1:5443"].Auth["auth"] != "dTpw" || len(got) != 3 {
		t.Fatalf("auth configs %+v\n%s", got, text)
	}

	dir := filepath.Join(t.TempDir(), "certs.d")
	os.MkdirAll(filepath.Join(dir, "stale.example"), 0o700)
	if err := WriteHosts(dir, c.Hosts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale.example")); !os.IsNotExist(err) {
		t.Fatal("stale host dir kept")
	}
	if data, err := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml")); err != nil || string(data) != string(c.Hosts["docker.io"]) {
		t.Fatalf("docker.io hosts.toml: %v", err)
	}
}

func TestParseEmptyEntries(t *testing.T) {
	r, err := Parse(file, []byte("mirrors:\n  docker.io:\n    endpoint:\nconfigs:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Mirrors["docker.io"]; !ok || len(r.Configs) != 0 {
		t.Fatalf("%+v", r)
	}
	if h := string(r.Containerd(nil).Hosts["docker.io"]); !strings.Contains(h, `server = "https://registry-1.docker.io"`) || strings.Contains(h, "[host.") {
		t.Fatalf("hosts.toml of a mirror without endpoints:\n%s", h)
	}
	if r, err := Parse(file, nil); err != nil || len(r.Mirrors) != 0 {
		t.Fatalf("empty file: %v %v", r, err)
	}
}

func TestLoadMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "registries.yaml")
	if r, err := Load(missing, true); r != nil || err != nil {
		t.Fatalf("optional missing: %v %v", r, err)
	}
	if _, err := Load(missing, false); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("given missing: %v", err)
	}
}

func TestProxyRewritesNames(t *testing.T) {
	var paths []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path+" "+r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusOK)
	}))
	defer upstream.Close()
	r, err := Parse(file, []byte(`mirrors: {"registry.example.test": {endpoint: ["`+upstream.URL+`"], rewrite: {"^library/(.*)": "mirror/library/$1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Listen(r.Routes(), discard())
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Stop()
	ep := p.Endpoints()[0]
	for _, path := range []string{"/v2/library/busybox/manifests/1.0", "/v2/other/app/blobs/sha256:ab", "/v2/"} {
		req, _ := http.NewRequest("GET", "http://"+ep.Addr+path, nil)
		req.Header.Set("Authorization", "Basic dTpw")
		req.Header.Set(ProxyHeader, ep.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// Without the token the proxy refuses, and nothing reaches the endpoint.
	resp, err := http.Get("http://" + ep.Addr + "/v2/library/busybox/manifests/1.0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("request without the token: %s", resp.Status)
	}
	want := []string{"/v2/mirror/library/busybox/manifests/1.0 Basic dTpw", "/v2/other/app/blobs/sha256:ab Basic dTpw", "/v2/ Basic dTpw"}
	if strings.Join(paths, "|") != strings.Join(want, "|") {
		t.Fatalf("upstream saw %q, want %q", paths, want)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHostsAccepted: the registry hosts image references name (DNS names,
// IPv4 and bracketed IPv6 addresses, localhost, with or without a port)
// are accepted as mirror and config keys.
func TestHostsAccepted(t *testing.T) {
	for _, h := range []string{"docker.io", "registry-1.docker.io", "localhost", "localhost:5000", "10.0.0.5:5443", "[::1]:5000", "[fd00::5]", "Registry.Example.COM"} {
		if _, err := Parse(file, []byte("mirrors: {\""+h+"\": {}}\nconfigs: {\""+h+"\": {}}\n")); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
}

// TestWriteHostsRefusesNamesOutsideDir: a name that would put hosts.toml
// outside its own directory under dir is refused before anything is
// written (Parse refuses such keys first; this is the writer's own guard).
func TestWriteHostsRefusesNamesOutsideDir(t *testing.T) {
	for _, name := range []string{"..", ".", "", "a/../..", "a/b"} {
		root := t.TempDir()
		dir := filepath.Join(root, "certs.d")
		err := WriteHosts(dir, map[string][]byte{"docker.io": []byte("x"), name: []byte("x")})
		if err == nil || !strings.Contains(err.Error(), "not a registry host directory name") {
			t.Errorf("name %q: %v", name, err)
		}
		if entries, _ := os.ReadDir(root); len(entries) != 0 {
			t.Errorf("name %q: wrote %v", name, entries)
		}
	}
}
