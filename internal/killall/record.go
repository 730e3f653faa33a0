package killall

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// NodeLockFile is the node's lock in the run dir. The node that holds it
// writes its NodeRecord into it, so that killall finds the node's mounts and
// containers whatever data dir and kubelet cgroup root it used.
const NodeLockFile = "node.lock"

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
