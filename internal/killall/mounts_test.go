package killall

import (
	"reflect"
	"strings"
	"testing"
)

const sampleMountInfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
24 22 0:22 / /run rw,nosuid,nodev shared:6 - tmpfs tmpfs rw,mode=755
30 24 0:40 / /run/skiff rw shared:20 - tmpfs tmpfs rw
31 30 0:41 / /run/skiff/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs rw,relatime shared:21 - overlay overlay rw,lowerdir=/srv/skiff/agent/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs
32 30 0:42 / /run/skiff/containerd/io.containerd.grpc.v1.cri/sandboxes/aaa/shm rw,nosuid shared:22 - tmpfs shm rw,size=65536k
33 24 0:4 net:[4026532300] /run/netns/cni-1b2c3d4e-0000-1111-2222-333344445555 rw shared:23 - nsfs nsfs rw
34 24 0:4 net:[4026532301] /run/netns/myns rw shared:24 - nsfs nsfs rw
35 22 0:43 / /var/lib/kubelet/pods/0f1e/volumes/kubernetes.io~projected/kube-api-access-x rw,relatime shared:25 - tmpfs tmpfs rw,size=1024k
36 22 0:44 / /var/lib/kubelet/pods/0f1e/volumes/kubernetes.io~empty-dir/my\040cache rw,relatime shared:26 - tmpfs tmpfs rw
37 22 8:1 /srv/skiff/agent/containerd /srv/skiff/agent/containerd rw,relatime shared:1 - ext4 /dev/sda1 rw
38 37 0:45 / /srv/skiff/agent/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/9/fs rw - overlay overlay rw
39 22 8:2 / /var/lib/kubelet rw,relatime shared:27 - ext4 /dev/sdb1 rw
40 22 0:46 / /var/lib/kubelet/plugins/kubernetes.io/csi/pv/p1/globalmount rw master:3 - ext4 /dev/rbd0 rw
41 22 0:47 / /var/lib/kubelet-other/pods/x rw - tmpfs tmpfs rw
42 22 0:48 / /run/skiff2 rw - tmpfs tmpfs rw
43 22 0:49 / /srv/skiff/data rw - tmpfs tmpfs rw
44 22 0:50 / /mnt/a\040b\134c rw - tmpfs my\040src rw
45 30 0:51 / /run/skiff rw shared:28 - tmpfs tmpfs rw
`

func TestParseMountInfo(t *testing.T) {
	ms, err := ParseMountInfo(strings.NewReader(sampleMountInfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 19 {
		t.Fatalf("parsed %d mounts, want 19", len(ms))
	}
	want := Mount{ID: 44, ParentID: 22, MountPoint: `/mnt/a b\c`, FSType: "tmpfs", Source: "my src"}
	if ms[17] != want {
		t.Errorf("escaped line = %+v, want %+v", ms[17], want)
	}
	// Optional fields vary in number; type and source follow the "-".
	if ms[0].FSType != "ext4" || ms[0].Source != "/dev/sda1" || ms[1].FSType != "proc" {
		t.Errorf("fs types: %+v %+v", ms[0], ms[1])
	}
	if _, err := ParseMountInfo(strings.NewReader("1 2 3:4 / /x rw no-separator\n")); err == nil {
		t.Error("line without ' - ': want an error")
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:  "/a b",
		`/t\011ab`: "/t\tab",
		`/n\012l`:  "/n\nl",
		`/b\134s`:  `/b\s`,
		`/end\04`:  `/end\04`, // truncated escape stays as it is
		`/plain`:   "/plain",
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSelectMounts(t *testing.T) {
	ms, err := ParseMountInfo(strings.NewReader(sampleMountInfo))
	if err != nil {
		t.Fatal(err)
	}
	roots := []string{"/run/skiff", "/var/lib/kubelet/pods", "/var/lib/kubelet/plugins", "/srv/skiff/agent/containerd"}
	var got []string
	for _, m := range SelectMounts(ms, roots, "/run/netns") {
		got = append(got, m.MountPoint)
	}
	want := []string{
		"/var/lib/kubelet/plugins/kubernetes.io/csi/pv/p1/globalmount",
		"/var/lib/kubelet/pods/0f1e/volumes/kubernetes.io~projected/kube-api-access-x",
		"/var/lib/kubelet/pods/0f1e/volumes/kubernetes.io~empty-dir/my cache",
		"/srv/skiff/agent/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/9/fs",
		"/run/skiff/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs",
		"/run/skiff/containerd/io.containerd.grpc.v1.cri/sandboxes/aaa/shm",
		"/srv/skiff/agent/containerd",
		"/run/netns/cni-1b2c3d4e-0000-1111-2222-333344445555",
		"/run/skiff", // stacked twice: the later mount first
		"/run/skiff",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SelectMounts =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	sel := SelectMounts(ms, roots, "/run/netns")
	if sel[len(sel)-2].ID != 45 || sel[len(sel)-1].ID != 30 {
		t.Errorf("stacked /run/skiff order: %d then %d, want 45 then 30", sel[len(sel)-2].ID, sel[len(sel)-1].ID)
	}
}
