// Package helmcontroller installs Helm charts described by HelmChart objects
// (helm.skiff.io/v1) with the Helm SDK inside the server process: no job
// pod and no helm image, so charts install on an air-gapped machine from a
// chart archive in the object (chartContent) or in the server's static
// directory. A change to the HelmChart or its HelmChartConfig upgrades the
// release; deleting the HelmChart uninstalls it (a finalizer holds the
// object until then).
package helmcontroller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/metrics"
)

// Finalizer holds a HelmChart until its release is uninstalled.
const Finalizer = "helm.skiff.io/uninstall"

var (
	chartGVR  = schema.GroupVersionResource{Group: "helm.skiff.io", Version: "v1", Resource: "helmcharts"}
	configGVR = schema.GroupVersionResource{Group: "helm.skiff.io", Version: "v1", Resource: "helmchartconfigs"}
)

// Config is what the controller needs.
type Config struct {
	Kubeconfig string
	// StaticDir is <data-dir>/server/static, where chart files may lie.
	StaticDir string
	// HelmDir holds the repository cache for charts fetched from a repo.
	HelmDir string
	// Server names this server for people (its node name, else its host
	// name: the server package's serverName), in logs and on its Leases.
	Server string
	// IDFile is <data-dir>/server/id, this server's identity (see
	// ServerID): a Lease held by it for an earlier process is that
	// process's, which is gone.
	IDFile string
}

// Controller is the Helm controller component.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	dyn      dynamic.Interface
	charts   cache.GenericLister
	configs  cache.GenericLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	ready    atomic.Bool
	// instance names this process's run of the controller on the releases
	// it operates on; owners tells whether another instance still runs.
	instance string
	id       string
	owners   *owners
	failures failureLog
	component.Runner
}

// New returns the controller.
func New(cfg Config, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, log: log.With("component", "helm-controller"), instance: newInstance(time.Now())}
}

func (c *Controller) Name() string { return "helm-controller" }

func (c *Controller) Init(context.Context) error {
	for _, d := range []string{c.cfg.StaticDir, c.cfg.HelmDir, filepath.Dir(c.cfg.IDFile)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("helm controller: %w", err)
		}
	}
	id, err := ServerID(c.cfg.IDFile)
	if err != nil {
		return fmt.Errorf("helm controller: %w", err)
	}
	c.id = id
	return nil
}

func (c *Controller) Start(context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("helm controller: kubeconfig: %w", err)
	}
	if c.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return fmt.Errorf("helm controller: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("helm controller: %w", err)
	}
	c.owners = &owners{leases: client.CoordinationV1().Leases(leaseNamespace), id: c.id, name: c.cfg.Server, instance: c.instance, now: time.Now}
	c.log.Debug("helm controller instance", "instance", c.instance, "server", c.cfg.Server, "server-id", c.id)
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 2*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "helmcharts"})
	f := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 10*time.Minute)
	charts, configs := f.ForResource(chartGVR), f.ForResource(configGVR)
	c.charts, c.configs = charts.Lister(), configs.Lister()
	c.synced = []cache.InformerSynced{charts.Informer().HasSynced, configs.Informer().HasSynced}
	enqueue := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
		DeleteFunc: enqueue,
	}
	// The controller's own status writes (Installing, then Installed or
	// Failed) must not wake it again: that would retry a failing chart at
	// once, round and round, instead of after the queue's back-off.
	chartHandler := handler
	chartHandler.UpdateFunc = func(old, obj interface{}) {
		if !statusOnly(old, obj) {
			enqueue(obj)
		}
	}
	if _, err := charts.Informer().AddEventHandler(chartHandler); err != nil {
		return fmt.Errorf("helm controller: %w", err)
	}
	// A HelmChartConfig names its HelmChart by its own name and namespace.
	if _, err := configs.Informer().AddEventHandler(handler); err != nil {
		return fmt.Errorf("helm controller: %w", err)
	}
	broadcaster := record.NewBroadcaster()
	c.recorder = broadcaster.NewRecorder(runtime.NewScheme(), corev1.EventSource{Component: "skiff-helm-controller"})
	c.Go(func(ctx context.Context) error {
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		defer c.queue.ShutDown()
		// The manifests controller applies the CRDs: wait until they are
		// served rather than let the informers back off against a 404.
		for _, gvr := range []schema.GroupVersionResource{chartGVR, configGVR} {
			for {
				if _, err := c.dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
		f.Start(ctx.Done())
		defer f.Shutdown()
		if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
			return nil
		}
		// This instance's Lease exists before it marks any release.
		for {
			err := c.owners.hold(ctx)
			if err == nil {
				break
			}
			c.log.Debug("waiting to hold the instance Lease", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		if err := c.owners.clearDead(ctx); err != nil {
			c.log.Warn("clearing Leases of stopped instances", "err", err)
		}
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(leaseRenew):
				}
				if err := c.owners.renew(ctx); err != nil && ctx.Err() == nil {
					c.log.Warn("renewing the instance Lease", "err", err)
				}
			}
		}()
		defer func() { <-renewed }()
		c.ready.Store(true)
		go func() {
			<-ctx.Done()
			c.queue.ShutDown()
		}()
		for c.next(ctx) {
		}
		return nil
	})
	return nil
}

