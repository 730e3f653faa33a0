package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

const header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Drop-ins merge over the base in lexical order, field by field, as the
// kubelet's --config-dir does; fields they do not name keep the base's value.
func TestMergeDropins(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "kubelet.yaml")
	write(t, base, header+"address: 0.0.0.0\nclusterDomain: cluster.local\nevictionHard:\n  nodefs.available: 5%\nfailSwapOn: false\n")
	dropins := filepath.Join(dir, "kubelet.conf.d")
	write(t, filepath.Join(dropins, "20-later.conf"), header+"shutdownGracePeriod: 30s\nimageMaximumGCAge: 2h\n")
	write(t, filepath.Join(dropins, "10-first.conf"), header+"imageMaximumGCAge: 6h\nshutdownGracePeriodCriticalPods: 10s\nevictionHard:\n  memory.available: 100Mi\n")
	write(t, filepath.Join(dropins, "README.txt"), "not a drop-in")

	files, skipped, err := DropinFiles(dropins, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dropins, "10-first.conf"), filepath.Join(dropins, "20-later.conf")}; !slices.Equal(files, want) {
		t.Errorf("files %q, want %q", files, want)
	}
	if len(skipped) != 1 || !strings.HasSuffix(skipped[0], "README.txt") {
		t.Errorf("skipped %q", skipped)
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, base)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := loader.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := MergeDropins(kc, files); err != nil {
		t.Fatal(err)
	}
	if kc.ShutdownGracePeriod.Duration != 30*time.Second || kc.ShutdownGracePeriodCriticalPods.Duration != 10*time.Second {
		t.Errorf("graceful shutdown %v/%v", kc.ShutdownGracePeriod, kc.ShutdownGracePeriodCriticalPods)
	}
	if kc.ImageMaximumGCAge.Duration != 2*time.Hour {
		t.Errorf("imageMaximumGCAge %v, want the later file's 2h", kc.ImageMaximumGCAge)
	}
	if kc.Address != "0.0.0.0" || kc.ClusterDomain != "cluster.local" || kc.FailSwapOn {
		t.Errorf("base fields lost: address %q, domain %q, failSwapOn %v", kc.Address, kc.ClusterDomain, kc.FailSwapOn)
	}
	if kc.EvictionHard["memory.available"] != "100Mi" || kc.EvictionHard["nodefs.available"] != "5%" {
		t.Errorf("evictionHard %v: a map merges key by key", kc.EvictionHard)
	}
}

func TestMergeDropinsErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "kubelet.yaml")
	write(t, base, header)
	for name, content := range map[string]string{
		"wrong-kind.conf": "apiVersion: v1\nkind: ConfigMap\n",
		"no-kind.conf":    "imageMaximumGCAge: 6h\n",
		"bad-yaml.conf":   header + "imageMaximumGCAge: [\n",
		"bad-field.conf":  header + "imageMaximumGCAge: soon\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			write(t, path, content)
			loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, base)
			if err != nil {
				t.Fatal(err)
			}
			kc, err := loader.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			err = MergeDropins(kc, []string{path})
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("got %v, want an error naming %s", err, path)
			}
		})
	}
}

func TestDropinDirs(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	if files, _, err := DropinFiles(missing, false); err != nil || files != nil {
		t.Errorf("missing default dir: %q, %v", files, err)
	}
	if _, _, err := DropinFiles(missing, true); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing named dir: %v", err)
	}
	file, dir, err := configFlags([]string{"--config=/etc/k.yaml", "--config-dir=/etc/k.d", "--max-pods=50"})
	if err != nil || file != "/etc/k.yaml" || dir != "/etc/k.d" {
		t.Errorf("configFlags: %q, %q, %v", file, dir, err)
	}
}
