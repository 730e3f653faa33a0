package killall

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// NodeLockFile is the node's lock in the run dir. The node that holds it
// writes its NodeRecord into it, so that killall finds the node's mounts and
// containers whatever data dir and kubelet cgroup root it used.
const NodeLockFile = "node.lock"

// ErrNodeLocked means another process holds the node lock: a running node,
// or killall dismantling one.
var ErrNodeLocked = errors.New("the node lock is held")

// LockNode takes the node lock, runDir's NodeLockFile, without waiting: an
// exclusive flock(2) on the file, held until the returned file is closed.
// A running node and killall take it the same way, so that neither starts
// while the other holds it. It creates runDir (mode 0711) and the file
// (0600) when missing. It returns ErrNodeLocked (wrapped, naming the file)
// when someone else holds it.
//
// A lock taken on a file that killall unlinked meanwhile would lock
// nothing, so the file locked must still be the one at the path; if not,
// it tries again.
func LockNode(runDir string) (*os.File, error) {
	path := filepath.Join(runDir, NodeLockFile)
	for range 5 {
		if err := os.MkdirAll(runDir, 0o711); err != nil {
			return nil, fmt.Errorf("locking the node: creating %s: %w", runDir, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("locking the node (%s): %w", path, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w (%s)", ErrNodeLocked, path)
			}
			return nil, fmt.Errorf("locking the node (%s): %w", path, err)
		}
		locked, err1 := f.Stat()
		atPath, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(locked, atPath) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("locking the node (%s): the file kept being replaced", path)
}

// NodeRecord is what a running node tells killall about itself.
type NodeRecord struct {
	// DataDir is the node's absolute --data-dir: containerd's mounts may be
	// under <DataDir>/agent/containerd.
	DataDir string `json:"dataDir"`
	// KubeletCgroupRoot is the kubelet's cgroup root ("/" unless
	// --kubelet-arg=cgroup-root moved it): the node's containers are in
	// <root>/kubepods (cgroupfs) or <root>/kubepods.slice (systemd).
	KubeletCgroupRoot string `json:"kubeletCgroupRoot"`
}

// WriteNodeRecord replaces the content of lock, the node's locked
// NodeLockFile, with rec as JSON.
func WriteNodeRecord(lock *os.File, rec NodeRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("recording the node in %s: %w", lock.Name(), err)
	}
	if err := lock.Truncate(0); err != nil {
		return fmt.Errorf("recording the node in %s: %w", lock.Name(), err)
	}
	if _, err := lock.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("recording the node in %s: %w", lock.Name(), err)
	}
	return nil
}

// ReadNodeRecord reads the record in runDir's NodeLockFile. A missing or
// empty file (a node of an older skiff) is no error: ok is false.
func ReadNodeRecord(runDir string) (rec NodeRecord, ok bool, err error) {
	path := filepath.Join(runDir, NodeLockFile)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) || (err == nil && len(b) == 0) {
		return NodeRecord{}, false, nil
	}
	if err != nil {
		return NodeRecord{}, false, fmt.Errorf("reading the node record %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return NodeRecord{}, false, fmt.Errorf("reading the node record %s: %w", path, err)
	}
	if rec.DataDir != "" && (!filepath.IsAbs(rec.DataDir) || filepath.Clean(rec.DataDir) == "/") {
		rec.DataDir = ""
	}
	if rec.KubeletCgroupRoot != "" && !filepath.IsAbs(rec.KubeletCgroupRoot) {
		rec.KubeletCgroupRoot = ""
	}
	return rec, true, nil
}
