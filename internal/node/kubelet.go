package node

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/skiffkube/skiff/internal/controlplane/args"
)

// KubeletPlan is what the kubelet's configuration depends on.
type KubeletPlan struct {
	Layout        Layout
	NodeName      string
	NodeIP        string
	Labels        []string // key=value
	Taints        []string // key[=value]:Effect
	CgroupDriver  string   // cgroupfs or systemd
	CRIEndpoint   string   // unix:///...
	ClusterDNS    []string
	ClusterDomain string
	ResolvConf    string
	// Address is where the kubelet's API listens: 0.0.0.0 on a server node.
	Address string
	// ProtectKernelDefaults makes the kubelet refuse kernel settings that
	// differ from its defaults instead of writing them
	// (--protect-kernel-defaults).
	ProtectKernelDefaults bool
	// ExternalCloudProvider runs the kubelet with --cloud-provider=external:
	// its addresses are then set by skiff's cloud node controller from the
	// Node's skiff.io address annotations (--node-external-ip).
	ExternalCloudProvider bool
	// ExtraArgs are --kubelet-arg values (key=value), applied last.
	ExtraArgs []string
}

// KubeletConfig renders the kubelet's configuration file.
func KubeletConfig(p KubeletPlan) ([]byte, error) {
	taints, err := parseTaints(p.Taints)
	if err != nil {
		return nil, err
	}
	kc := kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		// Kubernetes 1.37 refuses cgroup v1 unless told otherwise; many edge hosts
		// (and these VMs) still run it.
		FailCgroupV1:             ptr.To(false),
		CgroupDriver:             p.CgroupDriver,
		ContainerRuntimeEndpoint: p.CRIEndpoint,
		Address:                  p.Address,
		HealthzBindAddress:       "127.0.0.1",
		ReadOnlyPort:             0,
		TLSCertFile:              p.Layout.ServingKubelet().Cert,
		TLSPrivateKeyFile:        p.Layout.ServingKubelet().Key,
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: p.Layout.ClientCA()},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization:  kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		ClusterDNS:     p.ClusterDNS,
		ClusterDomain:  p.ClusterDomain,
		ResolverConfig: ptr.To(p.ResolvConf),
		StaticPodPath:  p.Layout.StaticPodDir(),
		// Swap is common on small edge machines; the kubelet then runs without using it.
		FailSwapOn:             ptr.To(false),
		SerializeImagePulls:    ptr.To(false),
		RegisterWithTaints:     taints,
		EvictionHard:           map[string]string{"imagefs.available": "5%", "nodefs.available": "5%"},
		EvictionMinimumReclaim: map[string]string{"imagefs.available": "10%", "nodefs.available": "10%"},
		ProtectKernelDefaults:  p.ProtectKernelDefaults,
	}
	return yaml.Marshal(kc)
}

// KubeletArgs are the kubelet's flags: what the file cannot say, with the user's
// --kubelet-arg values replacing or adding to them.
func KubeletArgs(p KubeletPlan) []string {
	gen := map[string]string{
		"hostname-override": p.NodeName,
		"kubeconfig":        p.Layout.KubeletKubeconfig(),
		"cert-dir":          p.Layout.TLSDir(),
	}
	if p.NodeIP != "" {
		gen["node-ip"] = p.NodeIP
	}
	if p.ExternalCloudProvider {
		gen["cloud-provider"] = "external"
	}
	if len(p.Labels) > 0 {
		labels := append([]string(nil), p.Labels...)
		sort.Strings(labels)
		gen["node-labels"] = strings.Join(labels, ",")
	}
	return args.Build(gen, p.ExtraArgs)
}

func parseTaints(specs []string) ([]corev1.Taint, error) {
	var out []corev1.Taint
	for _, s := range specs {
		kv, effect, ok := strings.Cut(s, ":")
		if !ok {
			return nil, fmt.Errorf("node-taint %q: want key[=value]:Effect", s)
		}
		key, value, _ := strings.Cut(kv, "=")
		out = append(out, corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)})
	}
	return out, nil
}

// KubeProxyPlan is what kube-proxy's flags depend on.
type KubeProxyPlan struct {
	Layout      Layout
	NodeName    string
	ClusterCIDR string
	Mode        string // iptables or nftables
	ExtraArgs   []string
}

// KubeProxyArgs are kube-proxy's flags. Conntrack tuning is off: kube-proxy treats a
// failed sysctl write as fatal, and the kernel defaults serve a small node well.
func KubeProxyArgs(p KubeProxyPlan) []string {
	return args.Build(map[string]string{
		"proxy-mode":                        p.Mode,
		"cluster-cidr":                      p.ClusterCIDR,
		"hostname-override":                 p.NodeName,
		"kubeconfig":                        p.Layout.KubeProxyKubeconfig(),
		"healthz-bind-address":              "127.0.0.1:10256",
		"metrics-bind-address":              "127.0.0.1:10249",
		"conntrack-max-per-core":            "0",
		"conntrack-tcp-timeout-established": "0s",
		"conntrack-tcp-timeout-close-wait":  "0s",
	}, p.ExtraArgs)
}
