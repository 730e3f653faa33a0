package helmcontroller

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func TestStaticPathStaysInTheStaticDir(t *testing.T) {
	dir := "/var/lib/skiff/server/static"
	for ref, want := range map[string]string{
		"/static/charts/a.tgz":                           dir + "/charts/a.tgz",
		"https://%{KUBERNETES_API}%/static/charts/b.tgz": dir + "/charts/b.tgz",
		"traefik": "",
	} {
		if got, err := staticPath(dir, ref); err != nil || got != want {
			t.Errorf("staticPath(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	for _, ref := range []string{"/static/../../../etc/shadow", "/static/", "/static/charts/../../x"} {
		if got, err := staticPath(dir, ref); err == nil {
			t.Errorf("staticPath(%q) = %q, want an error", ref, got)
		}
	}
}

func TestValuesLaterWins(t *testing.T) {
	spec := HelmChartSpec{
		ValuesContent: "a: {b: 1, c: 2}\nd: chart\n",
		Set: map[string]intstr.IntOrString{
			"a.c":  intstr.FromInt32(5),
			"flag": intstr.FromString("true"), // a boolean, as --set types it
		},
	}
	v, err := values(spec, "a: {b: 3}\nd: config\n")
	if err != nil {
		t.Fatal(err)
	}
	a := v["a"].(map[string]interface{})
	if a["b"] != float64(3) || a["c"] != int64(5) || v["d"] != "config" || v["flag"] != true {
		t.Errorf("values = %#v", v)
	}
	if _, err := values(HelmChartSpec{ValuesContent: "a: [\n"}, ""); err == nil || !strings.Contains(err.Error(), "valuesContent") {
		t.Errorf("broken valuesContent: %v", err)
	}
	h1, _ := inputsHash("x", v)
	v["d"] = "other"
	h2, _ := inputsHash("x", v)
	if h1 == h2 {
		t.Error("the inputs hash does not change with the values")
	}
}

func TestSetIsTypedAsHelmSetTypesIt(t *testing.T) {
	str := intstr.FromString
	set := map[string]intstr.IntOrString{
		"enabled":         str("false"),
		"on":              str("TRUE"),
		"gone":            str("null"),
		"replicas":        intstr.FromInt32(3),
		"port":            str("8080"),
		"zero":            str("0"),
		"zip":             str("01234"), // a leading zero: a string, as in --set
		"ratio":           str("1.5"),   // --set has no floats
		"greeting":        str("hello, world"),
		"escaped":         str(`a\,b`), // already escaped, as for K3s: not twice
		"empty":           str(""),
		"json":            str(`{"a": 1`),
		"a.b.c":           str("deep, down"),
		"list":            str("{x, y,3}"),
		"servers[1].port": intstr.FromInt32(80),
		"servers[0].host": str("h,1"),
		"tls":             str("key=value"),
	}
	v, err := values(HelmChartSpec{ValuesContent: "gone: chart-default\na: {b: {keep: 1}}\n", Set: set}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"enabled":  false,
		"on":       true,
		"gone":     nil,
		"replicas": int64(3),
		"port":     int64(8080),
		"zero":     int64(0),
		"zip":      "01234",
		"ratio":    "1.5",
		"greeting": "hello, world",
		"escaped":  "a,b",
		"empty":    "",
		"json":     `{"a": 1`,
		"a":        map[string]interface{}{"b": map[string]interface{}{"keep": float64(1), "c": "deep, down"}},
		"list":     []interface{}{"x", " y", int64(3)},
		"servers":  []interface{}{map[string]interface{}{"host": "h,1"}, map[string]interface{}{"port": int64(80)}},
		"tls":      "key=value",
	}
	for k, w := range want {
		if got, ok := v[k]; !ok || !reflect.DeepEqual(got, w) {
			t.Errorf("set %s: got %#v (present %v), want %#v", k, got, ok, w)
		}
	}
	if len(v) != len(want) {
		t.Errorf("values %#v, want exactly the keys of %#v", v, want)
	}
	// A key --set cannot parse is named.
	if _, err := values(HelmChartSpec{Set: map[string]intstr.IntOrString{"a[x]": str("1")}}, ""); err == nil || !strings.Contains(err.Error(), `"a[x]"`) {
		t.Errorf("bad key: %v", err)
	}
}

func testChart(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range map[string]string{
		"c/Chart.yaml":        "apiVersion: v2\nname: c\nversion: 1.2.3\n",
		"c/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestLoadLocal(t *testing.T) {
	archive := testChart(t)
	c, digest, local, err := loadLocal(HelmChartSpec{ChartContent: base64.StdEncoding.EncodeToString(archive)}, t.TempDir())
	if err != nil || !local || c.Metadata.Version != "1.2.3" || len(digest) != 64 {
		t.Fatalf("chartContent: %v %q %v %v", c, digest, local, err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "c.tgz"), archive, 0o600); err != nil {
		t.Fatal(err)
	}
	c2, digest2, local, err := loadLocal(HelmChartSpec{Chart: "/static/c.tgz"}, dir)
	if err != nil || !local || c2.Metadata.Name != "c" || digest2 != digest {
		t.Fatalf("static: %v %q %v %v", c2, digest2, local, err)
	}
	if _, _, local, _ := loadLocal(HelmChartSpec{Chart: "nginx", Repo: "https://charts.example"}, dir); local {
		t.Error("a repository chart taken for a local one")
	}
	if _, _, _, err := loadLocal(HelmChartSpec{ChartContent: "not base64!"}, dir); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("bad chartContent: %v", err)
	}
	if _, _, _, err := loadLocal(HelmChartSpec{Chart: "/static/missing.tgz"}, dir); err == nil || !strings.Contains(err.Error(), "missing.tgz") {
		t.Errorf("missing static chart: %v", err)
	}
}

func TestManifestIsTwoValidCRDs(t *testing.T) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(Manifest()), 4096)
	var names []string
	for {
		var raw map[string]interface{}
		if err := dec.Decode(&raw); err != nil {
			break
		}
		b, _ := json.Marshal(raw)
		var crd apiextensionsv1.CustomResourceDefinition
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&crd); err != nil {
			t.Fatalf("not a CRD: %v", err)
		}
		names = append(names, crd.Name)
	}
	if strings.Join(names, ",") != "helmcharts.helm.skiff.io,helmchartconfigs.helm.skiff.io" {
		t.Errorf("CRDs %v", names)
	}
}

func TestRemoteChartNameIsNeverAPath(t *testing.T) {
	for _, spec := range []HelmChartSpec{
		{Chart: "nginx", Repo: "https://charts.example"},
		{Chart: "https://charts.example/nginx-1.0.0.tgz"},
		{Chart: "oci://registry.example/charts/nginx"},
	} {
		if err := remoteChartName(spec); err != nil {
			t.Errorf("%+v: %v", spec, err)
		}
	}
	for _, spec := range []HelmChartSpec{
		{Chart: "/etc/skiff/chart.tgz"},
		{Chart: "../../var/lib/x.tgz", Repo: "https://charts.example"},
		{Chart: "charts/x.tgz", Repo: "https://charts.example"},
		{Chart: "nginx"}, // no repo: helm would look on the server's disk
		{Chart: "..", Repo: "https://charts.example"},
	} {
		if err := remoteChartName(spec); err == nil {
			t.Errorf("%+v accepted: helm would read it from the server's disk", spec)
		}
	}
}
