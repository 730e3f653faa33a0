package manifests

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

var (
	gvrConfigMap = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	gvrNamespace = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	gvrPVC       = schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"}
)

// resettable gives a static mapper the Reset of a discovery one.
type resettable struct{ *meta.DefaultRESTMapper }

func (resettable) Reset() {}

// fixture is a controller on a fake API whose server-side apply creates
// an object (with a new UID) or replaces it (keeping its UID), and a clock
// the test moves.
type fixture struct {
	t    *testing.T
	c    *Controller
	dyn  *dynamicfake.FakeDynamicClient
	dir  string
	now  time.Time
	logs *bytes.Buffer
	next time.Time
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), now: time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC), logs: &bytes.Buffer{}}
	f.dyn = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		addonGVR: "AddonList", gvrConfigMap: "ConfigMapList", gvrNamespace: "NamespaceList", gvrPVC: "PersistentVolumeClaimList",
	})
	uid := 0
	tracker := f.dyn.Tracker()
	f.dyn.PrependReactor("patch", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		p := a.(clienttesting.PatchAction)
		if p.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(p.GetPatch(), &obj.Object); err != nil {
			return true, nil, err
		}
		old, err := tracker.Get(p.GetResource(), p.GetNamespace(), p.GetName())
		switch {
		case apierrors.IsNotFound(err):
			uid++
			obj.SetUID(types.UID(fmt.Sprint("uid-", uid)))
			return true, obj, tracker.Create(p.GetResource(), obj, p.GetNamespace())
		case err != nil:
			return true, nil, err
		}
		obj.SetUID(old.(metav1.Object).GetUID())
		return true, obj, tracker.Update(p.GetResource(), obj, p.GetNamespace())
	})
	mapper := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "skiff.io", Version: "v1"}})
	for _, k := range []string{"ConfigMap", "PersistentVolumeClaim"} {
		mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: k}, meta.RESTScopeNamespace)
	}
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	mapper.Add(schema.GroupVersionKind{Group: "skiff.io", Version: "v1", Kind: "Addon"}, meta.RESTScopeNamespace)
	f.c = New(Config{Dir: f.dir, Server: "s1"}, slog.New(slog.NewTextHandler(f.logs, nil)))
	f.c.dyn, f.c.mapper = f.dyn, resettable{mapper}
	f.c.now = func() time.Time { return f.now }
	return f
}

func (f *fixture) write(name, content string) {
	f.t.Helper()
	mkfile(f.t, filepath.Join(f.dir, name), content)
}

func (f *fixture) remove(name string) {
	f.t.Helper()
	if err := os.Remove(filepath.Join(f.dir, name)); err != nil {
		f.t.Fatal(err)
	}
}

// pass moves the clock by d and syncs once.
func (f *fixture) pass(d time.Duration) {
	f.now = f.now.Add(d)
	f.next = f.c.syncAll(context.Background(), nil)
}

// uid is the object's UID, "" if it is not there.
func (f *fixture) uid(gvr schema.GroupVersionResource, ns, name string) string {
	f.t.Helper()
	o, err := f.dyn.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return string(o.GetUID())
}

