// Package imagearchive writes a container image as a tar that containerd
// imports. A node with no registry cannot pull images, so skiff builds the
// images it needs, such as the pod sandbox, from programs it embeds and
// imports them itself.
//
// The tar is an OCI image layout that also carries a docker-archive
// manifest.json, the shape `docker save` has written since Docker 25.
// containerd (`ctr -n k8s.io images import`, client.Import) reads the OCI
// index and `docker load` reads manifest.json, so one file works with both.
//
// The output depends only on the Image. Timestamps are fixed and entries are
// sorted, so the same inputs always give the same bytes and digests. An image
// that is already imported can then be recognised by its digest and skipped.
package imagearchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// File is one entry of the image's filesystem.
type File struct {
	// Path is absolute and clean, e.g. "/pause". Missing parent directories
	// are added with mode 0755.
	Path string
	// Mode gives the type and permissions. A regular file, a directory
	// (fs.ModeDir) or a symlink (fs.ModeSymlink) is allowed. With no
	// permission bits, files get 0644 and directories 0755.
	Mode fs.FileMode
	// Data is a regular file's content or a symlink's target. It must be
	// empty for a directory.
	Data []byte
}

// Image describes a single-platform image with one layer.
type Image struct {
	// Ref is the fully qualified name the image is imported under, e.g.
	// "skiff.local/pause:3.10".
	Ref   string
	Files []File

	Entrypoint []string
	Cmd        []string
	// Env entries are KEY=value. If none sets PATH, DefaultPath is added
	// first: runc looks up a relative command in the image's PATH.
	Env        []string
	WorkingDir string
	User       string
	// ExposedPorts are "port" or "port/proto" (tcp, udp, sctp). A bare
	// port means tcp.
	ExposedPorts []string
	Labels       map[string]string

	// OS defaults to "linux" and Architecture to runtime.GOARCH. Variant
	// (e.g. "v7" for arm) is optional.
	OS, Architecture, Variant string
}

// DefaultPath is the PATH added when Image.Env sets none. It is the same
// value Docker and containerd use.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Digests identify the image that Write produces for the same Image.
type Digests struct {
	// Manifest is the digest containerd reports for the image, e.g. in
	// `ctr images ls`.
	Manifest string
	// Config is the image ID. The IMAGE ID column of `crictl images` shows
	// its first hex digits.
	Config string
	// Layer is both the digest and the diff ID of the one layer. They are
	// equal because the layer is not compressed.
	Layer string
}

// Media types and annotations from the OCI image spec and containerd.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName names the image on import, and containerd reads
	// it before ref.name.
	annotationImageName = "io.containerd.image.name"

	layoutVersion = "1.0.0"
)

// epoch is the time stamped on every tar entry and in the config. Using a
// fixed time is what makes the output reproducible.
var epoch = time.Unix(0, 0).UTC()

// Write writes img to w as an OCI layout tar that also carries a
// docker-archive manifest.json. The layer is built in memory first because
// its digest has to be known before the manifest can be written.
func Write(w io.Writer, img Image) error {
	a, err := build(img)
	if err != nil {
		return err
	}
	if err := a.writeTo(w); err != nil {
		return fmt.Errorf("writing image archive for %s: %w", img.Ref, err)
	}
	return nil
}

// Digest returns the digests of the image Write would produce for img,
// without writing anything.
func Digest(img Image) (Digests, error) {
	a, err := build(img)
	if err != nil {
		return Digests{}, err
	}
	return a.digests, nil
}

// archive holds the encoded blobs of one image.
type archive struct {
	layer, config, manifest, index, dockerManifest []byte
	digests                                        Digests
}

