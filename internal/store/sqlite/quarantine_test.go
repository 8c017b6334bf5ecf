package sqlite_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func rogue(p tether.Point, reason string) tether.Point {
	p.Quarantine = reason
	return p
}

func quarantined(t *testing.T, db *sqlite.DB, from, to time.Time, limit int) []tether.QuarantinedPoint {
	t.Helper()
	q, err := db.Quarantined(context.Background(), tenantA, "d1", from, to, limit)
	if err != nil {
		t.Fatalf("Quarantined: %v", err)
	}
	return q
}

func quarantineCount(t *testing.T, db *sqlite.DB) int {
	t.Helper()
	n, err := db.QuarantineCount(context.Background(), tenantA, "d1")
	if err != nil {
		t.Fatalf("QuarantineCount: %v", err)
	}
	return n
}

func TestQuarantine(t *testing.T) {
	ctx := context.Background()

	t.Run("keeps a quarantined point out of the series, latest values and aggregates", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 2, msg("m1", 0, num("temp", 0, 20), num("temp", time.Second, 21)))
		write(t, db, 1, msg("m2", 2*time.Second,
			rogue(num("temp", 2*time.Second, 9000), tether.QuarantineAboveMax),
			num("temp", 3*time.Second, 22),
			rogue(str("fresh", 3*time.Second, "x"), tether.QuarantineType)))

		want := []tether.Sample{sample(0, 20.0), sample(time.Second, 21.0), sample(3*time.Second, 22.0)}
		if got := raw(t, db, "temp"); !reflect.DeepEqual(got, want) {
			t.Errorf("temp samples %v, want %v", got, want)
		}
		s, err := db.Telemetry(ctx, tether.TelemetryQuery{TenantID: tenantA, DeviceID: "d1", Agg: "max", Bucket: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		// A key with only quarantined points has no series at all.
		if len(s) != 1 || s[0].Key != "temp" || !reflect.DeepEqual(s[0].Samples, []tether.Sample{sample(0, 22.0)}) {
			t.Errorf("max per hour = %+v, want temp only, 22", s)
		}
		wantLatest := []tether.Latest{{Key: "temp", Time: t0.Add(3 * time.Second), Value: 22.0}}
		if got := latest(t, db); !reflect.DeepEqual(got, wantLatest) {
			t.Errorf("Latest = %v, want %v", got, wantLatest)
		}
	})

	t.Run("lists quarantined points newest first with their reason and counts them", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 0,
			msg("m1", time.Minute, rogue(num("temp", 0, -99), tether.QuarantineBelowMin)),
			msg("m2", 2*time.Minute, rogue(boolean("temp", time.Second, true), tether.QuarantineType),
				rogue(num("temp", 2*time.Second, 80), tether.QuarantineJump)))
		want := []tether.QuarantinedPoint{
			{Key: "temp", Time: t0.Add(2 * time.Second), Value: 80.0, Reason: tether.QuarantineJump, MessageID: "m2", ReceivedAt: t0.Add(2 * time.Minute)},
			{Key: "temp", Time: t0.Add(time.Second), Value: true, Reason: tether.QuarantineType, MessageID: "m2", ReceivedAt: t0.Add(2 * time.Minute)},
			{Key: "temp", Time: t0, Value: -99.0, Reason: tether.QuarantineBelowMin, MessageID: "m1", ReceivedAt: t0.Add(time.Minute)},
		}
		if got := quarantined(t, db, time.Time{}, time.Time{}, 0); !reflect.DeepEqual(got, want) {
			t.Errorf("Quarantined =\n%+v\nwant\n%+v", got, want)
		}
		if got := quarantined(t, db, t0.Add(time.Second), t0.Add(2*time.Second), 0); !reflect.DeepEqual(got, want[1:2]) {
			t.Errorf("Quarantined in [1s, 2s) = %+v, want %+v", got, want[1:2])
		}
		if got := quarantined(t, db, time.Time{}, time.Time{}, 1); !reflect.DeepEqual(got, want[:1]) {
			t.Errorf("Quarantined with limit 1 = %+v, want %+v", got, want[:1])
		}
		if n := quarantineCount(t, db); n != 3 {
			t.Errorf("QuarantineCount = %d, want 3", n)
		}
	})

	t.Run("stores a redelivered message's quarantined points once", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		m := msg("m1", 0, rogue(num("temp", 0, -99), tether.QuarantineBelowMin), num("temp", time.Second, 1))
		write(t, db, 1, m)
		write(t, db, 0, m, m)
		if n := quarantineCount(t, db); n != 1 {
			t.Errorf("QuarantineCount = %d, want 1", n)
		}
	})

	t.Run("stores nothing of a batch that fails", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		m := msg("m1", 0, rogue(num("temp", 0, -99), tether.QuarantineBelowMin))
		if _, err := sqlite.WriteMessagesThenFail(ctx, db, []tether.Message{m}, errors.New("boom")); err == nil {
			t.Fatal("WriteMessagesThenFail succeeded")
		}
		if n := quarantineCount(t, db); n != 0 {
			t.Errorf("QuarantineCount after a failed batch = %d, want 0", n)
		}
		write(t, db, 0, m)
		if n := quarantineCount(t, db); n != 1 {
			t.Errorf("QuarantineCount after the retry = %d, want 1", n)
		}
	})

	t.Run("a message of only quarantined points still marks the device seen", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 0, msg("m1", time.Minute, rogue(num("temp", 0, -99), tether.QuarantineBelowMin)))
		d, err := db.Device(ctx, tenantA, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if d.LastSeenAt == nil || !d.LastSeenAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("LastSeenAt = %v, want %v", d.LastSeenAt, t0.Add(time.Minute))
		}
	})

	t.Run("skips the quarantined points of a device that does not exist", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		ghost := msg("m1", 0, rogue(num("temp", 0, -99), tether.QuarantineBelowMin))
		ghost.DeviceID = "gone"
		write(t, db, 0, ghost)
		if n := quarantineCount(t, db); n != 0 {
			t.Errorf("QuarantineCount = %d, want 0", n)
		}
	})

	t.Run("deleting a device deletes its quarantined points", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 0, msg("m1", 0, rogue(num("temp", 0, -99), tether.QuarantineBelowMin)))
		if err := db.DeleteDevice(ctx, tenantA, "d1"); err != nil {
			t.Fatal(err)
		}
		createDevice(t, db, tenantA, "d1", nil)
		if n := quarantineCount(t, db); n != 0 {
			t.Errorf("QuarantineCount of the new d1 = %d, want 0", n)
		}
	})

	t.Run("keeps tenants apart and answers not found for another tenant's device", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 0, msg("m1", 0, rogue(num("temp", 0, -99), tether.QuarantineBelowMin)))
		_, err := db.Quarantined(ctx, tenantB, "d1", time.Time{}, time.Time{}, 0)
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.QuarantineCount(ctx, tenantB, "d1")
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("refuses a time range that ends before it starts", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		_, err := db.Quarantined(ctx, tenantA, "d1", t0, t0.Add(-time.Second), 0)
		wantCode(t, err, tether.EINVALID)
	})
}
