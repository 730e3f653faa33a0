// Package scheduler runs kube-scheduler in process.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	genericfeatures "k8s.io/apiserver/pkg/features"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/tools/leaderelection"
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
	// elect: skiff runs the leader election around upstream's Run (see run).
	elect bool
	// detach: upstream runs its own election, which exits the process when
	// it ends; such a scheduler is left running at Stop.
	detach bool
	// standby is true while an electing scheduler waits for the lease: it
	// serves nothing yet.
	standby atomic.Bool
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
	if o.LeaderElection.LeaderElect {
		// Coordinated election needs upstream's lease candidate, which only
		// its own election starts: that rare opt-in keeps upstream's path.
		s.detach = utilfeature.DefaultFeatureGate.Enabled(genericfeatures.CoordinatedLeaderElection)
		s.elect = !s.detach
	}
	s.health = probe.NewHealth(o.SecureServing.BindAddress, o.SecureServing.BindPort)
	return nil
}

func (s *Scheduler) Start(context.Context) error {
	s.standby.Store(s.elect)
	s.Go(s.run)
	return nil
}

// run sets the scheduler up and runs it. With leader election, upstream's
// Run would call os.Exit when its election ends, so skiff elects with
// client-go's elector (upstream's lock and timings, ReleaseOnCancel) and runs
// upstream's Run, without election, while it leads. At a stop the scheduler
// is stopped first, then the Lease is released: another server's scheduler
// takes over at once. A lost lease stops the scheduler and is returned.
func (s *Scheduler) run(ctx context.Context) error {
	cc, sched, err := app.Setup(ctx, s.opts)
	if err != nil {
		return fmt.Errorf("setting up kube-scheduler: %w", err)
	}
	if !s.elect {
		return app.Run(ctx, cc, sched)
	}
	lec := *cc.LeaderElection
	cc.LeaderElection = nil
	cc.ComponentConfig.LeaderElection.LeaderElect = false
	// Its health adaptor belongs to upstream's endpoints, which only run
	// while leading here.
	lec.WatchDog = nil
	lec.ReleaseOnCancel = true
	leading := make(chan context.Context, 1)
	lec.Callbacks = leaderelection.LeaderCallbacks{
		OnStartedLeading: func(lctx context.Context) { leading <- lctx },
		OnStoppedLeading: func() {},
	}
	elector, err := leaderelection.NewLeaderElector(lec)
	if err != nil {
		return fmt.Errorf("kube-scheduler leader election: %w", err)
	}
	// The election outlives ctx so that the Lease is released only once the
	// scheduler has stopped.
	electCtx, stopElecting := context.WithCancel(context.WithoutCancel(ctx))
	elected := make(chan struct{})
	go func() {
		defer close(elected)
		elector.Run(electCtx)
	}()
	defer func() {
		stopElecting()
		<-elected
	}()

	var lctx context.Context
	select {
	case <-ctx.Done():
		return nil
	case lctx = <-leading:
	}
	if ctx.Err() != nil {
		return nil
	}
	s.log.Debug("leading", "lease", lec.Lock.Describe())
	runCtx, cancel := context.WithCancel(lctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	s.standby.Store(false)
	err = app.Run(runCtx, cc, sched)
	switch {
	case ctx.Err() != nil:
		return nil
	case lctx.Err() != nil:
		return fmt.Errorf("lost its leader-election lease %s", lec.Lock.Describe())
	default:
		return err
	}
}

// Ready probes /healthz on the secure port; a scheduler waiting for the
// lease serves nothing yet, so running is all that can be checked.
func (s *Scheduler) Ready() error {
	if s.standby.Load() {
		return probe.Health{}.Check(s.Running())
	}
	return s.health.Check(s.Running())
}

// Stop stops the scheduler, waiting up to 5 s, and releases its Lease if it
// holds it.
func (s *Scheduler) Stop() error {
	if s.detach {
		return nil
	}
	return s.Runner.Stop(5 * time.Second)
}
