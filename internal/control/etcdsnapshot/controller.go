// Package etcdsnapshot is the server's snapshot component: it takes
// scheduled snapshots of the datastore (--etcd-snapshot-schedule-cron,
// robfig/cron), prunes this node's scheduled ones to
// --etcd-snapshot-retention, and keeps one ETCDSnapshotFile object
// (etcdsnapshotfiles.skiff.io) per file in this node's snapshot dir,
// whoever wrote the file (`skiff etcd-snapshot save`, delete and prune
// show up too).
package etcdsnapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/robfig/cron/v3"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/reconcile"
	"github.com/skiffkube/skiff/internal/snapshot"
)

// resync is how often the objects are compared with the files even
// without a change seen in the dir.
const resync = time.Minute

// Config is what the component works on.
type Config struct {
	// Kubeconfig is the admin kubeconfig.
	Kubeconfig string
	// Store is the datastore snapshots are taken of.
	Store snapshot.Store
	// Dir is this node's snapshot dir (--etcd-snapshot-dir).
	Dir string
	// Node is this server's node name.
	Node string
	// Schedule is --etcd-snapshot-schedule-cron (5 fields); "" takes no
	// scheduled snapshots (--etcd-disable-snapshots).
	Schedule string
	// Retention is how many scheduled snapshots of this node are kept.
	Retention int
	// Compress zips scheduled snapshots.
	Compress bool
}

// Controller is the snapshot component.
type Controller struct {
	component.Runner
	cfg  Config
	log  *slog.Logger
	loop *reconcile.Loop
	// now is the clock of snapshot names; tests set it.
	now func() time.Time
	// saving serializes snapshots (a slow one and the next tick).
	saving sync.Mutex
}

// New returns the component for cfg.
func New(cfg Config, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, log: log.With("component", "etcd-snapshot"), loop: reconcile.NewLoop(), now: time.Now}
}

func (c *Controller) Name() string { return "etcd-snapshot" }

// Init checks the schedule (validated with the config already) and makes
// the snapshot dir, so that the dir can be watched.
func (c *Controller) Init(context.Context) error {
	if c.cfg.Schedule != "" {
		if _, err := cron.ParseStandard(c.cfg.Schedule); err != nil {
			return fmt.Errorf("etcd-snapshot-schedule-cron %q: %w", c.cfg.Schedule, err)
		}
	}
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("etcd-snapshot-dir %s: %w", c.cfg.Dir, err)
	}
	return nil
}

// Start installs the CRD, then reconciles and runs the schedule in the
// background; Ready is nil after the first pass.
func (c *Controller) Start(context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("etcd-snapshot: kubeconfig: %w", err)
	}
	ext, err := apiextensions.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("etcd-snapshot: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("etcd-snapshot: %w", err)
	}
	c.Go(func(ctx context.Context) error { return c.run(ctx, ext, dyn) })
	return nil
}

func (c *Controller) run(ctx context.Context, ext apiextensions.Interface, dyn dynamic.Interface) error {
	if err := ensureCRD(ctx, ext); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("etcd-snapshot: %w", err)
	}
	var sched *cron.Cron
	if c.cfg.Schedule != "" {
		sched = cron.New()
		if _, err := sched.AddFunc(c.cfg.Schedule, func() { c.Scheduled(ctx) }); err != nil {
			return fmt.Errorf("etcd-snapshot-schedule-cron %q: %w", c.cfg.Schedule, err)
		}
		sched.Start()
		defer func() { <-sched.Stop().Done() }()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if w, err := fsnotify.NewWatcher(); err != nil {
		c.log.Warn("not watching the snapshot dir; objects follow its files every minute", "dir", c.cfg.Dir, "err", err)
	} else {
		defer w.Close()
		if err := w.Add(c.cfg.Dir); err != nil {
			c.log.Warn("not watching the snapshot dir; objects follow its files every minute", "dir", c.cfg.Dir, "err", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case _, ok := <-w.Events:
					if !ok {
						return
					}
					c.loop.Kick()
				case _, ok := <-w.Errors:
					if !ok {
						return
					}
					c.loop.Kick()
				}
			}
		}()
	}
	c.loop.Run(ctx, resync, func(ctx context.Context) {
		if err := Sync(ctx, dyn, c.cfg.Store.Kind, c.cfg.Dir, c.cfg.Node); err != nil && ctx.Err() == nil {
			c.log.Warn("snapshot objects not in step with the files", "err", err)
		}
	})
	return nil
}

