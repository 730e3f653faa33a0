// Package localstorage is skiff's local-path storage: a default StorageClass
// "local-path" (WaitForFirstConsumer) whose claims get a directory on the node
// the scheduler picked, as K3s's local-path-provisioner does, but in process
// and with no image of its own.
//
// The server provisions: once the scheduler has chosen a node for a claim's
// first pod, a short pod on that node runs the built-in pause image's
// `create-dir`, which makes the volume's directory with mode 0777 (as K3s's
// provisioner does: the pod may run as any user, and the kubelet neither
// chowns a hostPath volume nor makes its directory writable), and then the
// server creates a hostPath PersistentVolume pinned to that node. When a
// volume with the Delete policy is released, another short pod runs
// `remove-dir` on the directory, then the volume is deleted.
package localstorage

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersstoragev1 "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/reconcile"
)

const (
	// Provisioner is the StorageClass provisioner name.
	Provisioner = "skiff.io/local-path"
	// ClassName is the StorageClass skiff installs.
	ClassName = "local-path"
	// ManifestFile is the add-on's file in the manifests dir.
	ManifestFile = "local-storage.yaml"

	selectedNodeAnnotation  = "volume.kubernetes.io/selected-node"
	provisionedByAnnotation = "pv.kubernetes.io/provisioned-by"
	cleanupNamespace        = "kube-system"
	helperMount             = "/storage"
	// helperNodeAnnotation on a create-dir pod is the hostname it runs on.
	helperNodeAnnotation = "skiff.io/local-path-node"
	// helperClaimAnnotation on a create-dir pod is its claim's UID.
	helperClaimAnnotation = "skiff.io/local-path-claim"
	managedByLabel        = "app.kubernetes.io/managed-by"
	managedBy             = "skiff-local-storage"
)

// Manifest is the StorageClass, applied through the manifests controller so
// that `--disable local-storage` prunes it.
func Manifest() []byte {
	return []byte(`# Written by skiff at every start; create local-storage.yaml.skip to manage it yourself.
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ` + ClassName + `
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: ` + Provisioner + `
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
`)
}

// Config is what the provisioner needs.
type Config struct {
	Kubeconfig string
	// StoragePath is where volumes' directories go on every node.
	StoragePath string
	// HelperImage runs the pods that make and remove volumes' directories:
	// skiff's built-in pause image.
	HelperImage string
	// Client, when set, replaces the kubeconfig (tests).
	Client kubernetes.Interface
}

// Controller is the provisioner component.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	client   kubernetes.Interface
	claims   listerscorev1.PersistentVolumeClaimLister
	volumes  listerscorev1.PersistentVolumeLister
	nodes    listerscorev1.NodeLister
	pods     listerscorev1.PodLister
	classes  listersstoragev1.StorageClassLister
	recorder record.EventRecorder
	loop     *reconcile.Loop
	component.Runner
}

// New returns the provisioner.
func New(cfg Config, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, log: log.With("component", "local-storage"), loop: reconcile.NewLoop()}
}

func (c *Controller) Name() string { return "local-storage" }

func (c *Controller) Init(context.Context) error {
	if !filepath.IsAbs(c.cfg.StoragePath) {
		return fmt.Errorf("storage path %q is not absolute", c.cfg.StoragePath)
	}
	return nil
}

func (c *Controller) Start(context.Context) error {
	c.client = c.cfg.Client
	if c.client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		if c.client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	f := informers.NewSharedInformerFactory(c.client, 10*time.Minute)
	pvc, pv, node, class := f.Core().V1().PersistentVolumeClaims(), f.Core().V1().PersistentVolumes(), f.Core().V1().Nodes(), f.Storage().V1().StorageClasses()
	// Only the cleanup pods' namespace is watched.
	podFactory := informers.NewSharedInformerFactoryWithOptions(c.client, 10*time.Minute, informers.WithNamespace(cleanupNamespace))
	pod := podFactory.Core().V1().Pods()
	c.claims, c.volumes, c.nodes, c.classes, c.pods = pvc.Lister(), pv.Lister(), node.Lister(), class.Lister(), pod.Lister()
	handler := c.loop.Handler()
	for _, inf := range []cache.SharedIndexInformer{pvc.Informer(), pv.Informer(), pod.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	broadcaster := record.NewBroadcaster()
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "skiff-local-storage"})
	c.Go(func(ctx context.Context) error {
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		f.Start(ctx.Done())
		defer f.Shutdown()
		podFactory.Start(ctx.Done())
		defer podFactory.Shutdown()
		c.loop.Run(ctx, 30*time.Second, c.reconcile, pvc.Informer().HasSynced, pv.Informer().HasSynced, node.Informer().HasSynced, class.Informer().HasSynced, pod.Informer().HasSynced)
		return nil
	})
	return nil
}

func (c *Controller) Ready() error { return c.loop.Ready() }

func (c *Controller) Stop() error { return c.Runner.Stop(5 * time.Second) }

