package component

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func capture() (*slog.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// exploding panics in the lifecycle method named by where, or, for "run",
// in the function its Runner runs.
type exploding struct {
	fake
	where string
	Runner
}

func (e *exploding) Init(ctx context.Context) error {
	if e.where == "Init" {
		panic("init exploded")
	}
	return e.fake.Init(ctx)
}

func (e *exploding) Start(ctx context.Context) error {
	switch e.where {
	case "Start":
		var m map[string]int
		m["x"] = 1 // a runtime error, as a nil dereference is
	case "run":
		e.Runner.Go(func(context.Context) error {
			var p *struct{ v error }
			return p.v // nil pointer dereference
		})
	case "goroutine":
		// Upstream code in a goroutine of the component's own, guarded the
		// way kube-proxy's is.
		e.Runner.Go(func(ctx context.Context) error {
			errc := make(chan error, 1)
			go func() { errc <- Safely(func() error { panic("upstream exploded") }) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
				return nil
			}
		})
	}
	return e.fake.Start(ctx)
}

func (e *exploding) Ready() error {
	if e.where == "Ready" {
		panic(errors.New("ready exploded"))
	}
	return nil
}

func (e *exploding) Stop() error {
	if e.where == "Stop" {
		panic("stop exploded")
	}
	_ = e.Runner.Stop(time.Second)
	return e.fake.Stop()
}

func (e *exploding) Failed() <-chan error { return e.Runner.Failed() }

// A panic in any lifecycle method is that component's error: the start
// fails naming it, what had started is stopped, and the log has the stack.
func TestManagerRecoversPanicsInLifecycle(t *testing.T) {
	for _, tc := range []struct{ where, want string }{
		{"Init", "boom: panic: init exploded"},
		{"Start", "starting boom: panic: assignment to entry in nil map"},
		{"Ready", "boom: panic: ready exploded"},
	} {
		t.Run(tc.where, func(t *testing.T) {
			rec := &recorder{}
			log, buf := capture()
			before := &fake{name: "before", rec: rec}
			boom := &exploding{fake: fake{name: "boom", rec: rec}, where: tc.where}
			m := NewManager(log, Phase{Name: "one", Components: []Component{before}}, Phase{Name: "two", Components: []Component{boom}})
			err := m.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			var pe *PanicError
			if !errors.As(err, &pe) {
				t.Errorf("error %v does not carry the panic", err)
			}
			if events := strings.Join(rec.list(), ","); !strings.Contains(events, "stop before") {
				t.Errorf("the started component was not stopped: %s", events)
			}
			out := buf.String()
			if !strings.Contains(out, "component panicked") || !strings.Contains(out, "component=boom") || !strings.Contains(out, "in="+tc.where) || !strings.Contains(out, "panic_test.go") {
				t.Errorf("log lacks the panic with its stack:\n%s", out)
			}
		})
	}
}

// A panic in a component's running work (its Runner, or a goroutine of its
// own run through Safely) after start-up stops the server cleanly with that
// error.
func TestManagerServeStopsOnPanicInRunningWork(t *testing.T) {
	for _, where := range []string{"run", "goroutine"} {
		t.Run(where, func(t *testing.T) {
			rec := &recorder{}
			log, buf := capture()
			before := &fake{name: "before", rec: rec}
			boom := &exploding{fake: fake{name: "boom", rec: rec}, where: where}
			m := NewManager(log, Phase{Name: "one", Components: []Component{before, boom}})
			// The panic may come before or after the phase is ready: either
			// way it is boom's error.
			err := m.Start(context.Background())
			if err == nil {
				done := make(chan error, 1)
				go func() { done <- m.Serve(context.Background(), time.Second) }()
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("Serve did not return after the panic")
				}
			}
			if err == nil || !strings.Contains(err.Error(), "boom: panic:") {
				t.Fatalf("got %v, want boom's panic", err)
			}
			if events := strings.Join(rec.list(), ","); !strings.Contains(events, "stop before") || !strings.Contains(events, "stop boom") {
				t.Errorf("not everything was stopped: %s", events)
			}
			if out := buf.String(); !strings.Contains(out, "component panicked") || !strings.Contains(out, "panic_test.go") {
				t.Errorf("log lacks the panic with its stack:\n%s", out)
			}
		})
	}
}

// A panic in Stop is that component's stop error; the ones before it still
// stop.
func TestManagerStopRecoversPanic(t *testing.T) {
	rec := &recorder{}
	log, _ := capture()
	before := &fake{name: "before", rec: rec}
	boom := &exploding{fake: fake{name: "boom", rec: rec}, where: "Stop"}
	m := NewManager(log, Phase{Name: "one", Components: []Component{before, boom}})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := m.Stop(time.Second)
	if err == nil || !strings.Contains(err.Error(), "stopping boom: panic: stop exploded") {
		t.Fatalf("got %v", err)
	}
	if events := strings.Join(rec.list(), ","); !strings.Contains(events, "stop before") {
		t.Errorf("before was not stopped: %s", events)
	}
}

func TestRunnerReportsPanicEvenWhileStopping(t *testing.T) {
	var r Runner
	r.Go(func(ctx context.Context) error {
		<-ctx.Done()
		panic("exploded on the way out")
	})
	if err := r.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.Failed():
		if pe, ok := err.(*PanicError); !ok || pe.Value != "exploded on the way out" || len(pe.Stack) == 0 {
			t.Fatalf("got %#v", err)
		}
	default:
		t.Fatal("a panic during stop was not reported")
	}
}
