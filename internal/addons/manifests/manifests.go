// Package manifests applies every manifest file in the server's manifests
// directory (K3s's auto-deploy): at start, when a file changes (watched,
// debounced) and at every resync, with server-side apply as field manager
// "skiff". The directory is read recursively (symlinks followed). An Addon
// object (skiff.io/v1, kube-system) per file records its checksum and the
// objects it applied, so that removing a file, or an object from a file,
// deletes what it had created, once the file's content (or its absence) has
// stayed unchanged for a grace period. `<file>.skip` stops skiff from
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
	"github.com/skiffkube/skiff/internal/metrics"
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
	// PruneGrace is how long a file's content, or its absence, must stay
	// unchanged before the objects it no longer holds are deleted. Default
	// 10s: longer than an editor's or a copy's empty or partial file.
	PruneGrace time.Duration
}

// repeatWarnings is how often a problem that persists is logged again.
const repeatWarnings = 10 * time.Minute

// Controller is the manifests component.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapper
	synced atomic.Bool
	// now is the clock of the prune decisions (a fake one in tests).
	now func() time.Time
	// settle and notes belong to the sync loop's goroutine.
	settle *settling
	notes  *notes
	component.Runner
}

// New returns the manifests controller.
func New(cfg Config, log *slog.Logger) *Controller {
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.PruneGrace == 0 {
		cfg.PruneGrace = 10 * time.Second
	}
	if errs := validation.IsValidLabelValue(cfg.Server); len(errs) > 0 {
		cfg.Server = "h-" + checksum([]byte(cfg.Server))[:16]
	}
	return &Controller{cfg: cfg, log: log.With("component", "manifests"), now: time.Now,
		settle: newSettling(cfg.PruneGrace), notes: newNotes(repeatWarnings)}
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
	settle := after(c.syncAll(ctx, watcher))
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
			settle = after(c.syncAll(ctx, watcher))
		case <-settle:
			settle = after(c.syncAll(ctx, watcher))
		case <-resync.C:
			settle = after(c.syncAll(ctx, watcher))
		}
	}
}

// after fires at t; never if t is zero.
func after(t time.Time) <-chan time.Time {
	if t.IsZero() {
		return nil
	}
	return time.After(time.Until(t))
}

// dirWatcher is the part of fsnotify.Watcher a pass uses.
type dirWatcher interface {
	Add(name string) error
	Remove(name string) error
	WatchList() []string
}

// manifest is one managed file of the directory, read and parsed.
type manifest struct {
	path  string
	addon string
	data  []byte
	objs  []*unstructured.Unstructured
	err   error // unreadable or does not parse: nothing of it is applied or pruned
	// settled: its content has been this for the grace period, so what it
	// dropped may be deleted.
	settled   bool
	settledAt time.Time
	applied   []ObjectRef
	failed    []error
	failedObj []string
}