func (c *Controller) Ready() error {
	if !c.ready.Load() {
		return errors.New("HelmCharts not listed yet")
	}
	return nil
}

// Stop ends the controller within 5 s: an install or upgrade running is cut
// short (its requests to the apiserver, hooks' watches too, end), and its
// release, left pending, is recovered at the next start.
func (c *Controller) Stop() error { return c.Runner.Stop(5 * time.Second) }

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true // stopping: the next start takes it up
		}
		c.failures.log(c.log, key, err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *Controller) get(lister cache.GenericLister, key string, into interface{}) (*unstructured.Unstructured, error) {
	obj, err := lister.Get(key)
	if err != nil {
		return nil, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected %T", key, obj)
	}
	return u, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

func (c *Controller) sync(ctx context.Context, key string) error {
	if _, err := c.charts.Get(key); apierrors.IsNotFound(err) {
		return nil // gone: its finalizer saw the release uninstalled
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	// Read afresh: the informer may not have seen the status this
	// controller wrote last (Installing, then Installed), and acting on
	// a stale one would upgrade a release already up to date.
	u, err := c.dyn.Resource(chartGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading HelmChart %s: %w", key, err)
	}
	var hc HelmChart
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &hc); err != nil {
		return fmt.Errorf("HelmChart %s: %w", key, err)
	}
	if hc.DeletionTimestamp != nil {
		return c.remove(ctx, u, &hc)
	}
	if !hasFinalizer(&hc) {
		patch := fmt.Sprintf(`{"metadata":{"finalizers":%s,"resourceVersion":%q}}`, mustJSON(append(hc.Finalizers, Finalizer)), hc.ResourceVersion)
		if _, err := c.dyn.Resource(chartGVR).Namespace(hc.Namespace).Patch(ctx, hc.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("adding the finalizer: %w", err)
		}
		return nil // the update comes back through the informer
	}
	var config HelmChartConfig
	if _, err := c.get(c.configs, key, &config); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return c.apply(ctx, u, &hc, &config)
}

// errPermanent marks a failure that retrying cannot mend: the object must
// change first.
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

// apply installs or upgrades the release when its inputs changed.
func (c *Controller) apply(ctx context.Context, u *unstructured.Unstructured, hc *HelmChart, config *HelmChartConfig) error {
	ns, installedIn := releaseNamespace(hc), installedNamespace(hc)
	seen := hc.Status.ObservedGeneration == hc.Generation && hc.Status.ConfigVersion == config.ResourceVersion
	st := HelmChartStatus{Release: hc.Name, Namespace: ns, Revision: hc.Status.Revision, Applied: hc.Status.Applied,
		ObservedGeneration: hc.Generation, ConfigVersion: config.ResourceVersion, InFlight: hc.Status.InFlight}
	key := hc.Namespace + "/" + hc.Name
	fail := func(reason string, err error) error {
		if ctx.Err() != nil {
			// Cut short by the stop: not a failure of the chart.
			c.log.Info("helm operation interrupted by the stop; resumed at the next start", "helmchart", key)
			return ctx.Err()
		}
		c.failures.log(c.log, key, err) // as next logs it: once
		c.recorder.Event(u, corev1.EventTypeWarning, reason, err.Error())
		st.Phase, st.Message = "Failed", err.Error()
		st.Namespace = installedIn // still where the release is
		c.setStatus(ctx, hc, st)
		var perm errPermanent
		if errors.As(err, &perm) {
			return nil
		}
		return err
	}
	if err := validate(hc); err != nil {
		return fail("Invalid", errPermanent{err})
	}
	// A repository chart is fetched only when the object or its config
	// changed: a resync must not download it, nor turn an installed
	// release Failed while the repository is away.
	if hc.Spec.ChartContent == "" && hc.Status.Phase == "Installed" && hc.Status.Namespace == ns && seen {
		if path, _ := staticPath(c.cfg.StaticDir, hc.Spec.Chart); path == "" {
			return nil
		}
	}
	vals, err := values(hc.Spec, config.Spec.ValuesContent)
	if err != nil {
		return fail("InvalidValues", errPermanent{err})
	}
	if installedIn != ns {
		// targetNamespace changed: the release moves.
		if err := c.uninstall(ctx, hc, installedIn); err != nil {
			return fail("UninstallFailed", err)
		}
	}
	cfg, err := c.actionConfig(ctx, ns)
	if err != nil {
		return err
	}
	ch, chartID, err := c.loadChart(hc)
	if err != nil {
		return fail("ChartNotLoaded", err)
	}
	hash, err := inputsHash(chartID, vals)
	if err != nil {
		return err
	}
	last, err := cfg.Releases.Last(hc.Name)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return fmt.Errorf("reading release %s/%s: %w", ns, hc.Name, err)
	}
	if last != nil && !owned(last, hc) {
		return fail("ReleaseExists", errPermanent{fmt.Errorf("release %s/%s exists and was not installed by this HelmChart: rename the HelmChart or remove the release", ns, hc.Name)})
	}
	// A record whose operation is over goes, so that nothing forged at
	// its revision later passes for it.
	st.InFlight = settled(st.InFlight, ns, last)
	recovered := ""
	if stuck(last) {
		// Only a release this controller recorded as in flight is
		// recovered: any other may be forged (see recorded).
		if err := recorded(st.InFlight, ns, last); err != nil {
			return fail("ReleaseStuck", errPermanent{err})
		}
		if err := c.owners.ownerGone(ctx, st.InFlight.Instance, last.Info.Status); err != nil {
			return fmt.Errorf("release %s/%s: %w", ns, hc.Name, err)
		}
		op, revision := recoveryOperation(last)
		st.InFlight = &InFlight{Instance: c.instance, Namespace: ns, Revision: revision, Operation: op}
		st.Phase, st.Message = "Upgrading", fmt.Sprintf("recovering release %s/%s, left %s by a stopped server", ns, hc.Name, last.Info.Status)
		if op == opUninstall {
			st.Phase = "Installing"
		}
		if err := c.writeStatus(ctx, hc, st); err != nil {
			return err // the operation runs only once recorded
		}
		recovered, err = recoverRelease(cfg, last, operationTimeout)
		if err != nil {
			st.InFlight = c.stillInFlight(cfg, ns, hc.Name, st.InFlight)
			return fail("RecoveryFailed", err)
		}
		c.log.Warn("helm release recovered", "helmchart", key, "namespace", ns, "did", recovered)
		c.recorder.Event(u, corev1.EventTypeNormal, "Recovered", recovered)
		if last, err = cfg.Releases.Last(hc.Name); err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
			return fmt.Errorf("reading release %s/%s: %w", ns, hc.Name, err)
		}
		st.InFlight = settled(st.InFlight, ns, last)
	}
	if last != nil && last.Info.Status == release.StatusDeployed && hc.Status.Applied == hash && hc.Status.Phase == "Installed" {
		if !seen || st.InFlight != hc.Status.InFlight {
			st.Phase, st.Message = hc.Status.Phase, hc.Status.Message
			c.setStatus(ctx, hc, st)
		}
		return nil
	}
	// The operator label says which process runs the operation, so that a
	// release it leaves pending is known abandoned once it is gone.
	labels := map[string]string{OwnerLabel: string(hc.UID), OperatorLabel: c.instance}
	chartName := ch.Metadata.Name + " " + ch.Metadata.Version
	var rel *release.Release
	verb := "Upgraded"
	if last == nil || last.Info.Status == release.StatusUninstalled {
		st.Phase, st.Message = "Installing", fmt.Sprintf("installing release %s/%s (chart %s)", ns, hc.Name, chartName)
		st.InFlight = &InFlight{Instance: c.instance, Namespace: ns, Revision: 1, Operation: opInstall}
		if err := c.writeStatus(ctx, hc, st); err != nil {
			return err // the operation runs only once recorded
		}
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.CreateNamespace = hc.Name, ns, true
		in.Timeout = operationTimeout
		in.Labels = labels
		in.Description = "installed by skiff from HelmChart " + key
		rel, err = in.RunWithContext(ctx, ch, vals)
		verb = "Installed"
	} else {
		st.Phase, st.Message = "Upgrading", fmt.Sprintf("upgrading release %s/%s revision %d (chart %s)", ns, hc.Name, last.Version, chartName)
		// Helm's upgrade writes the revision after the last.
		st.InFlight = &InFlight{Instance: c.instance, Namespace: ns, Revision: last.Version + 1, Operation: opUpgrade}
		if err := c.writeStatus(ctx, hc, st); err != nil {
			return err // the operation runs only once recorded
		}
		up := action.NewUpgrade(cfg)
		up.Namespace = ns
		up.Timeout = operationTimeout
		up.Labels = labels
		up.MaxHistory = maxHistory
		up.Description = "upgraded by skiff from HelmChart " + key
		rel, err = up.RunWithContext(ctx, hc.Name, ch, vals)
	}
	if err != nil {
		// Helm marks the revision failed; if that write failed too, the
		// record stays, so that the next sync recovers it.
		st.InFlight = c.stillInFlight(cfg, ns, hc.Name, st.InFlight)
		return fail("InstallFailed", fmt.Errorf("%s %s/%s: %w", map[string]string{"Installed": "installing", "Upgraded": "upgrading"}[verb], ns, hc.Name, err))
	}
	msg := fmt.Sprintf("%s release %s/%s revision %d (chart %s)", verb, ns, rel.Name, rel.Version, chartName)
	if recovered != "" {
		msg += " after recovery: " + recovered
	}
	c.recorder.Event(u, corev1.EventTypeNormal, verb, msg)
	c.log.Info("helm release "+verb, "helmchart", key, "namespace", ns, "revision", rel.Version, "chart", ch.Metadata.Name+"-"+ch.Metadata.Version)
	c.failures.clear(key)
	st.Phase, st.Revision, st.Message, st.Applied, st.Namespace, st.InFlight = "Installed", rel.Version, msg, hash, ns, nil
	c.setStatus(ctx, hc, st)
	return nil
}

