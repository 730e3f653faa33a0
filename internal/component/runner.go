package component

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Runner runs a component's long-running function in the background under a
// context of its own, reports an early exit as a failure, and stops it.
// Components embed one instead of each tracking goroutines by hand.
type Runner struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	failed chan error
}

// Go starts fn. Its context is cancelled by Stop, never by the caller's
// start-up context. A return from fn before Stop is a failure, and so is a
// panic in fn (a *PanicError), even during Stop.
func (r *Runner) Go(fn func(ctx context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	if r.failed == nil {
		r.failed = make(chan error, 1)
	}
	go func() {
		defer close(r.done)
		err := Safely(func() error { return fn(ctx) })
		if _, panicked := asPanic(err); ctx.Err() != nil && !panicked {
			return
		}
		if err == nil {
			err = errors.New("exited unexpectedly")
		}
		select {
		case r.failed <- err:
		default:
		}
	}()
}

// Failed implements FailureReporter.
func (r *Runner) Failed() <-chan error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = make(chan error, 1)
	}
	return r.failed
}

// Running reports whether fn was started and has not returned.
func (r *Runner) Running() bool {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Stop cancels fn's context and waits up to timeout for it to return. It is
// idempotent and a no-op when nothing was started.
func (r *Runner) Stop(timeout time.Duration) error {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("still running %s after stop was asked", timeout)
	}
}
