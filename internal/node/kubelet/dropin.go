package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	cliflag "k8s.io/component-base/cli/flag"
	kubeletconfigv1beta1 "k8s.io/kubelet/config/v1beta1"
	kubeletoptions "k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletconfigconversion "k8s.io/kubernetes/pkg/kubelet/apis/config/v1beta1"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

// dropinSuffix is the only suffix the kubelet reads in its --config-dir.
const dropinSuffix = ".conf"

// configFlags finds the user's --config and --config-dir among the kubelet
// flags (from --kubelet-arg), parsing into throwaway values so that the real
// parse, after the files are merged, gives flags the last word.
func configFlags(args []string) (file, dir string, err error) {
	kf := kubeletoptions.NewKubeletFlags()
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.SetOutput(io.Discard)
	kf.AddFlags(fs)
	kubeletoptions.AddKubeletConfigFlags(fs, &kubeletconfig.KubeletConfiguration{})
	if err := fs.Parse(args); err != nil {
		return "", "", fmt.Errorf("kubelet arguments (set through --kubelet-arg): %w", err)
	}
	return kf.KubeletConfigFile, kf.KubeletDropinConfigDirectory, nil
}

// DropinFiles lists the drop-ins in dir as the kubelet's --config-dir reads
// them: every *.conf file, in lexical order, subdirectories included (each
// after the files that sort before it). skipped are the other files. A
// missing dir is an error only when required (the user named it).
func DropinFiles(dir string, required bool) (files, skipped []string, err error) {
	if dir == "" {
		return nil, nil, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && !required {
		return nil, nil, nil
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir():
		case filepath.Ext(d.Name()) == dropinSuffix:
			files = append(files, path)
		default:
			skipped = append(skipped, path)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet drop-in directory %s: %w", dir, err)
	}
	return files, skipped, nil
}

// MergeDropins merges each file (a partial KubeletConfiguration, YAML or
// JSON, apiVersion kubelet.config.k8s.io/v1beta1) over kc in order, as a JSON
// merge patch: a field a file sets replaces the one before, a list is
// replaced as a whole, an object is merged field by field. This is the
// kubelet's own --config-dir merge (cmd/kubelet/app), which the in-process
// kubelet does not run. Errors name the file.
func MergeDropins(kc *kubeletconfig.KubeletConfiguration, files []string) error {
	if len(files) == 0 {
		return nil
	}
	versioned := &kubeletconfigv1beta1.KubeletConfiguration{}
	if err := kubeletconfigconversion.Convert_config_KubeletConfiguration_To_v1beta1_KubeletConfiguration(kc, versioned, nil); err != nil {
		return fmt.Errorf("kubelet config: %w", err)
	}
	merged, err := json.Marshal(versioned)
	if err != nil {
		return fmt.Errorf("kubelet config: %w", err)
	}
	want := kubeletconfigv1beta1.SchemeGroupVersion.WithKind("KubeletConfiguration")
	for _, path := range files {
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("kubelet drop-in %s: %w", path, err)
		}
		loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, abs)
		if err != nil {
			return fmt.Errorf("kubelet drop-in %s: %w", path, err)
		}
		patch, gvk, err := loader.LoadIntoJSON()
		if err != nil {
			return fmt.Errorf("kubelet drop-in %s: %w", path, err)
		}
		if gvk == nil || *gvk != want {
			return fmt.Errorf("kubelet drop-in %s: want apiVersion %s and kind %s", path, want.GroupVersion(), want.Kind)
		}
		// Each file's values are checked against the types here, so that
		// an error names its file; unknown fields pass, as in the kubelet.
		if err := json.Unmarshal(patch, &kubeletconfigv1beta1.KubeletConfiguration{}); err != nil {
			return fmt.Errorf("kubelet drop-in %s: %w", path, err)
		}
		if merged, err = jsonpatch.MergePatch(merged, patch); err != nil {
			return fmt.Errorf("kubelet drop-in %s: merging: %w", path, err)
		}
	}
	versioned = &kubeletconfigv1beta1.KubeletConfiguration{}
	if err := json.Unmarshal(merged, versioned); err != nil {
		return fmt.Errorf("kubelet drop-ins: %w", err)
	}
	kubeletconfigconversion.SetDefaults_KubeletConfiguration(versioned)
	if err := kubeletconfigconversion.Convert_v1beta1_KubeletConfiguration_To_config_KubeletConfiguration(versioned, kc, nil); err != nil {
		return fmt.Errorf("kubelet drop-ins: %w", err)
	}
	return nil
}
