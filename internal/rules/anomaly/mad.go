package anomaly

import (
	"encoding/json"
	"math"
	"slices"
	"sort"
	"time"
)

// madOutlier is the robust (median absolute deviation) z-score. Besides
// the window in arrival order it keeps the same values sorted, updated by
// one binary-search insert and delete per observation, so the median is
// read directly and the MAD found by one merge walk: O(n) per update with
// small constants and no allocation.
type madOutlier struct {
	win    ring
	k      float64
	sorted []float64
}

func (m *madOutlier) name() string      { return "mad_outlier" }
func (m *madOutlier) params() []float64 { return []float64{float64(m.win.n), m.k} }

func (m *madOutlier) Update(_ time.Time, x float64) (float64, bool) {
	if !finite(x) {
		return 0, false
	}
	var y float64
	ok := m.win.full()
	if ok {
		y = m.score(x)
	}
	if old, replaced := m.win.push(x); replaced {
		i := sort.SearchFloat64s(m.sorted, old)
		m.sorted = slices.Delete(m.sorted, i, i+1)
	}
	i := sort.SearchFloat64s(m.sorted, x)
	m.sorted = slices.Insert(m.sorted, i, x)
	return y, ok
}

// score is x's robust z-score against the sorted window.
func (m *madOutlier) score(x float64) float64 {
	s := m.sorted
	n := len(s)
	med := middle(n, func(i int) float64 { return s[i] })
	// The absolute deviations, in increasing order, are the merge of the
	// values below the median read downward and those at or above it read
	// upward.
	split := sort.SearchFloat64s(s, med)
	lo, hi := split-1, split
	devs := func(yield func(float64) bool) {
		for lo >= 0 || hi < n {
			var d float64
			if hi >= n || (lo >= 0 && med-s[lo] <= s[hi]-med) {
				d = med - s[lo]
				lo--
			} else {
				d = s[hi] - med
				hi++
			}
			if !yield(d) {
				return
			}
		}
	}
	// The MAD is the median of the n deviations: the one of rank
	// (n−1)/2, averaged with rank n/2 when n is even.
	var a, b float64
	i := 0
	for d := range devs {
		if i == (n-1)/2 {
			a = d
		}
		if i == n/2 {
			b = d
			break
		}
		i++
	}
	if mad := (a + b) / 2; mad > 0 {
		return 0.6745 * (x - med) / mad
	}
	var sum float64
	for _, v := range s {
		sum += math.Abs(v - med)
	}
	return ratio(x-med, 1.253314*sum/float64(n))
}

// middle is the median of n sorted values read by at.
func middle(n int, at func(int) float64) float64 {
	if n%2 == 1 {
		return at(n / 2)
	}
	return (at(n/2-1) + at(n/2)) / 2
}

func (m *madOutlier) save() any { return ringSnap{Values: m.win.values()} }

func (m *madOutlier) load(b json.RawMessage) error {
	var s ringSnap
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if err := m.win.set(s.Values); err != nil {
		return err
	}
	m.sorted = slices.Sorted(slices.Values(s.Values))
	return nil
}
