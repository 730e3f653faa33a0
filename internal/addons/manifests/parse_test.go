package manifests

import (
	"strings"
	"testing"
)

func TestParseYAMLJSONAndLists(t *testing.T) {
	yamlDocs := `
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
# an empty document is skipped
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b, namespace: other}
- apiVersion: v1
  kind: Namespace
  metadata: {name: ns}
`
	objs, err := parse([]byte(yamlDocs))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetKind()+"/"+o.GetName())
	}
	if got := strings.Join(names, ","); got != "ConfigMap/a,ConfigMap/b,Namespace/ns" {
		t.Fatalf("parsed %s", got)
	}
	if got := applyOrder(objs); got[0].GetKind() != "Namespace" || got[1].GetName() != "a" || got[2].GetName() != "b" {
		t.Errorf("apply order %v, want the Namespace first, then file order", got)
	}

	objs, err = parse([]byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}`))
	if err != nil || len(objs) != 1 || objs[0].GetKind() != "Secret" {
		t.Fatalf("JSON: %v %v", objs, err)
	}
}

func TestParseErrorsNameTheDocument(t *testing.T) {
	for in, want := range map[string]string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: ConfigMap\nmetadata: {name: b}\n": "document 2: no apiVersion",
		"apiVersion: v1\nkind: ConfigMap\n":              "document 1: ConfigMap has no metadata.name",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: [\n": "document 1",
		"apiVersion: v1\nmetadata: {name: x}\n":          "document 1: no kind",
	} {
		if _, err := parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestAddonName(t *testing.T) {
	for in, want := range map[string]string{
		"local-storage.yaml": "local-storage",
		"My_App.v2.JSON":     "my-app-v2",
		"---.yml":            "manifest",
	} {
		if got := AddonName(in); got != want {
			t.Errorf("AddonName(%q) = %q, want %q", in, got, want)
		}
	}
	if !isManifest("a.yaml") || !isManifest("b.JSON") || isManifest("a.yaml.skip") || isManifest(".a.yaml.swp") || isManifest(".hidden.yaml") {
		t.Error("isManifest picks the wrong files")
	}
}

func TestLongAddonNamesStayApart(t *testing.T) {
	long := strings.Repeat("a", 70)
	a, b := AddonName(long+"-one.yaml"), AddonName(long+"-two.yaml")
	if a == b || len(a) > 63 || len(b) > 63 {
		t.Errorf("AddonName of two long files: %q and %q, want two different names of at most 63 characters", a, b)
	}
	if a != AddonName(long+"-one.yaml") {
		t.Error("AddonName is not stable")
	}
}

func TestRefsMatchAcrossVersions(t *testing.T) {
	v2 := ObjectRef{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler", Namespace: "default", Name: "web"}
	v1 := v2
	v1.APIVersion = "autoscaling/v1"
	if !containsRef([]ObjectRef{v1}, v2) {
		t.Error("an object applied under another version of its group is not recognised: it would be pruned")
	}
	other := v2
	other.APIVersion = "example.com/v2"
	if containsRef([]ObjectRef{other}, v2) {
		t.Error("kinds of two groups are taken for one")
	}
}

func TestClaimsDefaultTheNamespace(t *testing.T) {
	objs, err := parse([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n" +
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	held := claims{}
	for _, o := range objs {
		held.addObject(o)
	}
	for _, r := range []ObjectRef{
		{APIVersion: "v1", Kind: "ConfigMap", Namespace: DefaultNamespace, Name: "a"},
		{APIVersion: "rbac.authorization.k8s.io/v1beta1", Kind: "ClusterRole", Name: "r"},
	} {
		if !held.has(r) {
			t.Errorf("%v is held by the file but not claimed", r)
		}
	}
	if held.has(ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: "other", Name: "a"}) {
		t.Error("a ConfigMap of another namespace is claimed")
	}
}
