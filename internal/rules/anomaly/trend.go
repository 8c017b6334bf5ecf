package anomaly

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tether-iot/tether/internal/rules/jsonfloat"
)

// trend is time_to_threshold: a least-squares line over a time window.
type trend struct {
	threshold float64
	window    float64 // seconds, as given
	windowNs  int64
	widthNs   int64 // bucket width
	latest    int64 // latest time seen, ns
	has       bool
	buckets   []bucket // in time order
}

// bucket sums the observations of one time bucket. Times are seconds
// after the bucket's start, which keeps the sums precise (absolute Unix
// seconds squared would lose the fractions).
type bucket struct {
	idx        int64 // bucket number: start = idx·widthNs
	n          float64
	st, stt    float64 // Σt, Σt²
	sx, stx    float64 // Σx, Σt·x
	tmin, tmax int64   // ns
}

func newTrend(threshold, window float64) *trend {
	wNs := max(1, int64(window*1e9))
	// Rounding the width up keeps the window at most MaxTrendBuckets wide.
	width := (wNs + MaxTrendBuckets - 1) / MaxTrendBuckets
	return &trend{threshold: threshold, window: window, windowNs: wNs, widthNs: width}
}

func (tr *trend) name() string      { return "time_to_threshold" }
func (tr *trend) params() []float64 { return []float64{tr.threshold, tr.window} }

func (tr *trend) Update(t time.Time, x float64) (float64, bool) {
	ns, ok := unixNano(t)
	if !ok || !finite(x) || (tr.has && ns < tr.latest-tr.windowNs) {
		return 0, false
	}
	if !tr.has || ns > tr.latest {
		tr.latest, tr.has = ns, true
	}
	tr.add(ns, x)
	cut := tr.latest - tr.windowNs
	n := 0
	for n < len(tr.buckets) && tr.buckets[n].tmax < cut {
		n++
	}
	// Re-slicing rather than shifting: append reallocates (and drops the
	// expired buckets) when the backing array runs out.
	tr.buckets = tr.buckets[n:]
	return tr.estimate()
}

func (tr *trend) add(ns int64, x float64) {
	idx := floorDiv(ns, tr.widthNs)
	i, found := slices.BinarySearchFunc(tr.buckets, idx, func(b bucket, idx int64) int {
		switch {
		case b.idx < idx:
			return -1
		case b.idx > idx:
			return 1
		}
		return 0
	})
	if !found {
		tr.buckets = slices.Insert(tr.buckets, i, bucket{idx: idx, tmin: ns, tmax: ns})
	}
	b := &tr.buckets[i]
	dt := float64(ns-idx*tr.widthNs) / 1e9
	b.n++
	b.st += dt
	b.stt += dt * dt
	b.sx += x
	b.stx += dt * x
	b.tmin = min(b.tmin, ns)
	b.tmax = max(b.tmax, ns)
}

// estimate fits the line with times measured from latest (so line(latest)
// is the intercept) and returns the seconds to the threshold.
func (tr *trend) estimate() (float64, bool) {
	var n, st, stt, sx, stx float64
	first := tr.latest
	for _, b := range tr.buckets {
		// Move the bucket's sums from its start to latest: t' = t + d.
		d := float64(b.idx*tr.widthNs-tr.latest) * 1e-9
		n += b.n
		st += b.st + b.n*d
		stt += b.stt + 2*d*b.st + b.n*d*d
		sx += b.sx
		stx += b.stx + d*b.sx
		first = min(first, b.tmin)
	}
	if n < 2 || first == tr.latest {
		return 0, false // no two distinct times: no slope
	}
	sxx := stt - st*st/n
	sxy := stx - st*sx/n
	if !(sxx > 0) {
		return 0, false
	}
	slope := sxy / sxx
	now := (sx - slope*st) / n // the line at latest (t' = 0)
	switch {
	case now >= tr.threshold:
		return 0, true
	case !(slope > 0):
		return math.Inf(1), true
	}
	return (tr.threshold - now) / slope, true
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

type trendSnap struct {
	Latest  *int64       `json:"latest"` // nil before the first value
	Buckets []bucketSnap `json:"buckets,omitempty"`
}

type bucketSnap struct {
	Idx  int64   `json:"idx"`
	N    float64 `json:"n"`
	St   jfloat  `json:"st"`
	Stt  jfloat  `json:"stt"`
	Sx   jfloat  `json:"sx"`
	Stx  jfloat  `json:"stx"`
	TMin int64   `json:"tmin"`
	TMax int64   `json:"tmax"`
}

func (tr *trend) save() any {
	if !tr.has {
		return trendSnap{}
	}
	s := trendSnap{Latest: &tr.latest}
	for _, b := range tr.buckets {
		s.Buckets = append(s.Buckets, bucketSnap{b.idx, b.n, jfloat(b.st), jfloat(b.stt), jfloat(b.sx), jfloat(b.stx), b.tmin, b.tmax})
	}
	return s
}

func (tr *trend) load(raw json.RawMessage) error {
	var s trendSnap
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	if s.Latest == nil {
		if len(s.Buckets) > 0 {
			return errors.New("buckets without a latest time")
		}
		return nil
	}
	if _, ok := unixNano(time.Unix(0, *s.Latest)); !ok {
		return fmt.Errorf("latest time %d out of range", *s.Latest)
	}
	tr.latest, tr.has = *s.Latest, true
	if len(s.Buckets) > MaxTrendBuckets+2 {
		return fmt.Errorf("%d buckets: at most %d", len(s.Buckets), MaxTrendBuckets+2)
	}
	cut := tr.latest - tr.windowNs
	for i, b := range s.Buckets {
		if b.Idx != floorDiv(b.TMin, tr.widthNs) || b.Idx != floorDiv(b.TMax, tr.widthNs) ||
			b.TMin > b.TMax || b.TMax > tr.latest || b.TMax < cut {
			return fmt.Errorf("bucket %d: times do not fit", i)
		}
		if i > 0 && b.Idx <= s.Buckets[i-1].Idx {
			return fmt.Errorf("bucket %d: out of order", i)
		}
		if !(b.N >= 1) || b.N != math.Trunc(b.N) || math.IsNaN(float64(b.St)) || math.IsNaN(float64(b.Stt)) ||
			math.IsNaN(float64(b.Sx)) || math.IsNaN(float64(b.Stx)) {
			return fmt.Errorf("bucket %d: bad sums", i)
		}
		tr.buckets = append(tr.buckets, bucket{b.Idx, b.N, float64(b.St), float64(b.Stt), float64(b.Sx), float64(b.Stx), b.TMin, b.TMax})
	}
	return nil
}

// jfloat is a float64 that survives JSON even when infinite or NaN.
type jfloat = jsonfloat.Float