func (c *Controller) reconcile(ctx context.Context) {
	claims, _ := c.claims.List(labels.Everything())
	for _, pvc := range claims {
		if err := c.provision(ctx, pvc); err != nil {
			c.log.Warn("provisioning", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
			c.recorder.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		}
	}
	c.dropStaleCreatePods(ctx, claims)
	volumes, _ := c.volumes.List(labels.Everything())
	for _, pv := range volumes {
		if err := c.reclaim(ctx, pv); err != nil {
			c.log.Warn("deleting a released volume", "volume", pv.Name, "err", err)
			c.recorder.Event(pv, corev1.EventTypeWarning, "VolumeFailedDelete", err.Error())
		}
	}
}

// ours reports whether a claim asks for a volume of a class this
// provisioner serves.
func (c *Controller) ours(pvc *corev1.PersistentVolumeClaim) bool {
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName == "" {
		return false
	}
	class, err := c.classes.Get(*pvc.Spec.StorageClassName)
	return err == nil && class.Provisioner == Provisioner
}

func (c *Controller) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	nodeName := pvc.Annotations[selectedNodeAnnotation]
	if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || nodeName == "" || !c.ours(pvc) {
		return nil
	}
	class, _ := c.classes.Get(*pvc.Spec.StorageClassName)
	name := "pvc-" + string(pvc.UID)
	if _, err := c.volumes.Get(name); err == nil {
		return nil
	}
	node, err := c.nodes.Get(nodeName)
	if err != nil {
		return fmt.Errorf("selected node %s: %w", nodeName, err)
	}
	pv, err := Volume(pvc, class.ReclaimPolicy, node, c.cfg.StoragePath)
	if err != nil {
		return err
	}
	// The directory first, made on its node by a helper pod; the volume
	// once that pod has succeeded.
	podName := helperPodName("create", pv.Name)
	pod, err := c.pods.Pods(cleanupNamespace).Get(podName)
	if apierrors.IsNotFound(err) {
		spec, err := CreatePod(pv, c.cfg.HelperImage, c.cfg.StoragePath)
		if err != nil {
			return err
		}
		if _, err := c.client.CoreV1().Pods(cleanupNamespace).Create(ctx, spec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the pod that makes the volume's directory: %w", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Annotations[helperNodeAnnotation] != volumeNode(pv) {
		// The scheduler picked another node meanwhile: start over there.
		return c.deletePod(ctx, podName)
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
	case corev1.PodFailed:
		// Tried again on the next pass, with a fresh pod.
		_ = c.deletePod(ctx, podName)
		return fmt.Errorf("making %s on node %s failed (pod %s/%s)", pv.Spec.HostPath.Path, nodeName, cleanupNamespace, podName)
	default:
		return nil
	}
	if _, err := c.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_ = c.deletePod(ctx, podName)
	c.log.Info("volume provisioned", "claim", pvc.Namespace+"/"+pvc.Name, "node", nodeName, "path", pv.Spec.HostPath.Path)
	c.recorder.Eventf(pvc, corev1.EventTypeNormal, "ProvisioningSucceeded", "volume %s at %s on node %s", name, pv.Spec.HostPath.Path, nodeName)
	return nil
}

// Volume is the PersistentVolume for a claim on a node.
func Volume(pvc *corev1.PersistentVolumeClaim, policy *corev1.PersistentVolumeReclaimPolicy, node *corev1.Node, storagePath string) (*corev1.PersistentVolume, error) {
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return nil, fmt.Errorf("%s gives directories: volumeMode Block is not supported", ClassName)
	}
	size, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return nil, fmt.Errorf("the claim requests no storage size")
	}
	name := "pvc-" + string(pvc.UID)
	reclaim := corev1.PersistentVolumeReclaimDelete
	if policy != nil {
		reclaim = *policy
	}
	hostname := node.Labels[corev1.LabelHostname]
	if hostname == "" {
		hostname = node.Name
	}
	dirType := corev1.HostPathDirectoryOrCreate
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{provisionedByAnnotation: Provisioner},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              *pvc.Spec.StorageClassName,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: filepath.Join(storagePath, name+"_"+pvc.Namespace+"_"+pvc.Name),
				Type: &dirType,
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{hostname},
				}}}},
			}},
		},
	}, nil
}

