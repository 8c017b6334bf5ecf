package writer_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/telemetry"
	"github.com/tether-iot/tether/internal/writer"
)

// nopDelivery is a bus message whose acknowledgement does nothing.
type nopDelivery struct{ data []byte }

func (d nopDelivery) Data() []byte            { return d.data }
func (d nopDelivery) Ack() error              { return nil }
func (d nopDelivery) Nak(time.Duration) error { return nil }

// BenchmarkWriter measures the storage writer's work per message, from
// encoded bus messages to committed SQLite transactions: decoding,
// batching and WriteMessages. Each message has 10 points; devices send in
// turn, as in the end-to-end fan-in benchmark, so each series gets about
// batch/devices points per transaction.
func BenchmarkWriter(b *testing.B) {
	for _, c := range []struct{ devices, batch int }{
		{100, 1000},
		{1000, 1000},
	} {
		b.Run(fmt.Sprintf("devices=%d/batch=%d/points=10", c.devices, c.batch), func(b *testing.B) {
			ctx := context.Background()
			db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "t.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tether.DefaultTenantID, Name: "d", CreatedAt: time.Now()}); err != nil {
				b.Fatal(err)
			}
			for i := range c.devices {
				if err := db.CreateDevice(ctx, &tether.Device{TenantID: tether.DefaultTenantID, ID: fmt.Sprintf("dev-%d", i),
					CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
			// Encoded up front: this measures the writer, not the encoder.
			start := time.Now().Add(-time.Hour)
			msgs := make([]writer.Delivery, b.N)
			for i := range msgs {
				at := start.Add(time.Duration(i) * time.Microsecond)
				m := tether.Message{ID: fmt.Sprintf("%032x", i), TenantID: tether.DefaultTenantID,
					DeviceID: fmt.Sprintf("dev-%d", i%c.devices), ReceivedAt: at}
				for k := range 10 {
					m.Points = append(m.Points, tether.Point{Key: fmt.Sprintf("k%02d", k), Time: at, Kind: tether.KindNumber, Num: float64(i) + 0.5})
				}
				data, err := telemetry.MarshalMessage(m)
				if err != nil {
					b.Fatal(err)
				}
				msgs[i] = nopDelivery{data}
			}
			var stored atomic.Int64
			done := make(chan struct{})
			src := func(_ context.Context, _ int, handle func(writer.Delivery)) (func(context.Context), error) {
				go func() {
					for _, d := range msgs {
						handle(d)
					}
				}()
				return func(context.Context) {}, nil
			}
			b.ReportAllocs()
			b.ResetTimer()
			w, err := writer.Start(ctx, db, src, writer.Options{
				Batch: c.batch, MaxDelay: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
				Observe: func(ms []tether.Message, _ time.Time) {
					if stored.Add(int64(len(ms))) == int64(b.N) {
						close(done)
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			<-done
			b.StopTimer()
			if err := w.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N*10)/b.Elapsed().Seconds(), "points/s")
		})
	}
}
