package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Phase is a group of components that start together once every earlier phase
// is ready. Components in one phase start in parallel.
type Phase struct {
	Name       string
	Components []Component
	// ReadyTimeout bounds the wait for every component of the phase to be
	// ready; zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// AfterReady, when set, runs once the phase is ready, before the next
	// phase starts and before the phase's "ready" line (something users can
	// have before start-up ends, such as a kubeconfig once the API answers).
	// An error fails the start-up like a component's.
	AfterReady func() error
}

// lateGrace is what the components left to stop share once a stop's deadline
// has passed.
const lateGrace = 2 * time.Second

// DefaultReadyTimeout is how long a phase may take to become ready.
const DefaultReadyTimeout = 2 * time.Minute

// readyPollInterval is short because start-up time is a feature: a phase that
// becomes ready should not wait long to be noticed.
const readyPollInterval = 25 * time.Millisecond

// FailureReporter is implemented by components whose long-running work can fail
// after Start returned (a server that stops serving, say). The manager watches
// the channel and reports the first error through Manager.Failed.
type FailureReporter interface {
	Failed() <-chan error
}

// Manager starts phases in order and stops what it started in reverse.
type Manager struct {
	log     *slog.Logger
	phases  []Phase
	mu      sync.Mutex
	started []Component // in start order
	failed  chan error
	stopped bool
	// beforeStop runs once when Serve begins to stop.
	beforeStop func()
	// onReady is told each phase's name as it becomes ready.
	onReady func(phase string)
}

// NewManager returns a manager for phases, to be started in the given order.
func NewManager(log *slog.Logger, phases ...Phase) *Manager {
	return &Manager{log: log, phases: phases, failed: make(chan error, 1)}
}

// OnPhaseReady calls fn with each phase's name once the phase (and its
// AfterReady) is ready, in start order, from Start's goroutine. Set it
// before Start; skiff records start-up phase metrics with it.
func (m *Manager) OnPhaseReady(fn func(phase string)) { m.onReady = fn }

// Failed delivers the first error of a started component that failed after it
// was started.
func (m *Manager) Failed() <-chan error { return m.failed }

// Start runs Init and Start on every component, phase after phase, waiting for
// each phase to be ready before the next. On error it stops what it started.
// It logs one line per phase with the phase's duration.
func (m *Manager) Start(ctx context.Context) error {
	for _, p := range m.phases {
		begin := time.Now()
		err := m.startPhase(ctx, p)
		if err == nil && p.AfterReady != nil {
			err = p.AfterReady()
		}
		if err != nil {
			if stopErr := m.Stop(10 * time.Second); stopErr != nil {
				m.log.Warn("stopping after failed start", "err", stopErr)
			}
			return err
		}
		m.log.Info(fmt.Sprintf("%s ready in %s", p.Name, FormatDuration(time.Since(begin))), "component", p.Name)
		if m.onReady != nil {
			m.onReady(p.Name)
		}
	}
	return nil
}

