package runtime

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// fakeImports records the archives "imported" and fails those listed.
type fakeImports struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]bool
	saved map[string]record
}

func (f *fakeImports) importFn(_ context.Context, path string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, filepath.Base(path))
	if f.fail[filepath.Base(path)] {
		return nil, errors.New("unexpected EOF")
	}
	return []string{"skiff.local/" + filepath.Base(path) + ":1"}, nil
}

func (f *fakeImports) save(m map[string]record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.saved = m
	return nil
}

func (f *fakeImports) imported() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// TestWatcherImportsOnceAFileHasSettled steps a clock through a slow copy,
// an unchanged file, a failure, a change and a removal.
func TestWatcherImportsOnceAFileHasSettled(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	builtin := "/payload/pause.tar"
	f := &fakeImports{fail: map[string]bool{}}
	w := newArchiveWatcher(dir, map[string]record{builtin: {Size: 1, ModTime: time.Unix(1, 0)}}, nil, f.importFn, f.save, slog.New(slog.DiscardHandler))
	clock := time.Unix(1000, 0)
	w.now = func() time.Time { return clock }
	step := func(d time.Duration) { clock = clock.Add(d) }
	path := filepath.Join(dir, "app.tar")
	mtime := time.Unix(2000, 0)
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want ...string) {
		t.Helper()
		if got := f.imported(); !slices.Equal(got, want) {
			t.Fatalf("imports %v, want %v", got, want)
		}
	}

	// A copy in progress: it keeps changing, so it is not imported.
	write("half")
	if !w.pass(ctx) {
		t.Error("a new file is not reported as settling")
	}
	step(1500 * time.Millisecond)
	write("half and more")
	w.pass(ctx)
	step(1500 * time.Millisecond)
	w.pass(ctx)
	expect()
	// Unchanged for the quiet period: imported, once.
	step(time.Second)
	if w.pass(ctx) {
		t.Error("still settling after the import")
	}
	expect("app.tar")
	if r := f.saved[path]; r.Size != int64(len("half and more")) || len(r.Images) != 1 {
		t.Errorf("saved record %+v", r)
	}
	if _, ok := f.saved[builtin]; !ok {
		t.Error("the built-in archive's record was dropped")
	}
	step(10 * time.Second)
	w.pass(ctx)
	expect("app.tar")

	// Not an archive: ignored.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A changed file that fails is reported once, not retried until it
	// changes again.
	f.fail["app.tar"] = true
	write("broken")
	w.pass(ctx)
	step(3 * time.Second)
	w.pass(ctx)
	step(3 * time.Second)
	w.pass(ctx)
	expect("app.tar", "app.tar")
	f.fail["app.tar"] = false
	write("fixed")
	w.pass(ctx)
	step(3 * time.Second)
	w.pass(ctx)
	expect("app.tar", "app.tar", "app.tar")

	// Removed and put back: imported again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.pass(ctx)
	if _, ok := f.saved[path]; ok {
		t.Error("a removed archive is still recorded")
	}
	write("fixed")
	w.pass(ctx)
	step(3 * time.Second)
	w.pass(ctx)
	expect("app.tar", "app.tar", "app.tar", "app.tar")
}

// TestWatcherSkipsWhatStartImported: an archive the start-up import
// recorded, or reported as failed, is not imported again by the watcher.
func TestWatcherSkipsWhatStartImported(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.tar.zst")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	f := &fakeImports{}
	broken := filepath.Join(dir, "broken.tar.gz")
	if err := os.WriteFile(broken, []byte("not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	bst, _ := os.Stat(broken)
	w := newArchiveWatcher(dir, map[string]record{path: {Size: st.Size(), ModTime: st.ModTime()}},
		map[string]record{broken: {Size: bst.Size(), ModTime: bst.ModTime()}}, f.importFn, f.save, slog.New(slog.DiscardHandler))
	w.quiet = 0
	w.pass(context.Background())
	w.pass(context.Background())
	if got := f.imported(); len(got) != 0 {
		t.Errorf("imported %v again", got)
	}
}

// TestWatcherRunImportsADroppedArchive runs the loop on real inotify
// events.
func TestWatcherRunImportsADroppedArchive(t *testing.T) {
	dir := t.TempDir()
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer fsw.Close()
	if err := fsw.Add(dir); err != nil {
		t.Fatal(err)
	}
	f := &fakeImports{}
	w := newArchiveWatcher(dir, nil, nil, f.importFn, f.save, slog.New(slog.DiscardHandler))
	w.quiet = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.run(ctx, fsw.Events, fsw.Errors) }()
	if err := os.WriteFile(filepath.Join(dir, "web.tar.gz"), []byte("archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.imported()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := f.imported(); !slices.Equal(got, []string{"web.tar.gz"}) {
		t.Errorf("imports %v, want web.tar.gz once", got)
	}
}