const (
	// operationTimeout bounds one Helm operation's waits (hooks).
	operationTimeout = 5 * time.Minute
	// maxHistory is the revisions kept of a release, as the helm CLI keeps
	// them: a release that keeps failing does not fill the datastore.
	maxHistory = 10
)

// OwnerLabel on a release names the HelmChart (by UID) that installed it: a
// HelmChart never takes over, upgrades or uninstalls a release it did not
// make.
const OwnerLabel = "helm.skiff.io/helmchart-uid"

func owned(r *release.Release, hc *HelmChart) bool {
	return r.Labels[OwnerLabel] == string(hc.UID) || r.Info.Status == release.StatusUninstalled
}

// loadChart reads the chart from the object, the static directory or its
// repository; chartID names it for the inputs hash.
func (c *Controller) loadChart(hc *HelmChart) (*chart.Chart, string, error) {
	ch, digest, local, err := loadLocal(hc.Spec, c.cfg.StaticDir)
	if local {
		if err != nil && hc.Spec.ChartContent != "" {
			err = errPermanent{err}
		}
		return ch, "sha256:" + digest, err
	}
	if err := remoteChartName(hc.Spec); err != nil {
		return nil, "", errPermanent{err}
	}
	settings := cli.New()
	settings.RepositoryCache = filepath.Join(c.cfg.HelmDir, "cache")
	settings.RepositoryConfig = filepath.Join(c.cfg.HelmDir, "repositories.yaml")
	opts := action.ChartPathOptions{RepoURL: hc.Spec.Repo, Version: hc.Spec.Version}
	path, err := opts.LocateChart(hc.Spec.Chart, settings)
	if err != nil {
		return nil, "", fmt.Errorf("fetching chart %q from %q: %w", hc.Spec.Chart, hc.Spec.Repo, err)
	}
	if ch, err = loader.Load(path); err != nil {
		return nil, "", fmt.Errorf("chart %s: %w", path, err)
	}
	return ch, "repo:" + hc.Spec.Repo + "/" + hc.Spec.Chart + "@" + ch.Metadata.Version, nil
}

