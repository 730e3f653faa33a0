// Package component defines the lifecycle contract that every embedded part of
// skiff implements, and the manager that drives a set of them.
package component

import (
	"context"
)

// Component is one embedded part of skiff (datastore, apiserver, scheduler, ...).
//
// The manager drives every component through the same state machine:
//
//		        Init         Start         Ready()==nil
//		new ─────────▶ inited ─────▶ started ───────────▶ ready
//		                  │             │                   │
//		                  └─────────────┴──── Stop ─────────┴──▶ stopped
//
//	  - Init prepares everything that can fail cheaply (files, flags, listeners)
//	    and must not start long-running work. A failed Init leaves nothing running.
//	  - Start launches the component's long-running work and returns quickly. Its
//	    context only bounds start-up: cancelling it aborts a start in progress but
//	    does not stop a component that has started. Work that must outlive Start
//	    uses the component's own context, ended by Stop.
//	  - Ready reports nil once the component serves; the manager polls it until it
//	    does or a timeout passes. An error says what is still missing.
//	  - Stop ends the component and waits for its goroutines, with a deadline of its
//	    own. It is idempotent, and safe to call after a failed Init or Start.
type Component interface {
	Name() string
	Init(ctx context.Context) error
	Start(ctx context.Context) error
	Ready() error
	Stop() error
}