// syncAll applies every managed file, then prunes what files dropped and
// the Addons of this server whose file is gone, each once that state has
// settled. An object that any file still holds, or whose deletion is not
// decided yet, is never pruned, so one moved from a file to another (or a
// file renamed) survives the move. It watches every directory it reads
// with w (if not nil). It returns when a deletion waiting for its file to
// settle is due (zero if none).
func (c *Controller) syncAll(ctx context.Context, w dirWatcher) time.Time {
	now := c.now()
	defer c.notes.endPass()

	var watch func(string)
	watched := map[string]bool{}
	if w != nil {
		for _, d := range w.WatchList() {
			watched[d] = true
		}
		watch = func(dir string) {
			if watched[dir] {
				return
			}
			if err := w.Add(dir); err != nil && c.notes.report("watch:"+dir, err.Error(), now) {
				c.log.Warn("watching a manifests dir; its changes are seen at the next resync", "dir", dir, "err", err)
			}
		}
	}
	t := discover(c.cfg.Dir, watch)
	if w != nil {
		read := map[string]bool{}
		for _, d := range t.dirs {
			read[d] = true
		}
		removed := false
		for d := range watched {
			if !read[d] {
				_ = w.Remove(d) // gone already, most often
				removed = true
			}
		}
		if removed {
			// A directory renamed within the tree kept its inode, hence
			// the watch just removed: watch it again under its new name.
			watched = map[string]bool{}
			for _, d := range w.WatchList() {
				watched[d] = true
			}
			for _, d := range t.dirs {
				watch(d)
			}
		}
	}
	for _, err := range t.errs {
		if c.notes.report("walk:"+err.Error(), "", now) {
			c.log.Warn("reading the manifests dir: no removal is concluded until it reads whole", "err", err)
		}
	}

	present := map[string]bool{}   // Addon names with a file or a .skip
	paths := map[string][]string{} // Addon name -> the files that have it
	var names []string
	for path := range t.skips {
		present[c.addonOf(path)] = true
	}
	for _, path := range t.files {
		addon := c.addonOf(path)
		present[addon] = true
		if paths[addon] == nil {
			names = append(names, addon)
		}
		paths[addon] = append(paths[addon], path)
	}
	var files []*manifest
	for _, addon := range names {
		if len(paths[addon]) > 1 {
			// Neither is applied: picking one would prune what the other
			// applied before.
			if c.notes.report("clash:"+addon, strings.Join(paths[addon], " "), now) {
				c.log.Warn("manifests not applied: these files share an Addon name; rename one of them", "files", paths[addon], "addon", addon)
			}
			continue
		}
		path := paths[addon][0]
		if t.skips[path] {
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
		if c.notes.report("list", "", now) {
			c.log.Warn("listing Addons", "err", err)
		}
		return time.Time{}
	}
	addons := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		addons[list.Items[i].GetName()] = &list.Items[i]
	}

	// Since when each file has had its content, each Addon of ours its
	// absence. A walk that failed somewhere tells nothing of absence.
	observed := map[string]bool{}
	for _, m := range files {
		observed[m.addon] = true
		m.settled, m.settledAt = c.settle.observe(m.addon, checksum(m.data), now)
	}
	var next time.Time
	wait := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	gone := map[string]bool{} // Addons of ours whose file has been gone the grace period
	for name, a := range addons {
		if present[name] || !c.owns(a) || len(t.errs) > 0 {
			continue
		}
		observed[name] = true
		settled, at := c.settle.observe(name, "", now)
		if settled {
			gone[name] = true
		} else {
			wait(at)
		}
	}
	if len(t.errs) == 0 {
		c.settle.keep(observed)
	}

	byAddon := map[string]*manifest{}
	for _, m := range files {
		byAddon[m.addon] = m
		if m.err == nil {
			c.applyFile(ctx, m)
		}
	}

	// What stays: every object a file holds now, and what every Addon that
	// is not pruned in this pass recorded (skipped, unparsable, partly
	// failing or unsettled files, files gone for less than the grace
	// period, other servers').
	held := claims{}
	for _, m := range files {
		for _, o := range m.objs {
			held.addObject(o)
		}
	}
	for name, a := range addons {
		m := byAddon[name]
		prunes := c.owns(a) && (gone[name] || (m != nil && m.err == nil && m.settled && len(m.failed) == 0))
		if prunes {
			continue
		}
		for _, r := range addonObjects(a) {
			held.add(r)
		}
	}

	for _, m := range files {
		if m.err != nil {
			metrics.AddonSyncErrors.WithLabelValues(m.addon).Inc()
			if c.notes.report("parse:"+m.path, checksum(m.data), now) {
				c.log.Warn("manifest not applied: it does not read or parse", "file", m.path, "err", m.err)
			}
			continue
		}
		if c.finishFile(ctx, m, addons[m.addon], held, now) {
			wait(m.settledAt)
		}
	}
	for name, a := range addons {
		if gone[name] {
			c.removeAddon(ctx, a, held, now)
		}
	}
	return next
}

// addonOf is the Addon name of a file under the manifests dir.
func (c *Controller) addonOf(path string) string {
	rel, err := filepath.Rel(c.cfg.Dir, path)
	if err != nil {
		rel = filepath.Base(path)
	}
	return AddonName(rel)
}

// owns reports whether this server manages an Addon. With several servers,
// each prunes only what its own files applied: a file one server has and
// another has not is not a removal.
func (c *Controller) owns(a *unstructured.Unstructured) bool {
	s := a.GetLabels()[ServerLabel]
	return s == "" || s == c.cfg.Server
}

// applyFile applies the objects of one file, recording what applied and
// what failed.
func (c *Controller) applyFile(ctx context.Context, m *manifest) {
	for _, o := range applyOrder(m.objs) {
		ref, err := c.apply(ctx, o)
		if err != nil {
			name := o.GetKind() + " " + o.GetName()
			if o.GetNamespace() != "" {
				name = o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
			}
			m.failed = append(m.failed, fmt.Errorf("%s: %w", name, err))
			m.failedObj = append(m.failedObj, name)
			continue
		}
		m.applied = append(m.applied, ref)
	}
}

