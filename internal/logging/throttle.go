package logging

import (
	"log/slog"
	"sync"
	"time"
)

// Throttle logs a repeating failure once per key (an address, an object's
// name) per interval: the first occurrence at Info, the repeats within the
// interval at Debug only, and the first one after it at Info again with how
// many were held back. A retry loop then shows one line per real problem, not
// one per attempt. Safe for concurrent use; the zero value is not usable.
type Throttle struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	seen map[string]*throttled
}

type throttled struct {
	last       time.Time // when a line was last logged at Info
	suppressed int       // repeats since then
}

// maxThrottleKeys bounds the memory held for keys: past it, keys whose
// interval has passed are forgotten.
const maxThrottleKeys = 1024

// NewThrottle returns a Throttle that logs to log, each key at Info at most
// once per interval.
func NewThrottle(log *slog.Logger, interval time.Duration) *Throttle {
	return &Throttle{log: log, interval: interval, now: time.Now, seen: map[string]*throttled{}}
}

// Log logs msg with args for key, at Info unless key was logged at Info less
// than the interval ago. A line after held-back repeats carries
// "repeated", their count.
func (t *Throttle) Log(key, msg string, args ...any) {
	t.mu.Lock()
	now := t.now()
	e := t.seen[key]
	if e != nil && now.Sub(e.last) < t.interval {
		e.suppressed++
		t.mu.Unlock()
		t.log.Debug(msg, args...)
		return
	}
	if e == nil {
		if len(t.seen) >= maxThrottleKeys {
			t.forget(now)
		}
		if len(t.seen) >= maxThrottleKeys {
			// All recent: a flood of distinct keys; start over rather than grow.
			clear(t.seen)
		}
		e = &throttled{}
		t.seen[key] = e
	}
	repeated := e.suppressed
	e.last, e.suppressed = now, 0
	t.mu.Unlock()
	if repeated > 0 {
		args = append(args, "repeated", repeated)
	}
	t.log.Info(msg, args...)
}

// forget drops keys whose interval has passed; called with mu held.
func (t *Throttle) forget(now time.Time) {
	for k, e := range t.seen {
		if now.Sub(e.last) >= t.interval {
			delete(t.seen, k)
		}
	}
}
