// Package controllermanager runs kube-controller-manager in process.
package controllermanager

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/rest"
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
	detach bool
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
	// With leader election upstream exits the process when its context ends
	// (lease lost is indistinguishable from shutdown), so such a
	// controller-manager is left running at Stop and ends with the process.
	c.detach = s.Generic.LeaderElection.LeaderElect
	c.health = probe.NewHealth(s.SecureServing.BindAddress, s.SecureServing.BindPort)
	return nil
}

func (c *ControllerManager) Start(context.Context) error {
	c.Go(func(ctx context.Context) error {
		cfg, err := c.opts.Config(ctx, app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
		if err != nil {
			return fmt.Errorf("invalid kube-controller-manager arguments: %w", err)
		}
		return app.Run(ctx, cfg.Complete())
	})
	return nil
}

// Ready probes /healthz on the secure port; without one, running is all
// that can be checked.
func (c *ControllerManager) Ready() error {
	return c.health.Check(c.Running())
}

func (c *ControllerManager) Stop() error {
	if c.detach {
		return nil
	}
	return c.Runner.Stop(5 * time.Second)
}
