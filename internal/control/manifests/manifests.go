// Package manifests applies every manifest file in the server's manifests
// directory (K3s's auto-deploy): at start, when a file changes (watched,
// debounced) and at every resync, with server-side apply as field manager
// "skiff". An Addon object (skiff.io/v1, kube-system) per file records its
// checksum and the objects it applied, so that removing a file, or an object
// from a file, deletes what it had created. `<file>.skip` stops skiff from
// managing <file>: its objects are left as they are.
package manifests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/component"
)

// FieldManager owns the fields skiff applies.
const FieldManager = "skiff"

// ServerLabel on an Addon names the server whose file it records.
const ServerLabel = "skiff.io/server"

// AddonNamespace holds the Addon objects.
const AddonNamespace = "kube-system"

// DefaultNamespace is where a namespaced object without one goes, as with
// kubectl apply.
const DefaultNamespace = "default"

var addonGVR = schema.GroupVersionResource{Group: "skiff.io", Version: "v1", Resource: "addons"}

// Config is what the controller needs.
type Config struct {
	// Dir is <data-dir>/server/manifests.
	Dir        string
	Kubeconfig string
	// Resync re-applies every file this often, which puts back objects
	// changed by hand. Default 30s.
	Resync time.Duration
	// Files are skiff's own add-on manifests by file name: written into Dir
	// at every start unless "<name>.skip" exists there.
	Files map[string][]byte
	// Removed are files of disabled add-ons: deleted from Dir at start, so
	// that their objects are pruned.
	Removed []string
	// Server names this server in the Addons it writes (label
	// skiff.io/server): it prunes only its own.
	Server string
}

// Controller is the manifests component.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	synced atomic.Bool
	component.Runner
}

// New returns the manifests controller.
func New(cfg Config, log *slog.Logger) *Controller {
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if errs := validation.IsValidLabelValue(cfg.Server); len(errs) > 0 {
		cfg.Server = "h-" + checksum([]byte(cfg.Server))[:16]
	}
	return &Controller{cfg: cfg, log: log.With("component", "manifests")}
}

func (c *Controller) Name() string { return "manifests" }

func (c *Controller) Init(context.Context) error {
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("manifests dir: %w", err)
	}
	for name, data := range c.cfg.Files {
		path := filepath.Join(c.cfg.Dir, name)
		if skipped(path) {
			c.log.Info("add-on manifest skipped", "file", path+SkipSuffix)
			continue
		}
		if cur, err := os.ReadFile(path); err == nil && string(cur) == string(data) {
			continue
		}
		if err := atomicfile.Write(path, data, 0o600, 0o700); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	for _, name := range c.cfg.Removed {
		path := filepath.Join(c.cfg.Dir, name)
		if skipped(path) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", path, err)
		}
	}
	return nil
}

func skipped(path string) bool {
	_, err := os.Stat(path + SkipSuffix)
	return err == nil
}

func (c *Controller) Start(context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if c.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return err
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", c.cfg.Dir, err)
	}
	if err := watcher.Add(c.cfg.Dir); err != nil {
		watcher.Close()
		return fmt.Errorf("watching %s: %w", c.cfg.Dir, err)
	}
	c.Go(func(ctx context.Context) error {
		defer watcher.Close()
		return c.run(ctx, watcher)
	})
	return nil
}

// Ready once every file has been applied once.
func (c *Controller) Ready() error {
	if !c.synced.Load() {
		return errors.New("manifests not applied yet")
	}
	return nil
}

func (c *Controller) Stop() error { return c.Runner.Stop(5 * time.Second) }

