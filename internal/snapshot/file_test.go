package snapshot

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestName(t *testing.T) {
	at := time.Unix(1700000000, 0)
	if got := Name("etcd-snapshot", "node-a", at, false); got != "etcd-snapshot-node-a-1700000000" {
		t.Errorf("Name = %q", got)
	}
	if got := Name("on-demand", "n1", at, true); got != "on-demand-n1-1700000000.zip" {
		t.Errorf("compressed Name = %q", got)
	}
	for _, bad := range []string{"", "a/b", "..", ".hidden", `a\b`} {
		if err := CheckPrefix(bad); err == nil {
			t.Errorf("CheckPrefix(%q) = nil, want an error", bad)
		}
	}
	if err := CheckPrefix("before-upgrade"); err != nil {
		t.Errorf("CheckPrefix: %v", err)
	}
}

func touch(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	files, err := List(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return out
}

func TestPruneKeepsNewestOfItsPrefixAndNode(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{
		"etcd-snapshot-n1-1700000001",
		"etcd-snapshot-n1-1700000002.zip",
		"etcd-snapshot-n1-1700000003",
		"etcd-snapshot-n1-1700000004",
		"etcd-snapshot-n2-1700000000",   // another node's
		"on-demand-n1-1700000000",       // manual
		"etcd-snapshot-n1-x-1700000000", // node n1-x, not n1
		"etcd-snapshot-n1-keep-me",      // renamed by hand
		".partial-etcd-snapshot-n1-1700000005",
	} {
		touch(t, dir, n)
	}
	removed, err := Prune(dir, ScheduledPrefix, "n1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"etcd-snapshot-n1-1700000001", "etcd-snapshot-n1-1700000002.zip"}; !reflect.DeepEqual(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	want := []string{"etcd-snapshot-n1-1700000003", "etcd-snapshot-n1-1700000004", "etcd-snapshot-n1-keep-me",
		"etcd-snapshot-n1-x-1700000000", "etcd-snapshot-n2-1700000000", "on-demand-n1-1700000000"}
	if got := names(t, dir); !reflect.DeepEqual(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if removed, err := Prune(dir, ScheduledPrefix, "n1", 2); err != nil || len(removed) != 0 {
		t.Errorf("second prune removed %v, %v", removed, err)
	}
	if _, err := Prune(dir, ScheduledPrefix, "n1", 0); err == nil {
		t.Error("Prune with retention 0: want an error")
	}
}

func TestListAndJSONShape(t *testing.T) {
	dir := t.TempDir()
	touch(t, dir, "on-demand-n1-1700000002.zip")
	touch(t, dir, "etcd-snapshot-n1-1700000001")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	files, err := List(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Name != "etcd-snapshot-n1-1700000001" {
		t.Fatalf("List = %+v, want two, oldest first", files)
	}
	f := files[1]
	if !f.Compressed || f.Size != 1 || f.Node != "n1" || !f.CreatedAt.Equal(time.Unix(1700000002, 0)) ||
		f.Location != "file://"+filepath.Join(dir, f.Name) || f.Path() != filepath.Join(dir, f.Name) {
		t.Errorf("List()[1] = %+v", f)
	}
	b, err := json.Marshal(files[:1])
	if err != nil {
		t.Fatal(err)
	}
	var generic []map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range generic[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := "compressed,createdAt,location,name,node,size"; strings.Join(keys, ",") != want {
		t.Errorf("JSON keys %v, want %s", keys, want)
	}
	if generic[0]["createdAt"] != "2023-11-14T22:13:21Z" {
		t.Errorf("createdAt = %v", generic[0]["createdAt"])
	}
	if missing, err := List(filepath.Join(dir, "nope"), "n1"); err != nil || len(missing) != 0 {
		t.Errorf("List of a missing dir = %v, %v", missing, err)
	}
}

func TestDelete(t *testing.T) {
	dir := t.TempDir()
	touch(t, dir, "a-n1-1700000000")
	touch(t, dir, "b-n1-1700000000")
	deleted, err := Delete(dir, []string{"a-n1-1700000000", "missing", "../b-n1-1700000000"})
	if !reflect.DeepEqual(deleted, []string{"a-n1-1700000000"}) {
		t.Errorf("deleted %v", deleted)
	}
	if err == nil || !strings.Contains(err.Error(), `"missing": no such snapshot`) || !strings.Contains(err.Error(), "not a snapshot name") {
		t.Errorf("Delete error = %v", err)
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"b-n1-1700000000"}) {
		t.Errorf("left %v", got)
	}
}
