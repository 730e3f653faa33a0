package helmcontroller

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/strvals"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// HelmChart is a chart skiff installs (helm.skiff.io/v1).
type HelmChart struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HelmChartSpec   `json:"spec"`
	Status            HelmChartStatus `json:"status,omitempty"`
}

// HelmChartSpec has K3s's field names, so that its HelmCharts carry over.
type HelmChartSpec struct {
	// Chart is a chart name in Repo, or a file under the server's static
	// directory: "/static/<path>" or K3s's
	// "https://%{KUBERNETES_API}%/static/<path>".
	Chart           string                        `json:"chart,omitempty"`
	Repo            string                        `json:"repo,omitempty"`
	Version         string                        `json:"version,omitempty"`
	TargetNamespace string                        `json:"targetNamespace,omitempty"`
	ValuesContent   string                        `json:"valuesContent,omitempty"`
	Set             map[string]intstr.IntOrString `json:"set,omitempty"`
	// ChartContent is a chart archive (.tgz), base64: air-gapped charts.
	ChartContent string `json:"chartContent,omitempty"`
}

// HelmChartStatus says what the controller last did.
type HelmChartStatus struct {
	// Phase is Installing or Upgrading while Helm works, then Installed or
	// Failed.
	Phase    string `json:"phase,omitempty"`
	Release  string `json:"release,omitempty"`
	Revision int    `json:"revision,omitempty"`
	Message  string `json:"message,omitempty"`
	// Applied is the hash of the chart and values the release has.
	Applied string `json:"applied,omitempty"`
	// Namespace is where the release is, so that it is found after
	// targetNamespace changes.
	Namespace string `json:"namespace,omitempty"`
	// ObservedGeneration and ConfigVersion are the HelmChart and
	// HelmChartConfig last acted on.
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
	ConfigVersion      string `json:"configVersion,omitempty"`
	// InFlight is the Helm operation the controller started and has not
	// seen settle, written before the operation begins. Only the
	// controller writes status, so a pending release matches it only if
	// the controller made it: the release's Secrets, in the target
	// namespace, may be writable by others. Null (not omitted) when none,
	// so that the merge patch of the status removes it.
	InFlight *InFlight `json:"inFlight"`
}

// InFlight names one Helm operation of the controller.
type InFlight struct {
	// Instance is the controller instance (a process's run) running it.
	Instance string `json:"instance"`
	// Namespace and Revision are the release revision it marks pending:
	// the new revision for an install, upgrade or rollback, the last one
	// for an uninstall.
	Namespace string `json:"namespace"`
	Revision  int    `json:"revision"`
	// Operation is install, upgrade, rollback or uninstall.
	Operation string `json:"operation"`
}

// sameStatus reports whether two statuses say the same, the in-flight
// records compared by value.
func sameStatus(a, b HelmChartStatus) bool {
	ai, bi := a.InFlight, b.InFlight
	a.InFlight, b.InFlight = nil, nil
	return a == b && (ai == nil) == (bi == nil) && (ai == nil || *ai == *bi)
}

// HelmChartConfig adds values to the HelmChart of the same name and
// namespace: the way to change a packaged chart without editing it.
type HelmChartConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		ValuesContent string `json:"valuesContent,omitempty"`
	} `json:"spec"`
}

// staticPrefixes name a chart file in the server's static directory.
var staticPrefixes = []string{"https://%{KUBERNETES_API}%/static/", "/static/"}

// staticPath is the file a chart reference names under dir, or "" when it
// names none. A reference that climbs out of dir is an error.
func staticPath(dir, ref string) (string, error) {
	for _, p := range staticPrefixes {
		rest, ok := strings.CutPrefix(ref, p)
		if !ok {
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(rest))
		if rel, err := filepath.Rel(dir, path); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			return "", fmt.Errorf("chart %q is not a file in the static directory %s", ref, dir)
		}
		return path, nil
	}
	return "", nil
}

// loadLocal loads the chart from chartContent or the static directory; ok
// is false when the chart is to come from a repository.
func loadLocal(spec HelmChartSpec, staticDir string) (c *chart.Chart, digest string, ok bool, err error) {
	var archive []byte
	switch {
	case spec.ChartContent != "":
		archive, err = base64.StdEncoding.DecodeString(strings.TrimSpace(spec.ChartContent))
		if err != nil {
			return nil, "", true, fmt.Errorf("chartContent is not base64: %w", err)
		}
	default:
		path, err := staticPath(staticDir, spec.Chart)
		if err != nil || path == "" {
			return nil, "", path != "", err
		}
		if archive, err = os.ReadFile(path); err != nil {
			return nil, "", true, fmt.Errorf("chart %q: %w", spec.Chart, err)
		}
	}
	c, err = loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, "", true, fmt.Errorf("chart archive: %w", err)
	}
	sum := sha256.Sum256(archive)
	return c, hex.EncodeToString(sum[:]), true, nil
}

