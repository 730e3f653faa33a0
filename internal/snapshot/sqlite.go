package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mattn/go-sqlite3"
)

// sqliteMagic starts every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

// kineTable is the table kine keeps every key's revisions in: a SQLite file
// without it is not a skiff datastore.
const kineTable = "kine"

// saveSQLite copies the database at src into a new file dst through
// SQLite's online backup API, in one step: the copy is one consistent
// read transaction of the live database, which kine goes on writing
// meanwhile (WAL mode lets the writer proceed).
func saveSQLite(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no SQLite datastore at %s (has a server run on this data dir? see --data-dir)", src)
	} else if err != nil {
		return fmt.Errorf("SQLite datastore %s: %w", src, err)
	}
	// mode=rw: never create an empty database where the real one is missing.
	srcDB, err := sql.Open("sqlite3", "file:"+src+"?mode=rw&_busy_timeout=30000")
	if err != nil {
		return fmt.Errorf("opening SQLite datastore %s: %w", src, err)
	}
	defer srcDB.Close()
	dstDB, err := sql.Open("sqlite3", "file:"+dst+"?mode=rwc")
	if err != nil {
		return fmt.Errorf("creating snapshot %s: %w", dst, err)
	}
	defer dstDB.Close()
	srcConn, err := srcDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("opening SQLite datastore %s: %w", src, err)
	}
	defer srcConn.Close()
	dstConn, err := dstDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("creating snapshot %s: %w", dst, err)
	}
	defer dstConn.Close()
	err = dstConn.Raw(func(d any) error {
		return srcConn.Raw(func(s any) error {
			dc, ok1 := d.(*sqlite3.SQLiteConn)
			sc, ok2 := s.(*sqlite3.SQLiteConn)
			if !ok1 || !ok2 {
				return errors.New("the SQLite driver in this build has no backup API")
			}
			return backup(ctx, dc, sc)
		})
	})
	if err != nil {
		return fmt.Errorf("copying SQLite datastore %s: %w", src, err)
	}
	if err := dstConn.Close(); err != nil {
		return err
	}
	if err := dstDB.Close(); err != nil {
		return err
	}
	return fsyncFile(dst)
}

// backup copies all of src into dst. Step(-1) copies every page under one
// read lock; a busy source (a checkpoint holding it) is retried.
func backup(ctx context.Context, dst, src *sqlite3.SQLiteConn) error {
	bk, err := dst.Backup("main", src, "main")
	if err != nil {
		return err
	}
	for {
		done, err := bk.Step(-1)
		if done {
			break
		}
		var se sqlite3.Error
		if err != nil && !(errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)) {
			bk.Finish()
			return err
		}
		select {
		case <-ctx.Done():
			bk.Finish()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return bk.Finish()
}

func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// checkSQLite says why the uncompressed file at path is not a snapshot of
// a skiff SQLite datastore, or nil: an SQLite header, PRAGMA
// integrity_check "ok" and kine's table. It opens the file read-only and
// immutable, so nothing (no -wal or -shm file) is written beside it.
func checkSQLite(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	head := make([]byte, 100)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if n < len(sqliteMagic) || string(head[:len(sqliteMagic)]) != sqliteMagic {
		return errors.New("no SQLite header")
	}
	if n < 100 {
		return errors.New("truncated: shorter than an SQLite header")
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&immutable=1")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return fmt.Errorf("integrity check: %w", err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return fmt.Errorf("integrity check: %w", err)
	}
	rows.Close()
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], "...")
		}
		return fmt.Errorf("integrity check failed: %s", strings.Join(problems, "; "))
	}
	var tables int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", kineTable).Scan(&tables); err != nil {
		return fmt.Errorf("reading its tables: %w", err)
	}
	if tables != 1 {
		return fmt.Errorf("an SQLite database without kine's %q table, not a skiff datastore", kineTable)
	}
	return nil
}

// ResetSQLite restores the SQLite datastore at dbPath from the snapshot at
// restorePath (plain or zip). The snapshot is checked first, and refused
// with nothing touched if it is not one; then the current database and its
// -wal and -shm files are moved aside to <dbPath>.reset-<unix seconds>
// (returned) and the snapshot put in place. The server must be stopped.
func ResetSQLite(dbPath, restorePath string, now time.Time) (movedAside string, err error) {
	dir := filepath.Dir(dbPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("database directory %s: %w", dir, err)
	}
	plain, cleanup, err := prepare(KindSQLite, restorePath, dir)
	if err != nil {
		return "", err
	}
	defer cleanup()
	// The new file is complete and synced beside the database before the
	// old one moves.
	tmp := dbPath + ".restoring"
	if err := copyFile(plain, tmp); err != nil {
		return "", fmt.Errorf("copying snapshot %s: %w", restorePath, err)
	}
	defer os.Remove(tmp)
	if _, err := os.Stat(dbPath); err == nil {
		movedAside = fmt.Sprintf("%s.reset-%d", dbPath, now.Unix())
		for _, suffix := range []string{"", "-wal", "-shm"} {
			err := os.Rename(dbPath+suffix, movedAside+suffix)
			if err != nil && !os.IsNotExist(err) {
				return "", fmt.Errorf("moving the current datastore aside: %w", err)
			}
		}
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return movedAside, fmt.Errorf("putting the snapshot in place: %w", err)
	}
	syncDir(dir)
	return movedAside, nil
}

// copyFile copies src to a new file dst (0600) and syncs it.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}
