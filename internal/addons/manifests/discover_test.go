package manifests

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

func mkfile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverReadsTheTreeRecursively(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	for _, f := range []string{
		"top.yaml", "a/one.yml", "a/b/c/deep.json", "a/b/skipped.yaml", "a/b/skipped.yaml.skip",
		"dir.yaml/inside.yaml", // a directory named like a manifest
		"a/notes.txt", ".hidden.yaml", ".git/config.yaml", "a/.swp.yaml",
	} {
		mkfile(t, filepath.Join(root, f), "")
	}
	mkfile(t, filepath.Join(outside, "linked.yaml"), "")
	mkfile(t, filepath.Join(outside, "sub", "linked-deep.yaml"), "")
	symlink(t, outside, filepath.Join(root, "link"))                   // a directory outside, through a link
	symlink(t, "..", filepath.Join(root, "a", "loop"))                 // a loop back to the root
	symlink(t, filepath.Join(root, "a"), filepath.Join(root, "z-dup")) // a directory linked twice
	symlink(t, filepath.Join(outside, "linked.yaml"), filepath.Join(root, "file-link.yaml"))

	var watched []string
	tr := discover(root, func(dir string) { watched = append(watched, dir) })
	if len(tr.errs) > 0 {
		t.Fatalf("errors: %v", tr.errs)
	}
	var got []string
	for _, f := range tr.files {
		rel, _ := filepath.Rel(root, f)
		got = append(got, rel)
	}
	slices.Sort(got)
	want := []string{"a/b/c/deep.json", "a/b/skipped.yaml", "a/one.yml", "dir.yaml/inside.yaml",
		"file-link.yaml", "link/linked.yaml", "link/sub/linked-deep.yaml", "top.yaml"}
	if !slices.Equal(got, want) {
		t.Errorf("files\n got %v\nwant %v", got, want)
	}
	if !tr.skips[filepath.Join(root, "a/b/skipped.yaml")] || len(tr.skips) != 1 {
		t.Errorf("skips %v, want a/b/skipped.yaml only", tr.skips)
	}
	if !slices.Equal(watched, tr.dirs) || tr.dirs[0] != root {
		t.Errorf("watched %v, read %v: want the same, the root first", watched, tr.dirs)
	}
	for _, d := range tr.dirs {
		if strings.Contains(d, "loop") || strings.Contains(d, "z-dup") || strings.Contains(d, ".git") {
			t.Errorf("read %s: a loop, a directory read twice or a hidden one", d)
		}
	}
}

func TestDiscoverReportsWhatItCannotRead(t *testing.T) {
	tr := discover(filepath.Join(t.TempDir(), "missing"), nil)
	if len(tr.errs) == 0 {
		t.Error("a directory that cannot be read is not reported: its files would be taken for removed")
	}
}

// A symlink whose target is missing (a mount not up yet) or loops may hide
// manifests that still exist: it is reported, so that no removal is
// concluded from the pass, and the files beside it are still read.
func TestDiscoverReportsLinksThatLeadNowhere(t *testing.T) {
	for name, target := range map[string]string{
		"dangling file": "nowhere.yaml",
		"dangling dir":  "/nonexistent/mount/apps",
		"loop":          "self.yaml",
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			mkfile(t, filepath.Join(root, "kept.yaml"), "")
			link := "self.yaml"
			if target != "self.yaml" {
				link = "apps"
			}
			symlink(t, target, filepath.Join(root, link))
			tr := discover(root, nil)
			if len(tr.errs) != 1 || !strings.Contains(tr.errs[0].Error(), link) {
				t.Errorf("errors %v: want one naming %s", tr.errs, link)
			}
			if len(tr.files) != 1 || filepath.Base(tr.files[0]) != "kept.yaml" {
				t.Errorf("files %v: want kept.yaml still read", tr.files)
			}
		})
	}
}

func TestAddonNamesOfNestedFiles(t *testing.T) {
	top := AddonName("app.yaml")
	a, b := AddonName("one/app.yaml"), AddonName("two/app.yaml")
	flat := AddonName("one-app.yaml")
	if top != "app" {
		t.Errorf("AddonName(app.yaml) = %q: a top-level file's name changed", top)
	}
	if !strings.HasPrefix(a, "one-app-") || a == b || a == flat || a == top {
		t.Errorf("names of one/app.yaml, two/app.yaml, one-app.yaml, app.yaml: %q %q %q %q, want four different ones", a, b, flat, top)
	}
	if a != AddonName("one/app.yaml") || a != AddonName("one/app.json") {
		t.Error("a nested file's name is not stable, or depends on its extension")
	}
	long := AddonName(strings.Repeat("d", 40) + "/" + strings.Repeat("f", 40) + ".yaml")
	if len(long) > 63 {
		t.Errorf("AddonName of a long nested path: %q is longer than 63", long)
	}
}

// TestNestedDirectoriesAreWatched uses a real inotify watcher: a change in
// a nested directory, in a symlinked one and in one renamed within the
// tree wakes the controller.
func TestNestedDirectoriesAreWatched(t *testing.T) {
	f := newFixture(t)
	outside := t.TempDir()
	mkfile(t, filepath.Join(f.dir, "a", "b", "one.yaml"), "")
	symlink(t, outside, filepath.Join(f.dir, "link"))
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(f.dir); err != nil {
		t.Fatal(err)
	}
	f.c.syncAll(context.Background(), w)
	woken := func(what, path string) {
		t.Helper()
		mkfile(t, path, "")
		deadline := time.After(5 * time.Second)
		for {
			select {
			case ev := <-w.Events:
				if filepath.Base(ev.Name) == filepath.Base(path) {
					return
				}
			case err := <-w.Errors:
				t.Fatal(err)
			case <-deadline:
				t.Fatalf("no event for a file written in %s", what)
			}
		}
	}
	woken("a nested directory", filepath.Join(f.dir, "a", "b", "two.yaml"))
	woken("a symlinked directory", filepath.Join(outside, "three.yaml"))
	if err := os.Rename(filepath.Join(f.dir, "a"), filepath.Join(f.dir, "c")); err != nil {
		t.Fatal(err)
	}
	f.c.syncAll(context.Background(), w)
	woken("a renamed directory", filepath.Join(f.dir, "c", "b", "four.yaml"))
	if err := os.RemoveAll(filepath.Join(f.dir, "c")); err != nil {
		t.Fatal(err)
	}
	f.c.syncAll(context.Background(), w)
	for _, d := range w.WatchList() {
		if strings.HasPrefix(d, filepath.Join(f.dir, "a")) || strings.HasPrefix(d, filepath.Join(f.dir, "c")) {
			t.Errorf("%s is still watched once gone", d)
		}
	}
}