func (c *Controller) Ready() error { return c.loop.Ready() }

func (c *Controller) Stop() error {
	// A snapshot in progress is cancelled through the context; give it time
	// to remove its partial file.
	return c.Runner.Stop(10 * time.Second)
}

// Scheduled takes one scheduled snapshot and prunes this node's scheduled
// snapshots to the retention count. The cron schedule calls it; failures are
// logged, and the next tick tries again.
func (c *Controller) Scheduled(ctx context.Context) {
	c.saving.Lock()
	defer c.saving.Unlock()
	begin := time.Now()
	f, err := snapshot.Save(ctx, c.cfg.Store, snapshot.SaveOptions{
		Dir: c.cfg.Dir, Prefix: snapshot.ScheduledPrefix, Node: c.cfg.Node, Compress: c.cfg.Compress, Now: c.now(),
	})
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("scheduled snapshot failed", "err", err)
		}
		return
	}
	c.log.Info("scheduled snapshot saved", "snapshot", f.Name, "size", f.Size, "duration", time.Since(begin).Round(time.Millisecond))
	removed, err := snapshot.Prune(c.cfg.Dir, snapshot.ScheduledPrefix, c.cfg.Node, c.cfg.Retention)
	if err != nil {
		c.log.Warn("pruning scheduled snapshots", "err", err)
	}
	if len(removed) > 0 {
		c.log.Info("pruned scheduled snapshots", "removed", strings.Join(removed, ","), "retention", c.cfg.Retention)
	}
	c.loop.Kick()
}

// ObjectName is the ETCDSnapshotFile name of node's snapshot file: the file
// name made a valid object name, and a hash of node and file that keeps
// names apart when that changed them.
func ObjectName(node, file string) string {
	base := strings.Trim(invalidName.ReplaceAllString(strings.ToLower(file), "-"), "-.")
	if len(base) > 200 {
		base = base[:200]
	}
	sum := sha256.Sum256([]byte(node + "/" + file))
	return base + "-" + hex.EncodeToString(sum[:3])
}

var invalidName = regexp.MustCompile(`[^a-z0-9.-]+`)

// Sync makes the ETCDSnapshotFile objects of node match the snapshot files
// in dir: an object for each file, none for a file that is gone. Objects
// of other nodes are left alone.
func Sync(ctx context.Context, dyn dynamic.Interface, kind, dir, node string) error {
	files, err := snapshot.List(dir, node)
	if err != nil {
		return err
	}
	res := dyn.Resource(GVR)
	list, err := res.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing %s: %w", Resource, err)
	}
	want := map[string]snapshot.File{}
	for _, f := range files {
		want[ObjectName(node, f.Name)] = f
	}
	var errs []error
	have := map[string]bool{}
	for _, o := range list.Items {
		n, _, _ := unstructured.NestedString(o.Object, "spec", "nodeName")
		if n != node {
			continue
		}
		have[o.GetName()] = true
		if _, ok := want[o.GetName()]; ok {
			continue
		}
		err := res.Delete(ctx, o.GetName(), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s %s: %w", Kind, o.GetName(), err))
		}
	}
	for name, f := range want {
		if have[name] {
			continue
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": Group + "/" + Version,
			"kind":       Kind,
			"metadata":   map[string]any{"name": name},
			"spec": map[string]any{
				"snapshotName": f.Name,
				"nodeName":     node,
				"location":     f.Location,
				"size":         f.Size,
				"createdAt":    f.CreatedAt.UTC().Format(time.RFC3339),
				"compressed":   f.Compressed,
				"datastore":    kind,
			},
			"status": map[string]any{"readyToUse": true},
		}}
		_, err := res.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Errorf("creating %s %s: %w", Kind, name, err))
		}
	}
	return errors.Join(errs...)
}