func (c *Controller) run(ctx context.Context, watcher *fsnotify.Watcher) error {
	if err := c.ensureCRD(ctx); err != nil {
		return err
	}
	c.syncAll(ctx)
	c.synced.Store(true)
	resync := time.NewTicker(c.cfg.Resync)
	defer resync.Stop()
	// Editors write a file in several steps: one sync after the last event.
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-watcher.Events:
			if !ok {
				return errors.New("manifests watcher closed")
			}
			c.log.Debug("manifests dir changed", "file", ev.Name, "op", ev.Op.String())
			debounce = time.After(500 * time.Millisecond)
		case err, ok := <-watcher.Errors:
			if ok {
				c.log.Warn("watching the manifests dir", "err", err)
			}
		case <-debounce:
			debounce = nil
			c.syncAll(ctx)
		case <-resync.C:
			c.syncAll(ctx)
		}
	}
}

// manifest is one managed file of the directory, read and parsed.
type manifest struct {
	path  string
	addon string
	data  []byte
	objs  []*unstructured.Unstructured
	err   error // it does not parse: nothing of it is applied or pruned
}

// syncAll applies every managed file, then prunes the Addons of this
// server whose file is gone. An object that any file still holds is never
// pruned, so one moved from a file to another survives the move.
func (c *Controller) syncAll(ctx context.Context) {
	entries, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		c.log.Warn("reading the manifests dir", "dir", c.cfg.Dir, "err", err)
		return
	}
	present := map[string]bool{}   // Addon names with a file or a .skip
	paths := map[string][]string{} // Addon name -> the files that have it
	var names []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		if base, ok := strings.CutSuffix(name, SkipSuffix); ok && isManifest(base) {
			present[AddonName(base)] = true
			continue
		}
		if !isManifest(name) {
			continue
		}
		addon := AddonName(name)
		present[addon] = true
		if paths[addon] == nil {
			names = append(names, addon)
		}
		paths[addon] = append(paths[addon], filepath.Join(c.cfg.Dir, name))
	}
	var files []*manifest
	for _, addon := range names {
		if len(paths[addon]) > 1 {
			// Neither is applied: picking one would prune what the other
			// applied before.
			c.log.Warn("manifests not applied: these files share an Addon name; rename one of them", "files", paths[addon], "addon", addon)
			continue
		}
		path := paths[addon][0]
		if skipped(path) {
			continue
		}
		m := &manifest{path: path, addon: addon}
		if m.data, m.err = os.ReadFile(path); m.err == nil {
			m.objs, m.err = parse(m.data)
		}
		files = append(files, m)
	}
	list, err := c.dyn.Resource(addonGVR).Namespace(AddonNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		c.log.Warn("listing Addons", "err", err)
		return
	}
	addons := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		addons[list.Items[i].GetName()] = &list.Items[i]
	}

	// What stays: every object a file holds now, and what the Addons this
	// pass leaves alone recorded (skipped or unparsable files, other servers').
	held := claims{}
	synced := map[string]bool{}
	for _, m := range files {
		if m.err != nil {
			continue
		}
		synced[m.addon] = true
		for _, o := range m.objs {
			held.addObject(o)
		}
	}
	for name, a := range addons {
		if synced[name] || (!present[name] && c.owns(a)) {
			continue
		}
		for _, r := range addonObjects(a) {
			held.add(r)
		}
	}

	for _, m := range files {
		if m.err != nil {
			c.log.Warn("manifest not applied: it does not parse", "file", m.path, "err", m.err)
			continue
		}
		c.syncFile(ctx, m, addons[m.addon], held)
	}
	for name, a := range addons {
		if present[name] || !c.owns(a) {
			continue
		}
		c.removeAddon(ctx, a, held)
	}
}

// owns reports whether this server manages an Addon. With several servers,
// each prunes only what its own files applied: a file one server has and
// another has not is not a removal.
func (c *Controller) owns(a *unstructured.Unstructured) bool {
	s := a.GetLabels()[ServerLabel]
	return s == "" || s == c.cfg.Server
}