func build(img Image) (*archive, error) {
	// Validate before defaults so that Env indexes in errors match the caller's.
	if err := validate(img); err != nil {
		return nil, err
	}
	img = withDefaults(img)
	layer, err := buildLayer(img.Files)
	if err != nil {
		return nil, fmt.Errorf("building layer for image %s: %w", img.Ref, err)
	}
	a := &archive{layer: layer}
	a.digests.Layer = digestOf(layer)

	a.config, err = json.Marshal(configOf(img, a.digests.Layer))
	if err != nil {
		return nil, fmt.Errorf("encoding config of image %s: %w", img.Ref, err)
	}
	a.digests.Config = digestOf(a.config)

	a.manifest, err = json.Marshal(ociManifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        descriptor{MediaType: mediaTypeConfig, Digest: a.digests.Config, Size: int64(len(a.config))},
		Layers:        []descriptor{{MediaType: mediaTypeLayer, Digest: a.digests.Layer, Size: int64(len(layer))}},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding manifest of image %s: %w", img.Ref, err)
	}
	a.digests.Manifest = digestOf(a.manifest)

	a.index, err = json.Marshal(ociIndex{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: mediaTypeManifest,
			Digest:    a.digests.Manifest,
			Size:      int64(len(a.manifest)),
			// The full ref goes in ref.name too, not just the tag as
			// containerd's own exporter does. The OCI grammar allows it,
			// and tools that ignore the containerd annotation (podman,
			// skopeo) then keep the name.
			Annotations: map[string]string{
				annotationImageName: img.Ref,
				annotationRefName:   img.Ref,
			},
			Platform: &platform{Architecture: img.Architecture, OS: img.OS, Variant: img.Variant},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding index of image %s: %w", img.Ref, err)
	}

	a.dockerManifest, err = json.Marshal([]dockerManifest{{
		Config:   blobPath(a.digests.Config),
		RepoTags: []string{img.Ref},
		Layers:   []string{blobPath(a.digests.Layer)},
	}})
	if err != nil {
		return nil, fmt.Errorf("encoding docker manifest of image %s: %w", img.Ref, err)
	}
	return a, nil
}

func (a *archive) writeTo(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch,
		}); err != nil {
			return fmt.Errorf("writing %s: %w", dir, err)
		}
	}
	files := []struct {
		name string
		data []byte
	}{
		{blobPath(a.digests.Config), a.config},
		{blobPath(a.digests.Layer), a.layer},
		{blobPath(a.digests.Manifest), a.manifest},
		{"index.json", a.index},
		{"manifest.json", a.dockerManifest},
		{"oci-layout", []byte(`{"imageLayoutVersion":"` + layoutVersion + `"}`)},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch,
		}); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finishing tar: %w", err)
	}
	return nil
}

func withDefaults(img Image) Image {
	if img.OS == "" {
		img.OS = "linux"
	}
	if img.Architecture == "" {
		img.Architecture = runtime.GOARCH
	}
	hasPath := false
	for _, e := range img.Env {
		if strings.HasPrefix(e, "PATH=") {
			hasPath = true
		}
	}
	if !hasPath {
		img.Env = append([]string{DefaultPath}, img.Env...)
	}
	return img
}

// refPattern accepts domain/path:tag. The domain and tag are required, not
// just allowed: the CRI expands a short name such as "pause:3.10" to
// "docker.io/library/pause:3.10" before looking it up, so an image imported
// under a short name would never be found by the kubelet.
var refPattern = func() *regexp.Regexp {
	label := `[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?`
	domain := `(?:localhost(?::[0-9]+)?|` + label + `(?:\.` + label + `)+(?::[0-9]+)?|` + label + `:[0-9]+)`
	component := `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	tag := `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
	return regexp.MustCompile(`^` + domain + `(?:/` + component + `)+:` + tag + `$`)
}()

// validate reports every problem with img at once, each naming its field.
func validate(img Image) error {
	var errs []error
	if img.Ref == "" {
		errs = append(errs, errors.New("image Ref is empty"))
	} else if !refPattern.MatchString(img.Ref) {
		errs = append(errs, fmt.Errorf("image Ref %q: want a fully qualified domain/name:tag such as skiff.local/pause:3.10", img.Ref))
	}
	prefix := "image " + img.Ref
	if img.Ref == "" {
		prefix = "image"
	}

	byPath := make(map[string]File, len(img.Files))
	for i, f := range img.Files {
		where := fmt.Sprintf("%s: Files[%d] %q", prefix, i, f.Path)
		switch {
		case f.Path == "":
			errs = append(errs, fmt.Errorf("%s: path is empty", where))
			continue
		case !path.IsAbs(f.Path):
			errs = append(errs, fmt.Errorf("%s: path must be absolute", where))
			continue
		case f.Path == "/":
			errs = append(errs, fmt.Errorf("%s: path must not be the root", where))
			continue
		case path.Clean(f.Path) != f.Path:
			errs = append(errs, fmt.Errorf("%s: path is not clean (want %q)", where, path.Clean(f.Path)))
			continue
		case strings.HasPrefix(path.Base(f.Path), ".wh."):
			// Unpackers read .wh. names as deletions of lower layers.
			errs = append(errs, fmt.Errorf("%s: .wh. names are whiteouts", where))
			continue
		}
		if _, dup := byPath[f.Path]; dup {
			errs = append(errs, fmt.Errorf("%s: duplicate path", where))
			continue
		}
		byPath[f.Path] = f
		switch f.Mode.Type() {
		case 0:
		case fs.ModeDir:
			if len(f.Data) != 0 {
				errs = append(errs, fmt.Errorf("%s: directory has Data", where))
			}
		case fs.ModeSymlink:
			if len(f.Data) == 0 {
				errs = append(errs, fmt.Errorf("%s: symlink has no target in Data", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: unsupported file type %v", where, f.Mode.Type()))
		}
	}
	// A parent must be a directory, whether given or implied, or the
	// unpacker would have to write through a file or a symlink.
	for p, f := range byPath {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if parent, ok := byPath[dir]; ok && !parent.Mode.IsDir() {
				errs = append(errs, fmt.Errorf("%s: file %q: parent %q is not a directory", prefix, f.Path, dir))
				break
			}
		}
	}

	for i, e := range img.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("%s: Env[%d] %q: want KEY=value", prefix, i, e))
		}
	}
	for i, p := range img.ExposedPorts {
		if _, err := normalizePort(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: ExposedPorts[%d]: %w", prefix, i, err))
		}
	}
	if img.WorkingDir != "" && !path.IsAbs(img.WorkingDir) {
		errs = append(errs, fmt.Errorf("%s: WorkingDir %q must be absolute", prefix, img.WorkingDir))
	}
	// Sort so the joined message does not depend on map order.
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// normalizePort turns "80" into "80/tcp", the form image configs use.
func normalizePort(p string) (string, error) {
	num, proto, hasProto := strings.Cut(p, "/")
	if !hasProto {
		proto = "tcp"
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q: want a number from 1 to 65535", p)
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return "", fmt.Errorf("port %q: protocol must be tcp, udp or sctp", p)
	}
	return strconv.Itoa(n) + "/" + proto, nil
}