func (f *fixture) addon(name string) *unstructured.Unstructured {
	a, err := f.dyn.Resource(addonGVR).Namespace(AddonNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

const nsDoc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n"
const appDocs = nsDoc + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: app}\n" +
	"---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: app}\n"

// objects are the UIDs of appDocs' objects.
func (f *fixture) objects() [3]string {
	return [3]string{f.uid(gvrNamespace, "", "app"), f.uid(gvrConfigMap, "app", "cfg"), f.uid(gvrPVC, "app", "data")}
}

func (f *fixture) wantSame(when string, want [3]string) {
	f.t.Helper()
	if got := f.objects(); got != want {
		f.t.Errorf("%s: objects (namespace, ConfigMap, PVC) %v, want %v unchanged", when, got, want)
	}
}

func TestTransientContentPrunesNothing(t *testing.T) {
	for name, transient := range map[string]string{
		"emptied":   "",
		"truncated": nsDoc,
		"cut":       appDocs[:len(nsDoc)+20], // mid-document: does not parse
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.write("app.yaml", appDocs)
			f.pass(0)
			want := f.objects()
			if want[0] == "" || want[1] == "" || want[2] == "" {
				t.Fatalf("not applied: %v\n%s", want, f.logs)
			}
			f.pass(time.Minute)
			f.write("app.yaml", transient)
			f.pass(time.Second)
			f.pass(2 * time.Second)
			f.write("app.yaml", appDocs) // written back within the grace period
			f.pass(time.Second)
			f.pass(time.Minute)
			f.wantSame("content back within the grace period", want)
			if got := len(addonObjects(f.addon("app"))); got != 3 {
				t.Errorf("Addon app records %d objects, want 3", got)
			}

			// The same transient state, lasting: pruned once it has lasted.
			f.write("app.yaml", transient)
			f.pass(time.Second)
			f.wantSame("just changed", want)
			f.pass(9 * time.Second)
			if name == "cut" {
				f.pass(time.Hour)
				f.wantSame("a file that does not parse", want)
				return
			}
			f.wantSame("after 9s", want)
			if f.next.IsZero() || f.next.After(f.now.Add(time.Second)) {
				t.Errorf("next pass at %v (now %v), want within 1s: deletions are due then", f.next, f.now)
			}
			f.pass(time.Second)
			got := f.objects()
			if got[1] != "" || got[2] != "" {
				t.Errorf("ConfigMap and PVC of a file %s for 10s not pruned: %v", name, got)
			}
			if (got[0] == "") != (name == "emptied") {
				t.Errorf("namespace after %s for 10s: %q", name, got[0])
			}
		})
	}
}

func TestRemovedFileIsPrunedOnceGone(t *testing.T) {
	f := newFixture(t)
	f.write("sub/dir/app.yaml", appDocs)
	f.write("app.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: top}\n")
	f.pass(0)
	want := f.objects()
	if want[1] == "" || f.uid(gvrConfigMap, "default", "top") == "" {
		t.Fatalf("a nested file or its top-level namesake not applied: %v\n%s", want, f.logs)
	}
	nested := AddonName("sub/dir/app.yaml")
	if f.addon(nested) == nil || f.addon("app") == nil {
		t.Fatalf("Addons %s and app, want both", nested)
	}

	// Removed, then written again: nothing goes.
	f.remove("sub/dir/app.yaml")
	f.pass(time.Second)
	f.pass(5 * time.Second)
	f.write("sub/dir/app.yaml", appDocs)
	f.pass(time.Second)
	f.pass(time.Minute)
	f.wantSame("removed and written again", want)

	// Removed for good: pruned after the grace period, its Addon too.
	f.remove("sub/dir/app.yaml")
	f.pass(time.Second)
	f.pass(9 * time.Second)
	f.wantSame("removed 9s ago", want)
	f.pass(time.Second)
	if got := f.objects(); got != [3]string{} || f.addon(nested) != nil {
		t.Errorf("removed 10s ago: objects %v, Addon %v; want all gone", got, f.addon(nested))
	}
	if f.uid(gvrConfigMap, "default", "top") == "" {
		t.Error("the top-level app.yaml's object went with the nested one")
	}
}

func TestRenamedFileKeepsItsObjects(t *testing.T) {
	f := newFixture(t)
	f.write("a.yaml", appDocs)
	f.pass(0)
	want := f.objects()
	if err := os.MkdirAll(filepath.Join(f.dir, "moved"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(f.dir, "a.yaml"), filepath.Join(f.dir, "moved", "b.yaml")); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		f.pass(5 * time.Second)
	}
	f.wantSame("renamed", want)
	if f.addon("a") != nil || len(addonObjects(f.addon(AddonName("moved/b.yaml")))) != 3 {
		t.Errorf("after the rename: Addon a %v, moved/b's %v; want a gone and b with the 3 objects", f.addon("a"), f.addon(AddonName("moved/b.yaml")))
	}
}