func (m *Manager) startPhase(ctx context.Context, p Phase) error {
	for _, c := range p.Components {
		if err := m.call(c, "Init", func() error { return c.Init(ctx) }); err != nil {
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
	}
	for _, c := range p.Components {
		m.mu.Lock()
		if m.stopped {
			m.mu.Unlock()
			return errors.New("manager stopped during start-up")
		}
		m.started = append(m.started, c)
		m.mu.Unlock()
		if err := m.call(c, "Start", func() error { return c.Start(ctx) }); err != nil {
			return fmt.Errorf("starting %s: %w", c.Name(), err)
		}
		if fr, ok := c.(FailureReporter); ok {
			go m.watch(c.Name(), fr.Failed())
		}
	}
	timeout := p.ReadyTimeout
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	return m.waitReady(ctx, p, timeout)
}

// call runs one of c's lifecycle methods, turning a panic into an error
// (logged here with its stack).
func (m *Manager) call(c Component, method string, fn func() error) error {
	err := Safely(fn)
	if pe, ok := err.(*PanicError); ok {
		m.logPanic(c.Name(), method, pe)
	}
	return err
}

// logPanic logs a panic caught at the component boundary with its stack.
func (m *Manager) logPanic(name, where string, pe *PanicError) {
	m.log.Error("component panicked", "component", name, "in", where, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
}

func (m *Manager) watch(name string, ch <-chan error) {
	err, ok := <-ch
	if !ok || err == nil {
		return
	}
	if pe, ok := asPanic(err); ok {
		m.logPanic(name, "its running work", pe)
	}
	select {
	case m.failed <- fmt.Errorf("%s: %w", name, err):
	default:
	}
}

func (m *Manager) waitReady(ctx context.Context, p Phase, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(readyPollInterval)
	defer tick.Stop()
	pending := append([]Component(nil), p.Components...)
	lastErr := map[string]error{}
	for {
		var still []Component
		for _, c := range pending {
			if err := m.call(c, "Ready", c.Ready); err != nil {
				if _, ok := err.(*PanicError); ok {
					return fmt.Errorf("%s: %w", c.Name(), err)
				}
				lastErr[c.Name()] = err
				still = append(still, c)
			}
		}
		if len(still) == 0 {
			return nil
		}
		pending = still
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", p.Name, ctx.Err())
		case err := <-m.failed:
			return err
		case <-deadline.C:
			c := pending[0]
			return fmt.Errorf("%s not ready after %s: %w", c.Name(), timeout, lastErr[c.Name()])
		case <-tick.C:
		}
	}
}

// Stop stops every started component in reverse start order. Each component
// gets what is left of timeout; Stop returns once all have been asked, joining
// their errors. It is idempotent.
func (m *Manager) Stop(timeout time.Duration) error {
	m.mu.Lock()
	m.stopped = true
	started := m.started
	m.started = nil
	m.mu.Unlock()

	deadline := time.Now().Add(timeout)
	// Past the deadline the rest still get a short, shared grace: a component
	// that hangs must not keep the ones before it in start order (the
	// datastore, say) from closing cleanly.
	lateDeadline := deadline.Add(lateGrace)
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		left := time.Until(deadline)
		late := left <= 0
		if late {
			left = time.Until(lateDeadline)
		}
		if left <= 0 {
			errs = append(errs, fmt.Errorf("%s: not stopped: stop deadline of %s passed", c.Name(), timeout))
			continue
		}
		done := make(chan error, 1)
		go func() { done <- m.call(c, "Stop", c.Stop) }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", c.Name(), err))
			}
		case <-time.After(left):
			errs = append(errs, fmt.Errorf("%s: did not stop within %s", c.Name(), timeout))
		}
	}
	return errors.Join(errs...)
}

// FormatDuration prints a duration the way start-up lines show it: 0.42s, 3.1s.
func FormatDuration(d time.Duration) string {
	s := d.Seconds()
	if s < 1 {
		return fmt.Sprintf("%.2fs", s)
	}
	return fmt.Sprintf("%.1fs", s)
}

// BeforeStop sets f to run when Serve begins to stop (a signal or a
// component's failure), before any component is asked to stop: the moment
// to tell a service manager that the stop has begun. Set it before Serve.
func (m *Manager) BeforeStop(f func()) { m.beforeStop = f }

// Serve waits, after a successful Start, until ctx ends (a signal) or a component
// fails, then stops everything within stopTimeout. It returns the failure, if any.
func (m *Manager) Serve(ctx context.Context, stopTimeout time.Duration) error {
	var runErr error
	select {
	case <-ctx.Done():
		m.log.Info("stopping")
	case runErr = <-m.Failed():
		m.log.Error("component failed, stopping", "err", runErr)
	}
	if m.beforeStop != nil {
		m.beforeStop()
	}
	begin := time.Now()
	if err := m.Stop(stopTimeout); err != nil {
		m.log.Warn("stop was not clean", "err", err)
	}
	m.log.Info(fmt.Sprintf("stopped in %s", FormatDuration(time.Since(begin))))
	return runErr
}
