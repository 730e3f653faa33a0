package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/killall"
	"github.com/skiffkube/skiff/internal/logging"
)

func newKillallCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "killall",
		Short: "Stop skiff and its pods and undo their host changes, keeping cluster data",
		Long: `Stop the skiff server, containerd and every pod, then unmount their
filesystems, delete the CNI and flannel network links, remove the
Kubernetes, CNI and flannel firewall rules and the runtime state under
/run/skiff, /run/flannel and /var/lib/cni.

The data dir is kept: ` + "`skiff server`" + ` starts again from where it was.
Stop a service manager's unit first, or it may restart the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("skiff killall must run as root: it signals other users' processes, unmounts filesystems and edits the firewall")
			}
			dir, err := killallDataDir(cmd.Flags().Lookup("data-dir").Changed, dataDir)
			if err != nil {
				return err
			}
			log := logging.New(os.Stderr, logging.Options{})
			ctx, stop := signalContext()
			defer stop()
			rep, err := killall.Run(ctx, killall.Options{DataDir: dir, Log: log})
			fmt.Fprintln(cmd.OutOrStdout(), "skiff killall: "+rep.String())
			if err != nil {
				return fmt.Errorf("killall (some cleanup failed, see above): %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", killall.DefaultDataDir, "the server's data dir (kept); default: the server's own setting")
	return cmd
}

// killallDataDir finds the data dir the server uses. Without --data-dir it
// reads the server's own sources (SKIFF_DATA_DIR, the config file), so that
// killall cleans up the node `skiff server` would run and not another.
func killallDataDir(explicit bool, flagValue string) (string, error) {
	dir := flagValue
	if !explicit {
		cfg := &config.Server{}
		var configFile string
		fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
		cfg.AddFlags(fs)
		config.AddConfigFlag(fs, &configFile)
		if err := config.ApplySources(fs, config.SourcesFromFlags(fs, os.LookupEnv)); err != nil {
			return "", fmt.Errorf("reading the server's settings to find its data dir (or pass --data-dir): %w", err)
		}
		dir = cfg.DataDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data-dir: making %q absolute: %w", dir, err)
	}
	return abs, nil
}
