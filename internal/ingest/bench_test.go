package ingest_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/bus"
	"github.com/tether-iot/tether/internal/testkit"
)

// nopPublisher takes every message at once.
type nopPublisher struct{}

func (nopPublisher) PublishTelemetry(context.Context, string, string, string, []byte) error {
	return nil
}

// benchPayload is a message as the load benchmark's devices send it: a
// "ts" in epoch milliseconds with a microsecond fraction and keys values.
func benchPayload(keys int) []byte {
	b := fmt.Appendf(nil, `{"ts":%.3f`, float64(time.Now().UnixMicro())/1e3)
	for i := range keys {
		b = fmt.Appendf(b, `,"k%02d":%d.5`, i, i)
	}
	return append(b, '}')
}

// BenchmarkAccept measures the ingest path of one device message: decode,
// message ID, encoding and the bus. With publisher=none the bus takes every
// message at once, which leaves Tether's own work; with publisher=bus an
// embedded bus (file storage, a consumer acknowledging in batches) stores
// each message before Accept returns, as on a node, and devices is the
// number publishing at once, each waiting for its acknowledgement.
// cpu-ns/op is the CPU time the process spent per message.
func BenchmarkAccept(b *testing.B) {
	const keys = 10
	payload := benchPayload(keys)
	b.Run("points=10/publisher=none", func(b *testing.B) {
		in := newIngestor(nopPublisher{})
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			if _, err := in.Accept(b.Context(), device, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, devices := range []int{1, 16, 256} {
		b.Run("points=10/publisher=bus/devices="+strconv.Itoa(devices), func(b *testing.B) {
			in := newIngestor(benchBus(b))
			ds := make([]*tether.Device, devices)
			for i := range ds {
				ds[i] = &tether.Device{TenantID: "acme", ID: "dev-" + strconv.Itoa(i)}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			testkit.RunParallel(b, devices, func(w int) error {
				_, err := in.Accept(b.Context(), ds[w], payload)
				return err
			})
		})
	}
}

// benchBus opens an embedded bus whose storage consumer acknowledges
// everything, in batches as the storage writer does: with interest
// retention a stream without a consumer would drop each message at once,
// a path no node takes.
func benchBus(b *testing.B) *bus.Bus {
	b.Helper()
	bb, err := bus.Open(b.Context(), bus.Options{StoreDir: b.TempDir(), Durables: []string{"storage"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := bb.Close(); err != nil {
			b.Error(err)
		}
	})
	c, err := bb.ConsumeTelemetry(b.Context(), "storage", 1000, testkit.AckInBatches[bus.Msg](b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	return bb
}

// cpuTime returns the CPU time the process has used.
