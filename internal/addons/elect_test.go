package addons

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/skiffkube/skiff/internal/component"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// work is an elected add-on's component: it counts how many copies run at
// once across servers.
type work struct {
	running *atomic.Int32
	most    *atomic.Int32
	starts  *atomic.Int32
	on      bool
}

func (w *work) Name() string               { return "work" }
func (w *work) Init(context.Context) error { return nil }
func (w *work) Ready() error               { return nil }
func (w *work) Start(context.Context) error {
	n := w.running.Add(1)
	w.starts.Add(1)
	for {
		m := w.most.Load()
		if n <= m || w.most.CompareAndSwap(m, n) {
			break
		}
	}
	w.on = true
	return nil
}
func (w *work) Stop() error {
	if w.on {
		w.running.Add(-1)
		w.on = false
	}
	return nil
}

// fast timings; the election's own validation needs renew < lease and
// retry*1.2 < renew, and Leases count whole seconds.
var fast = Election{LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func holder(t *testing.T, c *fake.Clientset, name string) string {
	l, err := c.CoordinationV1().Leases(LeaseNamespace).Get(context.Background(), LeaseName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// cutOff makes the lease writes of the named servers fail, as if they had
// lost the datastore or died.
type cutOff struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (c *cutOff) set(id string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids[id] = on
}

func (c *cutOff) react(a k8stesting.Action) (bool, runtime.Object, error) {
	var obj runtime.Object
	switch a := a.(type) {
	case k8stesting.UpdateAction:
		obj = a.GetObject()
	case k8stesting.CreateAction:
		obj = a.GetObject()
	default:
		return false, nil, nil
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return false, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids[ptr.Deref(l.Spec.HolderIdentity, "")] {
		return true, nil, errors.New("connection refused")
	}
	return false, nil, nil
}

func newServers(t *testing.T, c *fake.Clientset, ids ...string) (map[string]*Elected, *atomic.Int32, *atomic.Int32, *atomic.Int32) {
	var running, most, starts atomic.Int32
	out := map[string]*Elected{}
	for _, id := range ids {
		e := NewElected(ElectedConfig{Name: "thing", Identity: id, Client: c, Election: fast,
			Build: func() []component.Component {
				return []component.Component{&work{running: &running, most: &most, starts: &starts}}
			}}, quiet)
		if err := e.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Stop() })
		out[id] = e
	}
	return out, &running, &most, &starts
}

// Two servers: one runs the add-on; when it can no longer renew its lease it
// stops its work, and the other takes the lease over and starts it. The
// work never runs twice at once.
func TestElectedHandsOverWhenTheLeaderDies(t *testing.T) {
	c := fake.NewClientset()
	cut := &cutOff{ids: map[string]bool{}}
	c.PrependReactor("*", "leases", cut.react)
	servers, running, most, _ := newServers(t, c, "a", "b")

	waitFor(t, "a leader", func() bool { return holder(t, c, "thing") != "" && running.Load() == 1 })
	first := holder(t, c, "thing")
	other := map[string]string{"a": "b", "b": "a"}[first]
	// The follower is ready once it has seen the leader.
	waitFor(t, "both servers ready", func() bool { return servers["a"].Ready() == nil && servers["b"].Ready() == nil })
	for id, e := range servers {
		if e.Leading() != (id == first) {
			t.Errorf("%s Leading() = %v, lease holder %s", id, e.Leading(), first)
		}
	}

	cut.set(first, true)
	waitFor(t, "the other server to take over", func() bool {
		return holder(t, c, "thing") == other && servers[other].Leading()
	})
	waitFor(t, "the old leader to stop its work", func() bool { return !servers[first].Leading() })
	if running.Load() != 1 {
		t.Errorf("%d copies running after the handover, want 1", running.Load())
	}
	if most.Load() != 1 {
		t.Errorf("at most %d copies ran at once, want 1", most.Load())
	}

	// The old leader comes back: it stays a follower.
	cut.set(first, false)
	waitFor(t, "the old leader to see the new one", func() bool { return servers[first].Ready() == nil })
	if holder(t, c, "thing") != other {
		t.Errorf("the lease moved back to %s", holder(t, c, "thing"))
	}
}

// Stop releases the lease after stopping the work, so the next server
// starts at once.
func TestElectedStopReleasesTheLease(t *testing.T) {
	c := fake.NewClientset()
	servers, running, most, _ := newServers(t, c, "a", "b")
	waitFor(t, "a leader", func() bool { return running.Load() == 1 })
	first := holder(t, c, "thing")
	if err := servers[first].Stop(); err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"a": "b", "b": "a"}[first]
	waitFor(t, "the other server to lead", func() bool { return servers[other].Leading() && running.Load() == 1 })
	if most.Load() != 1 {
		t.Errorf("at most %d copies ran at once, want 1", most.Load())
	}
}

// A single server does not wait for a lease to expire: with no lease, or
// with the lease its previous run held and did not release (a crash), it
// leads at the first try. The retry period here is far longer than the
// test's deadline, so a second try would fail it.
func TestElectedFirstTryWins(t *testing.T) {
	slow := Election{LeaseDuration: time.Hour, RenewDeadline: 30 * time.Minute, RetryPeriod: 10 * time.Minute}
	for _, tc := range []struct {
		name  string
		lease *coordinationv1.Lease
	}{
		{"no lease", nil},
		{"own lease from a previous run", &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: LeaseNamespace, Name: LeaseName("thing")},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To("a"), LeaseDurationSeconds: ptr.To(int32(3600)),
				AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()},
			},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientset()
			if tc.lease != nil {
				if _, err := c.CoordinationV1().Leases(LeaseNamespace).Create(context.Background(), tc.lease, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			var running, most, starts atomic.Int32
			e := NewElected(ElectedConfig{Name: "thing", Identity: "a", Client: c, Election: slow,
				Build: func() []component.Component {
					return []component.Component{&work{running: &running, most: &most, starts: &starts}}
				}}, quiet)
			if err := e.Init(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := e.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer e.Stop()
			deadline := time.Now().Add(time.Minute)
			for e.Ready() != nil {
				if time.Now().After(deadline) {
					t.Fatalf("not leading at the first try: %v", e.Ready())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !e.Leading() || running.Load() != 1 {
				t.Errorf("Leading() = %v, %d running", e.Leading(), running.Load())
			}
		})
	}
}

// A component that fails to start fails the server, as it would unelected.
func TestElectedReportsAFailedStart(t *testing.T) {
	c := fake.NewClientset()
	e := NewElected(ElectedConfig{Name: "thing", Identity: "a", Client: c, Election: fast,
		Build: func() []component.Component { return []component.Component{failing{}} }}, quiet)
	if err := e.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	select {
	case err := <-e.Failed():
		if err == nil || !errors.Is(err, errBoom) {
			t.Errorf("Failed() = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no failure reported")
	}
}

var errBoom = errors.New("boom")

type failing struct{}

func (failing) Name() string                { return "failing" }
func (failing) Init(context.Context) error  { return nil }
func (failing) Start(context.Context) error { return errBoom }
func (failing) Ready() error                { return nil }
func (failing) Stop() error                 { return nil }
