package writer_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/telemetry"
	"github.com/tether-iot/tether/internal/writer"
)

// delivery is a bus message that records its acknowledgement.
type delivery struct {
	data  []byte
	acked atomic.Bool
}

func (d *delivery) Data() []byte            { return d.data }
func (d *delivery) Ack() error              { d.acked.Store(true); return nil }
func (d *delivery) Nak(time.Duration) error { return nil }

// feed is a writer.Source that delivers what is sent on its channel.
type feed chan writer.Delivery

func (f feed) source(_ context.Context, _ int, handle func(writer.Delivery)) (func(context.Context), error) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case d := <-f:
				handle(d)
			case <-done:
				return
			}
		}
	}()
	return func(context.Context) { close(done); wg.Wait() }, nil
}

func message(t *testing.T, id string, v float64) *delivery {
	t.Helper()
	now := time.Now().UTC()
	b, err := telemetry.MarshalMessage(tether.Message{ID: id, TenantID: tether.DefaultTenantID, DeviceID: "d1", ReceivedAt: now,
		Points: []tether.Point{{Key: "v", Time: now, Kind: tether.KindNumber, Num: v}}})
	if err != nil {
		t.Fatal(err)
	}
	return &delivery{data: b}
}

func TestWriterStoresBatchesExactlyOnceAndAcksAfterCommit(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tether.DefaultTenantID, Name: "d", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateDevice(ctx, &tether.Device{TenantID: tether.DefaultTenantID, ID: "d1", CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var batches atomic.Int32
	f := make(feed)
	w, err := writer.Start(ctx, db, f.source, writer.Options{
		Batch: 3, MaxDelay: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		Observe: func([]tether.Message, time.Time) { batches.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ds := []*delivery{message(t, "m1", 1), message(t, "m2", 2), message(t, "m3", 3), message(t, "m4", 4)}
	redelivered := message(t, "m2", 2)
	garbage := &delivery{data: []byte("not a bus message")}
	for _, d := range append(ds, redelivered, garbage) {
		f <- d
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.Stored() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("every message is acknowledged, the redelivered and the undecodable too", func(t *testing.T) {
		for i, d := range append(ds, redelivered, garbage) {
			if !d.acked.Load() {
				t.Errorf("delivery %d not acked", i)
			}
		}
	})
	t.Run("a redelivered message is stored once", func(t *testing.T) {
		series, err := db.Telemetry(ctx, tether.TelemetryQuery{TenantID: tether.DefaultTenantID, DeviceID: "d1", Keys: []string{"v"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(series) != 1 || len(series[0].Samples) != 4 || w.Stored() != 4 {
			t.Errorf("series %+v, stored %d", series, w.Stored())
		}
	})
	t.Run("a full batch is written at once and the rest after the delay", func(t *testing.T) {
		if got := batches.Load(); got != 2 {
			t.Errorf("%d batches, want 2 (3 messages, then 2 plus a dropped one)", got)
		}
	})
}

func TestCloseGivesUpOnAFailingStoreAndLeavesTheMessageOnTheBus(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.Close() // every write now fails
	f := make(feed)
	w, err := writer.Start(ctx, db, f.source, writer.Options{Batch: 1, MaxDelay: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// The first message is being written (and failing), the second waits
	// in the writer, the third blocks the source's delivery.
	d := message(t, "m1", 1)
	f <- d
	time.Sleep(50 * time.Millisecond) // let the first write fail
	f <- message(t, "m2", 2)
	f <- message(t, "m3", 3)
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := w.Close(cctx); err == nil {
		t.Error("Close returned no error though the batch was never written")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %s", took)
	}
	if d.acked.Load() {
		t.Error("an unwritten message was acknowledged")
	}
}
