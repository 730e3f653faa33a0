package payload

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func testArchive(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var sums bytes.Buffer
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	write := func(name, data string) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, data)
	}
	for name, data := range files {
		h := sha256.Sum256([]byte(data))
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), name)
		write(name, data)
	}
	write("sha256sums", sums.String())
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestUnpackVerifiesAndRepairs(t *testing.T) {
	dataDir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	archive := testArchive(t, map[string]string{"bin/runc": "runc-binary", "images/pause.tar": "image"})

	p, err := unpack(archive, dataDir, "/usr/local/bin/skiff", log)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(p.BinDir, "runc")); string(got) != "runc-binary" {
		t.Fatalf("runc = %q", got)
	}
	for _, name := range Links {
		if target, err := os.Readlink(filepath.Join(p.BinDir, name)); err != nil || target != "/usr/local/bin/skiff" {
			t.Errorf("link %s -> %q, %v", name, target, err)
		}
	}
	if target, _ := os.Readlink(filepath.Join(dataDir, "data", "current")); target != filepath.Base(p.Dir) {
		t.Errorf("current -> %q, want %q", target, filepath.Base(p.Dir))
	}

	// A damaged file is detected and the payload unpacked again.
	if err := os.WriteFile(filepath.Join(p.BinDir, "runc"), []byte("tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Verify(p.Dir); err == nil {
		t.Fatal("Verify accepted a tampered file")
	}
	p2, err := unpack(archive, dataDir, "/other/skiff", log)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Dir != p.Dir {
		t.Fatalf("same archive unpacked to %s and %s", p.Dir, p2.Dir)
	}
	if got, _ := os.ReadFile(filepath.Join(p.BinDir, "runc")); string(got) != "runc-binary" {
		t.Fatalf("runc not repaired: %q", got)
	}
	if target, _ := os.Readlink(filepath.Join(p.BinDir, "containerd")); target != "/other/skiff" {
		t.Errorf("link not refreshed: %q", target)
	}

	// A different payload goes to a different directory.
	p3, err := unpack(testArchive(t, map[string]string{"bin/runc": "v2"}), dataDir, "/x", log)
	if err != nil {
		t.Fatal(err)
	}
	if p3.Dir == p.Dir {
		t.Fatal("different payloads share a directory")
	}
}

func TestUnpackRejectsEscapingEntries(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	zw.Close()
	dataDir := t.TempDir()
	if _, err := unpack(buf.Bytes(), dataDir, "/x", slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("archive with ../ entry was accepted")
	}
	for _, p := range []string{filepath.Join(dataDir, "escape"), filepath.Join(dataDir, "data", "escape")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("entry escaped the payload directory to %s", p)
		}
	}
}
