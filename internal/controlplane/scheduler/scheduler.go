// Package scheduler runs kube-scheduler in process.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/controlplane/args"
	"github.com/skiffkube/skiff/internal/controlplane/probe"
)

// Config is what the scheduler component needs.
type Config struct {
	// Args is the full kube-scheduler command line.
	Args []string
}

// Scheduler is the kube-scheduler component.
type Scheduler struct {
	cfg    Config
	log    *slog.Logger
	opts   *options.Options
	health probe.Health
	detach bool
	component.Runner
}

// New returns the scheduler component.
func New(cfg Config, log *slog.Logger) *Scheduler {
	return &Scheduler{cfg: cfg, log: log.With("component", "scheduler")}
}

func (s *Scheduler) Name() string { return "scheduler" }

func (s *Scheduler) Init(context.Context) error {
	o := options.NewOptions()
	if err := args.Parse("kube-scheduler", "kube-scheduler-arg", *o.Flags, s.cfg.Args); err != nil {
		return err
	}
	if err := o.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("applying feature gates: %w", err)
	}
	s.opts = o
	// With leader election the scheduler calls os.Exit when its context ends,
	// so such a scheduler is left running at Stop and ends with the process.
	s.detach = o.LeaderElection.LeaderElect
	s.health = probe.NewHealth(o.SecureServing.BindAddress, o.SecureServing.BindPort)
	return nil
}

func (s *Scheduler) Start(context.Context) error {
	s.Go(func(ctx context.Context) error {
		cc, sched, err := app.Setup(ctx, s.opts)
		if err != nil {
			return fmt.Errorf("setting up kube-scheduler: %w", err)
		}
		return app.Run(ctx, cc, sched)
	})
	return nil
}

func (s *Scheduler) Ready() error {
	return s.health.Check(s.Running())
}

func (s *Scheduler) Stop() error {
	if s.detach {
		return nil
	}
	return s.Runner.Stop(5 * time.Second)
}
