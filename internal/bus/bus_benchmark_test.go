package bus_test

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tether-iot/tether/internal/bus"
	"github.com/tether-iot/tether/internal/testkit"
)

// BenchmarkPublishTelemetry measures accepting one message: the path of
// every device publish, which returns only once JetStream has stored the
// message. An embedded bus is used, as on a single node, with a consumer
// acknowledging everything, as the storage writer does (see benchBus).
//
// publishers is the number of devices publishing at once, each waiting for
// its own acknowledgement before its next message. ns/op is wall time per
// message over all of them; cpu-ns/op is the CPU time the process (bus
// client, embedded server and consumer) spent per message, which is what
// limits a node whose cores are busy.
func BenchmarkPublishTelemetry(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{
		{"200b", 200},
		{"2kb", 2 << 10},
	} {
		payload := bytes.Repeat([]byte("x"), size.n)
		for _, publishers := range []int{1, 16, 256} {
			b.Run("payload="+size.name+"/publishers="+strconv.Itoa(publishers), func(b *testing.B) {
				bb, nextID := benchBus(b)
				devices := make([]string, publishers)
				for i := range devices {
					devices[i] = "dev-" + strconv.Itoa(i)
				}
				b.ReportAllocs()
				b.SetBytes(int64(len(payload)))
				testkit.RunParallel(b, publishers, func(w int) error {
					return bb.PublishTelemetry(b.Context(), "acme", devices[w], nextID(), payload)
				})
			})
		}
	}
}

// cpuTime returns the CPU time the process has used.

// benchBus opens an embedded bus with a durable consumer that acknowledges
// everything in the background, in batches as the storage writer does.
// With interest retention a stream without a consumer drops each message
// at once, which would measure a path no node takes; with an acking
// consumer the stream stays small, as it does when the writer keeps up. It also returns a source of unique
// message IDs, since a repeated ID is dropped as a duplicate.
func benchBus(b *testing.B) (*bus.Bus, func() string) {
	b.Helper()
	bb := open(b, bus.Options{StoreDir: b.TempDir()})
	c, err := bb.ConsumeTelemetry(b.Context(), "storage", 1000, testkit.AckInBatches[bus.Msg](b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	var n atomic.Uint64
	return bb, func() string { return strconv.FormatUint(n.Add(1), 10) }
}