// remove uninstalls a deleted HelmChart's release, then lets it go.
func (c *Controller) remove(ctx context.Context, u *unstructured.Unstructured, hc *HelmChart) error {
	if !hasFinalizer(hc) {
		return nil
	}
	if err := c.uninstall(ctx, hc, installedNamespace(hc)); err != nil {
		if ctx.Err() == nil {
			c.recorder.Event(u, corev1.EventTypeWarning, "UninstallFailed", err.Error())
		}
		return err
	}
	c.failures.clear(hc.Namespace + "/" + hc.Name)
	var keep []string
	for _, f := range hc.Finalizers {
		if f != Finalizer {
			keep = append(keep, f)
		}
	}
	patch := fmt.Sprintf(`{"metadata":{"finalizers":%s,"resourceVersion":%q}}`, mustJSON(keep), hc.ResourceVersion)
	_, err := c.dyn.Resource(chartGVR).Namespace(hc.Namespace).Patch(ctx, hc.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// uninstall removes the HelmChart's release from a namespace, if it is its
// own: a release of the same name installed otherwise is left alone.
func (c *Controller) uninstall(ctx context.Context, hc *HelmChart, ns string) error {
	cfg, err := c.actionConfig(ctx, ns)
	if err != nil {
		return err
	}
	last, err := cfg.Releases.Last(hc.Name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading release %s/%s: %w", ns, hc.Name, err)
	}
	if !owned(last, hc) {
		c.log.Warn("release not installed by this HelmChart: left alone", "helmchart", hc.Namespace+"/"+hc.Name, "namespace", ns)
		return nil
	}
	un := action.NewUninstall(cfg)
	un.IgnoreNotFound = true
	un.Timeout = operationTimeout
	if _, err := un.Run(hc.Name); err != nil {
		return fmt.Errorf("uninstalling %s/%s: %w", ns, hc.Name, err)
	}
	c.log.Info("helm release uninstalled", "helmchart", hc.Namespace+"/"+hc.Name, "namespace", ns)
	return nil
}

// setStatus writes a HelmChart's status, logging a failure: the status
// only tells people.
func (c *Controller) setStatus(ctx context.Context, hc *HelmChart, st HelmChartStatus) {
	if err := c.writeStatus(ctx, hc, st); err != nil && !apierrors.IsNotFound(err) {
		c.log.Warn("writing HelmChart status", "helmchart", hc.Namespace+"/"+hc.Name, "err", err)
	}
}

// writeStatus writes a HelmChart's status through its status subresource,
// which only the controller (with the admin's rights) writes. It must
// succeed before an operation it records as in flight starts.
func (c *Controller) writeStatus(ctx context.Context, hc *HelmChart, st HelmChartStatus) error {
	if sameStatus(st, hc.Status) {
		return nil
	}
	patch := fmt.Sprintf(`{"status":%s}`, mustJSON(st))
	_, err := c.dyn.Resource(chartGVR).Namespace(hc.Namespace).Patch(ctx, hc.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("writing the status of HelmChart %s/%s: %w", hc.Namespace, hc.Name, err)
	}
	// The next status of this sync is compared with this one, not with
	// what the informer saw before.
	hc.Status = st
	return nil
}

// stillInFlight returns rec while its operation, which returned an error,
// left release name in namespace ns stuck (Helm's final write failed too,
// or it could not be read), nil once it settled.
func (c *Controller) stillInFlight(cfg *action.Configuration, ns, name string, rec *InFlight) *InFlight {
	last, err := cfg.Releases.Last(name)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return rec
	}
	return settled(rec, ns, last)
}

// actionConfig is a Helm configuration for one namespace, its releases
// kept as Secrets there, as the helm CLI keeps them. Its every request to
// the apiserver ends when ctx does: Helm waits for hooks with watches of
// its own context, which would otherwise outlive a stop and hold the
// apiserver's shutdown.
func (c *Controller) actionConfig(ctx context.Context, namespace string) (*action.Configuration, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &c.cfg.Kubeconfig
	flags.Namespace = &namespace
	flags.WrapConfigFn = func(rc *rest.Config) *rest.Config {
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &stopTransport{next: rt, stop: ctx} })
		return rc
	}
	cfg := new(action.Configuration)
	logf := func(format string, v ...interface{}) {
		c.log.Debug(fmt.Sprintf(format, v...), "namespace", namespace)
	}
	if err := cfg.Init(flags, namespace, "secret", logf); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// statusOnly reports whether an update of a HelmChart changed nothing the