// values merges, later winning: the HelmChart's valuesContent, the
// HelmChartConfig's, then set.
func values(spec HelmChartSpec, config string) (map[string]interface{}, error) {
	out := map[string]interface{}{}
	for _, doc := range []struct{ what, content string }{{"valuesContent", spec.ValuesContent}, {"HelmChartConfig valuesContent", config}} {
		if strings.TrimSpace(doc.content) == "" {
			continue
		}
		var v map[string]interface{}
		if err := yaml.Unmarshal([]byte(doc.content), &v); err != nil {
			return nil, fmt.Errorf("%s: %w", doc.what, err)
		}
		merge(out, v)
	}
	keys := make([]string, 0, len(spec.Set))
	for k := range spec.Set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := strvals.ParseInto(setArg(k, spec.Set[k]), out); err != nil {
			return nil, fmt.Errorf("spec.set %q: %w", k, err)
		}
	}
	return out, nil
}

// setArg is one spec.set entry as the argument of helm's --set, so that
// values are typed as --set types them: true, false and null, and whole
// numbers without a leading zero, are no longer strings; anything else stays
// a string. As K3s passes them, a comma in a value is escaped (one already
// escaped with a backslash is left), so "hello, world" stays whole, where
// --set would split it into two keys; a backslash escapes the next character
// as in --set. A value in braces, "{a,b}", is a list as in --set.
func setArg(key string, v intstr.IntOrString) string {
	if v.Type == intstr.Int {
		return fmt.Sprintf("%s=%d", key, v.IntVal)
	}
	val := v.StrVal
	if strings.HasPrefix(val, "{") && strings.HasSuffix(val, "}") {
		return key + "=" + val
	}
	var b strings.Builder
	backslashes := 0
	for i, r := range val {
		switch {
		case r == '\\':
			backslashes++
		case r == ',' && backslashes%2 == 0:
			b.WriteRune('\\')
			backslashes = 0
		case r == '{' && i == 0:
			// Not a list (it does not end with a brace): --set would
			// read it as the start of one.
			b.WriteRune('\\')
		default:
			backslashes = 0
		}
		b.WriteRune(r)
	}
	return key + "=" + b.String()
}

// merge copies src into dst, maps merged key by key, anything else replaced.
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// inputsHash identifies what a release is made from: the chart (its
// archive's digest, or its repository reference) and the values.
func inputsHash(chartID string, vals map[string]interface{}) (string, error) {
	v, err := json.Marshal(vals) // maps marshal with sorted keys
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte(chartID+"\x00"), v...))
	return hex.EncodeToString(sum[:16]), nil
}

// releaseNamespace is where the chart goes: targetNamespace, else the
// HelmChart's own namespace.
func releaseNamespace(hc *HelmChart) string {
	if hc.Spec.TargetNamespace != "" {
		return hc.Spec.TargetNamespace
	}
	return hc.Namespace
}

// installedNamespace is where the release was last installed, whatever
// targetNamespace says now.
func installedNamespace(hc *HelmChart) string {
	if hc.Status.Namespace != "" {
		return hc.Status.Namespace
	}
	return releaseNamespace(hc)
}

// remoteChartName checks a chart that comes from elsewhere than the object
// or the static directory: a name in spec.repo, or a URL. Helm would also
// take a path on the server's disk, which a HelmChart must not name.
func remoteChartName(spec HelmChartSpec) error {
	name := spec.Chart
	for _, scheme := range []string{"https://", "http://", "oci://"} {
		if strings.HasPrefix(name, scheme) {
			return nil
		}
	}
	if spec.Repo != "" && name != "" && !strings.ContainsAny(name, `/\`) && name != "." && name != ".." {
		return nil
	}
	return fmt.Errorf("chart %q: want a chart name with spec.repo, a URL, /static/<path> or spec.chartContent", name)
}

func validate(hc *HelmChart) error {
	if hc.Spec.Chart == "" && hc.Spec.ChartContent == "" {
		return errors.New("spec.chart or spec.chartContent is required")
	}
	return nil
}
