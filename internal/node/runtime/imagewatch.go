package runtime

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// archiveQuiet is how long an archive must keep its size and
	// modification time before it is imported: a slow copy is not imported
	// half-written. A copy that stalls longer fails to import, and is
	// imported again once it grows.
	archiveQuiet = 2 * time.Second
	// archivePoll is how often a settling archive is looked at again.
	archivePoll = 500 * time.Millisecond
	// archiveRescan lists the directory even without events, for what
	// inotify cannot see (a directory replaced, a queue overflow).
	archiveRescan = 30 * time.Second
)

// archiveWatcher imports the archives of a directory that are new or
// changed while the node runs. It remembers every archive by path, size and
// modification time: the ones imported (the state file's records) and the
// ones that failed, so that neither is imported again until it changes.
type archiveWatcher struct {
	dir      string
	quiet    time.Duration
	imported map[string]record
	failed   map[string]record
	// settling are the candidates: their last size and modification time,
	// and since when they have been so.
	settling map[string]sighting
	importFn func(ctx context.Context, path string) ([]string, error)
	save     func(map[string]record) error
	log      *slog.Logger
	now      func() time.Time
}

type sighting struct {
	size  int64
	mtime time.Time
	since time.Time
}

// newArchiveWatcher watches dir; imported is what was imported already (it
// may hold archives from elsewhere, the built-in ones, which are kept as
// they are), failed what failed at start (already reported). importFn
// imports one file and names its images; save writes the records after
// every change.
func newArchiveWatcher(dir string, imported, failed map[string]record, importFn func(context.Context, string) ([]string, error), save func(map[string]record) error, log *slog.Logger) *archiveWatcher {
	if imported = maps.Clone(imported); imported == nil {
		imported = map[string]record{}
	}
	if failed = maps.Clone(failed); failed == nil {
		failed = map[string]record{}
	}
	return &archiveWatcher{
		dir: dir, quiet: archiveQuiet,
		imported: imported, failed: failed, settling: map[string]sighting{},
		importFn: importFn, save: save, log: log, now: time.Now,
	}
}

// run looks at the directory whenever inotify reports a change, every
// archivePoll while an archive settles, and every archiveRescan anyway,
// until ctx ends.
func (w *archiveWatcher) run(ctx context.Context, events <-chan fsnotify.Event, errs <-chan error) error {
	tick := time.NewTicker(archivePoll)
	defer tick.Stop()
	dirty, settling := false, false
	last := w.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("images directory watcher closed")
			}
			if filepath.Dir(ev.Name) == filepath.Clean(w.dir) && isArchiveName(filepath.Base(ev.Name)) {
				dirty = true
			}
		case err, ok := <-errs:
			if ok {
				// An overflow loses events: the next pass lists everything.
				w.log.Debug("watching the images directory", "err", err)
				dirty = true
			}
		case <-tick.C:
			if dirty || settling || w.now().Sub(last) >= archiveRescan {
				dirty, last = false, w.now()
				settling = w.pass(ctx)
			}
		}
	}
}

// pass lists the directory once and imports each archive that is neither
// imported nor failed as it is now and has not changed for w.quiet. It
// reports whether some archive is still settling.
func (w *archiveWatcher) pass(ctx context.Context) (settling bool) {
	files, err := ArchiveNames(w.dir)
	if err != nil {
		w.log.Warn("listing the images directory", "dir", w.dir, "err", err)
		return false
	}
	here := map[string]bool{}
	changed := false
	for _, path := range files {
		if ctx.Err() != nil {
			return false
		}
		here[path] = true
		st, err := os.Stat(path)
		if err != nil {
			continue // gone meanwhile
		}
		cur := record{Size: st.Size(), ModTime: st.ModTime()}
		if sameFile(w.imported[path], cur) || sameFile(w.failed[path], cur) {
			delete(w.settling, path)
			continue
		}
		now := w.now()
		s, seen := w.settling[path]
		if !seen || s.size != cur.Size || !s.mtime.Equal(cur.ModTime) {
			w.settling[path] = sighting{size: cur.Size, mtime: cur.ModTime, since: now}
			settling = true
			continue
		}
		if now.Sub(s.since) < w.quiet {
			settling = true
			continue
		}
		delete(w.settling, path)
		begin := time.Now()
		names, err := w.importFn(ctx, path)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			w.log.Warn("image archive not imported", "file", filepath.Base(path), "err", err)
			w.failed[path] = cur
			continue
		}
		w.log.Info("imported", "file", filepath.Base(path), "images", strings.Join(names, ","), "took", time.Since(begin).Round(time.Millisecond))
		cur.Images = names
		w.imported[path] = cur
		delete(w.failed, path)
		changed = true
	}
	// A removed archive is forgotten: put back, it is imported again.
	for path := range w.imported {
		if filepath.Dir(path) == filepath.Clean(w.dir) && !here[path] {
			delete(w.imported, path)
			changed = true
		}
	}
	for path := range w.failed {
		if !here[path] {
			delete(w.failed, path)
		}
	}
	for path := range w.settling {
		if !here[path] {
			delete(w.settling, path)
		}
	}
	if changed {
		if err := w.save(maps.Clone(w.imported)); err != nil {
			w.log.Warn("saving what was imported", "err", err)
		}
	}
	return settling
}

func sameFile(a, b record) bool {
	return !a.ModTime.IsZero() && a.Size == b.Size && a.ModTime.Equal(b.ModTime)
}
