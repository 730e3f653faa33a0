// Package kubelet runs the kubelet in process from skiff's generated configuration
// file plus flags, on skiff's own context.
//
// The kubelet's cobra command would install a process-wide signal handler and
// re-apply logging, so this replays the command's steps with the exported pieces:
// load the file, let flags override it, validate, build the dependencies, run.
package kubelet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cadvisorcontainerd "github.com/google/cadvisor/lib/container/containerd"
	"github.com/spf13/pflag"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	kubeletoptions "k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/eviction"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"

	"github.com/skiffkube/skiff/internal/component"
)

// Config is what the kubelet component runs with.
type Config struct {
	// ConfigFile is the generated KubeletConfiguration.
	ConfigFile string
	// DropinDir holds the user's KubeletConfiguration drop-ins (*.conf),
	// merged over ConfigFile as the kubelet's own --config-dir does. A
	// config-dir in Args replaces it. A directory that does not exist is
	// skipped.
	DropinDir string
	// Args are kubelet flags; they override the files. config=FILE merges
	// FILE over ConfigFile, before the drop-ins.
	Args []string
	// ContainerdSocket is the containerd socket path (no scheme) for cAdvisor's
	// container stats, or empty with an external runtime.
	ContainerdSocket string
}

// Kubelet is the component.
type Kubelet struct {
	cfg    Config
	log    *slog.Logger
	server *kubeletoptions.KubeletServer
	component.Runner
}

// New returns the kubelet component.
func New(cfg Config, log *slog.Logger) *Kubelet {
	return &Kubelet{cfg: cfg, log: log.With("component", "kubelet")}
}

func (k *Kubelet) Name() string { return "kubelet" }

// Init loads and validates the configuration, so a bad --kubelet-arg fails before
// anything runs. The layers, lowest first: skiff's file, the user's
// config=FILE, the drop-ins in lexical order, the flags.
func (k *Kubelet) Init(ctx context.Context) error {
	userFile, userDir, err := configFlags(k.cfg.Args)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(k.cfg.ConfigFile)
	if err != nil {
		return err
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, abs)
	if err != nil {
		return fmt.Errorf("kubelet config %s: %w", abs, err)
	}
	kc, err := loader.Load(ctx)
	if err != nil {
		return fmt.Errorf("kubelet config %s: %w", abs, err)
	}
	var dropins []string
	if userFile != "" {
		dropins = append(dropins, userFile)
	}
	dir := k.cfg.DropinDir
	if userDir != "" {
		dir = userDir
	}
	files, skipped, err := DropinFiles(dir, userDir != "")
	if err != nil {
		return err
	}
	if len(skipped) > 0 {
		k.log.Info("kubelet drop-in directory: files without the .conf suffix are skipped", "files", skipped)
	}
	if err := MergeDropins(kc, append(dropins, files...)); err != nil {
		return err
	}
	if kc.EvictionHard == nil {
		kc.EvictionHard = maps.Clone(eviction.DefaultEvictionHard)
	} else if kc.MergeDefaultEvictionSettings {
		for key, v := range eviction.DefaultEvictionHard {
			if _, ok := kc.EvictionHard[key]; !ok {
				kc.EvictionHard[key] = v
			}
		}
	}

	// The file is loaded first, so one parse of the flags into it gives flags
	// precedence, as upstream's double parse does.
	kf := kubeletoptions.NewKubeletFlags()
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	// Config-backed flags are all marked deprecated; their warnings are noise here.
	fs.SetOutput(io.Discard)
	kf.AddFlags(fs)
	kubeletoptions.AddKubeletConfigFlags(fs, kc)
	fileGates := kc.FeatureGates
	if err := fs.Parse(k.cfg.Args); err != nil {
		return fmt.Errorf("kubelet arguments (set through --kubelet-arg): %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("kubelet arguments (set through --kubelet-arg): unexpected %q", fs.Arg(0))
	}
	if kc.FeatureGates == nil {
		kc.FeatureGates = map[string]bool{}
	}
	for key, v := range fileGates {
		if _, ok := kc.FeatureGates[key]; !ok {
			kc.FeatureGates[key] = v
		}
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kc.FeatureGates); err != nil {
		return fmt.Errorf("kubelet feature gates: %w", err)
	}
	if err := kubeletoptions.ValidateKubeletFlags(kf); err != nil {
		return fmt.Errorf("kubelet flags: %w", err)
	}
	if err := kubeletvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return fmt.Errorf("kubelet configuration: %w", err)
	}
	k.server = &kubeletoptions.KubeletServer{KubeletFlags: *kf, KubeletConfiguration: *kc}
	return nil
}

func (k *Kubelet) Start(context.Context) error {
	if k.cfg.ContainerdSocket != "" {
		// cAdvisor still reads container stats from containerd directly.
		*cadvisorcontainerd.ArgContainerdEndpoint = k.cfg.ContainerdSocket
	}
	k.Go(func(ctx context.Context) error {
		ctx = klog.NewContext(ctx, klog.LoggerWithName(klog.FromContext(ctx), "kubelet"))
		deps, err := kubeletapp.UnsecuredDependencies(ctx, k.server, utilfeature.DefaultFeatureGate)
		if err != nil {
			return fmt.Errorf("kubelet dependencies: %w", err)
		}
		if err := kubeletapp.Run(ctx, k.server, deps, utilfeature.DefaultFeatureGate); err != nil {
			return fmt.Errorf("kubelet: %w", err)
		}
		// Run returns once the kubelet's loops are started; it keeps running
		// until the process ends.
		<-ctx.Done()
		return nil
	})
	return nil
}

// Ready is nil once the kubelet's health endpoint answers.
func (k *Kubelet) Ready() error {
	if !k.Running() {
		return fmt.Errorf("not running")
	}
	addr := k.server.HealthzBindAddress
	if addr == "" || addr == "0.0.0.0" {
		addr = "127.0.0.1"
	}
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + net.JoinHostPort(addr, strconv.Itoa(int(k.server.HealthzPort))) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// Stop cancels the kubelet's context. Much of the kubelet runs on its own loops
// that only end with the process, which is what follows a stop; pods keep running.
func (k *Kubelet) Stop() error { return k.Runner.Stop(5 * time.Second) }
