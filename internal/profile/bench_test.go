package profile_test

import (
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

// BenchmarkCheck is the Checker's cost per message of 10 points, on the
// ingest path of every message.
func BenchmarkCheck(b *testing.B) {
	keys := []string{"temp", "x", "y", "z", "w"}
	for _, bc := range []struct {
		name, device string
	}{{"profile=none", "plain"}, {"profile=boiler", "b1"}} {
		b.Run(bc.name, func(b *testing.B) {
			c, _, _ := newChecker(b)
			d := device(bc.device)
			pts := make([]tether.Point, 10)
			for k := range pts {
				pts[k] = num(keys[k%len(keys)], 0, 20)
			}
			ctx := b.Context()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				at := t0.Add(time.Duration(i) * time.Second)
				for k := range pts {
					pts[k].Time, pts[k].Quarantine = at, ""
				}
				c.Check(ctx, d, pts)
			}
		})
	}
}
