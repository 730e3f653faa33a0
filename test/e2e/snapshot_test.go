package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

var snapshotFiles = schema.GroupVersionResource{Group: "skiff.io", Version: "v1", Resource: "etcdsnapshotfiles"}

// snapshotCmd runs `skiff etcd-snapshot ARGS` on s's data dir.
func snapshotCmd(t *testing.T, s *server, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"etcd-snapshot"}, args...)
	full = append(full, "--data-dir", s.DataDir, "--config", filepath.Join(filepath.Dir(s.DataDir), "no-config.yaml"))
	return runToExit(t, 2*time.Minute, full...)
}

type lsEntry struct {
	Name       string    `json:"name"`
	Node       string    `json:"node"`
	Location   string    `json:"location"`
	Size       int64     `json:"size"`
	CreatedAt  time.Time `json:"createdAt"`
	Compressed bool      `json:"compressed"`
}

func lsJSON(t *testing.T, s *server) map[string]lsEntry {
	t.Helper()
	out, err := snapshotCmd(t, s, "ls", "-o", "json")
	if err != nil {
		t.Fatalf("etcd-snapshot ls -o json: %v\n%s", err, out)
	}
	var list []lsEntry
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("etcd-snapshot ls -o json is not a JSON list: %v\n%s", err, out)
	}
	m := map[string]lsEntry{}
	for _, e := range list {
		m[e.Name] = e
	}
	return m
}

