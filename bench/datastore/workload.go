package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
)

// keyPrefix is where the objects live, as the apiserver stores ConfigMaps of
// one namespace.
const keyPrefix = "/registry/configmaps/bench/"

// opTimeout bounds one request; a request that takes longer counts as an error.
const opTimeout = 10 * time.Second

func keyOf(i int) string { return fmt.Sprintf("%scm-%05d", keyPrefix, i) }

// object is ConfigMap number i, generation gen, serialized as the apiserver
// would as JSON: metadata with labels, an annotation and managedFields, and
// a data entry of 700 random bytes (base64), about 1.7 KiB in all. The data
// is random so no engine stores it smaller by compressing.
func object(i, gen int, rnd *rand.Rand) []byte {
	raw := make([]byte, 700)
	for j := range raw {
		raw[j] = byte(rnd.Uint32())
	}
	return fmt.Appendf(nil, `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%05d","namespace":"bench",`+
		`"uid":"%08x-%04x-4%03x-8%03x-%012x","creationTimestamp":"2026-12-01T00:00:00Z",`+
		`"labels":{"app.kubernetes.io/name":"bench","app.kubernetes.io/part-of":"skiff","generation":"%d"},`+
		`"annotations":{"skiff.dev/bench":"datastore latency and throughput"},`+
		`"managedFields":[{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"v1",`+
		`"time":"2026-12-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:config.yaml":{}},`+
		`"f:metadata":{"f:annotations":{".":{},"f:skiff.dev/bench":{}},"f:labels":{".":{},"f:app.kubernetes.io/name":{},`+
		`"f:app.kubernetes.io/part-of":{},"f:generation":{}}}}}]},"data":{"config.yaml":"%s"}}`,
		i, rnd.Uint32(), rnd.Uint32()&0xffff, rnd.Uint32()&0xfff, rnd.Uint32()&0xfff, rnd.Uint64()&0xffffffffffff,
		gen, base64.StdEncoding.EncodeToString(raw))
}

// options are the workload's sizes and durations (flags).
type options struct {
	objects       int
	createWorkers int
	readers       int
	rounds        int           // the phases after create run in this many slices
	phase         time.Duration // get and list phases
	pageSize      int64
	writeRate     int
	loadTime      time.Duration
	loadGets      int           // gets per second during the write load
	loadListEvery time.Duration // one full list this often during the write load
	maxWorkers    int
	maxTime       time.Duration // 0 skips the max-write phase
}

// results are one engine's measurements, added up over the rounds.
type results struct {
	create, get, list                         recorder
	loadWrite, loadGet, loadList, watch       recorder
	maxWrite                                  recorder
	loadSkipped, watchMissed, listPages, size int
}

// state is what the phases of one engine share: each object's current
// modification revision, which updates compare against as the apiserver's
// GuaranteedUpdate does, which objects a write is under way for, and where
// the next update starts.
type state struct {
	revs   []int64
	busy   []atomic.Bool
	cursor atomic.Int64
	gen    atomic.Int64
}

func newState(objects int) *state {
	return &state{revs: make([]int64, objects), busy: make([]atomic.Bool, objects)}
}

// acquire hands out objects round-robin, skipping any a write is still under
// way for, so two writes never race for one object; release gives it back.
func (s *state) acquire() int {
	for {
		i := int((s.cursor.Add(1) - 1) % int64(len(s.revs)))
		if s.busy[i].CompareAndSwap(false, true) {
			return i
		}
	}
}

func (s *state) release(i int) { s.busy[i].Store(false) }

func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

// update writes a new generation of object i if its revision is still the one
// last seen, as the apiserver's GuaranteedUpdate does; on a conflict it takes
// the current revision and reports the conflict as an error.
func (s *state) update(ctx context.Context, c *kubernetes.Client, i int, rnd *rand.Rand) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.Kubernetes.OptimisticPut(ctx, keyOf(i), object(i, int(s.gen.Add(1)), rnd), s.revs[i], kubernetes.PutOptions{GetOnFailure: true})
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		if resp.KV != nil {
			s.revs[i] = resp.KV.ModRevision
		}
		return fmt.Errorf("update of %s: revision conflict", keyOf(i))
	}
	s.revs[i] = resp.Revision
	return nil
}

