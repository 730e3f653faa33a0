package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiffkube/skiff/internal/checkconfig"
	"github.com/skiffkube/skiff/internal/host"
)

func newCheckConfigCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "check-config",
		Short: "Check that this host has what a skiff node needs",
		Long: `Check the kernel, cgroups, modules, tools and settings a skiff node
depends on, and print one line per check with a fix for each problem.

Exits non-zero when an essential feature is missing; warnings are things
skiff works around or that only some workloads need.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := checkconfig.Run(host.Host{}, dataDir)
			checkconfig.Print(cmd.OutOrStdout(), checks)
			if missing := checkconfig.Essential(checks); len(missing) > 0 {
				return fmt.Errorf("missing essential host features: %s", checkconfig.Names(missing))
			}
			return nil
		},
	}
	// The default is that of `skiff server --data-dir`.
	cmd.Flags().StringVar(&dataDir, "data-dir", "/var/lib/skiff", "data dir whose free space to check")
	return cmd
}
