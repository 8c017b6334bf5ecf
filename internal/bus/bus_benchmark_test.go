package bus_test

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tether-iot/tether/internal/bus"
)

// BenchmarkPublishTelemetry measures accepting one message: the path of
// every device publish, which returns only once JetStream has stored the
// message. An embedded bus is used, as on a single node.
func BenchmarkPublishTelemetry(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{
		{"200b", 200},
		{"2kb", 2 << 10},
	} {
		payload := bytes.Repeat([]byte("x"), size.n)
		b.Run("payload="+size.name+"/sequential", func(b *testing.B) {
			bb, nextID := benchBus(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if err := bb.PublishTelemetry(b.Context(), "acme", "dev-1", nextID(), payload); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("payload="+size.name+"/parallel", func(b *testing.B) {
			bb, nextID := benchBus(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			// Many devices publish at once, each waiting for its own ack.
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := bb.PublishTelemetry(b.Context(), "acme", "dev-1", nextID(), payload); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchBus opens an embedded bus with a durable consumer that acknowledges
// everything in the background. With interest retention a stream without
// a consumer drops each message at once, which would measure a path no
// node takes; with an acking consumer the stream stays small, as it does
// when the storage writer keeps up. It also returns a source of unique
// message IDs, since a repeated ID is dropped as a duplicate.
func benchBus(b *testing.B) (*bus.Bus, func() string) {
	b.Helper()
	bb := open(b, bus.Options{StoreDir: b.TempDir()})
	c, err := bb.ConsumeTelemetry(b.Context(), "storage", 1000, func(m bus.Msg) { _ = m.Ack() })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	var n atomic.Uint64
	return bb, func() string { return strconv.FormatUint(n.Add(1), 10) }
}
