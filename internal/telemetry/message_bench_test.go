package telemetry_test

import (
	"fmt"
	"testing"

	"github.com/tether-iot/tether/internal/telemetry"
)

// BenchmarkAppendMessage encodes into one reused buffer, as the ingest
// path does, where BenchmarkMarshalMessage allocates a buffer per message.
func BenchmarkAppendMessage(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("points=%d", n), func(b *testing.B) {
			m := benchMessage(n)
			buf, err := telemetry.AppendMessage(nil, m)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if buf, err = telemetry.AppendMessage(buf[:0], m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
