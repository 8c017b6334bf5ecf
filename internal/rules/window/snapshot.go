package window

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// snapshotVersion is the format of Snapshot's bytes; Restore refuses
// others.
const snapshotVersion = 1

type snapshot struct {
	Version int         `json:"version"`
	Spec    snapSpec    `json:"spec"`
	Aggs    []AggSpec   `json:"aggs"`
	Keys    []snapKey   `json:"keys"` // least recently seen first
	Pending []snapClose `json:"pending,omitempty"`
}

type snapSpec struct {
	Kind     string `json:"kind"`
	Size     int64  `json:"size,omitempty"`
	Slide    int64  `json:"slide,omitempty"`
	Gap      int64  `json:"gap,omitempty"`
	Lateness int64  `json:"lateness,omitempty"`
}

type snapKey struct {
	Key      string    `json:"key"`
	KeyBytes []byte    `json:"key_bytes,omitempty"` // the key, if it is not valid UTF-8
	MaxT     int64     `json:"max_t"`
	ClosedTo int64     `json:"closed_to"`
	LastSeen int64     `json:"last_seen"`
	Wins     []snapWin `json:"wins,omitempty"`
}

type snapWin struct {
	Start int64      `json:"start"`
	End   int64      `json:"end"`
	Aggs  []snapAggS `json:"aggs"`
}

type snapAggS struct {
	N    int64    `json:"n,omitempty"`
	Sum  jfloat   `json:"sum,omitempty"`
	Mean jfloat   `json:"mean,omitempty"`
	M2   jfloat   `json:"m2,omitempty"`
	Min  jfloat   `json:"min,omitempty"`
	Max  jfloat   `json:"max,omitempty"`
	Val  *jval    `json:"val,omitempty"`
	ValT int64    `json:"val_t,omitempty"`
	Vals []jfloat `json:"vals,omitempty"`
	Seen int64    `json:"seen,omitempty"`
	RNG  uint64   `json:"rng,omitempty"`
}

type snapClose struct {
	Key    string  `json:"key"`
	KeyB   []byte  `json:"key_bytes,omitempty"`
	Start  int64   `json:"start"`
	End    int64   `json:"end"`
	Values []*jval `json:"values"`
}

// jval is a result or first/last value: a float, a string or a bool.
type jval struct {
	F *jfloat `json:"f,omitempty"`
	S *string `json:"s,omitempty"`
	B *bool   `json:"b,omitempty"`
}

func toJval(v any) *jval {
	switch v := v.(type) {
	case float64:
		f := jfloat(v)
		return &jval{F: &f}
	case string:
		return &jval{S: &v}
	case bool:
		return &jval{B: &v}
	}
	return nil
}

func (j *jval) value() (any, error) {
	if j == nil {
		return nil, nil
	}
	n := 0
	var v any
	if j.F != nil {
		n, v = n+1, float64(*j.F)
	}
	if j.S != nil {
		n, v = n+1, *j.S
	}
	if j.B != nil {
		n, v = n+1, *j.B
	}
	if n != 1 {
		return nil, errors.New("value must have exactly one of f, s, b")
	}
	return v, nil
}

// Snapshot encodes the Set's state (open windows, watermarks, windows
// closed early and not yet returned) for [Restore]. The encoding is
// deterministic: the same state gives the same bytes.
func (s *Set) Snapshot() ([]byte, error) {
	sn := snapshot{
		Version: snapshotVersion,
		Spec:    snapSpec{Kind: s.spec.Kind, Size: s.size, Slide: s.slide, Gap: s.gap, Lateness: s.late},
		Aggs:    s.aggSpecs(),
		Keys:    make([]snapKey, 0, len(s.keys)),
	}
	for e := s.lru.Back(); e != nil; e = e.Prev() {
		ks := e.Value.(*keyState)
		k := snapKey{MaxT: ks.maxT, ClosedTo: ks.closedTo, LastSeen: ks.lastSeen}
		k.Key, k.KeyBytes = encodeKey(ks.key)
		for _, w := range ks.wins {
			sw := snapWin{Start: w.start, End: w.end, Aggs: make([]snapAggS, len(w.aggs))}
			for i, a := range w.aggs {
				sa := snapAggS{N: a.n, Sum: jfloat(a.sum), Mean: jfloat(a.mean), M2: jfloat(a.m2),
					Min: jfloat(a.min), Max: jfloat(a.max), Val: toJval(a.val), ValT: a.valT, Seen: a.seen, RNG: a.rng}
				for _, x := range a.vals {
					sa.Vals = append(sa.Vals, jfloat(x))
				}
				sw.Aggs[i] = sa
			}
			k.Wins = append(k.Wins, sw)
		}
		sn.Keys = append(sn.Keys, k)
	}
	for _, c := range s.pending {
		sc := snapClose{Start: c.Start.UnixNano(), End: c.End.UnixNano(), Values: make([]*jval, len(c.Values))}
		sc.Key, sc.KeyB = encodeKey(c.Key)
		for i, v := range c.Values {
			sc.Values[i] = toJval(v)
		}
		sn.Pending = append(sn.Pending, sc)
	}
	b, err := json.Marshal(sn)
	if err != nil {
		return nil, fmt.Errorf("window: snapshot: %w", err)
	}
	return b, nil
}

