package snapshot

import (
	"fmt"
	"os"
)

// Check reports whether the file at path is a snapshot of a kind datastore
// (plain or zip-compressed), and if not, an error naming the file and why.
// It writes nothing beside the file; a compressed snapshot is uncompressed
// into a temporary file that is removed again.
func Check(kind, path string) error {
	_, cleanup, err := prepare(kind, path, "")
	if err != nil {
		return err
	}
	cleanup()
	return nil
}

// prepare checks the snapshot at path and returns its uncompressed content
// (path itself, or a temporary file in workDir, "" for the system's, that
// cleanup removes).
func prepare(kind, path string, workDir string) (plain string, cleanup func(), err error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%s is not a%s snapshot: %s", path, article(kind), fmt.Sprintf(format, args...))
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return "", nil, refuse("not a regular file")
	}
	plain, cleanup, err = plainCopy(path, workDir)
	if err != nil {
		return "", nil, refuse("%v", err)
	}
	var why error
	switch kind {
	case KindSQLite:
		why = checkSQLite(plain)
		if why != nil && checkEtcd(plain) == nil {
			why = fmt.Errorf("it is an etcd snapshot, and this server's datastore is SQLite")
		}
	case KindEtcd:
		why = checkEtcd(plain)
		if why != nil && checkSQLite(plain) == nil {
			why = fmt.Errorf("it is an SQLite snapshot, and this server's datastore is embedded etcd")
		}
	default:
		why = fmt.Errorf("snapshots of a %q datastore are not supported", kind)
	}
	if why != nil {
		cleanup()
		return "", nil, refuse("%v", why)
	}
	return plain, cleanup, nil
}

func article(kind string) string {
	switch kind {
	case KindSQLite:
		return "n SQLite"
	case KindEtcd:
		return "n etcd"
	}
	return " " + kind
}
