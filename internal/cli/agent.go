package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/skiffkube/skiff/internal/agent"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/logging"
	"github.com/skiffkube/skiff/internal/sdnotify"
)

func newAgentCommand() *cobra.Command {
	cfg := &config.Agent{}
	var configFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Join this machine to a cluster as a node",
		Long: `Join a server as a node: containerd, kubelet, kube-proxy and flannel,
with credentials the server issues when the token is accepted.

  skiff agent --server https://SERVER:6443 --token TOKEN

Settings come from flags, then SKIFF_<FLAG> environment variables (SKIFF_URL and
SKIFF_TOKEN too), then the config file, then defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Before anything starts: embedded components would notify too early.
			sdnotify.Claim()
			complete := func() error {
				// K3s users set K3S_URL; the skiff name is SKIFF_URL.
				if cfg.Server == "" {
					cfg.Server = os.Getenv("SKIFF_URL")
				}
				return cfg.Complete()
			}
			if _, err := loadConfig(cmd.Flags(), complete, cfg.Validate); err != nil {
				return err
			}
			log := logging.New(os.Stderr, logging.Options{Debug: cfg.Debug, Verbosity: cfg.LogLevel})
			ctx, stop := signalContext()
			defer stop()
			return agent.Run(ctx, cfg, log)
		},
	}
	cfg.AddFlags(cmd.Flags())
	config.AddConfigFlag(cmd.Flags(), &configFile)
	cmd.Flags().SortFlags = false
	return cmd
}
