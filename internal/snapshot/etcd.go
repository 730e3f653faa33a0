package snapshot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/client/v3/snapshot"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// saveEtcd streams a snapshot from the local etcd member into dst. etcd
// appends the sha256 of the content, which restore checks.
func saveEtcd(ctx context.Context, st Store, dst string) error {
	if st.EtcdClient == nil {
		return errors.New("no etcd client for this data dir")
	}
	cfg, err := st.EtcdClient(ctx)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	if cfg.Logger == nil {
		// clientv3's default logger writes to stderr.
		cfg.Logger = zap.NewNop()
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, dst); err != nil {
		return fmt.Errorf("saving etcd snapshot from %s (etcd answers while its server runs): %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return nil
}

// checkEtcd says why the uncompressed file at path is not an etcd
// snapshot, or nil: it must end in the sha256 of its content (as etcd
// writes it, so a truncated file is caught), and etcdutl's status must read
// it as a consistent bolt database.
func checkEtcd(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	n := info.Size()
	// etcd pads nothing: a snapshot is whole 512-byte multiples (bolt pages)
	// plus the 32-byte digest, the test etcdutl restore uses too.
	if n < 512 || n%512 != sha256.Size {
		return fmt.Errorf("%d bytes is not the size of an etcd snapshot with its integrity hash (truncated?)", n)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, f, n-sha256.Size); err != nil {
		return err
	}
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, want); err != nil {
		return err
	}
	if string(h.Sum(nil)) != string(want) {
		return errors.New("its sha256 integrity hash does not match its content (truncated or corrupted)")
	}
	if _, err := etcdutl.NewV3(zap.NewNop()).Status(path); err != nil {
		return fmt.Errorf("not a readable etcd database: %w", err)
	}
	return nil
}

// EtcdRestore says what a restored one-member etcd cluster looks like.
type EtcdRestore struct {
	// Snapshot is the file to restore (plain or zip).
	Snapshot string
	// DataDir is embedded etcd's data dir, replaced by the restored one.
	DataDir string
	// Name is this member's name, and PeerURL its advertised peer URL.
	Name, PeerURL string
	// Now stamps the name the old data dir is moved to; zero means now.
	Now time.Time
}

// RestoreEtcd makes DataDir a one-member etcd cluster holding the snapshot
// (etcdutl snapshot restore). The snapshot is checked first and refused,
// nothing touched, if it is not one; it is restored beside DataDir, and only
// then is the old data dir moved aside, to <DataDir>-old-<unix seconds>
// (returned, "" when there was none). etcd must not be running.
func RestoreEtcd(r EtcdRestore) (movedAside string, err error) {
	parent := filepath.Dir(r.DataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", fmt.Errorf("etcd data dir %s: %w", parent, err)
	}
	plain, cleanup, err := prepare(KindEtcd, r.Snapshot, parent)
	if err != nil {
		return "", err
	}
	defer cleanup()
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	tmp := r.DataDir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	err = etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath:        plain,
		Name:                r.Name,
		OutputDataDir:       tmp,
		OutputWALDir:        filepath.Join(tmp, "member", "wal"),
		PeerURLs:            []string{r.PeerURL},
		InitialCluster:      r.Name + "=" + r.PeerURL,
		InitialClusterToken: "skiff-restore-" + fmt.Sprint(now.Unix()),
	})
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("restoring etcd snapshot %s: %w", r.Snapshot, err)
	}
	// Files skiff keeps beside etcd's member dir (the member name) stay.
	if err := copyTopFiles(r.DataDir, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("keeping the files of %s: %w", r.DataDir, err)
	}
	if _, err := os.Stat(r.DataDir); err == nil {
		movedAside = fmt.Sprintf("%s-old-%d", r.DataDir, now.Unix())
		if err := os.Rename(r.DataDir, movedAside); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("moving the current etcd data dir aside: %w", err)
		}
	}
	if err := os.Rename(tmp, r.DataDir); err != nil {
		return movedAside, fmt.Errorf("putting the restored etcd data dir in place: %w", err)
	}
	syncDir(parent)
	return movedAside, nil
}

// copyTopFiles copies the regular files directly in from (if it exists)
// into to, which etcdutl made.
func copyTopFiles(from, to string) error {
	entries, err := os.ReadDir(from)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
