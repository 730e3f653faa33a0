package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/fsnotify/fsnotify"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/component"
)

// Namespace is the containerd namespace of the CRI service.
const Namespace = "k8s.io"

// pinnedLabel keeps an image from the kubelet's image garbage collection.
var pinnedLabel = map[string]string{"io.cri-containerd.pinned": "pinned"}

// ImagesConfig is what to import.
type ImagesConfig struct {
	Socket string
	// Archives are imported first (the built-in pause image).
	Archives []string
	// Aliases name imported images again: source name to alias (the
	// built-in images under --system-default-registry). Each alias is
	// (re)made at every start, pinned like its source.
	Aliases map[string]string
	// Dir is the air-gap images directory: every *.tar, *.tar.gz, *.tgz and
	// *.tar.zst in it is imported at start, and while the node runs once it
	// is new or changed and has stopped changing.
	Dir string
	// StateFile records what was imported, so that unchanged files are skipped.
	StateFile string
}

// Images imports image archives into containerd at start, then watches the
// images directory and imports archives dropped into it while the node runs.
type Images struct {
	cfg  ImagesConfig
	log  *slog.Logger
	done atomic.Bool
	component.Runner
}

// NewImages returns the component.
func NewImages(cfg ImagesConfig, log *slog.Logger) *Images {
	return &Images{cfg: cfg, log: log.With("component", "images")}
}

func (i *Images) Name() string               { return "images" }
func (i *Images) Init(context.Context) error { return nil }
func (i *Images) Stop() error                { return i.Runner.Stop(5 * time.Second) }
func (i *Images) Ready() error {
	if !i.done.Load() {
		return errors.New("importing")
	}
	return nil
}

// record is what the state file remembers of one imported archive.
type record struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
	Images  []string  `json:"images"`
}

// ArchiveNames lists the importable archives in dir, sorted.
func ArchiveNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && isArchiveName(e.Name()) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

func isArchiveName(n string) bool {
	return strings.HasSuffix(n, ".tar") || strings.HasSuffix(n, ".tar.gz") ||
		strings.HasSuffix(n, ".tgz") || strings.HasSuffix(n, ".tar.zst")
}

// Start imports every archive that is new or changed, or whose images are gone from
// containerd. A file that fails to import is reported and skipped; the others
// still import. Then it watches the images directory (creating it) for the
// life of the node.
func (i *Images) Start(ctx context.Context) error {
	files, err := ArchiveNames(i.cfg.Dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", i.cfg.Dir, err)
	}
	files = append(append([]string(nil), i.cfg.Archives...), files...)
	state := map[string]record{}
	if data, err := os.ReadFile(i.cfg.StateFile); err == nil {
		if err := json.Unmarshal(data, &state); err != nil {
			i.log.Warn("ignoring unreadable import state", "file", i.cfg.StateFile, "err", err)
			state = map[string]record{}
		}
	}
	client, err := containerd.New(i.cfg.Socket, containerd.WithDefaultNamespace(Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("connecting to containerd: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			client.Close()
		}
	}()
	ctx = namespaces.WithNamespace(ctx, Namespace)

	builtin := map[string]bool{}
	for _, a := range i.cfg.Archives {
		builtin[a] = true
	}
	next := map[string]record{}
	// failed are not tried again by the watcher until they change.
	failed := map[string]record{}
	imported, skipped := 0, 0
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("importing images: %w", err)
		}
		st, err := os.Stat(path)
		if err != nil {
			if builtin[path] {
				return fmt.Errorf("built-in image archive %s: %w", path, err)
			}
			i.log.Warn("cannot read image archive", "file", path, "err", err)
			continue
		}
		if prev, ok := state[path]; ok && prev.Size == st.Size() && prev.ModTime.Equal(st.ModTime()) && present(ctx, client, prev.Images) {
			next[path] = prev
			skipped++
			continue
		}
		begin := time.Now()
		names, err := importArchive(ctx, client, path)
		if err != nil {
			// Without the built-in pause image no pod can start; a user's
			// archive that fails only loses its own images.
			if builtin[path] {
				return fmt.Errorf("importing built-in image archive %s: %w", path, err)
			}
			i.log.Warn("image archive not imported", "file", path, "err", err)
			failed[path] = record{Size: st.Size(), ModTime: st.ModTime()}
			continue
		}
		i.log.Info("imported", "file", filepath.Base(path), "images", strings.Join(names, ","), "took", time.Since(begin).Round(time.Millisecond))
		next[path] = record{Size: st.Size(), ModTime: st.ModTime(), Images: names}
		imported++
	}
	if err := i.saveState(next); err != nil {
		return err
	}
	for src, alias := range i.cfg.Aliases {
		if err := tagImage(ctx, client, src, alias); err != nil {
			return fmt.Errorf("naming %s as %s: %w", src, alias, err)
		}
	}
	i.log.Debug("image archives", "imported", imported, "unchanged", skipped)

	if i.cfg.Dir == "" {
		i.done.Store(true)
		return nil
	}
	if err := os.MkdirAll(i.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("creating the images directory: %w", err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", i.cfg.Dir, err)
	}
	if err := fsw.Add(i.cfg.Dir); err != nil {
		fsw.Close()
		return fmt.Errorf("watching %s: %w", i.cfg.Dir, err)
	}
	w := newArchiveWatcher(i.cfg.Dir, next, failed, func(ctx context.Context, path string) ([]string, error) {
		return importArchive(namespaces.WithNamespace(ctx, Namespace), client, path)
	}, i.saveState, i.log)
	keep = true
	i.Go(func(ctx context.Context) error {
		defer client.Close()
		defer fsw.Close()
		return w.run(ctx, fsw.Events, fsw.Errors)
	})
	i.done.Store(true)
	return nil
}

