package localstorage

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

func claim() *corev1.PersistentVolumeClaim {
	class := ClassName
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "apps", UID: "1234"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func TestVolumeIsPinnedToTheNode(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "host-1"}}}
	pv, err := Volume(claim(), nil, n, "/var/lib/skiff/storage")
	if err != nil {
		t.Fatal(err)
	}
	if pv.Name != "pvc-1234" || pv.Spec.HostPath.Path != "/var/lib/skiff/storage/pvc-1234_apps_data" ||
		*pv.Spec.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("volume %s at %+v", pv.Name, pv.Spec.HostPath)
	}
	if volumeNode(pv) != "host-1" || pv.Spec.ClaimRef.UID != "1234" || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("node %q, claim %+v, reclaim %s", volumeNode(pv), pv.Spec.ClaimRef, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if pv.Spec.Capacity.Storage().String() != "1Gi" || pv.Annotations[provisionedByAnnotation] != Provisioner {
		t.Errorf("capacity %s, annotations %v", pv.Spec.Capacity.Storage(), pv.Annotations)
	}

	block := claim()
	mode := corev1.PersistentVolumeBlock
	block.Spec.VolumeMode = &mode
	if _, err := Volume(block, nil, n, "/s"); err == nil || !strings.Contains(err.Error(), "Block") {
		t.Errorf("block claim: %v", err)
	}
}

func TestCleanupPodRemovesOnlyTheVolumeDir(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	pv, _ := Volume(claim(), nil, n, "/var/lib/skiff/storage")
	pod, err := CleanupPod(pv, "skiff.local/skiff/pause:1.0", "/var/lib/skiff/storage/")
	if err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if strings.Join(c.Command, " ") != "/pause remove-dir /storage/pvc-1234_apps_data" || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("command %q pull %s", c.Command, c.ImagePullPolicy)
	}
	if pod.Spec.Volumes[0].HostPath.Path != "/var/lib/skiff/storage" || pod.Spec.Affinity.NodeAffinity == nil {
		t.Errorf("volumes %+v affinity %+v", pod.Spec.Volumes, pod.Spec.Affinity)
	}
	for path, want := range map[string]string{
		"/":                                   "refusing to remove /",
		"/srv/data":                           "not in the storage path",
		"/var/lib/skiff/storage/../../../etc": "not in the storage path",
		"/var/lib/skiff/storage/important":    "not the directory made for its claim",
		"/var/lib/skiff/storage/pvc-9999_x_y": "not the directory made for its claim",
	} {
		bad := pv.DeepCopy()
		bad.Spec.HostPath.Path = path
		if _, err := CleanupPod(bad, "x", "/var/lib/skiff/storage"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("volume at %s: %v, want an error containing %q", path, err, want)
		}
	}
	renamed := pv.DeepCopy()
	renamed.Name = "pvc-other"
	if _, err := CleanupPod(renamed, "x", "/var/lib/skiff/storage"); err == nil {
		t.Error("a volume not named after its claim's UID had its directory removed")
	}
}

func TestManifestIsTheDefaultClass(t *testing.T) {
	var sc storagev1.StorageClass
	if err := yaml.UnmarshalStrict(Manifest(), &sc); err != nil {
		t.Fatal(err)
	}
	if sc.Name != ClassName || sc.Provisioner != Provisioner || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
		sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("storage class %+v", sc)
	}
}

func TestCreatePodMakesTheVolumeDirOnItsNode(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "host-1"}}}
	pv, _ := Volume(claim(), nil, n, "/var/lib/skiff/storage")
	pod, err := CreatePod(pv, "skiff.local/skiff/pause:1.0", "/var/lib/skiff/storage")
	if err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if strings.Join(c.Command, " ") != "/pause create-dir /storage/pvc-1234_apps_data" || pod.Name != "local-path-create-pvc-1234" {
		t.Errorf("pod %s command %q", pod.Name, c.Command)
	}
	if pod.Annotations[helperNodeAnnotation] != "host-1" || pod.Annotations[helperClaimAnnotation] != "1234" ||
		pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values[0] != "host-1" {
		t.Errorf("annotations %v affinity %+v", pod.Annotations, pod.Spec.Affinity.NodeAffinity)
	}
	bad := pv.DeepCopy()
	bad.Spec.HostPath.Path = "/etc"
	if _, err := CreatePod(bad, "x", "/var/lib/skiff/storage"); err == nil || !strings.Contains(err.Error(), "refusing to create") {
		t.Errorf("volume at /etc: %v", err)
	}
}

// TestProvisionWaitsForTheDirectory drives the controller on a fake
// cluster: a claim gets a create-dir pod on its node first and its volume
// only once that pod has succeeded; a failed pod is reported and replaced.
func TestProvisionWaitsForTheDirectory(t *testing.T) {
	ctx := context.Background()
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: ClassName}, Provisioner: Provisioner}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "host-1"}}}
	pvc := claim()
	pvc.Annotations = map[string]string{selectedNodeAnnotation: "n1"}
	pvc.Status.Phase = corev1.ClaimPending
	client := fake.NewSimpleClientset(class, node, pvc)
	c := New(Config{StoragePath: "/var/lib/skiff/storage", HelperImage: "pause:1", Client: client}, slog.New(slog.DiscardHandler))
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	pods := client.CoreV1().Pods(cleanupNamespace)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	podNamed := func(name string) func() bool {
		return func() bool { _, err := pods.Get(ctx, name, metav1.GetOptions{}); return err == nil }
	}
	waitFor("the create-dir pod", podNamed("local-path-create-pvc-1234"))
	if _, err := client.CoreV1().PersistentVolumes().Get(ctx, "pvc-1234", metav1.GetOptions{}); err == nil {
		t.Fatal("volume created before its directory was made")
	}
	setPhase := func(phase corev1.PodPhase) {
		t.Helper()
		p, err := pods.Get(ctx, "local-path-create-pvc-1234", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = phase
		if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// A failure: reported on the claim, the pod deleted and made again.
	setPhase(corev1.PodFailed)
	waitFor("a ProvisioningFailed event", func() bool {
		evs, _ := client.CoreV1().Events("apps").List(ctx, metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, "pvc-1234_apps_data") {
				return true
			}
		}
		return false
	})
	waitFor("a fresh create-dir pod", func() bool {
		p, err := pods.Get(ctx, "local-path-create-pvc-1234", metav1.GetOptions{})
		return err == nil && p.Status.Phase == ""
	})

	setPhase(corev1.PodSucceeded)
	waitFor("the volume", func() bool {
		_, err := client.CoreV1().PersistentVolumes().Get(ctx, "pvc-1234", metav1.GetOptions{})
		return err == nil
	})
	waitFor("the create-dir pod to go", func() bool { return !podNamed("local-path-create-pvc-1234")() })
}
