package pki

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfigName names the single cluster and context in every kubeconfig we
// write, as users of K3s-like distributions expect.
const kubeconfigName = "default"

// KubeconfigSpec describes a kubeconfig with one cluster, one user and one
// context.
type KubeconfigSpec struct {
	Path      string
	ServerURL string // e.g. https://127.0.0.1:6444
	CAPEM     []byte // always embedded
	CertPath  string
	KeyPath   string
	// Embed copies the cert and key into the file (a portable admin
	// kubeconfig) instead of referencing their paths. Referencing is better
	// for components: a renewed certificate is picked up without rewriting.
	Embed bool
	User  string      // name of the user entry; "default" when empty
	Mode  os.FileMode // 0600 when zero
}

// WriteKubeconfig writes spec.Path atomically, only when its content changes,
// so the file's mtime stays stable across restarts and tools watching it are
// not woken for nothing. The mode is always enforced, so an existing file with
// looser permissions is fixed. A missing parent directory is created 0755,
// since it may be a shared one such as /etc/skiff.
func WriteKubeconfig(spec KubeconfigSpec) (changed bool, err error) {
	if spec.Path == "" || spec.ServerURL == "" || len(spec.CAPEM) == 0 || spec.CertPath == "" || spec.KeyPath == "" {
		return false, errors.New("kubeconfig spec: Path, ServerURL, CAPEM, CertPath and KeyPath are required")
	}
	mode := spec.Mode
	if mode == 0 {
		mode = 0o600
	}
	user := spec.User
	if user == "" {
		user = kubeconfigName
	}

	authInfo := clientcmdapi.NewAuthInfo()
	if spec.Embed {
		if authInfo.ClientCertificateData, err = os.ReadFile(spec.CertPath); err != nil {
			return false, fmt.Errorf("writing kubeconfig %s: %w", spec.Path, err)
		}
		if authInfo.ClientKeyData, err = os.ReadFile(spec.KeyPath); err != nil {
			return false, fmt.Errorf("writing kubeconfig %s: %w", spec.Path, err)
		}
	} else {
		// Relative paths would be resolved against the kubeconfig's own
		// directory by client-go, not against ours.
		if authInfo.ClientCertificate, err = filepath.Abs(spec.CertPath); err != nil {
			return false, err
		}
		if authInfo.ClientKey, err = filepath.Abs(spec.KeyPath); err != nil {
			return false, err
		}
	}

	cluster := clientcmdapi.NewCluster()
	cluster.Server = spec.ServerURL
	cluster.CertificateAuthorityData = spec.CAPEM

	context := clientcmdapi.NewContext()
	context.Cluster = kubeconfigName
	context.AuthInfo = user

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[kubeconfigName] = cluster
	cfg.AuthInfos[user] = authInfo
	cfg.Contexts[kubeconfigName] = context
	cfg.CurrentContext = kubeconfigName

	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return false, fmt.Errorf("encoding kubeconfig %s: %w", spec.Path, err)
	}

	current, err := readIfExists(spec.Path)
	if err != nil {
		return false, err
	}
	if current != nil && bytes.Equal(current, data) {
		if err := os.Chmod(spec.Path, mode); err != nil {
			return false, fmt.Errorf("setting mode of kubeconfig %s: %w", spec.Path, err)
		}
		return false, nil
	}
	if err := writeFileAtomic(spec.Path, data, mode, 0o755); err != nil {
		return false, err
	}
	return true, nil
}