// finishFile prunes what an applied file no longer holds, if its content
// has settled, records it in its Addon and logs what happened. It reports
// whether deletions wait for the file to settle.
func (c *Controller) finishFile(ctx context.Context, m *manifest, prev *unstructured.Unstructured, held claims, now time.Time) (waiting bool) {
	sum := checksum(m.data)
	var before []ObjectRef
	prevSum := ""
	if prev != nil {
		before = addonObjects(prev)
		prevSum, _, _ = unstructured.NestedString(prev.Object, "spec", "checksum")
	}
	keep := m.applied
	pending, pruned := 0, 0
	var failed []error
	var failedRefs []string
	switch {
	case len(m.failed) > 0:
		// An object that failed may be one that was there before: nothing is
		// pruned until the whole file applies.
		for _, r := range before {
			if !containsRef(keep, r) {
				keep = append(keep, r)
			}
		}
	case prev != nil && !c.owns(prev):
		// Another server wrote the record last, from its copy of the file:
		// what it lists is its to prune, not ours.
	case !m.settled:
		// Emptied, truncated or rewritten a moment ago: what it dropped
		// stays (and stays recorded) until this content has lasted.
		for _, r := range before {
			if !containsRef(keep, r) {
				keep = append(keep, r)
				pending++
			}
		}
	default:
		for _, r := range before {
			if containsRef(m.applied, r) || held.has(r) {
				continue
			}
			if err := c.delete(ctx, r); err != nil {
				failed = append(failed, fmt.Errorf("%s: %w", r, err))
				failedRefs = append(failedRefs, r.String())
				keep = append(keep, r)
				continue
			}
			pruned++
		}
	}
	writeErr := c.writeAddon(ctx, m.addon, m.path, sum, keep)
	if writeErr != nil || len(failed) > 0 || len(m.failed) > 0 {
		metrics.AddonSyncErrors.WithLabelValues(m.addon).Inc()
	}
	if writeErr != nil && c.notes.report("addon:"+m.addon, "", now) {
		c.log.Warn("writing Addon", "addon", m.addon, "file", m.path, "err", writeErr)
	}
	if len(failed) > 0 && c.notes.report("prune:"+m.addon, strings.Join(failedRefs, ","), now) {
		c.log.Warn("pruning objects a manifest dropped", "file", m.path, "err", errors.Join(failed...))
	}
	if len(m.failed) > 0 {
		if c.notes.report("apply:"+m.addon, strings.Join(m.failedObj, ","), now) {
			c.log.Warn("manifest partly applied: nothing pruned until it applies whole", "file", m.path,
				"applied", len(m.applied), "failed", len(m.failed), "err", errors.Join(m.failed...))
		}
		return false
	}
	switch {
	case sum != prevSum || c.notes.had("apply:"+m.addon):
		args := []any{"file", m.path, "objects", len(m.applied), "pruned", pruned}
		if pending > 0 {
			args = append(args, "prune_pending", pending, "prune_after", c.cfg.PruneGrace.String())
		}
		c.log.Info("manifest applied", args...)
	case pruned > 0:
		c.log.Info("manifest's dropped objects pruned", "file", m.path, "pruned", pruned)
	}
	return pending > 0
}

// removeAddon deletes what a removed file had created, except what another
// file holds now, then its Addon.
func (c *Controller) removeAddon(ctx context.Context, a *unstructured.Unstructured, held claims, now time.Time) {
	var failed []error
	var failedRefs []string
	pruned := 0
	for _, r := range addonObjects(a) {
		if held.has(r) {
			continue
		}
		if err := c.delete(ctx, r); err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", r, err))
			failedRefs = append(failedRefs, r.String())
			continue
		}
		pruned++
	}
	if len(failed) > 0 {
		if c.notes.report("remove:"+a.GetName(), strings.Join(failedRefs, ","), now) {
			c.log.Warn("pruning a removed manifest's objects", "addon", a.GetName(), "err", errors.Join(failed...))
		}
		return
	}
	err := c.dyn.Resource(addonGVR).Namespace(AddonNamespace).Delete(ctx, a.GetName(), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		if c.notes.report("remove:"+a.GetName(), "addon", now) {
			c.log.Warn("deleting Addon", "addon", a.GetName(), "err", err)
		}
		return
	}
	c.log.Info("manifest removed: objects pruned", "addon", a.GetName(), "source", sourceOf(a), "objects", pruned)
}

func sourceOf(a *unstructured.Unstructured) string {
	s, _, _ := unstructured.NestedString(a.Object, "spec", "source")
	return s
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