// reclaim deletes a released volume of ours with the Delete policy: its
// directory first (a pod on its node), then the object.
func (c *Controller) reclaim(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Annotations[provisionedByAnnotation] != Provisioner || pv.Status.Phase != corev1.VolumeReleased ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.HostPath == nil {
		return nil
	}
	podName := helperPodName("cleanup", pv.Name)
	pod, err := c.pods.Pods(cleanupNamespace).Get(podName)
	if apierrors.IsNotFound(err) {
		spec, err := CleanupPod(pv, c.cfg.HelperImage, c.cfg.StoragePath)
		if err != nil {
			return err
		}
		if _, err := c.client.CoreV1().Pods(cleanupNamespace).Create(ctx, spec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		if err := c.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		_ = c.client.CoreV1().Pods(cleanupNamespace).Delete(ctx, podName, metav1.DeleteOptions{})
		c.log.Info("volume deleted", "volume", pv.Name, "path", pv.Spec.HostPath.Path)
	case corev1.PodFailed:
		// Tried again on the next pass, with a fresh pod.
		_ = c.client.CoreV1().Pods(cleanupNamespace).Delete(ctx, podName, metav1.DeleteOptions{})
		return fmt.Errorf("removing %s on its node failed (pod %s/%s)", pv.Spec.HostPath.Path, cleanupNamespace, podName)
	}
	return nil
}

func (c *Controller) deletePod(ctx context.Context, name string) error {
	if err := c.client.CoreV1().Pods(cleanupNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting helper pod %s/%s: %w", cleanupNamespace, name, err)
	}
	return nil
}

// dropStaleCreatePods deletes create-dir pods whose claim no longer waits
// for a volume (deleted, or bound): nothing will collect them otherwise.
func (c *Controller) dropStaleCreatePods(ctx context.Context, claims []*corev1.PersistentVolumeClaim) {
	waiting := map[string]bool{}
	for _, pvc := range claims {
		if pvc.Spec.VolumeName == "" && pvc.Status.Phase == corev1.ClaimPending {
			waiting[string(pvc.UID)] = true
		}
	}
	pods, _ := c.pods.Pods(cleanupNamespace).List(labels.SelectorFromSet(labels.Set{managedByLabel: managedBy}))
	for _, p := range pods {
		if uid, ok := p.Annotations[helperClaimAnnotation]; ok && !waiting[uid] {
			if err := c.deletePod(ctx, p.Name); err != nil {
				c.log.Warn("deleting a stale helper pod", "err", err)
			}
		}
	}
}

func helperPodName(verb, pv string) string {
	name := "local-path-" + verb + "-" + pv
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	return name
}

// CreatePod makes a new volume's directory on the volume's node with mode
// 0777 (see `pause create-dir`), under the same checks as CleanupPod.
func CreatePod(pv *corev1.PersistentVolume, image, storagePath string) (*corev1.Pod, error) {
	return helperPod(pv, "create", image, storagePath)
}

// CleanupPod removes a volume's directory on the volume's node. Only a
// directory this provisioner makes is removed: one directly in the storage
// path, named after the volume (and so the claim's UID). Anyone who may
// edit a PersistentVolume could otherwise have any host directory deleted.
func CleanupPod(pv *corev1.PersistentVolume, image, storagePath string) (*corev1.Pod, error) {
	return helperPod(pv, "cleanup", image, storagePath)
}

// helperPod runs the pause image's create-dir ("create") or remove-dir
// ("cleanup") on a volume's directory, on the volume's node.
func helperPod(pv *corev1.PersistentVolume, verb, image, storagePath string) (*corev1.Pod, error) {
	node := volumeNode(pv)
	if node == "" {
		return nil, fmt.Errorf("volume %s names no node", pv.Name)
	}
	what, mode := "remove", "remove-dir"
	if verb == "create" {
		what, mode = "create", "create-dir"
	}
	dir := filepath.Clean(pv.Spec.HostPath.Path)
	parent := filepath.Dir(dir)
	if parent == "/" || dir == parent {
		return nil, fmt.Errorf("volume %s: refusing to %s %s", pv.Name, what, dir)
	}
	if parent != filepath.Clean(storagePath) {
		return nil, fmt.Errorf("volume %s: refusing to %s %s: not in the storage path %s (moved with --default-local-storage-path? remove it by hand and delete the volume)", pv.Name, what, dir, storagePath)
	}
	if pv.Spec.ClaimRef == nil || pv.Name != "pvc-"+string(pv.Spec.ClaimRef.UID) || !strings.HasPrefix(filepath.Base(dir), pv.Name+"_") {
		return nil, fmt.Errorf("volume %s: refusing to %s %s: not the directory made for its claim", pv.Name, what, dir)
	}
	annotations := map[string]string{}
	if verb == "create" {
		annotations[helperNodeAnnotation] = node
		annotations[helperClaimAnnotation] = string(pv.Spec.ClaimRef.UID)
	}
	dirType := corev1.HostPathDirectoryOrCreate
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: helperPodName(verb, pv.Name), Namespace: cleanupNamespace,
			Labels: map[string]string{managedByLabel: managedBy}, Annotations: annotations},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// The node selector term, not nodeName: the scheduler then
			// matches the volume's hostname label as the volume does.
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: pv.Spec.NodeAffinity.Required,
			}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:            mode,
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/pause", mode, filepath.Join(helperMount, filepath.Base(dir))},
				VolumeMounts:    []corev1.VolumeMount{{Name: "storage", MountPath: helperMount}},
			}},
			Volumes: []corev1.Volume{{Name: "storage", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: parent, Type: &dirType},
			}}},
		},
	}, nil
}

// volumeNode is the hostname a volume is pinned to.
func volumeNode(pv *corev1.PersistentVolume) string {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, t := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == corev1.LabelHostname && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}
