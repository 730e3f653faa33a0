package addons

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/skiffkube/skiff/internal/component"
)

// LeaseNamespace holds the Leases of elected add-ons.
const LeaseNamespace = metav1.NamespaceSystem

// LeaseName is the Lease an elected add-on runs under.
func LeaseName(addon string) string { return "skiff-" + addon }

// ElectedConfig is what an Elected wrapper needs.
type ElectedConfig struct {
	// Name is the add-on's; the Lease is kube-system/skiff-<Name>.
	Name string
	// Identity is this server's name in the Lease (holderIdentity). It is
	// stable across restarts, so a server that restarts before its lease
	// expires takes it back at once.
	Identity   string
	Kubeconfig string
	// Client, when set, replaces the kubeconfig (tests).
	Client   kubernetes.Interface
	Election Election
	// Build returns the add-on's components, fresh for each term.
	Build func() []component.Component
}

// Elected runs an add-on's components on one server of the cluster at a
// time, under client-go's leader election on a Lease: while this server
// holds the lease the components run; when it loses the lease they are
// stopped, and it campaigns again. Stop stops the components first, then
// releases the lease, so that the next leader starts at once and never
// alongside this one.
//
// Ready is nil once a leader is known: this server with its components
// ready, or another server.
type Elected struct {
	cfg    ElectedConfig
	log    *slog.Logger
	client kubernetes.Interface
	begin  time.Time

	mu       sync.Mutex
	inner    []component.Component // running while leading
	leading  bool
	leader   string // last observed holder
	stopping bool
	terms    int
	termStop context.CancelFunc // ends the current term's failure watchers

	failed chan error
	component.Runner
}

// NewElected returns the wrapper.
func NewElected(cfg ElectedConfig, log *slog.Logger) *Elected {
	if cfg.Election == (Election{}) {
		cfg.Election = DefaultElection
	}
	return &Elected{cfg: cfg, log: log.With("component", cfg.Name, "lease", LeaseNamespace+"/"+LeaseName(cfg.Name)), failed: make(chan error, 1)}
}

func (e *Elected) Name() string { return e.cfg.Name }

func (e *Elected) Init(context.Context) error {
	if e.cfg.Identity == "" {
		return errors.New("leader election: empty identity")
	}
	e.client = e.cfg.Client
	if e.client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", e.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("loading %s: %w", e.cfg.Kubeconfig, err)
		}
		if e.client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	return nil
}

// Start campaigns in the background; it does not wait for the lease.
func (e *Elected) Start(context.Context) error {
	e.begin = time.Now()
	e.Go(func(ctx context.Context) error {
		for ctx.Err() == nil {
			le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
				Lock: &resourcelock.LeaseLock{
					LeaseMeta:  metav1.ObjectMeta{Namespace: LeaseNamespace, Name: LeaseName(e.cfg.Name)},
					Client:     e.client.CoordinationV1(),
					LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
				},
				LeaseDuration:   e.cfg.Election.LeaseDuration,
				RenewDeadline:   e.cfg.Election.RenewDeadline,
				RetryPeriod:     e.cfg.Election.RetryPeriod,
				ReleaseOnCancel: true,
				Name:            LeaseName(e.cfg.Name),
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: e.lead,
					OnStoppedLeading: e.unlead,
					OnNewLeader:      e.observe,
				},
			})
			if err != nil {
				return fmt.Errorf("leader election: %w", err)
			}
			// Run returns when the lease is lost (or ctx ends): campaign again.
			le.Run(ctx)
		}
		return nil
	})
	return nil
}

// Failed implements component.FailureReporter: an elected component that
// fails to start or fails while leading fails the server, as it would
// unelected.
func (e *Elected) Failed() <-chan error { return e.failed }

func (e *Elected) fail(err error) {
	select {
	case e.failed <- err:
	default:
	}
}

func (e *Elected) observe(identity string) {
	e.mu.Lock()
	e.leader = identity
	e.mu.Unlock()
	if identity != e.cfg.Identity {
		e.log.Debug("another server leads", "leader", identity)
	}
}

// lead starts a term: builds, inits and starts the components. ctx ends
// when the term does (before unlead is called).
func (e *Elected) lead(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ctx.Err() != nil || e.stopping {
		return
	}
	e.terms++
	e.leader = e.cfg.Identity
	if e.terms == 1 && time.Since(e.begin) < e.cfg.Election.LeaseDuration {
		e.log.Debug("leading", "after", time.Since(e.begin).Round(time.Millisecond))
	} else {
		e.log.Info("leading: this server took over", "term", e.terms)
	}
	comps := e.cfg.Build()
	for _, c := range comps {
		if err := component.Safely(func() error { return c.Init(ctx) }); err != nil {
			e.fail(fmt.Errorf("%s: %w", c.Name(), err))
			return
		}
	}
	termCtx, cancel := context.WithCancel(context.Background())
	e.termStop = cancel
	for _, c := range comps {
		e.inner = append(e.inner, c)
		if err := component.Safely(func() error { return c.Start(ctx) }); err != nil {
			e.fail(fmt.Errorf("starting %s: %w", c.Name(), err))
			return
		}
		if fr, ok := c.(component.FailureReporter); ok {
			go func(name string, ch <-chan error) {
				select {
				case err, ok := <-ch:
					if ok && err != nil {
						e.fail(fmt.Errorf("%s: %w", name, err))
					}
				case <-termCtx.Done():
				}
			}(c.Name(), fr.Failed())
		}
	}
	e.leading = true
}

// unlead ends a term: the lease was lost or is being released.
func (e *Elected) unlead() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leading && !e.stopping {
		e.log.Info("lost the lease: stopping until elected again")
	}
	if e.leader == e.cfg.Identity {
		e.leader = "" // until the next leader is seen
	}
	e.stopInner()
}

// stopInner stops the term's components in reverse order; mu is held.
func (e *Elected) stopInner() {
	if e.termStop != nil {
		e.termStop()
		e.termStop = nil
	}
	for i := len(e.inner) - 1; i >= 0; i-- {
		if err := component.Safely(e.inner[i].Stop); err != nil {
			e.log.Warn("stopping", "part", e.inner[i].Name(), "err", err)
		}
	}
	e.inner, e.leading = nil, false
}

// Leading reports whether this server holds the lease and runs the
// components.
func (e *Elected) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// Ready is nil once a leader is known: this server with its components
// ready, or another server.
func (e *Elected) Ready() error {
	e.mu.Lock()
	leading, leader, inner := e.leading, e.leader, append([]component.Component(nil), e.inner...)
	e.mu.Unlock()
	if leading {
		for _, c := range inner {
			if err := c.Ready(); err != nil {
				return fmt.Errorf("%s: %w", c.Name(), err)
			}
		}
		return nil
	}
	if leader != "" && leader != e.cfg.Identity {
		return nil
	}
	return fmt.Errorf("campaigning for the lease %s/%s", LeaseNamespace, LeaseName(e.cfg.Name))
}

// Stop stops the components, then releases the lease.
func (e *Elected) Stop() error {
	e.mu.Lock()
	e.stopping = true
	e.stopInner()
	e.mu.Unlock()
	return e.Runner.Stop(5 * time.Second)
}
