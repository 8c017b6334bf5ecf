package window_test

import (
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/rules/window"
)

// fuzzSpecs are the Sets FuzzRestore restores into; the first byte of the
// input chooses one.
var fuzzSpecs = []window.Spec{
	{Kind: window.Tumbling, Size: time.Minute, Lateness: 10 * time.Second},
	{Kind: window.Hopping, Size: 30 * time.Second, Slide: 10 * time.Second},
	{Kind: window.Session, Gap: 10 * time.Second, Lateness: 5 * time.Second},
}

var fuzzAggs = []window.AggSpec{{Func: "avg"}, {Func: "stddev"}, {Func: "first"}, {Func: "last"}, {Func: "percentile", Param: 90}, {Func: "count"}}

var fuzzOpts = window.Options{MaxKeys: 8, MaxOpenPerKey: 8, MaxValues: 4}

// FuzzRestore feeds stored bytes to Restore: it must never panic, and a
// Set it accepts must work and snapshot again to bytes it accepts.
func FuzzRestore(f *testing.F) {
	for i, spec := range fuzzSpecs {
		s := window.New(spec, fuzzAggs, fuzzOpts)
		for j, sec := range []float64{1, 5, 12, 31, 29, 70, 3} {
			key := []string{"a", "b"}[j%2]
			s.Add(key, at(sec), []any{sec, sec, "s", true, sec, 1})
		}
		b, err := s.Snapshot()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(i)}, b...))
	}
	f.Add([]byte{0})
	f.Add([]byte("\x00{\"version\":1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		spec := fuzzSpecs[int(b[0])%len(fuzzSpecs)]
		s, err := window.Restore(spec, fuzzAggs, fuzzOpts, b[1:])
		if err != nil {
			return
		}
		st := s.Stats()
		if st.Keys > fuzzOpts.MaxKeys || st.Open > fuzzOpts.MaxKeys*fuzzOpts.MaxOpenPerKey {
			t.Fatalf("restored beyond the bounds: %+v", st)
		}
		for _, sec := range []float64{0, 15, 40, 2000} {
			s.Add("a", at(sec), []any{1.0, 2.0, "x", false, 3.0, 1})
			s.Advance("a", at(sec))
		}
		again, err := s.Snapshot()
		if err != nil {
			t.Fatalf("snapshot of a restored set: %v", err)
		}
		if _, err := window.Restore(spec, fuzzAggs, fuzzOpts, again); err != nil {
			t.Fatalf("restore of its own snapshot: %v", err)
		}
		s.Flush(time.Now().Add(time.Hour), 0)
	})
}
