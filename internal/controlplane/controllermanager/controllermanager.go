// Package controllermanager runs kube-controller-manager in process.
package controllermanager

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/rest"
	cmfeatures "k8s.io/controller-manager/pkg/features"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/controlplane/args"
	"github.com/skiffkube/skiff/internal/controlplane/probe"
)

// Config is what the controller-manager component needs.
type Config struct {
	// Args is the full kube-controller-manager command line.
	Args []string
}

// ControllerManager is the kube-controller-manager component.
type ControllerManager struct {
	cfg    Config
	log    *slog.Logger
	opts   *options.KubeControllerManagerOptions
	health probe.Health
	component.Runner
}

// New returns the controller-manager component.
func New(cfg Config, log *slog.Logger) *ControllerManager {
	return &ControllerManager{cfg: cfg, log: log.With("component", "controller-manager")}
}

func (c *ControllerManager) Name() string { return "controller-manager" }

func (c *ControllerManager) Init(context.Context) error {
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return fmt.Errorf("creating options: %w", err)
	}
	fss := s.Flags(app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	s.ParsedFlags = &fss
	if err := args.Parse("kube-controller-manager", "kube-controller-manager-arg", fss, c.cfg.Args); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("applying feature gates: %w", err)
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	c.opts = s
	if s.Generic.LeaderElection.LeaderElect {
		// Without this gate upstream exits the process when its election
		// ends, at a stop as at a lost lease. With it, it releases the Lease
		// at a stop (another server takes over at once) and returns.
		if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(map[string]bool{
			string(cmfeatures.ControllerManagerReleaseLeaderElectionLockOnExit): true,
		}); err != nil {
			return fmt.Errorf("enabling %s: %w", cmfeatures.ControllerManagerReleaseLeaderElectionLockOnExit, err)
		}
	}
	c.health = probe.NewHealth(s.SecureServing.BindAddress, s.SecureServing.BindPort)
	return nil
}

func (c *ControllerManager) Start(context.Context) error {
	c.Go(func(ctx context.Context) error {
		cfg, err := c.opts.Config(ctx, app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
		if err != nil {
			return fmt.Errorf("invalid kube-controller-manager arguments: %w", err)
		}
		le := cfg.ComponentConfig.Generic.LeaderElection
		err = app.Run(ctx, cfg.Complete())
		if err == nil && ctx.Err() == nil && le.LeaderElect {
			// Not our stop and nothing failed: the lease was lost (upstream
			// only logs that). Runner reports it; the server stops.
			return fmt.Errorf("lost its leader-election lease %s/%s", le.ResourceNamespace, le.ResourceName)
		}
		return err
	})
	return nil
}

// Ready probes /healthz on the secure port; without one, running is all
// that can be checked.
func (c *ControllerManager) Ready() error {
	return c.health.Check(c.Running())
}

// Stop cancels the controller-manager and waits up to 5 s for it to return;
// with leader election upstream releases its Lease as it stops.
func (c *ControllerManager) Stop() error {
	return c.Runner.Stop(5 * time.Second)
}
