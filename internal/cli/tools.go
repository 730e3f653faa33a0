package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/containerd/ctr"
	"github.com/skiffkube/skiff/internal/containerd/daemon"
	"github.com/skiffkube/skiff/internal/logging"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/payload"
)

// containerdSocket is the node's containerd socket, for ctr and crictl.
func containerdSocket() string {
	return node.Layout{RunDir: node.DefaultRunDir}.ContainerdSocket()
}

// RunContainerd is the containerd personality (argv[0] "containerd"): skiff starts
// its own binary under that name as the node's container runtime.
func RunContainerd(args []string) int { return daemon.Main(append([]string{"containerd"}, args...)) }

// RunCtr is the ctr personality, preset for the node's containerd.
func RunCtr(args []string) int { return ctr.Main(append([]string{"ctr"}, args...), containerdSocket()) }

// RunCrictl runs the crictl shipped in the node payload, preset for the node's
// containerd. crictl is a main package upstream, so it is a separate executable;
// the one the running node unpacked is used as it is.
func RunCrictl(args []string) int {
	bin, dataDir, err := crictlPath()
	if err != nil {
		fmt.Fprintln(os.Stderr, "skiff crictl:", err)
		return 1
	}
	env := os.Environ()
	// crictl warns on every call when /etc/crictl.yaml is missing, and a
	// host's own file may name another runtime: like K3s, point it at a
	// config of ours unless the user chose one.
	if os.Getenv("CRI_CONFIG_FILE") == "" {
		path, err := writeCrictlConfig(node.Layout{DataDir: dataDir, RunDir: node.DefaultRunDir})
		if err != nil {
			fmt.Fprintln(os.Stderr, "skiff crictl:", err)
			return 1
		}
		env = append(env, "CRI_CONFIG_FILE="+path)
	}
	if os.Getenv("CONTAINER_RUNTIME_ENDPOINT") == "" {
		env = append(env, "CONTAINER_RUNTIME_ENDPOINT=unix://"+containerdSocket())
	}
	if os.Getenv("IMAGE_SERVICE_ENDPOINT") == "" {
		env = append(env, "IMAGE_SERVICE_ENDPOINT=unix://"+containerdSocket())
	}
	err = syscall.Exec(bin, append([]string{"crictl"}, args...), env)
	fmt.Fprintf(os.Stderr, "skiff crictl: running %s: %v\n", bin, err)
	return 1
}

// crictlConfig is crictl's configuration for the node's containerd.
func crictlConfig(socket string) string {
	return "runtime-endpoint: unix://" + socket + "\nimage-endpoint: unix://" + socket + "\n"
}

// writeCrictlConfig writes <data-dir>/agent/etc/crictl.yaml when it is
// missing or differs, and returns its path.
func writeCrictlConfig(l node.Layout) (string, error) {
	path := filepath.Join(l.EtcDir(), "crictl.yaml")
	want := crictlConfig(l.ContainerdSocket())
	if cur, err := os.ReadFile(path); err == nil && string(cur) == want {
		return path, nil
	}
	if err := atomicfile.Write(path, []byte(want), 0o644, 0o755); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

// crictlPath finds crictl under the data dir (SKIFF_DATA_DIR, or the default),
// unpacking the payload only when no node has done so yet. It returns the
// binary and the data dir.
func crictlPath() (bin, dataDir string, err error) {
	if os.Geteuid() != 0 {
		return "", "", fmt.Errorf("must run as root: the node's containerd socket and data dir are root's")
	}
	dataDir = os.Getenv("SKIFF_DATA_DIR")
	if dataDir == "" {
		dataDir = "/var/lib/skiff"
	}
	if _, err := os.Stat(dataDir); err != nil {
		return "", "", fmt.Errorf("data dir %s: %w (set SKIFF_DATA_DIR to the server's --data-dir)", dataDir, err)
	}
	current := filepath.Join(dataDir, "data", "current", "bin", "crictl")
	if _, err := os.Stat(current); err == nil {
		return current, dataDir, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	p, err := payload.Unpack(dataDir, self, logging.New(os.Stderr, logging.Options{}).With("component", "crictl"))
	if err != nil {
		return "", "", err
	}
	return filepath.Join(p.BinDir, "crictl"), dataDir, nil
}

// passthrough is a subcommand that hands every argument to a bundled tool.
func passthrough(use, short string, run func([]string) int, hidden bool) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		Hidden:             hidden,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if code := run(args); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}

func newToolCommands() []*cobra.Command {
	return []*cobra.Command{
		passthrough("crictl", "Run crictl against the node's containerd", RunCrictl, false),
		passthrough("ctr", "Run ctr against the node's containerd (namespace k8s.io)", RunCtr, false),
		passthrough("containerd", "Run the containerd daemon (skiff starts it itself)", RunContainerd, true),
	}
}
