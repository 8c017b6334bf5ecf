package shadow_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/shadow"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// BenchmarkUpdate measures shadow updates per second through the service
// and the SQLite store: each update is one transaction (read, merge,
// compare-and-swap write, commit), then an event to a no-op recorder.
func BenchmarkUpdate(b *testing.B) {
	for _, devices := range []int{1, 100} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			ctx := context.Background()
			db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "t.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tenant}); err != nil {
				b.Fatal(err)
			}
			for i := range devices {
				if err := db.CreateDevice(ctx, &tether.Device{TenantID: tenant, ID: fmt.Sprintf("d%d", i)}); err != nil {
					b.Fatal(err)
				}
			}
			svc := shadow.New(db, nopEvents{}, shadow.Options{})
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					var u tether.ShadowUpdate
					u.State.Reported = map[string]any{"temp": float64(i), "fan": map[string]any{"speed": i % 5}, "fw": "1.2.3"}
					if _, err := svc.Update(ctx, tenant, fmt.Sprintf("d%d", i%devices), "", u); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
		})
	}
}

type nopEvents struct{}

func (nopEvents) PublishEvent(context.Context, string, string, string, []byte) error { return nil }