// buildLayer writes the files as an uncompressed tar. Compression would
// save little on an image imported from local disk, and leaving it out
// means the layer's digest is also its diff ID.
func buildLayer(files []File) ([]byte, error) {
	entries := make(map[string]File, len(files))
	for _, f := range files {
		entries[strings.TrimPrefix(f.Path, "/")] = f
		for dir := path.Dir(f.Path); dir != "/"; dir = path.Dir(dir) {
			name := strings.TrimPrefix(dir, "/")
			if _, ok := entries[name]; !ok {
				entries[name] = File{Path: dir, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	// Sorting puts every directory before what it contains, since a
	// parent's name is a prefix of its children's.
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		f := entries[name]
		hdr := &tar.Header{Name: name, Mode: tarMode(f.Mode), ModTime: epoch, Uid: 0, Gid: 0}
		switch f.Mode.Type() {
		case fs.ModeDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		case fs.ModeSymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, string(f.Data)
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.Path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("writing %s: %w", f.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("finishing tar: %w", err)
	}
	return buf.Bytes(), nil
}

// tarMode converts fs mode bits to the Unix bits tar stores. The special
// bits sit in different places in the two encodings.
func tarMode(m fs.FileMode) int64 {
	perm := int64(m.Perm())
	if perm == 0 && m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == 0 {
		switch m.Type() {
		case fs.ModeDir:
			perm = 0o755
		case fs.ModeSymlink:
			perm = 0o777
		default:
			perm = 0o644
		}
	}
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	return perm
}

func configOf(img Image, diffID string) imageConfig {
	created := epoch.Format(time.RFC3339)
	var ports map[string]struct{}
	for _, p := range img.ExposedPorts {
		if ports == nil {
			ports = make(map[string]struct{})
		}
		n, _ := normalizePort(p) // already validated
		ports[n] = struct{}{}
	}
	return imageConfig{
		Created:      created,
		Architecture: img.Architecture,
		OS:           img.OS,
		Variant:      img.Variant,
		Config: runtimeConfig{
			User:         img.User,
			ExposedPorts: ports,
			Env:          img.Env,
			Entrypoint:   img.Entrypoint,
			Cmd:          img.Cmd,
			WorkingDir:   img.WorkingDir,
			Labels:       img.Labels,
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []history{{Created: created, CreatedBy: "skiff imagearchive"}},
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blobPath is where the OCI layout keeps a blob, e.g. "blobs/sha256/ab12...".
func blobPath(digest string) string {
	return "blobs/" + strings.Replace(digest, ":", "/", 1)
}

// The types below are the parts of the OCI image spec and docker-archive
// format that this package writes. They are declared here rather than
// imported so the package needs only the standard library.

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type imageConfig struct {
	Created      string        `json:"created"`
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Variant      string        `json:"variant,omitempty"`
	Config       runtimeConfig `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
	History      []history     `json:"history,omitempty"`
}

type runtimeConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

// dockerManifest is one entry of docker-archive's manifest.json. The field
// names are capitalised in that format.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}
