package cli

import (
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"

	"github.com/skiffkube/skiff/internal/config"
)

// DefaultKubeconfig is where `skiff server` writes the admin kubeconfig.
const DefaultKubeconfig = "/etc/skiff/skiff.yaml"

func newKubectlCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl",
		Short:              "Run kubectl against this cluster",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			os.Exit(RunKubectl(args))
			return nil
		},
	}
}

// RunKubectl runs upstream kubectl with args and returns its exit code. With
// no kubeconfig chosen it uses the server's admin kubeconfig, so `skiff
// kubectl get nodes` works as it is on a server.
func RunKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" && !hasKubeconfigFlag(args) {
		path := DefaultKubeconfig
		if v := os.Getenv(config.EnvName("write-kubeconfig")); v != "" {
			path = v
		}
		if _, err := os.Stat(path); err == nil {
			os.Setenv("KUBECONFIG", path)
		}
	}
	cmd := kubectlcmd.NewDefaultKubectlCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

func hasKubeconfigFlag(args []string) bool {
	for _, a := range args {
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			return true
		}
	}
	return false
}