// encodeKey returns a group key for JSON, which would replace the bytes of
// a key that is not valid UTF-8 (so two keys could become one): such keys
// are stored as bytes.
func encodeKey(k string) (string, []byte) {
	if utf8.ValidString(k) {
		return k, nil
	}
	return "", []byte(k)
}

func decodeKey(k string, b []byte) string {
	if b != nil {
		return string(b)
	}
	return k
}

// aggSpecs returns the Set's aggregates in their normalised form.
func (s *Set) aggSpecs() []AggSpec {
	out := make([]AggSpec, len(s.aggs))
	for i, f := range s.aggs {
		for name, g := range funcs {
			if g == f {
				out[i] = AggSpec{Func: name, Param: s.params[i]}
			}
		}
	}
	return out
}

// Restore rebuilds a Set from [Set.Snapshot]'s bytes. spec and aggs must be
// those of the Set that made the snapshot, and the state must fit o's
// bounds; otherwise, or if b is not a valid snapshot, Restore returns an
// error (and the caller starts from an empty Set).
func Restore(spec Spec, aggs []AggSpec, o Options, b []byte) (*Set, error) {
	if err := Validate(spec, aggs, o); err != nil {
		return nil, fmt.Errorf("window: restore: %w", err)
	}
	s := New(spec, aggs, o)
	var sn snapshot
	if err := json.Unmarshal(b, &sn); err != nil {
		return nil, fmt.Errorf("window: restore: %w", err)
	}
	if err := s.load(&sn); err != nil {
		return nil, fmt.Errorf("window: restore: %w", err)
	}
	return s, nil
}

