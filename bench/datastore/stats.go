package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// recorder collects latencies from several goroutines, over one or more
// slices of time (rounds) whose lengths add up in wall.
type recorder struct {
	mu    sync.Mutex
	lats  []time.Duration
	errs  int
	first error // the first failure, for the report
	wall  time.Duration
}

func (r *recorder) addWall(d time.Duration) {
	r.mu.Lock()
	r.wall += d
	r.mu.Unlock()
}

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	r.lats = append(r.lats, d)
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.errs++
	if r.first == nil {
		r.first = err
	}
	r.mu.Unlock()
}

// summary is what a phase reports for one operation.
type summary struct {
	n        int
	errs     int
	first    error
	p50, p99 time.Duration
	rate     float64 // operations completed per second of the phase
}

// summarize takes the nearest-rank percentiles of r's latencies; rate is n
// over the wall time recorded.
func (r *recorder) summarize() summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := summary{n: len(r.lats), errs: r.errs, first: r.first}
	if s.n > 0 {
		sorted := slices.Clone(r.lats)
		slices.Sort(sorted)
		s.p50 = percentile(sorted, 50)
		s.p99 = percentile(sorted, 99)
	}
	if r.wall > 0 {
		s.rate = float64(s.n) / r.wall.Seconds()
	}
	return s
}

// percentile is the nearest-rank p-th percentile of sorted (ascending): the
// smallest value with at least p% of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999999)
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// ms formats a latency in milliseconds with sensible precision.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case d == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}
