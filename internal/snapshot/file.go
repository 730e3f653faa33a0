// Package snapshot saves, lists, prunes and restores snapshots of a server's
// own datastore: SQLite, copied online through SQLite's backup API, or
// embedded etcd, through etcd's maintenance API (save) and etcdutl
// (restore). An external datastore (PostgreSQL, MySQL, an external etcd)
// is not snapshotted by skiff: use the database's own backups.
//
// A snapshot is one file in the snapshot dir, named
// <prefix>-<node>-<unix seconds>, with ".zip" appended when compressed (a
// zip archive holding one entry, the uncompressed snapshot, as K3s does).
package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ScheduledPrefix starts the names of the snapshots the server takes on its
// schedule; retention prunes only these.
const ScheduledPrefix = "etcd-snapshot"

// OnDemandPrefix starts the names of `skiff etcd-snapshot save`'s snapshots
// unless --name says otherwise; they are kept until deleted or pruned by
// hand.
const OnDemandPrefix = "on-demand"

// CompressedExt ends the name of a compressed snapshot.
const CompressedExt = ".zip"

// partialPrefix starts the name of a snapshot being written; List skips it.
const partialPrefix = ".partial-"

// File is one snapshot in a snapshot dir. Its JSON form is what
// `skiff etcd-snapshot ls -o json` prints, one object per snapshot.
type File struct {
	// Name is the file's base name (with .zip when compressed).
	Name string `json:"name"`
	// Node is the node that took it: the snapshot dir's owner.
	Node string `json:"node"`
	// Location is a file:// URL of the file.
	Location string `json:"location"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// CreatedAt is when it was taken: the time in its name, else the file's
	// modification time.
	CreatedAt time.Time `json:"createdAt"`
	// Compressed is true for a zip archive.
	Compressed bool `json:"compressed"`
}

// Path is the file's path on disk.
func (f File) Path() string { return strings.TrimPrefix(f.Location, "file://") }

// Name returns the file name of a snapshot taken at t by node, with prefix
// (ScheduledPrefix, OnDemandPrefix or --name), ".zip" added when compressed.
func Name(prefix, node string, t time.Time, compressed bool) string {
	n := fmt.Sprintf("%s-%s-%d", prefix, node, t.Unix())
	if compressed {
		n += CompressedExt
	}
	return n
}

// CheckPrefix refuses a --name that cannot start a file name in the
// snapshot dir.
func CheckPrefix(prefix string) error {
	switch {
	case prefix == "":
		return errors.New("name: must not be empty")
	case strings.ContainsAny(prefix, `/\`) || prefix == "." || prefix == "..":
		return fmt.Errorf("name: %q must be a plain file name prefix, without a directory", prefix)
	case strings.HasPrefix(prefix, "."):
		return fmt.Errorf("name: %q must not start with a dot", prefix)
	}
	return nil
}

var timeSuffix = regexp.MustCompile(`-([0-9]{9,})$`)

// createdFromName is the time in a snapshot's name, if it ends in one.
func createdFromName(name string) (time.Time, bool) {
	m := timeSuffix.FindStringSubmatch(strings.TrimSuffix(name, CompressedExt))
	if m == nil {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(sec, 0).UTC(), true
}

// List returns the snapshots in dir, oldest first, each recorded as node's.
// Files being written, hidden files and directories are skipped; a missing
// dir holds no snapshots.
func List(dir, node string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing snapshots in %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var files []File
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		created, ok := createdFromName(e.Name())
		if !ok {
			created = info.ModTime().UTC().Truncate(time.Second)
		}
		files = append(files, File{
			Name:       e.Name(),
			Node:       node,
			Location:   "file://" + filepath.Join(abs, e.Name()),
			Size:       info.Size(),
			CreatedAt:  created,
			Compressed: strings.HasSuffix(e.Name(), CompressedExt),
		})
	}
	sort.SliceStable(files, func(i, j int) bool {
		if !files[i].CreatedAt.Equal(files[j].CreatedAt) {
			return files[i].CreatedAt.Before(files[j].CreatedAt)
		}
		return files[i].Name < files[j].Name
	})
	return files, nil
}

// Delete removes the named snapshots from dir and returns the names it
// removed. A name is a base name as List reports it; one that is not in dir
// is an error naming it, after the others are removed.
func Delete(dir string, names []string) (deleted []string, err error) {
	var errs []error
	for _, n := range names {
		if n == "" || n != filepath.Base(n) || strings.HasPrefix(n, ".") {
			errs = append(errs, fmt.Errorf("snapshot %q: not a snapshot name (see skiff etcd-snapshot ls)", n))
			continue
		}
		err := os.Remove(filepath.Join(dir, n))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("snapshot %q: no such snapshot in %s", n, dir))
		case err != nil:
			errs = append(errs, fmt.Errorf("deleting snapshot %s: %w", n, err))
		default:
			deleted = append(deleted, n)
		}
	}
	return deleted, errors.Join(errs...)
}

// Prune removes node's snapshots named <prefix>-<node>-<time> in dir beyond
// the keep newest, and returns the names it removed, oldest first. Other
// snapshots (another prefix, another node, renamed files) are never
// touched. keep must be 1 or more.
func Prune(dir, prefix, node string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("snapshot-retention: must be 1 or more, got %d", keep)
	}
	files, err := List(dir, node)
	if err != nil {
		return nil, err
	}
	own := regexp.MustCompile("^" + regexp.QuoteMeta(prefix+"-"+node) + `-[0-9]+(` + regexp.QuoteMeta(CompressedExt) + `)?$`)
	var matching []File
	for _, f := range files {
		if own.MatchString(f.Name) {
			matching = append(matching, f)
		}
	}
	if len(matching) <= keep {
		return nil, nil
	}
	var removed []string
	for _, f := range matching[:len(matching)-keep] {
		if err := os.Remove(f.Path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("pruning snapshot %s: %w", f.Name, err)
		}
		removed = append(removed, f.Name)
	}
	return removed, nil
}
