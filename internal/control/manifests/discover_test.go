package manifests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
	symlink(t, "nowhere.yaml", filepath.Join(root, "dangling.yaml"))
	symlink(t, "self.yaml", filepath.Join(root, "self.yaml"))
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
