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
		Short: "Stop skiff and its pods in this namespace and undo their host changes, keeping cluster data",
		Long: `Stop every skiff server and agent, containerd and every pod in this
command's mount or network namespace, then unmount their filesystems, delete
the CNI and flannel network links and skiff's service routes (proto 165),
remove the Kubernetes, CNI, flannel and network policy firewall rules
(iptables and nftables; in portmap's shared cni_hostport table only skiff's
pods' rules) and the runtime state under /run/skiff, /run/flannel and
/var/lib/cni.

Skiff's processes are found by what they are, whatever data dir they use;
--data-dir only names one more data dir whose containerd mounts to undo. A
skiff node in other mount and network namespaces (a container, the
multi-node test harness) is left alone, with the state dirs it shares. The
node lock (/run/skiff/node.lock) is held while dismantling, so a node started
meanwhile is refused. If a node process cannot be stopped or holds the lock,
nothing is removed.

The data dir is kept: ` + "`skiff server`" + ` starts again from where it was.
Stop a service manager's unit first, or it may restart the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("skiff killall must run as root: it signals other users' processes, unmounts filesystems and edits the firewall")
			}
			log := logging.New(os.Stderr, logging.Options{})
			explicit := cmd.Flags().Lookup("data-dir").Changed
			dir, err := killallDataDir(explicit, dataDir)
			if err != nil {
				if explicit {
					return err
				}
				// Only a hint: the running node and its record name their
				// data dirs, and a broken config must not stop a cleanup.
				log.Warn("not reading the server's data dir from its settings", "component", "killall", "err", err)
				dir = ""
			}
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
	cmd.Flags().StringVar(&dataDir, "data-dir", killall.DefaultDataDir, "a data dir whose containerd mounts to undo too (kept); default: the server's own setting. Processes are found whatever their data dir")
	return cmd
}

// killallDataDir finds the data dir the server would use. Without
// --data-dir it reads the server's own sources (SKIFF_DATA_DIR, the config
// file), so that killall undoes that data dir's mounts even when no node
// process or record names it any more.
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