func TestObjectHeldByAnUnsettledFileIsNotPruned(t *testing.T) {
	// Both files hold cfg; one drops it for good while the other is
	// emptied for a moment: cfg stays, as the emptied file still claims it.
	f := newFixture(t)
	f.write("one.yaml", appDocs)
	f.write("two.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: app}\n---\n"+
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n")
	f.pass(0)
	want := f.objects()
	f.write("two.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n")
	f.pass(time.Second)
	f.pass(8 * time.Second)
	f.write("one.yaml", "")
	f.pass(2 * time.Second) // two.yaml has settled, one.yaml was emptied a moment ago
	f.write("one.yaml", appDocs)
	f.pass(time.Second)
	f.pass(time.Minute)
	f.wantSame("one file emptied a moment while the other dropped an object", want)
}

func TestFailuresAreLoggedOnce(t *testing.T) {
	f := newFixture(t)
	f.write("app.yaml", appDocs+"---\napiVersion: example.com/v1\nkind: Unknown\nmetadata: {name: odd}\n")
	f.write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n")
	for range 4 {
		f.pass(30 * time.Second)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "manifest partly applied"); n != 1 || !strings.Contains(logs, "Unknown odd") {
		t.Errorf("a file that keeps failing logged %d warnings (want 1, naming Unknown odd):\n%s", n, logs)
	}
	if strings.Contains(logs, "manifest applied") {
		t.Errorf("a partly applied file is also logged as applied:\n%s", logs)
	}
	if n := strings.Count(logs, "broken.yaml"); n != 1 {
		t.Errorf("a file that does not parse is logged %d times over 4 passes, want 1:\n%s", n, logs)
	}
	// Fixed: one line says so.
	f.write("app.yaml", appDocs)
	f.pass(time.Second)
	f.pass(30 * time.Second)
	if n := strings.Count(f.logs.String(), "manifest applied"); n != 1 {
		t.Errorf("the fixed file logged %d 'manifest applied' lines, want 1:\n%s", n, f.logs)
	}
}

func TestSettling(t *testing.T) {
	s := newSettling(10 * time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for i, step := range []struct {
		d       time.Duration
		sum     string
		settled bool
		due     time.Duration
	}{
		{0, "a", false, 10 * time.Second},
		{9 * time.Second, "a", false, 10 * time.Second},
		{10 * time.Second, "a", true, 10 * time.Second},
		{11 * time.Second, "", false, 21 * time.Second},  // removed: a new state
		{15 * time.Second, "a", false, 25 * time.Second}, // back: the clock starts again
		{25 * time.Second, "a", true, 25 * time.Second},
	} {
		settled, due := s.observe("x", step.sum, at(step.d))
		if settled != step.settled || !due.Equal(at(step.due)) {
			t.Errorf("step %d: settled %v due %v, want %v %v", i, settled, due.Sub(t0), step.settled, step.due)
		}
	}
	s.keep(map[string]bool{})
	if settled, _ := s.observe("x", "a", at(time.Hour)); settled {
		t.Error("a forgotten file is settled at once when it comes back")
	}
}

func TestNotesRateLimit(t *testing.T) {
	n := newNotes(10 * time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var logged []bool
	for _, step := range []struct {
		d    time.Duration
		what string
	}{{0, "a"}, {time.Minute, "a"}, {2 * time.Minute, "b"}, {3 * time.Minute, "b"}, {13 * time.Minute, "b"}} {
		logged = append(logged, n.report("k", step.what, t0.Add(step.d)))
		n.endPass()
	}
	if fmt.Sprint(logged) != "[true false true false true]" {
		t.Errorf("logged %v, want new, repeat, changed, repeat, repeat after 10m", logged)
	}
	n.endPass() // not reported in a pass: over
	if !n.report("k", "b", t0.Add(14*time.Minute)) {
		t.Error("a problem that came back after it was over is not logged")
	}
}
