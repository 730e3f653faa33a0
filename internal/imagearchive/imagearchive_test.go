package imagearchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The test reads the archive with its own types, declared with the field
// names the OCI and docker formats use, so a wrong JSON tag in the package
// cannot pass just because it round-trips.
type testDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	} `json:"platform"`
}

type testIndex struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Manifests     []testDescriptor `json:"manifests"`
}

type testManifest struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Config        testDescriptor   `json:"config"`
	Layers        []testDescriptor `json:"layers"`
}

type testConfig struct {
	Created      string `json:"created"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string
		ExposedPorts map[string]struct{}
		Env          []string
		Entrypoint   []string
		Cmd          []string
		WorkingDir   string
		Labels       map[string]string
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

func sampleImage() Image {
	return Image{
		Ref: "skiff.local/pause:3.10",
		Files: []File{
			{Path: "/usr/bin/app", Mode: 0o755, Data: []byte("#!binary")},
			{Path: "/pause", Mode: 0o755, Data: []byte("ELF...")},
			{Path: "/etc/motd", Data: []byte("hello\n")},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			{Path: "/bin", Mode: fs.ModeSymlink, Data: []byte("usr/bin")},
		},
		Entrypoint:   []string{"/pause"},
		Cmd:          []string{"-x"},
		Env:          []string{"A=b"},
		WorkingDir:   "/",
		User:         "65535:65535",
		ExposedPorts: []string{"8080", "53/udp"},
		Labels:       map[string]string{"b": "2", "a": "1"},
	}
}

func writeImage(t *testing.T, img Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, img); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

// readTar returns the regular files of a tar by name, and fails on any
// entry that is neither a file nor a directory or that repeats a name.
func readTar(t *testing.T, data []byte) (map[string][]byte, []*tar.Header) {
	t.Helper()
	files := map[string][]byte{}
	var hdrs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		hdrs = append(hdrs, hdr)
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if _, dup := files[hdr.Name]; dup {
			t.Fatalf("tar entry %s appears twice", hdr.Name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		files[hdr.Name] = b
	}
	return files, hdrs
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func unmarshal(t *testing.T, name string, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parsing %s: %v\n%s", name, err, b)
	}
}

func TestArchiveIsAConsistentOCILayoutAndDockerArchive(t *testing.T) {
	img := sampleImage()
	files, hdrs := readTar(t, writeImage(t, img))

	for _, h := range hdrs {
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("outer entry %s: mtime %v uid %d gid %d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}

	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}

	// Every blob is named by its own sha256 and nothing else sits there.
	blobs := map[string][]byte{}
	for name, b := range files {
		hexd, ok := strings.CutPrefix(name, "blobs/sha256/")
		if !ok {
			continue
		}
		if got := sha(b); got != "sha256:"+hexd {
			t.Errorf("blob %s has digest %s", name, got)
		}
		blobs["sha256:"+hexd] = b
	}
	if len(blobs) != 3 {
		t.Errorf("want 3 blobs (config, layer, manifest), got %d", len(blobs))
	}
	for name := range files {
		if !strings.HasPrefix(name, "blobs/") && name != "oci-layout" && name != "index.json" && name != "manifest.json" {
			t.Errorf("unexpected file %s", name)
		}
	}

	var idx testIndex
	unmarshal(t, "index.json", files["index.json"], &idx)
	if idx.SchemaVersion != 2 || idx.MediaType != "application/vnd.oci.image.index.v1+json" || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %+v", idx)
	}
	md := idx.Manifests[0]
	if md.Annotations["io.containerd.image.name"] != img.Ref || md.Annotations["org.opencontainers.image.ref.name"] != img.Ref {
		t.Errorf("index annotations = %v, want both names %s", md.Annotations, img.Ref)
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != runtime.GOARCH {
		t.Errorf("index platform = %+v", md.Platform)
	}
	if md.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("index manifest mediaType = %s", md.MediaType)
	}
	mfBytes, ok := blobs[md.Digest]
	if !ok || int64(len(mfBytes)) != md.Size {
		t.Fatalf("index points at %s size %d; blob present %v", md.Digest, md.Size, ok)
	}

	var mf testManifest
	unmarshal(t, "manifest", mfBytes, &mf)
	if mf.SchemaVersion != 2 || mf.MediaType != md.MediaType {
		t.Errorf("manifest header: %+v", mf)
	}
	if mf.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("config mediaType = %s", mf.Config.MediaType)
	}
	cfgBytes, ok := blobs[mf.Config.Digest]
	if !ok || int64(len(cfgBytes)) != mf.Config.Size {
		t.Fatalf("manifest config %s size %d; blob present %v", mf.Config.Digest, mf.Config.Size, ok)
	}
	if len(mf.Layers) != 1 || mf.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar" {
		t.Fatalf("manifest layers = %+v", mf.Layers)
	}
	layer, ok := blobs[mf.Layers[0].Digest]
	if !ok || int64(len(layer)) != mf.Layers[0].Size {
		t.Fatalf("manifest layer %s size %d; blob present %v", mf.Layers[0].Digest, mf.Layers[0].Size, ok)
	}

	var cfg testConfig
	unmarshal(t, "config", cfgBytes, &cfg)
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != sha(layer) {
		t.Errorf("rootfs = %+v, want diff_id %s", cfg.RootFS, sha(layer))
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || cfg.Created != "1970-01-01T00:00:00Z" {
		t.Errorf("config os/arch/created = %s/%s/%s", cfg.OS, cfg.Architecture, cfg.Created)
	}
	c := cfg.Config
	if strings.Join(c.Entrypoint, " ") != "/pause" || strings.Join(c.Cmd, " ") != "-x" {
		t.Errorf("entrypoint/cmd = %v %v", c.Entrypoint, c.Cmd)
	}
	if strings.Join(c.Env, ",") != DefaultPath+",A=b" {
		t.Errorf("env = %v", c.Env)
	}
	if c.User != "65535:65535" || c.WorkingDir != "/" || c.Labels["a"] != "1" || c.Labels["b"] != "2" {
		t.Errorf("user/workdir/labels = %q %q %v", c.User, c.WorkingDir, c.Labels)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok || len(c.ExposedPorts) != 2 {
		t.Errorf("exposed ports = %v", c.ExposedPorts)
	}

	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	unmarshal(t, "manifest.json", files["manifest.json"], &dm)
	if len(dm) != 1 {
		t.Fatalf("manifest.json has %d entries", len(dm))
	}
	if !bytes.Equal(files[dm[0].Config], cfgBytes) {
		t.Errorf("manifest.json Config %s is not the OCI config", dm[0].Config)
	}
	if len(dm[0].RepoTags) != 1 || dm[0].RepoTags[0] != img.Ref {
		t.Errorf("manifest.json RepoTags = %v", dm[0].RepoTags)
	}
	if len(dm[0].Layers) != 1 || !bytes.Equal(files[dm[0].Layers[0]], layer) {
		t.Errorf("manifest.json Layers = %v", dm[0].Layers)
	}

	d, err := Digest(img)
	if err != nil {
		t.Fatal(err)
	}
	if d.Manifest != md.Digest || d.Config != mf.Config.Digest || d.Layer != sha(layer) {
		t.Errorf("Digest = %+v, archive has manifest %s config %s layer %s", d, md.Digest, mf.Config.Digest, sha(layer))
	}
}

func TestLayerHasParentsFixedTimesAndRootOwnership(t *testing.T) {
	d, err := Digest(sampleImage())
	if err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, writeImage(t, sampleImage()))
	_, hdrs := readTar(t, files[blobPath(d.Layer)])

	type entry struct {
		typ  byte
		mode int64
		link string
	}
	want := map[string]entry{
		"bin":         {tar.TypeSymlink, 0o777, "usr/bin"},
		"etc/":        {tar.TypeDir, 0o755, ""},
		"etc/motd":    {tar.TypeReg, 0o644, ""},
		"pause":       {tar.TypeReg, 0o755, ""},
		"tmp/":        {tar.TypeDir, 0o1777, ""},
		"usr/":        {tar.TypeDir, 0o755, ""},
		"usr/bin/":    {tar.TypeDir, 0o755, ""},
		"usr/bin/app": {tar.TypeReg, 0o755, ""},
	}
	seen := map[string]bool{}
	for _, h := range hdrs {
		w, ok := want[h.Name]
		if !ok {
			t.Errorf("unexpected layer entry %q", h.Name)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link {
			t.Errorf("%s: type %c mode %o link %q, want %c %o %q", h.Name, h.Typeflag, h.Mode, h.Linkname, w.typ, w.mode, w.link)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		// A parent must come before its children for unpackers that
		// do not create missing directories.
		if i := strings.LastIndex(strings.TrimSuffix(h.Name, "/"), "/"); i >= 0 && !seen[h.Name[:i+1]] {
			t.Errorf("%s comes before its parent %s", h.Name, h.Name[:i+1])
		}
		seen[h.Name] = true
	}
	if len(seen) != len(want) {
		t.Errorf("layer has %d entries, want %d", len(seen), len(want))
	}
}

func TestOutputIsReproducible(t *testing.T) {
	a := writeImage(t, sampleImage())
	b := writeImage(t, sampleImage())
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same image differ")
	}
	// The order files are given in must not matter either.
	img := sampleImage()
	for i, j := 0, len(img.Files)-1; i < j; i, j = i+1, j-1 {
		img.Files[i], img.Files[j] = img.Files[j], img.Files[i]
	}
	if !bytes.Equal(a, writeImage(t, img)) {
		t.Fatal("reordering Files changed the output")
	}
	// And a change of content must change the image.
	img.Files[0].Data = []byte("other")
	if bytes.Equal(a, writeImage(t, img)) {
		t.Fatal("changing a file did not change the output")
	}
}

func TestPathInEnvIsKept(t *testing.T) {
	img := sampleImage()
	img.Env = []string{"PATH=/bin"}
	files, _ := readTar(t, writeImage(t, img))
	d, _ := Digest(img)
	var cfg testConfig
	unmarshal(t, "config", files[blobPath(d.Config)], &cfg)
	if strings.Join(cfg.Config.Env, ",") != "PATH=/bin" {
		t.Errorf("env = %v", cfg.Config.Env)
	}
}

func TestInvalidImagesAreRejected(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Image)
		want string
	}{
		{"empty ref", func(i *Image) { i.Ref = "" }, "Ref is empty"},
		{"short ref", func(i *Image) { i.Ref = "pause:3.10" }, `Ref "pause:3.10"`},
		{"untagged ref", func(i *Image) { i.Ref = "skiff.local/pause" }, `Ref "skiff.local/pause"`},
		{"uppercase repo", func(i *Image) { i.Ref = "skiff.local/Pause:1" }, `Ref "skiff.local/Pause:1"`},
		{"relative path", func(i *Image) { i.Files[0].Path = "usr/bin/app" }, `Files[0] "usr/bin/app": path must be absolute`},
		{"empty path", func(i *Image) { i.Files[0].Path = "" }, `Files[0] "": path is empty`},
		{"root path", func(i *Image) { i.Files[0].Path = "/" }, `must not be the root`},
		{"unclean path", func(i *Image) { i.Files[0].Path = "/usr/../x" }, `path is not clean`},
		{"duplicate path", func(i *Image) { i.Files[1].Path = "/usr/bin/app" }, `Files[1] "/usr/bin/app": duplicate path`},
		{"whiteout", func(i *Image) { i.Files[0].Path = "/.wh.x" }, `whiteouts`},
		{"file as parent", func(i *Image) {
			i.Files = append(i.Files, File{Path: "/pause/x"})
		}, `file "/pause/x": parent "/pause" is not a directory`},
		{"symlink as parent", func(i *Image) {
			i.Files = append(i.Files, File{Path: "/bin/sh"})
		}, `parent "/bin" is not a directory`},
		{"directory with data", func(i *Image) { i.Files[3].Data = []byte("x") }, `directory has Data`},
		{"symlink without target", func(i *Image) { i.Files[4].Data = nil }, `symlink has no target`},
		{"device", func(i *Image) { i.Files[0].Mode = fs.ModeDevice }, `unsupported file type`},
		{"bad env", func(i *Image) { i.Env = []string{"A=b", "novalue"} }, `Env[1] "novalue"`},
		{"bad port", func(i *Image) { i.ExposedPorts = []string{"0"} }, `ExposedPorts[0]: port "0"`},
		{"bad proto", func(i *Image) { i.ExposedPorts = []string{"80/http"} }, `protocol must be`},
		{"relative workdir", func(i *Image) { i.WorkingDir = "app" }, `WorkingDir "app"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := sampleImage()
			tt.edit(&img)
			var buf bytes.Buffer
			err := Write(&buf, img)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write error = %v, want it to contain %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Write wrote %d bytes before failing", buf.Len())
			}
			if _, err := Digest(img); err == nil {
				t.Error("Digest accepted the invalid image")
			}
		})
	}
}

func TestAllProblemsAreReportedTogether(t *testing.T) {
	img := sampleImage()
	img.Ref = ""
	img.Files[0].Path = "rel"
	err := Write(io.Discard, img)
	if err == nil || !strings.Contains(err.Error(), "Ref is empty") || !strings.Contains(err.Error(), `"rel": path must be absolute`) {
		t.Fatalf("error = %v", err)
	}
}

func TestValidRefs(t *testing.T) {
	for _, ref := range []string{
		"skiff.local/pause:3.10",
		"localhost/x:y",
		"localhost:5000/a/b-c/d__e:v1.2.3-rc.1",
		"registry.k8s.io/coredns/coredns:v1.11.1",
		"myhost:5000/x:latest",
	} {
		if _, err := Digest(Image{Ref: ref}); err != nil {
			t.Errorf("%s: %v", ref, err)
		}
	}
}
