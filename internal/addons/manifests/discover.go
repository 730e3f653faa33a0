package manifests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tree is what one walk of the manifests directory found.
type tree struct {
	// files are the manifests, as paths under the root (through the
	// symlinks they were reached by), in walk order.
	files []string
	// skips are manifest paths that have a "<path>.skip" beside them.
	skips map[string]bool
	// dirs are the directories read, the root first: the ones to watch.
	dirs []string
	// errs are directories and entries that could not be read: what they
	// hold is unknown, not gone, so no removal may be concluded from it.
	errs []error
}

// discover walks root recursively, as K3s does, following symlinks to
// files and directories. Each real directory is read once, which stops
// symlink loops (and a directory linked twice is not applied twice).
// Hidden entries (".name") are left out, as editors keep their swap files
// there. A directory named like a manifest ("x.yaml") is a directory.
// watch, if not nil, is called for each directory before it is read, so
// that nothing written into it after the read goes unnoticed.
func discover(root string, watch func(dir string)) tree {
	t := tree{skips: map[string]bool{}}
	visited := map[string]bool{}
	var walk func(dir string)
	walk = func(dir string) {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			t.errs = append(t.errs, fmt.Errorf("resolving %s: %w", dir, err))
			return
		}
		if visited[real] {
			return
		}
		visited[real] = true
		if watch != nil {
			watch(dir)
		}
		t.dirs = append(t.dirs, dir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.errs = append(t.errs, fmt.Errorf("reading %s: %w", dir, err))
			return
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			path := filepath.Join(dir, name)
			if base, ok := strings.CutSuffix(name, SkipSuffix); ok && isManifest(base) {
				t.skips[filepath.Join(dir, base)] = true
				continue
			}
			typ := e.Type()
			if typ&os.ModeSymlink != 0 {
				fi, err := os.Stat(path)
				if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
					// A link whose target is not there (a mount not up yet at
					// boot, a share that came late) may hold manifests that
					// are only out of reach: what it held is unknown, not
					// gone, so it holds back pruning until it resolves or is
					// removed.
					t.errs = append(t.errs, fmt.Errorf("%s is a symlink that leads nowhere (%w): nothing is pruned until it resolves or is removed", path, err))
					continue
				}
				if err != nil {
					t.errs = append(t.errs, fmt.Errorf("reading %s: %w", path, err))
					continue
				}
				typ = fi.Mode().Type()
			}
			switch {
			case typ.IsDir():
				walk(path)
			case typ.IsRegular() && isManifest(name):
				t.files = append(t.files, path)
			}
		}
	}
	walk(root)
	return t
}