// controller acts on: not its spec (generation), deletion or finalizers. A
// resync (same resourceVersion) is acted on.
func statusOnly(old, obj interface{}) bool {
	o, ok1 := old.(*unstructured.Unstructured)
	n, ok2 := obj.(*unstructured.Unstructured)
	if !ok1 || !ok2 || o.GetResourceVersion() == n.GetResourceVersion() {
		return false
	}
	return o.GetGeneration() == n.GetGeneration() &&
		(o.GetDeletionTimestamp() == nil) == (n.GetDeletionTimestamp() == nil) &&
		slices.Equal(o.GetFinalizers(), n.GetFinalizers())
}

func hasFinalizer(hc *HelmChart) bool {
	for _, f := range hc.Finalizers {
		if f == Finalizer {
			return true
		}
	}
	return false
}

// stopTransport ends every request it carries when stop ends, streaming
// responses (watches) included, whatever the request's own context.
type stopTransport struct {
	next http.RoundTripper
	stop context.Context
}

func (t *stopTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.stop.Err(); err != nil {
		return nil, fmt.Errorf("helm controller stopping: %w", err)
	}
	ctx, cancel := context.WithCancel(req.Context())
	unhook := context.AfterFunc(t.stop, cancel)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		unhook()
		cancel()
		return nil, err
	}
	resp.Body = &closeHook{ReadCloser: resp.Body, done: func() { unhook(); cancel() }}
	return resp, nil
}

