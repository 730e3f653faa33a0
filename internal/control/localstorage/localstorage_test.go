package localstorage

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