// syncFile applies one file and prunes what it no longer holds.
func (c *Controller) syncFile(ctx context.Context, m *manifest, prev *unstructured.Unstructured, held claims) {
	sum := checksum(m.data)
	var before []ObjectRef
	prevSum := ""
	if prev != nil {
		before = addonObjects(prev)
		prevSum, _, _ = unstructured.NestedString(prev.Object, "spec", "checksum")
	}

	var applied []ObjectRef
	var failed []error
	for _, o := range applyOrder(m.objs) {
		ref, err := c.apply(ctx, o)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err))
			continue
		}
		applied = append(applied, ref)
	}
	keep := applied
	pruned := 0
	switch {
	case len(failed) > 0:
		// An object that failed may be one that was there before: nothing is
		// pruned until the whole file applies.
		for _, r := range before {
			if !containsRef(keep, r) {
				keep = append(keep, r)
			}
		}
		c.log.Warn("manifest partly applied", "file", m.path, "applied", len(applied), "err", errors.Join(failed...))
	case prev != nil && !c.owns(prev):
		// Another server wrote the record last, from its copy of the file:
		// what it lists is its to prune, not ours.
	default:
		for _, r := range before {
			if containsRef(applied, r) || held.has(r) {
				continue
			}
			if err := c.delete(ctx, r); err != nil {
				c.log.Warn("pruning", "file", m.path, "object", r.String(), "err", err)
				keep = append(keep, r)
				continue
			}
			pruned++
		}
	}
	if err := c.writeAddon(ctx, m.addon, m.path, sum, keep); err != nil {
		c.log.Warn("writing Addon", "addon", m.addon, "err", err)
	}
	if sum != prevSum || pruned > 0 {
		c.log.Info("manifest applied", "file", m.path, "objects", len(applied), "pruned", pruned)
	}
}

// removeAddon deletes what a removed file had created, except what another
// file holds now, then its Addon.
func (c *Controller) removeAddon(ctx context.Context, a *unstructured.Unstructured, held claims) {
	var failed []error
	pruned := 0
	for _, r := range addonObjects(a) {
		if held.has(r) {
			continue
		}
		if err := c.delete(ctx, r); err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", r, err))
			continue
		}
		pruned++
	}
	if len(failed) > 0 {
		c.log.Warn("pruning a removed manifest's objects", "addon", a.GetName(), "err", errors.Join(failed...))
		return
	}
	err := c.dyn.Resource(addonGVR).Namespace(AddonNamespace).Delete(ctx, a.GetName(), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		c.log.Warn("deleting Addon", "addon", a.GetName(), "err", err)
		return
	}
	c.log.Info("manifest removed: objects pruned", "addon", a.GetName(), "objects", pruned)
}

// resource maps a kind to its resource, refreshing discovery once for a kind
// that a CRD has only just added.
func (c *Controller) resource(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	var versions []string
	if gvk.Version != "" {
		versions = []string{gvk.Version}
	}
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), versions...)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), versions...)
	}
	return m, err
}

func (c *Controller) client(m *meta.RESTMapping, namespace string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(namespace)
	}
	return c.dyn.Resource(m.Resource)
}

func (c *Controller) apply(ctx context.Context, o *unstructured.Unstructured) (ObjectRef, error) {
	m, err := c.resource(o.GroupVersionKind())
	if err != nil {
		return ObjectRef{}, err
	}
	o = o.DeepCopy()
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			o.SetNamespace(DefaultNamespace)
		}
	} else {
		o.SetNamespace("")
	}
	if _, err := c.client(m, o.GetNamespace()).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return ObjectRef{}, err
	}
	return ObjectRef{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()}, nil
}

func (c *Controller) delete(ctx context.Context, r ObjectRef) error {
	gv, err := schema.ParseGroupVersion(r.APIVersion)
	if err != nil {
		return err
	}
	// By group and kind: the version recorded may be one the API no longer
	// serves, while the object is still there under another.
	m, err := c.resource(schema.GroupVersionKind{Group: gv.Group, Kind: r.Kind})
	if meta.IsNoMatchError(err) {
		return nil // its kind is gone (a deleted CRD took its objects along)
	}
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	err = c.client(m, r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
