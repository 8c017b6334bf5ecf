// Package anomaly provides the anomaly-detection and prediction functions
// of the rule language as stateful values: one [State] per call site and
// group key, fed one observation at a time. It is pure: no IO, no
// goroutines; a State is used by one goroutine at a time.
//
// Every function reports ok=false while it has too little data, and for
// inputs it ignores: NaN and ±Inf values, and times outside the years
// 1700–2200. Ignored inputs leave the state unchanged. Results can be ±Inf
// where the text below says so; callers that encode results as JSON must
// handle that.
//
// The functions (fn is the name in the rule language, params the constant
// arguments after the value, defaults in brackets):
//
//   - zscore(x, n [30]): (x − mean)/s over the previous n values, where s is
//     their sample standard deviation (divisor n−1). ok once n previous
//     values exist; x joins the window after the score is computed. If the
//     previous values are all equal (s = 0) the result is 0 when x equals
//     them and ±Inf otherwise. 2 ≤ n ≤ [MaxSamples].
//   - ewma_dev(x, alpha [0.1]): x − m, where m is the exponentially weighted
//     moving average before x; then m ← alpha·x + (1−alpha)·m. The first
//     value only starts m (ok=false). 0 < alpha ≤ 1.
//   - rate(x): (x − x')/(t − t') in units per second, where (t', x') is the
//     previous observation. A point not later than the previous one (a
//     duplicate or out-of-order time) is ignored.
//   - mad_outlier(x, n [30], k [3.5]): the robust z-score
//     0.6745·(x − median)/MAD over the previous n values, where MAD is the
//     median of their absolute deviations from the median (Iglewicz and
//     Hoaglin's modified z-score). When more than half the values are equal
//     the MAD is 0; the score then falls back to (x − median)/(1.253314·MeanAD)
//     with MeanAD the mean absolute deviation, and if that is 0 too it is 0
//     when x equals the median and ±Inf otherwise. ok once n previous values
//     exist. k is the cut-off conventionally applied to the score (3.5); it
//     is validated (k > 0) but the function returns the score itself, so a
//     rule writes abs(mad_outlier(x, 30, 3.5)) > 3.5. 3 ≤ n ≤ [MaxSamples].
//   - time_to_threshold(x, threshold, window_seconds [3600]): fits a
//     least-squares line x = a + b·t through the observations whose times
//     lie in [latest − window_seconds, latest], where latest is the latest
//     time seen, and returns the seconds from latest until the line reaches
//     threshold: 0 if the line is already at or above threshold at latest,
//     +Inf if it never will (b ≤ 0), else (threshold − line(latest))/b. It
//     predicts crossings upward; for a falling quantity (a battery draining
//     to 20%) negate both: time_to_threshold(-x, -20). ok once the window
//     holds two observations at different times. Out-of-order observations
//     inside the window are used; older ones are ignored.
//     0 < window_seconds ≤ [MaxWindowSeconds].
//
// # Memory
//
// zscore and mad_outlier keep their last n values (n ≤ MaxSamples);
// ewma_dev and rate keep one; time_to_threshold keeps least-squares sums in
// at most [MaxTrendBuckets] (+2 at the edges) buckets of
// window_seconds/MaxTrendBuckets each (3.6 s for an hour): observations in
// one bucket are summed exactly, so the fit is exact, and a bucket leaves
// the window when its newest observation does, which can keep observations
// up to one bucket width (0.1% of the window) older than the window. An
// update costs O(n) for zscore and mad_outlier and O(buckets) for
// time_to_threshold; results are computed in time order from the kept
// state, so a restored state gives bit-for-bit the same results.
package anomaly

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Limits of the functions' parameters.
const (
	MaxSamples       = 10_000          // zscore and mad_outlier's n
	MaxTrendBuckets  = 1_000           // time_to_threshold's buckets
	MaxWindowSeconds = 366 * 24 * 3600 // time_to_threshold's window_seconds
)

// State is one call site's state for one group key.
type State interface {
	// Update takes the observation x at time t and returns the
	// function's value; ok=false: not enough data yet (or x ignored).
	Update(t time.Time, x float64) (y float64, ok bool)
}

// state is what every State of this package also implements, for
// Snapshot and Restore.
type state interface {
	State
	name() string
	params() []float64 // effective parameters, defaults applied
	save() any
	load(b json.RawMessage) error
}

