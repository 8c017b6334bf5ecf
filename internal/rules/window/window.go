// Package window keeps the open windows of one rule for every group key and
// computes their aggregates. It is pure: no IO, no goroutines, no locks (a
// [Set] is used by one goroutine at a time).
//
// # Time
//
// Windows run on event time: the time of each point, as given to
// [Set.Add]. Times are handled in nanoseconds since the Unix epoch; points
// outside the years 1700–2200 are dropped (and reported like late points).
//
// # Window kinds and boundaries
//
// Every window is half-open, [Start, End): a point at exactly End belongs to
// the next window, not this one.
//
//   - tumbling (Size): windows are aligned to the Unix epoch. The window of a
//     point at t starts at floor(t/Size)·Size (in nanoseconds since
//     1970-01-01T00:00:00Z, rounding toward minus infinity) and ends Size
//     later, so TUMBLING(1m) windows start on the minute and TUMBLING(1h) on
//     the UTC hour. Each point belongs to exactly one window.
//   - hopping (Size, Slide): windows of length Size start at every multiple
//     of Slide since the epoch; a point at t belongs to every window whose
//     start s satisfies s ≤ t < s+Size: Size/Slide windows when Slide
//     divides Size (HOPPING(5m, 1m): five), else floor or ceil of that. If
//     Slide is larger than Size, points between windows belong to none and
//     are ignored (not late).
//   - session (Gap): a session is a run of points of one key in which
//     consecutive points (in event time) are less than Gap apart. Its window
//     is [first point, last point + Gap). Session windows are not aligned to
//     the epoch. A point less than Gap away from two sessions bridges them:
//     the two sessions and the point become one session, their aggregates
//     merged. A point exactly Gap after a session's last point starts a new
//     session (half-open).
//
// # When a window closes
//
// Each key has a watermark: the largest event time seen for it (by
// [Set.Add], or passed to [Set.Advance]). A window closes when
// End + Lateness ≤ watermark: [Set.Advance] returns it with its aggregates
// and forgets it. Watermarks are per key, so a device with a fast clock does
// not close the windows of the others. A key that falls silent would keep
// its last window open forever; [Set.Flush] closes all windows of keys that
// received no point for a given time on the processing clock
// ([Options.Now]).
//
// # Late points
//
// A point is late for a window when that window's close has passed
// (End + Lateness ≤ the key's watermark) or the window was already closed
// (by Advance, Flush or a memory bound). A late point is dropped from that
// window and counted ([Stats].Late); [Set.Add] returns true. For session
// windows the window in question is the session the point would make (after
// merging with the open sessions it touches), and a point before the end of
// a session already closed for that key is late too, so an emitted session is
// never emitted again. For hopping windows a point may be late for some of
// its windows and not others: it is added to the open ones, and Add returns
// true if it was dropped from any.
//
// Results depend only on the sequence of points, not on when Advance is
// called, except for Flush and the memory bounds below, which close windows
// early.
//
// # Aggregates
//
// Each [AggSpec] names one aggregate; [Set.Add] receives one argument per
// aggregate. A nil argument skips that aggregate for that point (SQL NULL).
// Numbers are any Go integer or float type or json.Number; NaN and ±Inf and
// non-numeric values are skipped by the numeric aggregates (counted in
// [Stats].NonNumeric).
//
//   - count: the number of non-nil arguments (of any type); 0 for none.
//   - sum, avg, min, max: over the numeric arguments; nil if there are none.
//   - stddev: the sample standard deviation (divisor n−1); nil for fewer
//     than two values.
//   - first, last: the argument with the earliest (latest) event time; on a
//     tie the one added first (last). Numbers are returned as float64,
//     strings and bools as they are; other types are skipped.
//   - percentile(p), 0 ≤ p ≤ 100: nearest rank over the window's values: with
//     the n values sorted ascending v1 ≤ … ≤ vn, the result is vk with
//     k = ceil(p/100 · n), and v1 for p = 0. At most [Options].MaxValues
//     (default 10,000) values are kept per window and aggregate; beyond that
//     the window keeps a uniform reservoir sample (algorithm R, with a
//     deterministic pseudo-random sequence seeded by key, window start and
//     aggregate position, so the same input gives the same result), and the
//     percentile is estimated from the sample. Merging two sampled sessions
//     draws from each in proportion to the number of values it has seen.
//
// # Memory bounds
//
// A Set holds at most [Options].MaxKeys keys (default 100,000): a new key
// beyond that evicts the key seen least recently (on the processing clock),
// normally one whose windows Flush has already closed; any open windows of
// the evicted key close early. A key holds at most [Options].MaxOpenPerKey
// open windows (default 64): opening one more closes the window with the
// earliest end early. Windows closed early are returned by the next call of
// [Set.Advance] (whatever its key) or [Set.Flush], so no window is lost;
// they wait in memory until then, so callers call Advance after Add (as the
// engine does) or Flush regularly. [Stats] counts them. Percentile values
// are capped as described above. A key with no open windows keeps a small
// record (its watermark) so late points for windows it has closed are still
// recognised, until it is evicted.
package window