func (s *Set) load(sn *snapshot) error {
	if sn.Version != snapshotVersion {
		return fmt.Errorf("snapshot version %d: want %d", sn.Version, snapshotVersion)
	}
	want := snapSpec{Kind: s.spec.Kind, Size: s.size, Slide: s.slide, Gap: s.gap, Lateness: s.late}
	if sn.Spec != want {
		return fmt.Errorf("snapshot is of window %+v, not %+v", sn.Spec, want)
	}
	mine := s.aggSpecs()
	if len(sn.Aggs) != len(mine) {
		return fmt.Errorf("snapshot has %d aggregates, not %d", len(sn.Aggs), len(mine))
	}
	for i, a := range sn.Aggs {
		if strings.ToLower(a.Func) != mine[i].Func || a.Param != mine[i].Param {
			return fmt.Errorf("snapshot aggregate %d is %s(%v), not %s(%v)", i, a.Func, a.Param, mine[i].Func, mine[i].Param)
		}
	}
	if len(sn.Keys) > s.o.MaxKeys {
		return fmt.Errorf("snapshot has %d keys: at most %d", len(sn.Keys), s.o.MaxKeys)
	}
	// Window bounds beyond the handled years would overflow arithmetic.
	hi := maxTime + 4*int64(MaxDuration)
	inRange := func(ns int64) bool { return ns >= minTime && ns <= hi }
	for _, k := range sn.Keys {
		k.Key = decodeKey(k.Key, k.KeyBytes)
		if _, dup := s.keys[k.Key]; dup {
			return fmt.Errorf("key %q twice", k.Key)
		}
		if !inRange(k.MaxT) || !inRange(k.ClosedTo) {
			return fmt.Errorf("key %q: times out of range", k.Key)
		}
		if len(k.Wins) > s.o.MaxOpenPerKey {
			return fmt.Errorf("key %q has %d open windows: at most %d", k.Key, len(k.Wins), s.o.MaxOpenPerKey)
		}
		ks := &keyState{key: k.Key, maxT: k.MaxT, closedTo: k.ClosedTo, lastSeen: k.LastSeen}
		for j, sw := range k.Wins {
			if !inRange(sw.Start) || !inRange(sw.End) || sw.End <= sw.Start {
				return fmt.Errorf("key %q window %d: bad bounds", k.Key, j)
			}
			if err := s.checkBounds(sw.Start, sw.End); err != nil {
				return fmt.Errorf("key %q window %d: %w", k.Key, j, err)
			}
			if j > 0 {
				prev := k.Wins[j-1]
				if sw.Start <= prev.Start || (s.spec.Kind == Session && sw.Start < prev.End) {
					return fmt.Errorf("key %q window %d: out of order or overlapping", k.Key, j)
				}
			}
			w := &win{start: sw.Start, end: sw.End, aggs: make([]aggState, len(s.aggs))}
			if len(sw.Aggs) != len(s.aggs) {
				return fmt.Errorf("key %q window %d: %d aggregates, not %d", k.Key, j, len(sw.Aggs), len(s.aggs))
			}
			for i, sa := range sw.Aggs {
				a, err := s.loadAgg(i, sa)
				if err != nil {
					return fmt.Errorf("key %q window %d aggregate %d: %w", k.Key, j, i, err)
				}
				w.aggs[i] = a
			}
			ks.wins = append(ks.wins, w)
			s.open++
		}
		ks.elem = s.lru.PushFront(ks)
		s.keys[k.Key] = ks
	}
	for j, sc := range sn.Pending {
		if len(sc.Values) != len(s.aggs) {
			return fmt.Errorf("pending window %d: %d values, not %d", j, len(sc.Values), len(s.aggs))
		}
		c := Closed{Key: decodeKey(sc.Key, sc.KeyB), Start: time.Unix(0, sc.Start).UTC(), End: time.Unix(0, sc.End).UTC(), Values: make([]any, len(sc.Values))}
		for i, jv := range sc.Values {
			v, err := jv.value()
			if err != nil {
				return fmt.Errorf("pending window %d value %d: %w", j, i, err)
			}
			c.Values[i] = v
		}
		s.pending = append(s.pending, c)
	}
	return nil
}

// checkBounds checks that [start, end) can be one of this Set's windows.
func (s *Set) checkBounds(start, end int64) error {
	switch s.spec.Kind {
	case Tumbling:
		if end-start != s.size || start%s.size != 0 {
			return errors.New("not a tumbling window of this size")
		}
	case Hopping:
		if end-start != s.size || start%s.slide != 0 {
			return errors.New("not a hopping window of this size and slide")
		}
	case Session:
		if end-start < s.gap {
			return errors.New("session shorter than its gap")
		}
	}
	return nil
}

func (s *Set) loadAgg(i int, sa snapAggS) (aggState, error) {
	a := aggState{n: sa.N, sum: float64(sa.Sum), mean: float64(sa.Mean), m2: float64(sa.M2),
		min: float64(sa.Min), max: float64(sa.Max), valT: sa.ValT, seen: sa.Seen, rng: sa.RNG}
	if a.n < 0 {
		return a, errors.New("negative count")
	}
	v, err := sa.Val.value()
	if err != nil {
		return a, err
	}
	a.val = v
	f := s.aggs[i]
	if (f == aggFirst || f == aggLast) && (a.n > 0) != (a.val != nil) {
		return a, errors.New("first/last value missing or unexpected")
	}
	if len(sa.Vals) > s.o.MaxValues {
		return a, fmt.Errorf("%d percentile values: at most %d", len(sa.Vals), s.o.MaxValues)
	}
	if f == aggPercentile && (a.seen < int64(len(sa.Vals)) || a.n < int64(len(sa.Vals))) {
		return a, errors.New("percentile values exceed the count")
	}
	for _, x := range sa.Vals {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return a, errors.New("percentile value not finite")
		}
		a.vals = append(a.vals, float64(x))
	}
	return a, nil
}
