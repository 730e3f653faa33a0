// Package reconcile runs the level-triggered loop skiff's small controllers
// share: wait for the informers' caches, then one pass over everything,
// again soon after any change and at a slow resync.
package reconcile

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/cache"
)

// coalesce is how long a pass waits after a change, so that a burst of
// events (a Service and its Endpoints, a Node's status) makes one pass.
const coalesce = 100 * time.Millisecond

// Loop runs a controller's pass one at a time. The zero value is not usable;
// use NewLoop. Kick and Ready are safe for concurrent use.
type Loop struct {
	kick   chan struct{}
	synced atomic.Bool
}

// NewLoop returns a Loop with no pass run yet.
func NewLoop() *Loop { return &Loop{kick: make(chan struct{}, 1)} }

// Kick asks for a pass soon; kicks while one is pending fold into it.
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Handler kicks the loop on every add, update and delete, for
// SharedIndexInformer.AddEventHandler.
func (l *Loop) Handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { l.Kick() },
		UpdateFunc: func(any, any) { l.Kick() },
		DeleteFunc: func(any) { l.Kick() },
	}
}

// Run waits until every informer in synced has synced, then calls pass
// until ctx ends: at once, 100 ms after a Kick, and resync after the last
// pass otherwise. It returns when ctx ends (also while waiting for caches).
func (l *Loop) Run(ctx context.Context, resync time.Duration, pass func(context.Context), synced ...cache.InformerSynced) {
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	l.synced.Store(true)
	for {
		pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(coalesce):
			}
		case <-time.After(resync):
		}
	}
}

// Ready is nil once the caches have synced (Run has started its passes).
func (l *Loop) Ready() error {
	if !l.synced.Load() {
		return errors.New("caches not synced")
	}
	return nil
}
