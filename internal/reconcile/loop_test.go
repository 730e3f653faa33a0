package reconcile

import (
	"context"
	"testing"
	"time"
)

// A pass runs at once, again after a kick (a burst folding into one pass),
// and Run ends with its context; Ready follows the caches.
func TestLoopPassesOnKickAndStops(t *testing.T) {
	l := NewLoop()
	if l.Ready() == nil {
		t.Fatal("ready before the caches synced")
	}
	ctx, cancel := context.WithCancel(context.Background())
	passes := make(chan struct{}, 10)
	done := make(chan struct{})
	synced := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx, time.Hour, func(context.Context) { passes <- struct{}{} }, func() bool {
			select {
			case <-synced:
				return true
			default:
				return false
			}
		})
	}()
	select {
	case <-passes:
		t.Fatal("a pass before the caches synced")
	case <-time.After(200 * time.Millisecond):
	}
	close(synced)
	wait := func(what string) {
		t.Helper()
		select {
		case <-passes:
		case <-time.After(10 * time.Second):
			t.Fatalf("no pass %s", what)
		}
	}
	wait("once the caches synced")
	if err := l.Ready(); err != nil {
		t.Errorf("not ready after the first pass: %v", err)
	}
	for range 5 {
		l.Handler().OnAdd(nil, false)
	}
	wait("after kicks")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end with its context")
	}
	// Five kicks before the pass fold into at most one more.
	if n := len(passes); n > 1 {
		t.Errorf("%d passes after a burst of kicks, want at most one more", n)
	}
}