// New returns the initial state of function fn (zscore, ewma_dev, rate,
// mad_outlier, time_to_threshold; case-insensitive) with the constant
// parameters params; missing trailing parameters take their defaults. It
// returns an error for an unknown function or bad parameters.
func New(fn string, params []float64) (State, error) {
	st, err := newState(fn, params)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func newState(fn string, params []float64) (state, error) {
	name := strings.ToLower(fn)
	for i, p := range params {
		if math.IsNaN(p) || math.IsInf(p, 0) {
			return nil, fmt.Errorf("anomaly: %s: parameter %d is not a finite number", name, i+1)
		}
	}
	arg := func(i int, def float64) float64 {
		if i < len(params) {
			return params[i]
		}
		return def
	}
	most := func(n int) error {
		if len(params) > n {
			return fmt.Errorf("anomaly: %s takes at most %d parameters, got %d", name, n, len(params))
		}
		return nil
	}
	count := func(what string, v float64, lo int) (int, error) {
		if v != math.Trunc(v) || v < float64(lo) || v > MaxSamples {
			return 0, fmt.Errorf("anomaly: %s: %s %v: want a whole number from %d to %d", name, what, v, lo, MaxSamples)
		}
		return int(v), nil
	}
	switch name {
	case "zscore":
		if err := most(1); err != nil {
			return nil, err
		}
		n, err := count("n", arg(0, 30), 2)
		if err != nil {
			return nil, err
		}
		return &zscore{win: ring{n: n}}, nil
	case "ewma_dev":
		if err := most(1); err != nil {
			return nil, err
		}
		alpha := arg(0, 0.1)
		if !(alpha > 0 && alpha <= 1) {
			return nil, fmt.Errorf("anomaly: ewma_dev: alpha %v: want more than 0 and at most 1", alpha)
		}
		return &ewmaDev{alpha: alpha}, nil
	case "rate":
		if err := most(0); err != nil {
			return nil, err
		}
		return &rate{}, nil
	case "mad_outlier":
		if err := most(2); err != nil {
			return nil, err
		}
		n, err := count("n", arg(0, 30), 3)
		if err != nil {
			return nil, err
		}
		k := arg(1, 3.5)
		if !(k > 0) {
			return nil, fmt.Errorf("anomaly: mad_outlier: k %v: want more than 0", k)
		}
		return &madOutlier{win: ring{n: n}, k: k}, nil
	case "time_to_threshold":
		if len(params) == 0 {
			return nil, fmt.Errorf("anomaly: time_to_threshold needs a threshold")
		}
		if err := most(2); err != nil {
			return nil, err
		}
		w := arg(1, 3600)
		if !(w > 0 && w <= MaxWindowSeconds) {
			return nil, fmt.Errorf("anomaly: time_to_threshold: window_seconds %v: want more than 0 and at most %d", w, MaxWindowSeconds)
		}
		return newTrend(params[0], w), nil
	}
	return nil, fmt.Errorf("anomaly: unknown function %q: want zscore, ewma_dev, rate, mad_outlier or time_to_threshold", fn)
}

// envelope is the encoding of a snapshot.
type envelope struct {
	Fn     string          `json:"fn"`
	Params []float64       `json:"params"`
	State  json.RawMessage `json:"state"`
}

// Snapshot encodes s, a State returned by [New] or [Restore], for
// [Restore].
func Snapshot(s State) ([]byte, error) {
	st, ok := s.(state)
	if !ok {
		return nil, fmt.Errorf("anomaly: snapshot: %T is not a state of this package", s)
	}
	body, err := json.Marshal(st.save())
	if err != nil {
		return nil, fmt.Errorf("anomaly: snapshot %s: %w", st.name(), err)
	}
	b, err := json.Marshal(envelope{Fn: st.name(), Params: st.params(), State: body})
	if err != nil {
		return nil, fmt.Errorf("anomaly: snapshot %s: %w", st.name(), err)
	}
	return b, nil
}

// Restore rebuilds a State from [Snapshot]'s bytes. fn and params must
// describe the same function and parameters (after defaults) as the state
// that was saved; otherwise, or if b is not a valid snapshot within the
// memory bounds, it returns an error.
func Restore(fn string, params []float64, b []byte) (State, error) {
	st, err := newState(fn, params)
	if err != nil {
		return nil, fmt.Errorf("anomaly: restore: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("anomaly: restore %s: %w", st.name(), err)
	}
	if env.Fn != st.name() || !slices.Equal(env.Params, st.params()) {
		return nil, fmt.Errorf("anomaly: restore: snapshot is of %s%v, not %s%v", env.Fn, env.Params, st.name(), st.params())
	}
	if err := st.load(env.State); err != nil {
		return nil, fmt.Errorf("anomaly: restore %s: %w", st.name(), err)
	}
	return st, nil
}

// unixNano returns t in nanoseconds since the epoch if it is in the years
// the package handles.
func unixNano(t time.Time) (int64, bool) {
	if y := t.Year(); y < 1700 || y >= 2200 {
		return 0, false
	}
	return t.UnixNano(), true
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// ratio returns d/s, with s ≥ 0: 0 if d is 0, ±Inf if only s is.
func ratio(d, s float64) float64 {
	if d == 0 {
		return 0
	}
	if s == 0 {
		return math.Inf(int(math.Copysign(1, d)))
	}
	return d / s
}

// ring holds the last n values.
type ring struct {
	n    int
	buf  []float64
	next int // when full, the index of the oldest value
}

func (r *ring) full() bool { return len(r.buf) == r.n }

// push adds x, returning the value it replaced (ok=false if none).
func (r *ring) push(x float64) (old float64, ok bool) {
	if !r.full() {
		r.buf = append(r.buf, x)
		return 0, false
	}
	old = r.buf[r.next]
	r.buf[r.next] = x
	r.next = (r.next + 1) % r.n
	return old, true
}

// values returns the values oldest first.
func (r *ring) values() []float64 {
	if !r.full() {
		return slices.Clone(r.buf)
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}

// set replaces the contents with vs, oldest first.
func (r *ring) set(vs []float64) error {
	if len(vs) > r.n {
		return fmt.Errorf("%d values for a window of %d", len(vs), r.n)
	}
	for _, v := range vs {
		if !finite(v) {
			return fmt.Errorf("value %v is not finite", v)
		}
	}
	r.buf, r.next = append(make([]float64, 0, r.n), vs...), 0
	return nil
}

// zscore is the rolling z-score.
type zscore struct{ win ring }

func (z *zscore) name() string      { return "zscore" }
func (z *zscore) params() []float64 { return []float64{float64(z.win.n)} }

func (z *zscore) Update(_ time.Time, x float64) (float64, bool) {
	if !finite(x) {
		return 0, false
	}
	var y float64
	ok := z.win.full()
	if ok {
		// Two passes over at most MaxSamples values, oldest first (the
		// order decides the rounding, and must not depend on where the
		// ring happens to start): exact, no drift.
		older, newer := z.win.buf[z.win.next:], z.win.buf[:z.win.next]
		var sum float64
		for _, v := range older {
			sum += v
		}
		for _, v := range newer {
			sum += v
		}
		mean := sum / float64(z.win.n)
		var ss float64
		for _, v := range older {
			ss += (v - mean) * (v - mean)
		}
		for _, v := range newer {
			ss += (v - mean) * (v - mean)
		}
		y = ratio(x-mean, math.Sqrt(ss/float64(z.win.n-1)))
	}
	z.win.push(x)
	return y, ok
}

type ringSnap struct {
	Values []float64 `json:"values"`
}

func (z *zscore) save() any { return ringSnap{Values: z.win.values()} }

func (z *zscore) load(b json.RawMessage) error {
	var s ringSnap
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return z.win.set(s.Values)
}

// ewmaDev is the deviation from the exponentially weighted moving average.
type ewmaDev struct {
	alpha float64
	mean  float64
	has   bool
}

func (e *ewmaDev) name() string      { return "ewma_dev" }
func (e *ewmaDev) params() []float64 { return []float64{e.alpha} }

func (e *ewmaDev) Update(_ time.Time, x float64) (float64, bool) {
	if !finite(x) {
		return 0, false
	}
	if !e.has {
		e.mean, e.has = x, true
		return 0, false
	}
	y := x - e.mean
	e.mean = e.alpha*x + (1-e.alpha)*e.mean
	return y, true
}

type ewmaSnap struct {
	Mean *float64 `json:"mean"` // nil before the first value
}

func (e *ewmaDev) save() any {
	if !e.has {
		return ewmaSnap{}
	}
	return ewmaSnap{Mean: &e.mean}
}

func (e *ewmaDev) load(b json.RawMessage) error {
	var s ewmaSnap
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.Mean == nil {
		return nil
	}
	if !finite(*s.Mean) {
		return fmt.Errorf("mean %v is not finite", *s.Mean)
	}
	e.mean, e.has = *s.Mean, true
	return nil
}

// rate is the rate of change per second.
type rate struct {
	t   int64 // previous time, ns
	x   float64
	has bool
}

func (r *rate) name() string      { return "rate" }
func (r *rate) params() []float64 { return []float64{} }

func (r *rate) Update(t time.Time, x float64) (float64, bool) {
	ns, ok := unixNano(t)
	if !ok || !finite(x) || (r.has && ns <= r.t) {
		return 0, false
	}
	prevT, prevX, had := r.t, r.x, r.has
	r.t, r.x, r.has = ns, x, true
	if !had {
		return 0, false
	}
	return (x - prevX) / (float64(ns-prevT) / 1e9), true
}

type rateSnap struct {
	T *int64  `json:"t"` // nil before the first value
	X float64 `json:"x"`
}

func (r *rate) save() any {
	if !r.has {
		return rateSnap{}
	}
	return rateSnap{T: &r.t, X: r.x}
}

func (r *rate) load(b json.RawMessage) error {
	var s rateSnap
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.T == nil {
		return nil
	}
	if _, ok := unixNano(time.Unix(0, *s.T)); !ok || !finite(s.X) {
		return fmt.Errorf("previous observation (%d, %v) out of range", *s.T, s.X)
	}
	r.t, r.x, r.has = *s.T, s.X, true
	return nil
}
