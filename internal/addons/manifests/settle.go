package manifests

import "time"

// settling tracks, per Addon, since when its file has had the content it
// has now, or has been absent. Deleting is decided only on a settled state:
// an editor or a slow copy empties or truncates a file, or removes it and
// writes it again, for a moment, and objects pruned then would come back
// new (a Namespace with everything in it, a PVC with its data lost).
// Applying is never held back: it loses nothing.
type settling struct {
	grace time.Duration
	seen  map[string]fileState
}

type fileState struct {
	sum   string // checksum of the content; "" for no file
	since time.Time
}

func newSettling(grace time.Duration) *settling {
	return &settling{grace: grace, seen: map[string]fileState{}}
}

// observe records that the Addon's file has checksum sum at now ("" when
// the file is gone). It reports whether that state has lasted the grace
// period and, if not, when it will have.
func (s *settling) observe(addon, sum string, now time.Time) (settled bool, at time.Time) {
	st, ok := s.seen[addon]
	if !ok || st.sum != sum {
		st = fileState{sum: sum, since: now}
		s.seen[addon] = st
	}
	at = st.since.Add(s.grace)
	return !now.Before(at), at
}

// keep forgets every Addon but these: one that comes back later starts
// afresh.
func (s *settling) keep(addons map[string]bool) {
	for a := range s.seen {
		if !addons[a] {
			delete(s.seen, a)
		}
	}
}

// notes remembers the problems logged, so that one that persists is logged
// once (and again every repeat), not at every pass.
type notes struct {
	repeat time.Duration
	last   map[string]note
	seen   map[string]bool // keys reported in this pass
}

type note struct {
	what string
	at   time.Time
}

func newNotes(repeat time.Duration) *notes {
	return &notes{repeat: repeat, last: map[string]note{}, seen: map[string]bool{}}
}

// report records a problem under key, what identifying it (the objects at
// fault, not the error text, which may vary); it reports whether it is to
// be logged: it is new, it changed, or it was last logged a repeat ago.
func (n *notes) report(key, what string, now time.Time) bool {
	n.seen[key] = true
	l, ok := n.last[key]
	if ok && l.what == what && now.Sub(l.at) < n.repeat {
		return false
	}
	n.last[key] = note{what: what, at: now}
	return true
}

// had reports whether a problem under key was reported before this pass
// and is still remembered.
func (n *notes) had(key string) bool {
	_, ok := n.last[key]
	return ok
}

// endPass forgets the problems not reported again in this pass: they are
// over, and their return is news.
func (n *notes) endPass() {
	for k := range n.last {
		if !n.seen[k] {
			delete(n.last, k)
		}
	}
	clear(n.seen)
}