import (
	"container/list"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tether-iot/tether/internal/rules/jsonfloat"
)

// Window kinds, as in [Spec].Kind.
const (
	Tumbling = "tumbling"
	Hopping  = "hopping"
	Session  = "session"
)

// Defaults and limits of [Options] and [Spec].
const (
	DefaultMaxKeys       = 100_000
	DefaultMaxOpenPerKey = 64
	DefaultMaxValues     = 10_000
	// MaxDuration is the largest Size, Slide, Gap or Lateness accepted.
	MaxDuration = 10 * 365 * 24 * time.Hour
)

// Spec describes the windows of a rule; it has the meaning of
// lang.WindowSpec.
type Spec struct {
	Kind     string        // Tumbling, Hopping or Session
	Size     time.Duration // tumbling, hopping
	Slide    time.Duration // hopping
	Gap      time.Duration // session
	Lateness time.Duration // allowed lateness, ≥ 0
}

// AggSpec is one aggregate of a rule, as lang.Aggregate: Func is one of
// avg, min, max, sum, count, stddev, first, last, percentile; Param is
// percentile's p (0–100) and ignored otherwise.
type AggSpec struct {
	Func  string  `json:"func"`
	Param float64 `json:"param,omitempty"`
}

// Options bound a Set's memory. Zero fields take the defaults.
type Options struct {
	MaxKeys       int // keys held at once; default DefaultMaxKeys
	MaxOpenPerKey int // open windows per key; default DefaultMaxOpenPerKey
	MaxValues     int // percentile values kept per window and aggregate; default DefaultMaxValues
	// Now is the processing clock that [Set.Flush] measures silence on;
	// default time.Now. Flush's now must come from the same clock.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.MaxOpenPerKey <= 0 {
		o.MaxOpenPerKey = DefaultMaxOpenPerKey
	}
	if o.MaxValues <= 0 {
		o.MaxValues = DefaultMaxValues
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Closed is a window that has closed, with its aggregates: Values[i] is
// aggregate i's result, a float64 (first and last: also a string or bool),
// or nil if the aggregate had no input (count: 0).
type Closed struct {
	Key        string
	Start, End time.Time
	Values     []any
}

// Stats counts what a Set has done, for metrics. Counters are not part of
// a snapshot.
type Stats struct {
	Keys        int    // keys held, with or without open windows
	Open        int    // open windows
	Late        uint64 // points dropped as late (Add returned true)
	NonNumeric  uint64 // arguments skipped by a numeric aggregate
	ClosedEarly uint64 // windows closed by a memory bound
	Evicted     uint64 // keys evicted by MaxKeys
}

// Set holds the open windows of one rule for every group key.
type Set struct {
	spec    Spec
	aggs    []aggFunc
	params  []float64
	o       Options
	size    int64 // Size, Slide, Gap, Lateness in nanoseconds
	slide   int64
	gap     int64
	late    int64
	keys    map[string]*keyState
	lru     list.List // of *keyState; front: most recently seen
	pending []Closed  // closed early, returned by the next Advance or Flush
	stats   Stats
	open    int
}

// keyState is one group key's watermark and open windows.
type keyState struct {
	key      string
	maxT     int64 // watermark; minTime until a point is seen
	closedTo int64 // every window ending at or before this is closed
	lastSeen int64 // processing time of the last Add, ns
	wins     []*win
	elem     *list.Element
}

// win is one open window; wins of a key are sorted by start, and then by
// end too (equal sizes, or sessions that do not overlap).
type win struct {
	start, end int64
	aggs       []aggState
}

var (
	minTime = time.Date(1700, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
)

// Validate reports whether spec, aggs and o describe a usable Set: a known
// kind with positive durations no longer than MaxDuration, known aggregate
// functions, percentile's p in [0, 100], and a hopping window no longer
// than MaxOpenPerKey slides (each point belongs to ceil(Size/Slide)
// windows, all of which must fit).
func Validate(spec Spec, aggs []AggSpec, o Options) error {
	o = o.withDefaults()
	pos := func(name string, d time.Duration) error {
		if d <= 0 || d > MaxDuration {
			return fmt.Errorf("window: %s %s: want more than 0 and at most %s", name, d, MaxDuration)
		}
		return nil
	}
	switch spec.Kind {
	case Tumbling:
		if err := pos("size", spec.Size); err != nil {
			return err
		}
	case Hopping:
		if err := pos("size", spec.Size); err != nil {
			return err
		}
		if err := pos("slide", spec.Slide); err != nil {
			return err
		}
		if per := (spec.Size + spec.Slide - 1) / spec.Slide; per > time.Duration(o.MaxOpenPerKey) {
			return fmt.Errorf("window: hopping(%s, %s) puts each point in %d windows: at most %d", spec.Size, spec.Slide, per, o.MaxOpenPerKey)
		}
	case Session:
		if err := pos("gap", spec.Gap); err != nil {
			return err
		}
	default:
		return fmt.Errorf("window: unknown kind %q: want tumbling, hopping or session", spec.Kind)
	}
	if spec.Lateness < 0 || spec.Lateness > MaxDuration {
		return fmt.Errorf("window: allowed lateness %s: want 0 to %s", spec.Lateness, MaxDuration)
	}
	for i, a := range aggs {
		f, ok := funcs[strings.ToLower(a.Func)]
		if !ok {
			return fmt.Errorf("window: aggregate %d: unknown function %q", i, a.Func)
		}
		if f == aggPercentile && !(a.Param >= 0 && a.Param <= 100) {
			return fmt.Errorf("window: aggregate %d: percentile %v: want 0 to 100", i, a.Param)
		}
	}
	return nil
}

// New returns an empty Set. It panics if [Validate] reports an error, so
// callers building a Set from user input call Validate first.
func New(spec Spec, aggs []AggSpec, o Options) *Set {
	if err := Validate(spec, aggs, o); err != nil {
		panic(err)
	}
	s := &Set{
		spec:  spec,
		o:     o.withDefaults(),
		size:  int64(spec.Size),
		slide: int64(spec.Slide),
		gap:   int64(spec.Gap),
		late:  int64(spec.Lateness),
		keys:  make(map[string]*keyState),
	}
	for _, a := range aggs {
		f := funcs[strings.ToLower(a.Func)]
		s.aggs = append(s.aggs, f)
		if f == aggPercentile {
			s.params = append(s.params, a.Param)
		} else {
			s.params = append(s.params, 0)
		}
	}
	return s
}

// Stats returns the Set's counters.
func (s *Set) Stats() Stats {
	st := s.stats
	st.Keys = len(s.keys)
	st.Open = s.open
	return st
}

// Add adds a point of key at event time t; vals[i] is aggregate i's
// argument (nil skips it; count(*) gets a non-nil value). It reports
// whether the point was dropped as late from any of its windows (or its
// time is outside 1700–2200). Add panics if len(vals) is not the number of
// aggregates. Windows Add closes early because of a memory bound are
// returned by the next Advance or Flush.
func (s *Set) Add(key string, t time.Time, vals []any) (late bool) {
	if len(vals) != len(s.aggs) {
		panic(fmt.Sprintf("window: Add got %d values for %d aggregates", len(vals), len(s.aggs)))
	}
	ns, ok := unixNano(t)
	if !ok {
		s.stats.Late++
		return true
	}
	ks := s.touch(key)
	if ns > ks.maxT {
		ks.maxT = ns
	}
	switch s.spec.Kind {
	case Tumbling:
		start := floorDiv(ns, s.size) * s.size
		late = !s.addTo(ks, start, start+s.size, ns, vals)
	case Hopping:
		for k := floorDiv(ns-s.size, s.slide) + 1; k*s.slide <= ns; k++ {
			start := k * s.slide
			if !s.addTo(ks, start, start+s.size, ns, vals) {
				late = true
			}
		}
	case Session:
		late = !s.addSession(ks, ns, vals)
	}
	if late {
		s.stats.Late++
	}
	s.enforceOpen(ks)
	return late
}

// isLate reports whether a window ending at end can no longer take points.
func (s *Set) isLate(ks *keyState, end int64) bool {
	return end+s.late <= ks.maxT || end <= ks.closedTo
}

// addTo adds the point to the aligned window [start, end) of ks, opening
// it if needed; false if the window is late.
func (s *Set) addTo(ks *keyState, start, end, ns int64, vals []any) bool {
	if s.isLate(ks, end) {
		return false
	}
	i, found := slices.BinarySearchFunc(ks.wins, start, func(w *win, start int64) int { return cmp64(w.start, start) })
	if !found {
		w := s.newWin(ks.key, start, end)
		ks.wins = slices.Insert(ks.wins, i, w)
		s.open++
	}
	s.addPoint(ks.wins[i], ns, vals)
	return true
}

// addSession adds the point to the session it extends, merging the
// sessions it bridges; false if late.
func (s *Set) addSession(ks *keyState, ns int64, vals []any) bool {
	if ns < ks.closedTo {
		return false
	}
	start, end := ns, ns+s.gap
	// The open sessions the point touches: w.start-gap < ns < w.end. They
	// are contiguous in ks.wins.
	lo := len(ks.wins)
	hi := lo
	for i, w := range ks.wins {
		if w.start-s.gap < ns && ns < w.end {
			if lo == len(ks.wins) {
				lo = i
			}
			hi = i + 1
			start = min(start, w.start)
			end = max(end, w.end)
		}
	}
	if end+s.late <= ks.maxT {
		return false
	}
	if lo == len(ks.wins) {
		// A new session, inserted in start order.
		i, _ := slices.BinarySearchFunc(ks.wins, start, func(w *win, start int64) int { return cmp64(w.start, start) })
		w := s.newWin(ks.key, start, end)
		ks.wins = slices.Insert(ks.wins, i, w)
		s.open++
		s.addPoint(w, ns, vals)
		return true
	}
	w := ks.wins[lo]
	for _, o := range ks.wins[lo+1 : hi] {
		for i := range w.aggs {
			w.aggs[i].merge(s.aggs[i], &o.aggs[i], s.o.MaxValues)
		}
	}
	w.start, w.end = start, end
	s.open -= hi - lo - 1
	ks.wins = slices.Delete(ks.wins, lo+1, hi)
	s.addPoint(w, ns, vals)
	return true
}

func (s *Set) newWin(key string, start, end int64) *win {
	w := &win{start: start, end: end, aggs: make([]aggState, len(s.aggs))}
	for i, f := range s.aggs {
		if f == aggPercentile {
			w.aggs[i].rng = seed(key, start, i)
		}
	}
	return w
}

func (s *Set) addPoint(w *win, ns int64, vals []any) {
	for i, v := range vals {
		if v == nil {
			continue
		}
		if !w.aggs[i].add(s.aggs[i], ns, v, s.o.MaxValues) {
			s.stats.NonNumeric++
		}
	}
}

// enforceOpen closes the earliest windows of ks beyond MaxOpenPerKey.
func (s *Set) enforceOpen(ks *keyState) {
	for len(ks.wins) > s.o.MaxOpenPerKey {
		s.pending = append(s.pending, s.closeWin(ks, ks.wins[0]))
		ks.wins = ks.wins[1:]
		s.stats.ClosedEarly++
	}
}

// touch returns key's state, creating it (and evicting the least recently
// seen key if the Set is full), and marks it seen now.
func (s *Set) touch(key string) *keyState {
	now := s.o.Now().UnixNano()
	if ks := s.keys[key]; ks != nil {
		ks.lastSeen = now
		s.lru.MoveToFront(ks.elem)
		return ks
	}
	for len(s.keys) >= s.o.MaxKeys {
		old := s.lru.Back().Value.(*keyState)
		for _, w := range old.wins {
			s.pending = append(s.pending, s.closeWin(old, w))
			s.stats.ClosedEarly++
		}
		s.lru.Remove(old.elem)
		delete(s.keys, old.key)
		s.stats.Evicted++
	}
	ks := &keyState{key: key, maxT: minTime, closedTo: minTime, lastSeen: now}
	ks.elem = s.lru.PushFront(ks)
	s.keys[key] = ks
	return ks
}

// closeWin computes w's result and records that it is closed; the caller
// removes it from ks.wins.
func (s *Set) closeWin(ks *keyState, w *win) Closed {
	if w.end > ks.closedTo {
		ks.closedTo = w.end
	}
	s.open--
	c := Closed{Key: ks.key, Start: time.Unix(0, w.start).UTC(), End: time.Unix(0, w.end).UTC(), Values: make([]any, len(s.aggs))}
	for i, f := range s.aggs {
		c.Values[i] = w.aggs[i].result(f, s.params[i])
	}
	return c
}

func (s *Set) takePending() []Closed {
	out := s.pending
	s.pending = nil
	return out
}

// Advance moves key's watermark to eventTime if that is later, and returns
// the windows of key that close (End + Lateness ≤ watermark), in order of
// end, preceded by any windows of any key closed early by a memory bound
// since the last Advance or Flush.
func (s *Set) Advance(key string, eventTime time.Time) []Closed {
	out := s.takePending()
	ks := s.keys[key]
	if ks == nil {
		return out
	}
	if ns, ok := unixNano(eventTime); ok && ns > ks.maxT {
		ks.maxT = ns
	}
	n := 0
	for n < len(ks.wins) && ks.wins[n].end+s.late <= ks.maxT {
		out = append(out, s.closeWin(ks, ks.wins[n]))
		n++
	}
	ks.wins = slices.Delete(ks.wins, 0, n)
	return out
}

// Flush closes every window of the keys that received no point (Add) for
// idle or longer on the processing clock, so a silent device's last window
// still ends, and returns them sorted by key and end, preceded by any
// windows closed early by a memory bound. now must come from
// [Options].Now's clock. The keys stay known (with no open windows), so
// late points for the windows flushed are recognised.
func (s *Set) Flush(now time.Time, idle time.Duration) []Closed {
	out := s.takePending()
	cutoff := now.UnixNano() - int64(idle)
	var flushed []Closed
	// The list is in order of last Add, so the silent keys are at the back.
	for e := s.lru.Back(); e != nil; e = e.Prev() {
		ks := e.Value.(*keyState)
		if ks.lastSeen > cutoff {
			break
		}
		for _, w := range ks.wins {
			flushed = append(flushed, s.closeWin(ks, w))
		}
		ks.wins = nil
	}
	slices.SortFunc(flushed, func(a, b Closed) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if c := a.End.Compare(b.End); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
	return append(out, flushed...)
}

// unixNano returns t in nanoseconds since the epoch if it is in the range
// the package handles.
func unixNano(t time.Time) (int64, bool) {
	if t.Year() < 1700 || t.Year() >= 2200 {
		return 0, false
	}
	return t.UnixNano(), true
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// seed derives a percentile reservoir's pseudo-random state from the key,
// the window start and the aggregate's position (FNV-1a).
func seed(key string, start int64, agg int) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	h ^= uint64(start)
	h *= 1099511628211
	h ^= uint64(agg)
	h *= 1099511628211
	return h
}

// jfloat is a float64 that survives JSON even when infinite or NaN.
type jfloat = jsonfloat.Float