// closeHook runs done once the body is closed.
type closeHook struct {
	io.ReadCloser
	done func()
}

func (b *closeHook) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// failureRepeat is how long a HelmChart's failure, logged once, stays
// quiet while it repeats unchanged (its retries back off to 2 minutes).
const failureRepeat = 10 * time.Minute

// failureLog logs each HelmChart's failures once, with its name, and a
// failure that repeats unchanged again only after failureRepeat: events say
// the rest.
type failureLog struct {
	mu   sync.Mutex
	last map[string]failureSeen
}

type failureSeen struct {
	msg string
	at  time.Time
}

func (f *failureLog) log(log *slog.Logger, key string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	metrics.AddonSyncErrors.WithLabelValues("helm-controller").Inc()
	now, msg := time.Now(), err.Error()
	if seen, ok := f.last[key]; ok && seen.msg == msg && now.Sub(seen.at) < failureRepeat {
		log.Debug("helm chart failed again", "helmchart", key, "err", err)
		return
	}
	if f.last == nil {
		f.last = map[string]failureSeen{}
	}
	f.last[key] = failureSeen{msg, now}
	log.Warn("helm chart failed", "helmchart", key, "err", err)
}

// clear forgets a HelmChart's failure once it succeeded: the next one is
// logged.
func (f *failureLog) clear(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.last, key)
}
