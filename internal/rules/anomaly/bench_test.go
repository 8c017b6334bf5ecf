package anomaly_test

import (
	"fmt"
	"testing"

	"github.com/tether-iot/tether/internal/rules/anomaly"
)

// BenchmarkUpdate measures one Update of each function with its default
// parameters (and larger windows), on a warm state: one observation a
// second.
func BenchmarkUpdate(b *testing.B) {
	cases := []struct {
		fn     string
		params []float64
	}{
		{"zscore", nil},
		{"zscore", []float64{1000}},
		{"ewma_dev", nil},
		{"rate", nil},
		{"mad_outlier", nil},
		{"mad_outlier", []float64{1000}},
		{"time_to_threshold", []float64{100}},            // an hour: 1,000 buckets of 3.6 s, ~1,000 in use
		{"time_to_threshold", []float64{100, 24 * 3600}}, // a day: 86.4 s buckets
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("fn=%s/params=%v", c.fn, c.params), func(b *testing.B) {
			s, err := anomaly.New(c.fn, c.params)
			if err != nil {
				b.Fatal(err)
			}
			in := series(4096)
			for i := range 4096 {
				s.Update(at(float64(i)), in[i].x)
			}
			b.ReportAllocs()
			i := 4096
			for b.Loop() {
				s.Update(at(float64(i)), float64(i%97))
				i++
			}
		})
	}
}
