package window_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/rules/window"
)

// BenchmarkAdd measures Add on TUMBLING(1m) with five aggregates (avg,
// min, max, stddev, percentile 95), one point a second per key, keys in
// turn: alone (Advance only once a minute per key, so windows close) and
// followed by Advance as the engine calls it.
func BenchmarkAdd(b *testing.B) {
	aggs := []window.AggSpec{{Func: "avg"}, {Func: "min"}, {Func: "max"}, {Func: "stddev"}, {Func: "percentile", Param: 95}}
	spec := window.Spec{Kind: window.Tumbling, Size: time.Minute, Lateness: 5 * time.Second}
	for _, keys := range []int{1, 1000} {
		names := make([]string, keys)
		for i := range names {
			names[i] = fmt.Sprintf("device-%d", i)
		}
		for _, advance := range []bool{false, true} {
			name := fmt.Sprintf("tumbling/aggs=5/keys=%d", keys)
			if advance {
				name += "/advance"
			}
			b.Run(name, func(b *testing.B) {
				s := window.New(spec, aggs, window.Options{})
				vals := make([]any, len(aggs))
				// Boxed once, so the benchmark counts Add's allocations, not
				// the conversion of float64 to any.
				boxed := make([]any, 101)
				for i := range boxed {
					boxed[i] = float64(i)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					key := names[i%keys]
					t := base.Add(time.Duration(i/keys) * time.Second)
					v := boxed[i%101]
					for j := range vals {
						vals[j] = v
					}
					s.Add(key, t, vals)
					if advance || (i/keys)%60 == 0 {
						s.Advance(key, t)
					}
					i++
				}
			})
		}
	}
}
