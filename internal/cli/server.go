package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/logging"
	"github.com/skiffkube/skiff/internal/sdnotify"
	"github.com/skiffkube/skiff/internal/server"
)

func newServerCommand() *cobra.Command {
	cfg := &config.Server{}
	var configFile string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control plane and a node on this machine",
		Long: `Run a Kubernetes server: datastore, certificates, kube-apiserver,
kube-controller-manager and kube-scheduler in one process, and a node
(containerd, kubelet, kube-proxy, flannel) unless --disable-agent.

Settings come from flags, then SKIFF_<FLAG> environment variables, then
the config file (` + config.DefaultConfigFile + ` and its .d/ directory), then defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Before anything starts: embedded components would notify too early.
			sdnotify.Claim()
			origins, err := loadConfig(cmd.Flags(), cfg.Complete, cfg.Validate)
			if err != nil {
				return err
			}
			log := logging.New(os.Stderr, logging.Options{Debug: cfg.Debug, Verbosity: cfg.LogLevel})
			for _, w := range origins.Explain(cfg.Warnings()) {
				log.Warn(w.Error(), "component", "config")
			}
			ctx, stop := signalContext()
			defer stop()
			return server.Run(ctx, cfg, log)
		},
	}
	cfg.AddFlags(cmd.Flags())
	config.AddConfigFlag(cmd.Flags(), &configFile)
	cmd.Flags().SortFlags = false
	return cmd
}

// loadConfig fills a command's typed config from its flags, SKIFF_<FLAG>
// variables and config files, completes it and returns every problem at once,
// each naming the file or variable its value came from. The origins are for
// warnings about the loaded config.
func loadConfig(fs *pflag.FlagSet, complete func() error, validate func() []error) (config.Origins, error) {
	origins, err := config.LoadSources(fs, config.SourcesFromFlags(fs, os.LookupEnv))
	if err != nil {
		return nil, err
	}
	if err := complete(); err != nil {
		return nil, err
	}
	return origins, errors.Join(origins.Explain(validate())...)
}

// signalContext ends on the first SIGINT or SIGTERM; a second one exits at
// once, for a stop that hangs.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "second signal: exiting now")
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