// phaseCreate creates the objects with createWorkers clients at once, each
// a create as the apiserver does it: a transaction that puts the key if its
// modification revision is 0 (absent).
func phaseCreate(ctx context.Context, e *engine, st *state, o options) error {
	rec := &e.res.create
	jobs := make(chan int)
	errc := make(chan error, o.createWorkers)
	var wg sync.WaitGroup
	start := time.Now()
	for range o.createWorkers {
		wg.Go(func() {
			rnd := newRand()
			for i := range jobs {
				key, val := keyOf(i), object(i, 0, rnd)
				opCtx, cancel := context.WithTimeout(ctx, opTimeout)
				t := time.Now()
				resp, err := e.client.Kubernetes.OptimisticPut(opCtx, key, val, 0, kubernetes.PutOptions{})
				d := time.Since(t)
				cancel()
				if err == nil && !resp.Succeeded {
					err = fmt.Errorf("%s exists already: the datastore was not empty", key)
				}
				if err != nil {
					errc <- fmt.Errorf("create %s: %w", key, err)
					return
				}
				rec.add(d)
				st.revs[i] = resp.Revision
			}
		})
	}
	var err error
feed:
	for i := range o.objects {
		select {
		case jobs <- i:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		return err
	}
	rec.addWall(time.Since(start))
	e.res.size = len(object(0, 0, newRand()))
	return nil
}

// phaseGet reads random single keys with readers clients for d.
func phaseGet(ctx context.Context, e *engine, o options, d time.Duration) error {
	rec := &e.res.get
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range o.readers {
		wg.Go(func() {
			rnd := newRand()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if d, err := get(ctx, e.client, rnd.IntN(o.objects)); err != nil {
					rec.fail(err)
				} else {
					rec.add(d)
				}
			}
		})
	}
	wg.Wait()
	rec.addWall(time.Since(start))
	return ctx.Err()
}

func get(ctx context.Context, c *kubernetes.Client, i int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	t := time.Now()
	resp, err := c.Kubernetes.Get(ctx, keyOf(i), kubernetes.GetOptions{})
	d := time.Since(t)
	if err == nil && resp.KV == nil {
		err = fmt.Errorf("%s not found", keyOf(i))
	}
	return d, err
}

// phaseList lists all objects, one list after the other, for d and at
// least once.
func phaseList(ctx context.Context, e *engine, o options, d time.Duration) error {
	rec := &e.res.list
	start := time.Now()
	for n := 0; n < 1 || time.Since(start) < d; n++ {
		d, pages, err := listAll(ctx, e.client, o)
		if err != nil {
			return err
		}
		rec.add(d)
		e.res.listPages = pages
	}
	rec.addWall(time.Since(start))
	return nil
}

// listAll lists every object under keyPrefix as the apiserver pages a list
// that reaches etcd: pages of pageSize keys, the first at the current
// revision, the next ones at that revision from just after the last key
// (continue), until the count says nothing is left. It checks that all
// objects came back.
func listAll(ctx context.Context, c *kubernetes.Client, o options) (time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*opTimeout)
	defer cancel()
	var rev int64
	var cont string
	n, pages := 0, 0
	t := time.Now()
	for {
		resp, err := c.Kubernetes.List(ctx, keyPrefix, kubernetes.ListOptions{Revision: rev, Limit: o.pageSize, Continue: cont})
		if err != nil {
			return 0, 0, fmt.Errorf("list (page %d): %w", pages+1, err)
		}
		pages++
		n += len(resp.Kvs)
		if rev == 0 {
			rev = resp.Revision
		}
		if len(resp.Kvs) == 0 || int64(len(resp.Kvs)) >= resp.Count {
			break
		}
		cont = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	d := time.Since(t)
	if n != o.objects {
		return 0, 0, fmt.Errorf("list returned %d objects, want %d", n, o.objects)
	}
	return d, pages, nil
}

// maxInFlight bounds the writes of the sustained load that may wait at once;
// a write due while that many wait is skipped, so an engine that cannot keep
// up shows a lower achieved rate instead of an ever longer queue.
const maxInFlight = 64