// waitForSnapshotObjects waits until the ETCDSnapshotFile objects name
// exactly the given snapshots.
func waitForSnapshotObjects(t *testing.T, s *server, want ...string) {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(rc)
	var got []string
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := dyn.Resource(snapshotFiles).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		got = got[:0]
		for _, o := range list.Items {
			n, _, _ := unstructured.NestedString(o.Object, "spec", "snapshotName")
			got = append(got, n)
		}
		if len(got) != len(want) {
			return false, nil
		}
		for _, w := range want {
			if !contains(got, w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("ETCDSnapshotFile objects %v, want %v", got, want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var savedLine = regexp.MustCompile(`Snapshot (\S+) saved: (\S+) \((\d+) bytes\)`)

// TestSnapshotRoundTripSQLite: a snapshot of a running SQLite server is
// listed by the CLI and through the API; a file that is not a snapshot is
// refused by --cluster-reset with nothing touched; restoring the snapshot
// brings back a namespace deleted after it was taken.
func TestSnapshotRoundTripSQLite(t *testing.T) {
	s := newServer(t)
	s.Start()
	ctx := context.Background()
	c := s.Client()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "before-snapshot"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	out, err := snapshotCmd(t, s, "save")
	if err != nil {
		t.Fatalf("etcd-snapshot save: %v\n%s", err, out)
	}
	m := savedLine.FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(m[1], "on-demand-") {
		t.Fatalf("etcd-snapshot save printed %q", out)
	}
	name, file := m[1], m[2]
	if filepath.Dir(file) != filepath.Join(s.DataDir, "server", "db", "snapshots") {
		t.Errorf("snapshot written to %s, want the default snapshot dir", file)
	}

	// Two compressed snapshots of one name, a second apart: prune keeps one.
	var zipped []string
	for len(zipped) < 2 {
		out, err := snapshotCmd(t, s, "save", "--name", "extra", "--compress")
		if err != nil && strings.Contains(out, "exists already") {
			continue // the same second as the last one
		}
		if err != nil {
			t.Fatalf("etcd-snapshot save --compress: %v\n%s", err, out)
		}
		m := savedLine.FindStringSubmatch(out)
		if m == nil || !strings.HasSuffix(m[1], ".zip") {
			t.Fatalf("etcd-snapshot save --compress printed %q", out)
		}
		zipped = append(zipped, m[1])
	}

	ls := lsJSON(t, s)
	e, ok := ls[name]
	if !ok || len(ls) != 3 {
		t.Fatalf("ls -o json lists %v, want %s and two compressed ones", ls, name)
	}
	if e.Node == "" || e.Size <= 0 || e.Compressed || e.Location != "file://"+file || e.CreatedAt.IsZero() {
		t.Errorf("ls -o json entry %+v", e)
	}
	if !ls[zipped[0]].Compressed {
		t.Errorf("%s is not listed as compressed", zipped[0])
	}
	table, err := snapshotCmd(t, s, "ls")
	if err != nil || !regexp.MustCompile(`(?m)^NAME\s+NODE\s+SIZE\s+CREATED$`).MatchString(table) || !strings.Contains(table, name) {
		t.Errorf("etcd-snapshot ls: %v\n%s", err, table)
	}
	waitForSnapshotObjects(t, s, name, zipped[0], zipped[1])
	kubectl, err := runToExit(t, time.Minute, "kubectl", "--kubeconfig", s.Kubeconfig, "get", "etcdsnapshotfiles")
	if err != nil || !strings.Contains(kubectl, name) || !strings.Contains(kubectl, "SNAPSHOTNAME") {
		t.Errorf("kubectl get etcdsnapshotfiles: %v\n%s", err, kubectl)
	}

	out, err = snapshotCmd(t, s, "prune", "--name", "extra", "--snapshot-retention", "1")
	if err != nil || !strings.Contains(out, "Snapshot "+zipped[0]+" deleted") {
		t.Errorf("etcd-snapshot prune: %v\n%s", err, out)
	}
	out, err = snapshotCmd(t, s, "delete", zipped[1], "no-such-snapshot")
	if err == nil || !strings.Contains(out, "Snapshot "+zipped[1]+" deleted") || !strings.Contains(out, `"no-such-snapshot": no such snapshot`) {
		t.Errorf("etcd-snapshot delete: %v\n%s", err, out)
	}
	waitForSnapshotObjects(t, s, name)

	if err := c.CoreV1().Namespaces().Delete(ctx, "before-snapshot", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Namespaces().Get(ctx, "before-snapshot", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatal("the namespace was not deleted")
	}
	s.Stop()

	db := filepath.Join(s.DataDir, "server", "db", "state.db")
	resetArgs := append(append(s.Args(), s.extra...), "--cluster-reset")
	t.Run("not a snapshot is refused, nothing touched", func(t *testing.T) {
		before, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		garbage := filepath.Join(t.TempDir(), "garbage.db")
		os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 1000), 0o600)
		out, err := runToExit(t, time.Minute, append(resetArgs, "--cluster-reset-restore-path", garbage)...)
		if err == nil || !strings.Contains(out, garbage+" is not an SQLite snapshot: no SQLite header") {
			t.Errorf("cluster-reset with a garbage file: %v\n%s", err, out)
		}
		after, _ := os.ReadFile(db)
		if !bytes.Equal(before, after) {
			t.Error("the datastore changed")
		}
		if matches, _ := filepath.Glob(db + ".reset-*"); len(matches) != 0 {
			t.Errorf("moved aside: %v", matches)
		}
	})

	out, err = runToExit(t, 2*time.Minute, append(resetArgs, "--cluster-reset-restore-path", file)...)
	if err != nil || !strings.Contains(out, "restored "+file) || !strings.Contains(out, "Start the server again without --cluster-reset") {
		t.Fatalf("cluster-reset: %v\n%s", err, out)
	}
	if matches, _ := filepath.Glob(db + ".reset-*"); len(matches) == 0 {
		t.Errorf("the previous datastore was not kept")
	}

	s.Start()
	ns, err := s.Client().CoreV1().Namespaces().Get(ctx, "before-snapshot", metav1.GetOptions{})
	if err != nil || ns.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("after the restore, namespace before-snapshot: %v %+v", err, ns.Status)
	}
	// The snapshot's object comes back from the files, whatever the
	// restored data held.
	waitForSnapshotObjects(t, s, name)
	s.Stop()
}

// TestSnapshotRoundTripEtcd: the same round trip on embedded etcd
// (--cluster-init), then a reset from the member's own data.
func TestSnapshotRoundTripEtcd(t *testing.T) {
	s := newServer(t, "--cluster-init")
	s.Start()
	ctx := context.Background()
	c := s.Client()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "before-snapshot"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := snapshotCmd(t, s, "save", "--compress")
	if err != nil {
		t.Fatalf("etcd-snapshot save: %v\n%s", err, out)
	}
	m := savedLine.FindStringSubmatch(out)
	if m == nil || !strings.HasSuffix(m[1], ".zip") {
		t.Fatalf("etcd-snapshot save printed %q", out)
	}
	name, file := m[1], m[2]
	if e, ok := lsJSON(t, s)[name]; !ok || !e.Compressed || e.Size <= 0 {
		t.Fatalf("ls -o json: %+v", e)
	}
	waitForSnapshotObjects(t, s, name)

	if err := c.CoreV1().Namespaces().Delete(ctx, "before-snapshot", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Namespaces().Get(ctx, "before-snapshot", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatal("the namespace was not deleted")
	}
	s.Stop()

	etcdDir := filepath.Join(s.DataDir, "server", "db", "etcd")
	resetArgs := append(append(s.Args(), s.extra...), "--cluster-reset")
	t.Run("not a snapshot is refused, nothing touched", func(t *testing.T) {
		garbage := filepath.Join(t.TempDir(), "garbage.zip")
		os.WriteFile(garbage, zipOfGarbage(t), 0o600)
		out, err := runToExit(t, time.Minute, append(resetArgs, "--cluster-reset-restore-path", garbage)...)
		if err == nil || !strings.Contains(out, garbage+" is not an etcd snapshot") {
			t.Errorf("cluster-reset with a zip of garbage: %v\n%s", err, out)
		}
		if matches, _ := filepath.Glob(etcdDir + "-old-*"); len(matches) != 0 {
			t.Errorf("moved aside: %v", matches)
		}
	})

	out, err = runToExit(t, 2*time.Minute, append(resetArgs, "--cluster-reset-restore-path", file)...)
	if err != nil || !strings.Contains(out, "restored "+file) || !strings.Contains(out, "the only member of a new etcd cluster") {
		t.Fatalf("cluster-reset: %v\n%s", err, out)
	}
	if matches, _ := filepath.Glob(etcdDir + "-old-*"); len(matches) != 1 {
		t.Errorf("the previous etcd data dir was not kept: %v", matches)
	}
	s.Start()
	ns, err := s.Client().CoreV1().Namespaces().Get(ctx, "before-snapshot", metav1.GetOptions{})
	if err != nil || ns.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("after the restore, namespace before-snapshot: %v %+v", err, ns.Status)
	}
	waitForSnapshotObjects(t, s, name)
	s.Stop()

	// A reset from the member's own data: it is alone already, and stays so.
	out, err = runToExit(t, 2*time.Minute, resetArgs...)
	if err != nil || !strings.Contains(out, "is now the only member of its cluster") {
		t.Fatalf("cluster-reset without a snapshot: %v\n%s", err, out)
	}
	s.Start()
	if _, err := s.Client().CoreV1().Namespaces().Get(ctx, "before-snapshot", metav1.GetOptions{}); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
	s.Stop()
}

// zipOfGarbage is a zip archive whose one entry is not a database.
func zipOfGarbage(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("etcd-snapshot")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("garbage "), 4096))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestScheduledSnapshotsArePruned: with a schedule of every second and a
// retention of 2, scheduled snapshots are taken and pruned to 2; a manual
// snapshot is never pruned by the schedule.
func TestScheduledSnapshotsArePruned(t *testing.T) {
	s := newServer(t, "--etcd-snapshot-schedule-cron", "@every 1s", "--etcd-snapshot-retention", "2")
	s.Start()
	out, err := snapshotCmd(t, s, "save")
	if err != nil {
		t.Fatalf("etcd-snapshot save: %v\n%s", err, out)
	}
	if err := s.waitFor("pruned scheduled snapshots", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Stopping waits for a scheduled snapshot in progress, and its pruning.
	s.Stop()
	var scheduled, manual int
	for name := range lsJSON(t, s) {
		switch {
		case strings.HasPrefix(name, "etcd-snapshot-"):
			scheduled++
		case strings.HasPrefix(name, "on-demand-"):
			manual++
		}
	}
	if scheduled != 2 || manual != 1 {
		t.Errorf("after pruning: %d scheduled snapshots (want 2), %d manual (want 1)\n%s", scheduled, manual, s.Output())
	}
}
