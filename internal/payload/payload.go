// Package payload unpacks the node's helper binaries shipped inside bin/skiff.
//
// runc, the containerd shim, the CNI plugins and crictl are main packages upstream, so
// they cannot be linked into skiff as libraries; the build compiles them from their Go
// modules (see the Makefile's payload target), packs them with the pause image into
// one zstd tar, and embeds it here. At start the node unpacks it once into
// <data-dir>/data/<content-hash>/ and verifies every file against the manifest packed
// with it, re-extracting when anything differs.
package payload

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

//go:embed all:assets
var assets embed.FS

const archiveName = "assets/payload.tar.zst"

// Links are the multicall names placed in the bin directory as symlinks to skiff itself,
// so that containerd and the shells of users find them on PATH.
var Links = []string{"containerd", "ctr", "kubectl"}

// Payload is an unpacked, verified payload.
type Payload struct {
	// Dir is <data-dir>/data/<hash>.
	Dir string
	// BinDir holds runc, the shim, the CNI plugins, crictl and the multicall links.
	BinDir string
	// PauseArchive is the image tar of the built-in pause image.
	PauseArchive string
}

// ErrMissing means this binary was built without a payload (go build instead of make).
var ErrMissing = errors.New("this skiff binary carries no node payload (runc, shim, CNI plugins): build it with `make`")

// Archive returns the embedded archive.
func Archive() ([]byte, error) {
	data, err := assets.ReadFile(archiveName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrMissing
	}
	return data, err
}

// Unpack makes sure the embedded payload is unpacked and intact under dataDir/data and
// returns where it is. self is the path of the running skiff binary, for the links.
func Unpack(dataDir, self string, log *slog.Logger) (Payload, error) {
	archive, err := Archive()
	if err != nil {
		return Payload{}, err
	}
	return unpack(archive, dataDir, self, log)
}

func unpack(archive []byte, dataDir, self string, log *slog.Logger) (Payload, error) {
	sum := sha256.Sum256(archive)
	hash := hex.EncodeToString(sum[:16])
	root := filepath.Join(dataDir, "data")
	dir := filepath.Join(root, hash)
	p := Payload{Dir: dir, BinDir: filepath.Join(dir, "bin"), PauseArchive: filepath.Join(dir, "images", "pause.tar")}

	if err := Verify(dir); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return Payload{}, fmt.Errorf("reading the node binaries in %s: %w", dir, err)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("unpacked payload is damaged, unpacking it again", "dir", dir, "err", err)
		}
		if err := extract(archive, root, dir); err != nil {
			return Payload{}, fmt.Errorf("unpacking payload to %s: %w", dir, err)
		}
		if err := Verify(dir); err != nil {
			return Payload{}, fmt.Errorf("payload unpacked to %s does not verify: %w", dir, err)
		}
		log.Info("unpacked node binaries", "dir", dir)
	}
	for _, name := range Links {
		if err := ensureLink(self, filepath.Join(p.BinDir, name)); err != nil {
			return Payload{}, err
		}
	}
	if err := ensureLink(hash, filepath.Join(root, "current")); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// Verify checks every file listed in dir/sha256sums.
func Verify(dir string) error {
	f, err := os.Open(filepath.Join(dir, "sha256sums"))
	if err != nil {
		return err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	n := 0
	for s.Scan() {
		want, name, ok := strings.Cut(s.Text(), "  ")
		if !ok {
			return fmt.Errorf("malformed line in %s/sha256sums: %q", dir, s.Text())
		}
		got, err := fileSum(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: sha256 %s, want %s", name, got, want)
		}
		n++
	}
	if err := s.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s/sha256sums lists no files", dir)
	}
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// extract unpacks into a temporary sibling and renames it into place, so a crash
// half-way never leaves a directory that looks complete.
func extract(archive []byte, root, dir string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(root, ".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	zr, err := zstd.NewReader(bytes.NewReader(archive))
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(hdr.Name)
		if !filepath.IsLocal(name) || hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("unexpected entry %q in payload", hdr.Name)
		}
		target := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fs.FileMode(hdr.Mode).Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// ensureLink points link at target, replacing whatever was there.
func ensureLink(target, link string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("linking %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("linking %s: %w", link, err)
	}
	return nil
}
