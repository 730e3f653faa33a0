package snapshot

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// newKineDB makes an SQLite database in WAL mode with a kine-like table
// holding n rows, as kine's file looks.
func newKineDB(t *testing.T, path string, n int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal=WAL&_busy_timeout=30000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, value BLOB)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := db.Exec(`INSERT INTO kine (name, value) VALUES (?, ?)`, fmt.Sprintf("/registry/k%d", i), bytes.Repeat([]byte("v"), 200)); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func rowCount(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM kine").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSQLiteSaveWhileWritingAndRestore copies a database that is written
// all the while, checks the copy, and puts it back in place of the live file.
func TestSQLiteSaveWhileWritingAndRestore(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "db", "state.db")
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		t.Fatal(err)
	}
	db := newKineDB(t, dbPath, 500)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a writer that goes on during the copy
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			db.Exec(`INSERT INTO kine (name, value) VALUES (?, ?)`, fmt.Sprintf("/registry/w%d", i), []byte("w"))
		}
	}()
	snapDir := filepath.Join(dir, "snapshots")
	st := Store{Kind: KindSQLite, SQLitePath: dbPath}
	at := time.Unix(1700000000, 0)
	plain, err := Save(ctx, st, SaveOptions{Dir: snapDir, Prefix: OnDemandPrefix, Node: "n1", Now: at})
	if err != nil {
		t.Fatal(err)
	}
	zipped, err := Save(ctx, st, SaveOptions{Dir: snapDir, Prefix: OnDemandPrefix, Node: "n1", Now: at.Add(time.Second), Compress: true})
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if plain.Name != "on-demand-n1-1700000000" || zipped.Name != "on-demand-n1-1700000001.zip" || !zipped.Compressed {
		t.Fatalf("saved %+v and %+v", plain, zipped)
	}
	if _, err := Save(context.Background(), st, SaveOptions{Dir: snapDir, Prefix: OnDemandPrefix, Node: "n1", Now: at}); err == nil {
		t.Error("a second snapshot of the same name and second: want an error")
	}
	for _, f := range []File{plain, zipped} {
		if err := Check(KindSQLite, f.Path()); err != nil {
			t.Errorf("Check(%s): %v", f.Name, err)
		}
		if err := Check(KindEtcd, f.Path()); err == nil || !strings.Contains(err.Error(), "SQLite snapshot, and this server's datastore is embedded etcd") {
			t.Errorf("Check as etcd = %v", err)
		}
	}
	entries, _ := os.ReadDir(snapDir)
	if len(entries) != 2 {
		t.Errorf("snapshot dir holds %d entries, want the two snapshots only", len(entries))
	}
	saved := rowCount(t, plain.Path())
	if saved < 500 {
		t.Fatalf("the copy holds %d rows, want at least 500", saved)
	}

	// Restore: the live database (with more rows now) is moved aside.
	db.Close()
	live := rowCount(t, dbPath)
	aside, err := ResetSQLite(dbPath, zipped.Path(), time.Unix(1800000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if aside != dbPath+".reset-1800000000" {
		t.Errorf("moved aside to %q", aside)
	}
	if got := rowCount(t, aside); got != live {
		t.Errorf("the moved-aside database holds %d rows, want %d", got, live)
	}
	if got := rowCount(t, dbPath); got < 500 || got > live {
		t.Errorf("the restored database holds %d rows, want the snapshot's", got)
	}
	if _, err := os.Stat(dbPath + ".restoring"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
}

// TestNotASnapshotIsRefusedUntouched feeds files that are not snapshots to
// Check and ResetSQLite: each is refused, naming the file, and the live
// database is left as it was.
func TestNotASnapshotIsRefusedUntouched(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "state.db")
	newKineDB(t, dbPath, 50).Close()
	good := filepath.Join(dir, "good")
	if err := saveSQLite(context.Background(), dbPath, good); err != nil {
		t.Fatal(err)
	}
	goodBytes, _ := os.ReadFile(good)
	random := make([]byte, 8192)
	rand.Read(random)

	other := filepath.Join(dir, "other.db")
	odb, err := sql.Open("sqlite3", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := odb.Exec("CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	odb.Close()

	cases := map[string]struct {
		content []byte
		file    string // an existing file instead of content
		want    string
	}{
		"random":     {content: random, want: "no SQLite header"},
		"empty":      {content: []byte{}, want: "no SQLite header"},
		"truncated":  {content: goodBytes[:len(goodBytes)/2], want: "malformed"},
		"header":     {content: goodBytes[:50], want: "truncated"},
		"zipgarbage": {content: zipOf(t, map[string][]byte{"x": random}), want: "no SQLite header"},
		"ziptwo":     {content: zipOf(t, map[string][]byte{"a": goodBytes, "b": goodBytes}), want: "holds 2"},
		"notzip":     {content: append([]byte("PK\x03\x04"), random...), want: "zip"},
		"otherdb":    {file: other, want: `without kine's "kine" table`},
		"dir":        {file: dir, want: "not a regular file"},
	}
	before, _ := os.ReadFile(dbPath)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := c.file
			if path == "" {
				path = filepath.Join(t.TempDir(), name)
				if err := os.WriteFile(path, c.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := Check(KindSQLite, path)
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), path+" is not an SQLite snapshot") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Check = %v, want a refusal naming %s with %q", err, path, c.want)
			}
			if _, err := ResetSQLite(dbPath, path, time.Now()); err == nil {
				t.Error("ResetSQLite: want a refusal")
			}
			after, _ := os.ReadFile(dbPath)
			if !bytes.Equal(before, after) {
				t.Error("the live database changed")
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.Contains(e.Name(), "reset") || strings.Contains(e.Name(), "restoring") || strings.HasPrefix(e.Name(), ".unzip") {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
	if err := Check(KindSQLite, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Check of a missing file = %v", err)
	}
}

func zipOf(t *testing.T, entries map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range entries {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