// phaseLoad writes at o.writeRate updates per second (open loop: each write
// starts on schedule, whatever the others are doing) for d while
// readers get o.loadGets keys per second and list everything every
// o.loadListEvery, and a watch on the prefix (as the apiserver's watch
// cache opens it) times each write's event from the moment the write was
// sent.
func phaseLoad(ctx context.Context, e *engine, st *state, o options, d time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := e.client
	head, err := c.KV.Get(ctx, keyPrefix, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("current revision: %w", err)
	}
	var sent sync.Map // key → time.Time the write was sent
	writes, watchRec, getRec, listRec := &e.res.loadWrite, &e.res.watch, &e.res.loadGet, &e.res.loadList
	var received, succeeded atomic.Int64
	wch := c.Watch(clientv3.WithRequireLeader(ctx), keyPrefix, clientv3.WithPrefix(),
		clientv3.WithRev(head.Header.Revision+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	watchDone := make(chan error, 1)
	go func() {
		for wr := range wch {
			if err := wr.Err(); err != nil {
				watchDone <- err
				return
			}
			now := time.Now()
			for _, ev := range wr.Events {
				if t, ok := sent.LoadAndDelete(string(ev.Kv.Key)); ok {
					watchRec.add(now.Sub(t.(time.Time)))
					received.Add(1)
				}
			}
		}
		watchDone <- nil
	}()

	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	// Readers.
	wg.Go(func() {
		if o.loadGets <= 0 {
			return
		}
		rnd := newRand()
		interval := time.Second / time.Duration(o.loadGets)
		var inner sync.WaitGroup
		for n := 0; ; n++ {
			next := start.Add(time.Duration(n) * interval)
			if next.After(end) || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Until(next))
			i := rnd.IntN(o.objects)
			inner.Go(func() {
				if d, err := get(ctx, c, i); err != nil {
					getRec.fail(err)
				} else {
					getRec.add(d)
				}
			})
		}
		inner.Wait()
	})
	wg.Go(func() {
		if o.loadListEvery <= 0 {
			return
		}
		for n := 0; ; n++ {
			next := start.Add(time.Duration(n) * o.loadListEvery)
			if next.After(end) || ctx.Err() != nil {
				return
			}
			time.Sleep(time.Until(next))
			if d, _, err := listAll(ctx, c, o); err != nil {
				listRec.fail(err)
			} else {
				listRec.add(d)
			}
		}
	})
	// Writers.
	var inFlight atomic.Int64
	var skipped int
	var writers sync.WaitGroup
	interval := time.Second / time.Duration(o.writeRate)
	for n := 0; ; n++ {
		next := start.Add(time.Duration(n) * interval)
		if !next.Before(end) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(next))
		if inFlight.Load() >= maxInFlight {
			skipped++
			continue
		}
		inFlight.Add(1)
		i := st.acquire()
		writers.Go(func() {
			defer inFlight.Add(-1)
			defer st.release(i)
			key := keyOf(i)
			t := time.Now()
			sent.Store(key, t)
			if err := st.update(ctx, c, i, newRand()); err != nil {
				sent.Delete(key)
				writes.fail(err)
				return
			}
			writes.add(time.Since(t))
			succeeded.Add(1)
		})
	}
	writers.Wait()
	wall := time.Since(start)
	wg.Wait()
	// Every successful write's event should arrive; give the stragglers time.
	for wait := time.Now(); received.Load() < succeeded.Load() && time.Since(wait) < 10*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("watch: %w", err)
	}
	for _, r := range []*recorder{writes, watchRec, getRec, listRec} {
		r.addWall(wall)
	}
	e.res.loadSkipped += skipped
	e.res.watchMissed += int(succeeded.Load() - received.Load())
	return nil
}

// phaseMaxWrite updates objects with o.maxWorkers clients, each sending its
// next write when the last one returns, for d.
func phaseMaxWrite(ctx context.Context, e *engine, st *state, o options, d time.Duration) error {
	rec := &e.res.maxWrite
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range o.maxWorkers {
		wg.Go(func() {
			rnd := newRand()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := st.acquire()
				t := time.Now()
				err := st.update(ctx, e.client, i, rnd)
				d := time.Since(t)
				st.release(i)
				if err != nil {
					rec.fail(err)
				} else {
					rec.add(d)
				}
			}
		})
	}
	wg.Wait()
	rec.addWall(time.Since(start))
	return ctx.Err()
}
