package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCreateDirIsWritableByAnyone(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "pvc-1_ns_data")
	if err := createDir(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o777 || !st.IsDir() {
		t.Fatalf("created %v %v, want a directory of mode 0777 whatever the umask", st.Mode(), err)
	}
}

func TestCreateDirLeavesAnExistingDirAlone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kept")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := createDir(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("existing directory's mode changed to %v", st.Mode())
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := createDir(file); err == nil {
		t.Error("a file in the way was taken for the volume's directory")
	}
	if err := createDir(filepath.Join(t.TempDir(), "no", "parent")); err == nil {
		t.Error("a missing parent was created: the storage path is the kubelet's to make")
	}
}
