package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/snapshot"
)

// snapshotFlagAliases are the shorter names K3s accepts for the server's
// snapshot flags under `etcd-snapshot`.
var snapshotFlagAliases = map[string]string{
	"dir":                "etcd-snapshot-dir",
	"compress":           "etcd-snapshot-compress",
	"snapshot-retention": "etcd-snapshot-retention",
}

// newEtcdSnapshotCommand is `skiff etcd-snapshot`: snapshots of this
// server's datastore (embedded etcd or SQLite), named and placed as the
// server's scheduled ones. Settings the server has (data dir, snapshot dir,
// compression, node name, retention) are read from the server's own
// sources (config file, SKIFF_* variables) unless given here.
func newEtcdSnapshotCommand() *cobra.Command {
	var (
		configFile string
		given      = map[string]*string{}
	)
	cmd := &cobra.Command{
		Use:   "etcd-snapshot",
		Short: "Save, list, delete and prune snapshots of this server's datastore",
		Long: `Snapshots of this server's datastore: embedded etcd (through etcd's
snapshot API) or SQLite (a consistent online copy through SQLite's backup
API), taken while the server runs. They are files in --etcd-snapshot-dir
(default <data-dir>/server/db/snapshots) named <name>-<node>-<unix time>,
with .zip when compressed, and ETCDSnapshotFile objects in the API
(kubectl get etcdsnapshotfiles). Restore one with
skiff server --cluster-reset --cluster-reset-restore-path FILE.

An external datastore (PostgreSQL, MySQL, an external etcd) is not
snapshotted by skiff: use your database's own backups.

Settings not given here come from the server's: its config file, SKIFF_*
variables, defaults. --dir, --compress and --snapshot-retention are
accepted for --etcd-snapshot-dir, --etcd-snapshot-compress and
--etcd-snapshot-retention, as in K3s.`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	for _, f := range []struct{ name, usage string }{
		{"data-dir", "the server's data dir (default: the server's setting, /var/lib/skiff)"},
		{"etcd-snapshot-dir", "directory of snapshots (default: the server's setting, <data-dir>/server/db/snapshots)"},
		{"node-name", "this server's node name, in snapshot names (default: the server's setting, the host name)"},
		{"datastore-endpoint", "the server's datastore (default: the server's setting)"},
	} {
		given[f.name] = pf.String(f.name, "", f.usage)
	}
	pf.Bool("etcd-snapshot-compress", false, "compress the snapshot (zip) (default: the server's setting)")
	config.AddConfigFlag(pf, &configFile)
	cmd.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if full, ok := snapshotFlagAliases[name]; ok {
			name = full
		}
		return pflag.NormalizedName(name)
	})

	// load reads the server's settings, with this command's flags on top.
	load := func(c *cobra.Command) (*config.Server, string, error) {
		cfg := &config.Server{}
		var serverConfigFile string
		fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
		cfg.AddFlags(fs)
		config.AddConfigFlag(fs, &serverConfigFile)
		set := func(name, value string) error {
			if err := fs.Set(name, value); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
		flags := c.Flags()
		for _, name := range []string{"config", "data-dir", "etcd-snapshot-dir", "node-name", "datastore-endpoint", "etcd-snapshot-compress", "etcd-snapshot-retention"} {
			if f := flags.Lookup(name); f != nil && f.Changed {
				if err := set(name, f.Value.String()); err != nil {
					return nil, "", err
				}
			}
		}
		if err := config.ApplySources(fs, config.SourcesFromFlags(fs, os.LookupEnv)); err != nil {
			return nil, "", fmt.Errorf("reading the server's settings: %w", err)
		}
		if err := cfg.Complete(); err != nil {
			return nil, "", err
		}
		if d := cfg.EtcdSnapshotDir; d != "" && !strings.HasPrefix(d, "/") {
			return nil, "", fmt.Errorf("etcd-snapshot-dir: must be an absolute path, got %q", d)
		}
		node, err := snapshotNodeName(cfg)
		if err != nil {
			return nil, "", err
		}
		return cfg, node, nil
	}

	var name string
	save := &cobra.Command{
		Use:   "save",
		Short: "Take a snapshot now (named <name>-<node>-<unix time>)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, node, err := load(c)
			if err != nil {
				return err
			}
			st, err := snapshot.StoreFor(cfg)
			if err != nil {
				return fmt.Errorf("etcd-snapshot save: %w", err)
			}
			f, err := snapshot.Save(c.Context(), st, snapshot.SaveOptions{
				Dir: cfg.SnapshotDir(), Prefix: name, Node: node, Compress: cfg.EtcdSnapshotCompress,
			})
			if err != nil {
				return fmt.Errorf("etcd-snapshot save: %w", err)
			}
			fmt.Fprintf(c.OutOrStdout(), "Snapshot %s saved: %s (%d bytes)\n", f.Name, f.Path(), f.Size)
			return nil
		},
	}
	save.Flags().StringVar(&name, "name", snapshot.OnDemandPrefix, "the snapshot name's prefix")

	var output string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list", "l"},
		Short:   "List this server's snapshots, oldest first",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("output: %q is not table or json", output)
			}
			cfg, node, err := load(c)
			if err != nil {
				return err
			}
			files, err := snapshot.List(cfg.SnapshotDir(), node)
			if err != nil {
				return err
			}
			return printSnapshots(c, files, output)
		},
	}
	ls.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	del := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete snapshots by name (as ls shows them)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, names []string) error {
			cfg, _, err := load(c)
			if err != nil {
				return err
			}
			deleted, err := snapshot.Delete(cfg.SnapshotDir(), names)
			for _, n := range deleted {
				fmt.Fprintf(c.OutOrStdout(), "Snapshot %s deleted\n", n)
			}
			return err
		},
	}

	var pruneName string
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete this node's snapshots of --name beyond the --snapshot-retention newest",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, node, err := load(c)
			if err != nil {
				return err
			}
			if err := snapshot.CheckPrefix(pruneName); err != nil {
				return err
			}
			removed, err := snapshot.Prune(cfg.SnapshotDir(), pruneName, node, cfg.EtcdSnapshotRetention)
			for _, n := range removed {
				fmt.Fprintf(c.OutOrStdout(), "Snapshot %s deleted\n", n)
			}
			if err == nil && len(removed) == 0 {
				fmt.Fprintf(c.OutOrStdout(), "Nothing to prune: at most %d snapshots named %s-%s-*\n", cfg.EtcdSnapshotRetention, pruneName, node)
			}
			return err
		},
	}
	prune.Flags().StringVar(&pruneName, "name", snapshot.OnDemandPrefix, "prune the snapshots of this name prefix (etcd-snapshot for the scheduled ones)")
	prune.Flags().Int("etcd-snapshot-retention", 0, "how many snapshots to keep (default: the server's setting, 5)")

	cmd.AddCommand(save, ls, del, prune)
	return cmd
}

// snapshotNodeName is the node name the server puts in its snapshots' names.
func snapshotNodeName(cfg *config.Server) (string, error) {
	if !cfg.DisableAgent || cfg.Node.NodeName != "" {
		return cfg.Node.ResolveNodeName(os.Hostname)
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", fmt.Errorf("reading the host name for snapshot names (set --node-name): %v", err)
	}
	return h, nil
}

// printSnapshots writes files as a table (NAME NODE SIZE CREATED) or a
// JSON array of snapshot.File.
func printSnapshots(c *cobra.Command, files []snapshot.File, output string) error {
	if output == "json" {
		if files == nil {
			files = []snapshot.File{}
		}
		enc := json.NewEncoder(c.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(files)
	}
	w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tNODE\tSIZE\tCREATED")
	for _, f := range files {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", f.Name, f.Node, f.Size, f.CreatedAt.UTC().Format(time.RFC3339))
	}
	return w.Flush()
}
