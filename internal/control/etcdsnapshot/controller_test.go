package etcdsnapshot

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/skiffkube/skiff/internal/snapshot"
)

func sqliteStore(t *testing.T) snapshot.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT)`); err != nil {
		t.Fatal(err)
	}
	return snapshot.Store{Kind: snapshot.KindSQLite, SQLitePath: path}
}

func fileNames(t *testing.T, dir string) []string {
	t.Helper()
	files, err := snapshot.List(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		out = append(out, f.Name)
	}
	return out
}

func objects(t *testing.T, dyn *dynamicfake.FakeDynamicClient) map[string]string {
	t.Helper()
	list, err := dyn.Resource(GVR).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, o := range list.Items {
		n, _, _ := unstructured.NestedString(o.Object, "spec", "snapshotName")
		node, _, _ := unstructured.NestedString(o.Object, "spec", "nodeName")
		out[o.GetName()] = node + "/" + n
	}
	return out
}

// TestScheduledSnapshotsArePrunedAndMirrored drives the schedule's trigger
// with a clock of our own: scheduled snapshots are pruned to the retention
// count, a manual one is kept, and the objects follow the files.
func TestScheduledSnapshotsArePrunedAndMirrored(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "snapshots")
	c := New(Config{Store: sqliteStore(t), Dir: dir, Node: "n1", Schedule: "0 */12 * * *", Retention: 2, Compress: true},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1700000000, 0)
	c.now = func() time.Time { return clock }
	if _, err := snapshot.Save(ctx, c.cfg.Store, snapshot.SaveOptions{Dir: dir, Prefix: snapshot.OnDemandPrefix, Node: "n1", Now: clock}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		clock = clock.Add(12 * time.Hour)
		c.Scheduled(ctx)
	}
	want := []string{"on-demand-n1-1700000000", "etcd-snapshot-n1-1700129600.zip", "etcd-snapshot-n1-1700172800.zip"}
	if got := fileNames(t, dir); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("files %v, want %v", got, want)
	}

	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{GVR: Kind + "List"})
	// Another node's object is not ours to delete.
	other := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/" + Version, "kind": Kind,
		"metadata": map[string]any{"name": "x"},
		"spec":     map[string]any{"nodeName": "n2", "snapshotName": "etcd-snapshot-n2-1"},
	}}
	if _, err := dyn.Resource(GVR).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, dyn, snapshot.KindSQLite, dir, "n1"); err != nil {
		t.Fatal(err)
	}
	got := objects(t, dyn)
	var mirrored []string
	for _, v := range got {
		mirrored = append(mirrored, v)
	}
	sort.Strings(mirrored)
	if strings.Join(mirrored, " ") != "n1/etcd-snapshot-n1-1700129600.zip n1/etcd-snapshot-n1-1700172800.zip n1/on-demand-n1-1700000000 n2/etcd-snapshot-n2-1" {
		t.Fatalf("objects %v", mirrored)
	}
	name := ObjectName("n1", "on-demand-n1-1700000000")
	obj, err := dyn.Resource(GVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := obj.Object["spec"].(map[string]any)
	if spec["location"] != "file://"+filepath.Join(dir, "on-demand-n1-1700000000") || spec["createdAt"] != "2023-11-14T22:13:20Z" ||
		spec["compressed"] != false || spec["datastore"] != "sqlite" {
		t.Errorf("spec = %v", spec)
	}

	// A file deleted by hand (or by `skiff etcd-snapshot delete`) loses its object.
	if err := os.Remove(filepath.Join(dir, "on-demand-n1-1700000000")); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, dyn, snapshot.KindSQLite, dir, "n1"); err != nil {
		t.Fatal(err)
	}
	got = objects(t, dyn)
	if _, ok := got[name]; ok || len(got) != 3 {
		t.Errorf("objects after the delete: %v", got)
	}
}

func TestObjectName(t *testing.T) {
	a := ObjectName("Node_A", "on-demand-Node_A-1700000000.zip")
	if !strings.HasPrefix(a, "on-demand-node-a-1700000000.zip-") || len(a) != len("on-demand-node-a-1700000000.zip-")+6 {
		t.Errorf("ObjectName = %q", a)
	}
	if ObjectName("node-a", "x") == ObjectName("node-b", "x") {
		t.Error("two nodes' files of one name share an object name")
	}
}

func TestInitRefusesABadSchedule(t *testing.T) {
	c := New(Config{Dir: t.TempDir(), Schedule: "every day"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := c.Init(context.Background()); err == nil || !strings.Contains(err.Error(), "etcd-snapshot-schedule-cron") {
		t.Errorf("Init = %v", err)
	}
}
