// Command mkpayload packs the node's helper binaries (runc, the containerd shim, CNI
// plugins, crictl) and the pause image into the zstd-compressed tar that bin/skiff
// embeds. It runs at build time only (see the Makefile's payload target).
//
// The archive is deterministic (sorted names, fixed times, root ownership) so the same
// inputs give the same bytes, and so the same content hash: the node unpacks the
// payload into <data-dir>/data/<hash>, once per distinct payload.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/skiffkube/skiff/internal/imagearchive"
)

func main() {
	out := flag.String("o", "", "output file (.tar.zst)")
	binDir := flag.String("bin", "", "directory of executables to ship in bin/")
	pause := flag.String("pause", "", "pause executable to pack as the sandbox image")
	pauseRef := flag.String("pause-ref", "", "image reference of the pause image")
	flag.Parse()
	if err := run(*out, *binDir, *pause, *pauseRef); err != nil {
		fmt.Fprintln(os.Stderr, "mkpayload:", err)
		os.Exit(1)
	}
}

type entry struct {
	name string
	mode int64
	data []byte
}

func run(out, binDir, pause, pauseRef string) error {
	if out == "" || binDir == "" || pause == "" || pauseRef == "" {
		return fmt.Errorf("-o, -bin, -pause and -pause-ref are all required")
	}
	var entries []entry
	names, err := os.ReadDir(binDir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", binDir, err)
	}
	for _, n := range names {
		if n.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(binDir, n.Name()))
		if err != nil {
			return err
		}
		entries = append(entries, entry{name: "bin/" + n.Name(), mode: 0o755, data: data})
	}
	pauseBin, err := os.ReadFile(pause)
	if err != nil {
		return fmt.Errorf("reading pause executable: %w", err)
	}
	var img bytes.Buffer
	if err := imagearchive.Write(&img, imagearchive.Image{
		Ref:        pauseRef,
		Files:      []imagearchive.File{{Path: "/pause", Mode: 0o755, Data: pauseBin}},
		Entrypoint: []string{"/pause"},
	}); err != nil {
		return fmt.Errorf("building pause image: %w", err)
	}
	entries = append(entries, entry{name: "images/pause.tar", mode: 0o644, data: img.Bytes()})
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	// The manifest lets the node verify an unpacked payload without the archive.
	var sums strings.Builder
	for _, e := range entries {
		h := sha256.Sum256(e.data)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), e.name)
	}
	entries = append(entries, entry{name: "sha256sums", mode: 0o644, data: []byte(sums.String())})

	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(out + ".tmp")
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, bytes.NewReader(e.data)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}