func (i *Images) saveState(state map[string]record) error {
	data, _ := json.MarshalIndent(state, "", "  ")
	if err := atomicfile.Write(i.cfg.StateFile, data, 0o600, 0o700); err != nil {
		return fmt.Errorf("writing %s: %w", i.cfg.StateFile, err)
	}
	return nil
}

func present(ctx context.Context, client *containerd.Client, names []string) bool {
	for _, n := range names {
		if _, err := client.ImageService().Get(ctx, n); err != nil {
			return false
		}
	}
	return len(names) > 0
}

// tagImage makes alias name the image src names, pinned.
func tagImage(ctx context.Context, client *containerd.Client, src, alias string) error {
	is := client.ImageService()
	img, err := is.Get(ctx, src)
	if err != nil {
		return err
	}
	img.Name = alias
	img.Labels = pinnedLabel
	if _, err := is.Create(ctx, img); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return err
		}
		if _, err := is.Update(ctx, img, "target", "labels"); err != nil {
			return err
		}
	}
	return nil
}

// importArchive imports one docker-archive or OCI-layout tar (plain, gzip or zstd),
// pins its images and unpacks them into the overlayfs snapshotter, which the CRI
// service needs before it can start a container from them.
func importArchive(ctx context.Context, client *containerd.Client, path string) ([]string, error) {
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return nil, err
	}
	defer done(context.WithoutCancel(ctx))
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := compression.DecompressStream(f)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	imgs, err := client.Import(ctx, r,
		containerd.WithImageRefTranslator(normalizeRef),
		containerd.WithImageLabels(pinnedLabel),
	)
	if err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return nil, errors.New("archive names no image")
	}
	var names []string
	for _, m := range imgs {
		img := containerd.NewImageWithPlatform(client, m, platforms.DefaultStrict())
		if ok, _ := img.IsUnpacked(ctx, "overlayfs"); !ok {
			if err := img.Unpack(ctx, "overlayfs"); err != nil {
				return nil, fmt.Errorf("unpacking %s: %w", m.Name, err)
			}
		}
		names = append(names, m.Name)
	}
	return names, nil
}

// normalizeRef turns an OCI layout's ref name into the full name the CRI service
// looks images up by ("nginx:1" is docker.io/library/nginx:1). A bare tag names
// nothing useful and is dropped.
func normalizeRef(ref string) string {
	if !strings.ContainsAny(ref, "/:@") {
		return ""
	}
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ""
	}
	return n.String()
}
