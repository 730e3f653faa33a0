package snapshot

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Kinds of datastore a snapshot can be taken of.
const (
	KindSQLite = "sqlite"
	KindEtcd   = "etcd"
)

// Store is the datastore of one server, as far as snapshots are concerned.
type Store struct {
	// Kind is KindSQLite or KindEtcd.
	Kind string
	// SQLitePath is the database file (KindSQLite).
	SQLitePath string
	// EtcdDataDir is embedded etcd's data dir (KindEtcd, for restore).
	EtcdDataDir string
	// EtcdClient returns the configuration of a client of the local etcd
	// member (KindEtcd, for save).
	EtcdClient func(ctx context.Context) (clientv3.Config, error)
}

// SaveOptions say where a snapshot goes and what it is called.
type SaveOptions struct {
	// Dir is the snapshot dir; it is created (0700) if missing.
	Dir string
	// Prefix starts the name: ScheduledPrefix, OnDemandPrefix or --name.
	Prefix string
	// Node is the node taking it.
	Node string
	// Compress writes a zip archive.
	Compress bool
	// Now is the snapshot's time (its name's); zero means time.Now().
	Now time.Time
}

// Save takes a consistent snapshot of st into opts.Dir and returns it. The
// file appears under its final name only once complete.
func Save(ctx context.Context, st Store, opts SaveOptions) (File, error) {
	if err := CheckPrefix(opts.Prefix); err != nil {
		return File{}, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return File{}, fmt.Errorf("snapshot dir %s: %w", opts.Dir, err)
	}
	plainName := Name(opts.Prefix, opts.Node, now, false)
	final := filepath.Join(opts.Dir, Name(opts.Prefix, opts.Node, now, opts.Compress))
	if _, err := os.Lstat(final); err == nil {
		return File{}, fmt.Errorf("snapshot %s exists already (one snapshot per name and second)", final)
	}
	tmp := filepath.Join(opts.Dir, partialPrefix+plainName)
	defer os.Remove(tmp)
	switch st.Kind {
	case KindSQLite:
		if err := saveSQLite(ctx, st.SQLitePath, tmp); err != nil {
			return File{}, err
		}
	case KindEtcd:
		if err := saveEtcd(ctx, st, tmp); err != nil {
			return File{}, err
		}
	default:
		return File{}, fmt.Errorf("snapshots of a %q datastore are not supported", st.Kind)
	}
	if opts.Compress {
		ztmp := tmp + CompressedExt
		defer os.Remove(ztmp)
		if err := compress(tmp, ztmp, plainName); err != nil {
			return File{}, err
		}
		tmp = ztmp
	}
	if err := os.Rename(tmp, final); err != nil {
		return File{}, fmt.Errorf("saving snapshot %s: %w", final, err)
	}
	syncDir(opts.Dir)
	files, err := List(opts.Dir, opts.Node)
	if err != nil {
		return File{}, err
	}
	for _, f := range files {
		if f.Name == filepath.Base(final) {
			return f, nil
		}
	}
	return File{}, fmt.Errorf("snapshot %s vanished once written", final)
}

// compress writes src as the one entry name of a zip archive dst.
func compress(src, dst, name string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compressing snapshot: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("compressing snapshot: %w", cerr)
		}
	}()
	zw := zip.NewWriter(out)
	info, err := in.Stat()
	if err != nil {
		return err
	}
	h, err := zip.FileInfoHeader(info)
	if err != nil {
		return err
	}
	h.Name, h.Method = name, zip.Deflate
	w, err := zw.CreateHeader(h)
	if err != nil {
		return fmt.Errorf("compressing snapshot: %w", err)
	}
	if _, err := io.Copy(w, in); err != nil {
		return fmt.Errorf("compressing snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compressing snapshot: %w", err)
	}
	return out.Sync()
}

// zipMagic starts every zip archive skiff (and K3s) writes.
const zipMagic = "PK\x03\x04"

// isZip reports whether path starts like a zip archive.
func isZip(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, len(zipMagic))
	n, _ := io.ReadFull(f, head)
	return string(head[:n]) == zipMagic, nil
}

// plainCopy returns a path to path's uncompressed content: path itself, or
// for a zip archive its one entry extracted into dir (cleanup removes it).
// A zip archive with other than one file entry is refused.
func plainCopy(path, dir string) (plain string, cleanup func(), err error) {
	zipped, err := isZip(path)
	if err != nil {
		return "", nil, err
	}
	if !zipped {
		return path, func() {}, nil
	}
	zr, err := zip.OpenReader(path)
	if err != nil {
		return "", nil, fmt.Errorf("not a readable zip archive: %w", err)
	}
	defer zr.Close()
	var entries []*zip.File
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, "/") {
			entries = append(entries, f)
		}
	}
	if len(entries) != 1 {
		return "", nil, fmt.Errorf("a compressed snapshot holds one file, this zip archive holds %d", len(entries))
	}
	in, err := entries[0].Open()
	if err != nil {
		return "", nil, fmt.Errorf("reading zip entry %s: %w", entries[0].Name, err)
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, ".unzip-*")
	if err != nil {
		return "", nil, fmt.Errorf("uncompressing snapshot: %w", err)
	}
	cleanup = func() { os.Remove(out.Name()) }
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("uncompressing zip entry %s: %w", entries[0].Name, err)
	}
	return out.Name(), cleanup, nil
}

// syncDir makes a rename in dir durable; failures only cost durability.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
