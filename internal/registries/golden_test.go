package registries

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden renders testdata/valid-registries.yaml (with @TESTDATA@ for
// the directory of its TLS files) as containerd's hosts.toml files and CRI
// credentials, the rewrite route on a fixed proxy address, and compares
// them with testdata/valid-registries.golden (go test -update rewrites it).
func TestGolden(t *testing.T) {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "valid-registries.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse("valid-registries.yaml", []byte(strings.ReplaceAll(string(data), "@TESTDATA@", dir)))
	if err != nil {
		t.Fatal(err)
	}
	var proxies []Endpoint
	for range r.Routes() {
		proxies = append(proxies, Endpoint{Addr: "127.0.0.1:40000", Token: "proxy-token"})
	}
	c := r.Containerd(proxies)
	var b strings.Builder
	for _, name := range sortedKeys(c.Hosts) {
		b.WriteString("=== certs.d/" + name + "/hosts.toml\n")
		b.Write(c.Hosts[name])
	}
	b.WriteString("=== containerd config.toml (CRI credentials)\n")
	b.WriteString(CRIAuthTOML("io.containerd.cri.v1.images", c.Auths))
	got := strings.ReplaceAll(b.String(), dir, "@TESTDATA@")

	golden := filepath.Join(dir, "valid-registries.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
}
