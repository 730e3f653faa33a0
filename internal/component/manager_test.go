package component

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

type fake struct {
	name       string
	rec        *recorder
	initErr    error
	startErr   error
	readyAfter int // number of Ready calls that fail before success
	readyCalls int
	stopBlock  time.Duration
	failed     chan error
}

func (f *fake) Name() string { return f.name }
func (f *fake) Init(context.Context) error {
	f.rec.add("init " + f.name)
	return f.initErr
}
func (f *fake) Start(context.Context) error {
	f.rec.add("start " + f.name)
	return f.startErr
}
func (f *fake) Ready() error {
	f.readyCalls++
	if f.readyCalls <= f.readyAfter {
		return errors.New("not yet")
	}
	return nil
}
func (f *fake) Stop() error {
	time.Sleep(f.stopBlock)
	f.rec.add("stop " + f.name)
	return nil
}
func (f *fake) Failed() <-chan error { return f.failed }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestManagerStartsInOrderAndStopsInReverse(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec, readyAfter: 3}
	b := &fake{name: "b", rec: rec}
	c := &fake{name: "c", rec: rec}
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}}, Phase{Name: "two", Components: []Component{b, c}})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.readyCalls < 4 {
		t.Fatalf("phase two started before a was ready: %d Ready calls", a.readyCalls)
	}
	if err := m.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	want := []string{"init a", "start a", "init b", "init c", "start b", "start c", "stop c", "stop b", "stop a"}
	if got := rec.list(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
}

func TestManagerFailedStartStopsWhatStarted(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec}
	b := &fake{name: "b", rec: rec, startErr: errors.New("boom")}
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}}, Phase{Name: "two", Components: []Component{b}})
	err := m.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "starting b: boom") {
		t.Fatalf("want start error naming b, got %v", err)
	}
	want := []string{"init a", "start a", "init b", "start b", "stop b", "stop a"}
	if got := rec.list(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
}

// AfterReady runs once its phase is ready and before the next phase starts;
// its error fails the start-up and stops what was started.
func TestManagerAfterReady(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec, readyAfter: 2}
	b := &fake{name: "b", rec: rec}
	m := NewManager(quiet(),
		Phase{Name: "one", Components: []Component{a}, AfterReady: func() error {
			rec.add(fmt.Sprintf("after one (a ready: %v)", a.readyCalls > 2))
			return nil
		}},
		Phase{Name: "two", Components: []Component{b}})
	m.OnPhaseReady(func(phase string) { rec.add("ready " + phase) })
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = m.Stop(time.Second)
	want := []string{"init a", "start a", "after one (a ready: true)", "ready one", "init b", "start b", "ready two", "stop b", "stop a"}
	if got := rec.list(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}

	rec = &recorder{}
	a = &fake{name: "a", rec: rec}
	b = &fake{name: "b", rec: rec}
	m = NewManager(quiet(),
		Phase{Name: "one", Components: []Component{a}, AfterReady: func() error { return errors.New("cannot write kubeconfig") }},
		Phase{Name: "two", Components: []Component{b}})
	if err := m.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot write kubeconfig") {
		t.Fatalf("AfterReady error: got %v", err)
	}
	if got, want := rec.list(), []string{"init a", "start a", "stop a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
}

func TestManagerInitErrorStartsNothingOfPhase(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec, initErr: errors.New("bad flag")}
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}})
	if err := m.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "a: bad flag") {
		t.Fatalf("got %v", err)
	}
	if got := rec.list(); !reflect.DeepEqual(got, []string{"init a"}) {
		t.Fatalf("events %v", got)
	}
}

func TestManagerReadyTimeoutNamesComponent(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "slowpoke", rec: rec, readyAfter: 1 << 30}
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}, ReadyTimeout: 100 * time.Millisecond})
	err := m.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "slowpoke not ready") || !strings.Contains(err.Error(), "not yet") {
		t.Fatalf("got %v", err)
	}
}

func TestManagerAsyncFailureDuringReadyWait(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec, readyAfter: 1 << 30, failed: make(chan error, 1)}
	a.failed <- errors.New("crashed")
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}})
	err := m.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "a: crashed") {
		t.Fatalf("got %v", err)
	}
}

func TestManagerStopDeadline(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec}
	b := &fake{name: "stuck", rec: rec, stopBlock: time.Second}
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a, b}})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err := m.Stop(100 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("want deadline error naming stuck, got %v", err)
	}
	if time.Since(begin) > 500*time.Millisecond {
		t.Fatalf("Stop overran its deadline: %s", time.Since(begin))
	}
	// a started before stuck, so it stops after it: past the deadline, it still
	// got its (late) stop.
	if events := strings.Join(rec.list(), ","); !strings.Contains(events, "stop a") {
		t.Errorf("a was not stopped after the deadline passed: %s", events)
	}
}

func TestRunnerReportsEarlyExitAndStops(t *testing.T) {
	var r Runner
	r.Go(func(ctx context.Context) error { return errors.New("port in use") })
	select {
	case err := <-r.Failed():
		if err.Error() != "port in use" {
			t.Fatalf("got %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("early exit not reported")
	}

	var r2 Runner
	r2.Go(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if !r2.Running() {
		t.Fatal("not running")
	}
	if err := r2.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r2.Failed():
		t.Fatalf("a stop is not a failure: %v", err)
	default:
	}
	if err := r2.Stop(time.Second); err != nil {
		t.Fatalf("second stop: %v", err)
	}

	var r3 Runner
	r3.Go(func(ctx context.Context) error { time.Sleep(time.Second); return nil })
	if err := r3.Stop(50 * time.Millisecond); err == nil {
		t.Fatal("want a timeout error from a function that ignores its context")
	}
}

func TestManagerServeStopsOnCancelAndReportsFailure(t *testing.T) {
	rec := &recorder{}
	a := &fake{name: "a", rec: rec}
	m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Serve(ctx, time.Second); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if events := strings.Join(rec.list(), ","); !strings.Contains(events, "stop a") {
		t.Errorf("Serve did not stop a: %s", events)
	}

	b := &fake{name: "b", rec: rec, failed: make(chan error, 1)}
	m = NewManager(quiet(), Phase{Name: "one", Components: []Component{b}})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.failed <- errors.New("crashed")
	if err := m.Serve(context.Background(), time.Second); err == nil || !strings.Contains(err.Error(), "b: crashed") {
		t.Errorf("Serve after a failure: %v", err)
	}
}

func TestManagerBeforeStopRunsBeforeAnyStop(t *testing.T) {
	for _, c := range []struct {
		name string
		fail bool
	}{{"signal", false}, {"failure", true}} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			a := &fake{name: "a", rec: rec, failed: make(chan error, 1)}
			m := NewManager(quiet(), Phase{Name: "one", Components: []Component{a}})
			if err := m.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			m.BeforeStop(func() { rec.add("before-stop") })
			ctx, cancel := context.WithCancel(context.Background())
			if c.fail {
				a.failed <- errors.New("crashed")
			} else {
				cancel()
			}
			_ = m.Serve(ctx, time.Second)
			cancel()
			events := rec.list()
			before, stop := slices.Index(events, "before-stop"), slices.Index(events, "stop a")
			if before < 0 || stop < 0 || before > stop || strings.Count(strings.Join(events, ","), "before-stop") != 1 {
				t.Errorf("want before-stop once, before stop a: %v", events)
			}
		})
	}
}
