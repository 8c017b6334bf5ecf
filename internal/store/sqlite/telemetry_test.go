package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func num(key string, at time.Duration, v float64) tether.Point {
	return tether.Point{Key: key, Time: t0.Add(at), Kind: tether.KindNumber, Num: v}
}

func boolean(key string, at time.Duration, v bool) tether.Point {
	p := tether.Point{Key: key, Time: t0.Add(at), Kind: tether.KindBool}
	if v {
		p.Num = 1
	}
	return p
}

func str(key string, at time.Duration, v string) tether.Point {
	return tether.Point{Key: key, Time: t0.Add(at), Kind: tether.KindString, Str: v}
}

// msg returns a message of device "d1" in tenantA received at t0 plus at.
func msg(id string, at time.Duration, points ...tether.Point) tether.Message {
	return tether.Message{ID: id, TenantID: tenantA, DeviceID: "d1", ReceivedAt: t0.Add(at), Points: points}
}

// write stores msgs and fails the test unless it stores want points.
func write(t *testing.T, db *sqlite.DB, want int, msgs ...tether.Message) {
	t.Helper()
	n, err := db.WriteMessages(context.Background(), msgs)
	if err != nil {
		t.Fatalf("WriteMessages: %v", err)
	}
	if n != want {
		t.Fatalf("WriteMessages stored %d points, want %d", n, want)
	}
}

// raw returns all raw samples of one key of d1.
func raw(t *testing.T, db *sqlite.DB, key string) []tether.Sample {
	t.Helper()
	s, err := db.Telemetry(context.Background(), tether.TelemetryQuery{TenantID: tenantA, DeviceID: "d1", Keys: []string{key}})
	if err != nil {
		t.Fatalf("Telemetry: %v", err)
	}
	return s[0].Samples
}

func latest(t *testing.T, db *sqlite.DB) []tether.Latest {
	t.Helper()
	return latestOf(t, db, "d1")
}

func latestOf(t *testing.T, db *sqlite.DB, deviceID string) []tether.Latest {
	t.Helper()
	l, err := db.Latest(context.Background(), tenantA, deviceID)
	if err != nil {
		t.Fatalf("Latest: %v", err)
	}
	return l
}

func sample(at time.Duration, v any) tether.Sample { return tether.Sample{Time: t0.Add(at), Value: v} }

func TestWriteMessages(t *testing.T) {
	ctx := context.Background()

	t.Run("stores each message once however often it is written", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		m := msg("m1", 0, num("temp", 0, 1), num("temp", time.Second, 2))
		write(t, db, 2, m)
		write(t, db, 0, m)
		write(t, db, 0, m, m)
		if got := raw(t, db, "temp"); len(got) != 2 {
			t.Errorf("stored samples %v, want 2", got)
		}
	})

	t.Run("stores a message repeated within one batch once", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		m := msg("m1", 0, num("temp", 0, 1))
		write(t, db, 2, m, m, msg("m2", 0, num("temp", time.Second, 2)))
	})

	t.Run("skips the points of a device that does not exist and stores the rest", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		createDevice(t, db, tenantA, "gone", nil)
		if err := db.DeleteDevice(ctx, tenantA, "gone"); err != nil {
			t.Fatal(err)
		}
		ghost := msg("m2", 0, num("temp", 0, 9), num("temp", time.Second, 9))
		ghost.DeviceID = "gone"
		write(t, db, 2, msg("m1", 0, num("temp", 0, 1)), ghost, msg("m3", 0, num("temp", time.Second, 2)))
		if got := raw(t, db, "temp"); len(got) != 2 {
			t.Errorf("d1 samples %v, want 2", got)
		}
	})

	t.Run("sets the last-seen time to the newest receive time and never back", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		lastSeen := func() time.Time {
			d, err := db.Device(ctx, tenantA, "d1")
			if err != nil {
				t.Fatal(err)
			}
			if d.LastSeenAt == nil {
				t.Fatal("LastSeenAt is nil")
			}
			return *d.LastSeenAt
		}
		write(t, db, 0, msg("m1", 2*time.Minute), msg("m2", time.Minute))
		if got := lastSeen(); !got.Equal(t0.Add(2 * time.Minute)) {
			t.Errorf("LastSeenAt = %v, want %v", got, t0.Add(2*time.Minute))
		}
		write(t, db, 0, msg("m3", time.Minute))
		if got := lastSeen(); !got.Equal(t0.Add(2 * time.Minute)) {
			t.Errorf("LastSeenAt went back to %v", got)
		}
		write(t, db, 0, msg("m4", 3*time.Minute))
		if got := lastSeen(); !got.Equal(t0.Add(3 * time.Minute)) {
			t.Errorf("LastSeenAt = %v, want %v", got, t0.Add(3*time.Minute))
		}
	})

	t.Run("moves the latest value only forward in time", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		steps := []struct {
			msgs []tether.Message
			want tether.Latest
		}{
			{[]tether.Message{msg("m1", 0, num("temp", 10*time.Second, 1))},
				tether.Latest{Key: "temp", Time: t0.Add(10 * time.Second), Value: 1.0}},
			{[]tether.Message{msg("m2", 0, num("temp", 5*time.Second, 2))},
				tether.Latest{Key: "temp", Time: t0.Add(10 * time.Second), Value: 1.0}},
			{[]tether.Message{msg("m3", 0, num("temp", 10*time.Second, 3))},
				tether.Latest{Key: "temp", Time: t0.Add(10 * time.Second), Value: 3.0}},
			{[]tether.Message{msg("m4", 0, num("temp", 30*time.Second, 4), num("temp", 20*time.Second, 5)),
				msg("m5", 0, num("temp", 25*time.Second, 6))},
				tether.Latest{Key: "temp", Time: t0.Add(30 * time.Second), Value: 4.0}},
		}
		for i, s := range steps {
			write(t, db, countPoints(s.msgs), s.msgs...)
			if got := latest(t, db); !reflect.DeepEqual(got, []tether.Latest{s.want}) {
				t.Fatalf("step %d: Latest = %v, want %v", i, got, s.want)
			}
		}
	})

	t.Run("keeps the latest value of every key, typed by kind, in key order", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 4, msg("m1", 0, str("state", 0, "run"), boolean("on", 0, true), num("temp", 0, 21.5), boolean("alarm", time.Second, false)))
		want := []tether.Latest{
			{Key: "alarm", Time: t0.Add(time.Second), Value: false},
			{Key: "on", Time: t0, Value: true},
			{Key: "state", Time: t0, Value: "run"},
			{Key: "temp", Time: t0, Value: 21.5},
		}
		if got := latest(t, db); !reflect.DeepEqual(got, want) {
			t.Errorf("Latest = %v, want %v", got, want)
		}
	})

	t.Run("replaces a point with the same key and time", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 1, msg("m1", 0, num("temp", 0, 1)))
		write(t, db, 1, msg("m2", 0, num("temp", 0, 2)))
		if got, want := raw(t, db, "temp"), []tether.Sample{sample(0, 2.0)}; !reflect.DeepEqual(got, want) {
			t.Errorf("samples %v, want %v", got, want)
		}
	})

	t.Run("of two points with the same key and time in one batch keeps the later", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 3,
			msg("m1", 0, num("temp", time.Second, 1), num("temp", 0, 7)),
			msg("m2", 0, str("temp", time.Second, "hot")))
		want := []tether.Sample{sample(0, 7.0), sample(time.Second, "hot")}
		if got := raw(t, db, "temp"); !reflect.DeepEqual(got, want) {
			t.Errorf("samples %v, want %v", got, want)
		}
		if got, want := latest(t, db), []tether.Latest{{Key: "temp", Time: t0.Add(time.Second), Value: "hot"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("Latest = %v, want %v", got, want)
		}
	})

	// A batch larger than one bulk statement (256 rows) goes in chunks of
	// several sizes, and a few rows one by one; every point, dedupe and
	// device check must hold across them. The deleted device is in the
	// first chunk of 16 devices.
	t.Run("writes a batch of many chunks", func(t *testing.T) {
		db := newDB(t)
		const devices, msgs = 21, 347
		for d := range devices {
			createDevice(t, db, tenantA, fmt.Sprintf("d%d", d), nil)
		}
		if err := db.DeleteDevice(ctx, tenantA, "d3"); err != nil {
			t.Fatal(err)
		}
		var batch []tether.Message
		for i := range msgs {
			m := msg(fmt.Sprintf("m%03d", i), time.Duration(i)*time.Second,
				num("a", time.Duration(i)*time.Second, float64(i)), num("b", time.Duration(i)*time.Second, float64(i)),
				num("c", time.Duration(i)*time.Second, float64(i)))
			m.DeviceID = fmt.Sprintf("d%d", i%devices)
			batch = append(batch, m)
		}
		// Written before, so skipped now.
		write(t, db, 3, batch[11])
		var want int
		for i := range msgs {
			if i != 11 && i%devices != 3 {
				want += 3
			}
		}
		write(t, db, want, batch...)
		for d := range devices {
			if d == 3 {
				continue
			}
			got := latestOf(t, db, fmt.Sprintf("d%d", d))
			last := msgs - 1 - (msgs-1-d)%devices // the last message of device d
			wantLatest := []tether.Latest{
				{Key: "a", Time: t0.Add(time.Duration(last) * time.Second), Value: float64(last)},
				{Key: "b", Time: t0.Add(time.Duration(last) * time.Second), Value: float64(last)},
				{Key: "c", Time: t0.Add(time.Duration(last) * time.Second), Value: float64(last)},
			}
			if !reflect.DeepEqual(got, wantLatest) {
				t.Errorf("d%d: Latest = %v, want %v", d, got, wantLatest)
			}
			d0, err := db.Device(ctx, tenantA, fmt.Sprintf("d%d", d))
			if err != nil {
				t.Fatal(err)
			}
			if d0.LastSeenAt == nil || !d0.LastSeenAt.Equal(t0.Add(time.Duration(last)*time.Second)) {
				t.Errorf("d%d: LastSeenAt = %v, want %v", d, d0.LastSeenAt, t0.Add(time.Duration(last)*time.Second))
			}
		}
		write(t, db, 0, batch...)
	})

	t.Run("times a point without a time at its message's receive time", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 1, msg("m1", time.Minute, tether.Point{Key: "temp", Kind: tether.KindNumber, Num: 1}))
		if got, want := raw(t, db, "temp"), []tether.Sample{sample(time.Minute, 1.0)}; !reflect.DeepEqual(got, want) {
			t.Errorf("samples %v, want %v", got, want)
		}
	})

	t.Run("stores nothing for an empty batch", func(t *testing.T) {
		db := newDB(t)
		write(t, db, 0)
	})
}

func TestDeleteDeviceDeletesTelemetry(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "d1", nil)
	write(t, db, 2, msg("m1", 0, num("temp", 0, 1), str("state", 0, "on")))
	if err := db.DeleteDevice(ctx, tenantA, "d1"); err != nil {
		t.Fatal(err)
	}
	// A new device with the same ID must start without the old one's data.
	createDevice(t, db, tenantA, "d1", nil)

	t.Run("leaves no latest values", func(t *testing.T) {
		if got := latest(t, db); len(got) != 0 {
			t.Errorf("Latest = %v, want none", got)
		}
	})
	t.Run("leaves no points", func(t *testing.T) {
		for _, key := range []string{"temp", "state"} {
			if got := raw(t, db, key); len(got) != 0 {
				t.Errorf("%s samples = %v, want none", key, got)
			}
		}
	})
}

// TestSeriesIDs covers the writer's cache of series ids: an id must not
// outlive the transaction that created it or the device it belongs to, or
// later points would be stored under another series (SQLite hands out a
// rolled-back or deleted id again) or under none.
func TestSeriesIDs(t *testing.T) {
	ctx := context.Background()
	all := func(t *testing.T, db *sqlite.DB, tenantID, deviceID string) []tether.Series {
		t.Helper()
		s, err := db.Telemetry(ctx, tether.TelemetryQuery{TenantID: tenantID, DeviceID: deviceID})
		if err != nil {
			t.Fatalf("Telemetry of %s: %v", deviceID, err)
		}
		return s
	}

	t.Run("a rolled-back write leaves no series behind", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		createDevice(t, db, tenantA, "d2", nil)
		failure := errors.New("injected failure")
		if _, err := sqlite.WriteMessagesThenFail(ctx, db, []tether.Message{msg("m1", 0, num("temp", 0, 1))}, failure); !errors.Is(err, failure) {
			t.Fatalf("WriteMessagesThenFail = %v, want the injected failure", err)
		}
		// d2's first series gets the id the rolled-back one had.
		other := msg("m2", 0, num("hum", 0, 50))
		other.DeviceID = "d2"
		write(t, db, 1, other)
		write(t, db, 1, msg("m1", 0, num("temp", time.Second, 2)))

		if got, want := all(t, db, tenantA, "d1"), []tether.Series{{Key: "temp", Samples: []tether.Sample{sample(time.Second, 2.0)}}}; !reflect.DeepEqual(got, want) {
			t.Errorf("d1 = %v, want %v", got, want)
		}
		if got, want := all(t, db, tenantA, "d2"), []tether.Series{{Key: "hum", Samples: []tether.Sample{sample(0, 50.0)}}}; !reflect.DeepEqual(got, want) {
			t.Errorf("d2 = %v, want %v", got, want)
		}
		if got, want := latest(t, db), []tether.Latest{{Key: "temp", Time: t0.Add(time.Second), Value: 2.0}}; !reflect.DeepEqual(got, want) {
			t.Errorf("Latest of d1 = %v, want %v", got, want)
		}
	})

	t.Run("a device deleted and created again, in another tenant, starts new series", func(t *testing.T) {
		db := newDB(t)
		createDevice(t, db, tenantA, "d1", nil)
		write(t, db, 2, msg("m1", 0, num("temp", 0, 1), num("hum", 0, 40)))
		if err := db.DeleteDevice(ctx, tenantA, "d1"); err != nil {
			t.Fatal(err)
		}
		createDevice(t, db, tenantB, "d1", nil)
		createDevice(t, db, tenantA, "d2", nil)
		// d2 takes the ids of d1's deleted series, in the order d1 made them.
		other := msg("m2", 0, num("temp", 0, 7), num("hum", 0, 8))
		other.DeviceID = "d2"
		write(t, db, 2, other)
		again := msg("m3", 0, num("temp", time.Second, 2))
		again.TenantID = tenantB
		write(t, db, 1, again)

		if got, want := all(t, db, tenantB, "d1"), []tether.Series{{Key: "temp", Samples: []tether.Sample{sample(time.Second, 2.0)}}}; !reflect.DeepEqual(got, want) {
			t.Errorf("d1 in tenant B = %v, want %v", got, want)
		}
		if _, err := db.Telemetry(ctx, tether.TelemetryQuery{TenantID: tenantA, DeviceID: "d1"}); tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("Telemetry of d1 in tenant A = %v, want ENOTFOUND", err)
		}
		want := []tether.Series{
			{Key: "hum", Samples: []tether.Sample{sample(0, 8.0)}},
			{Key: "temp", Samples: []tether.Sample{sample(0, 7.0)}},
		}
		if got := all(t, db, tenantA, "d2"); !reflect.DeepEqual(got, want) {
			t.Errorf("d2 = %v, want %v", got, want)
		}
	})
}

func TestPruneDedup(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "d1", nil)
	old := msg("old", 0, num("temp", 0, 1))
	recent := msg("recent", time.Hour, num("temp", time.Hour, 2))
	write(t, db, 2, old, recent)

	n, err := db.PruneDedup(ctx, t0.Add(30*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PruneDedup = %d, %v; want 1, nil", n, err)
	}
	t.Run("forgets the ids of messages received before the time", func(t *testing.T) {
		write(t, db, 1, old)
	})
	t.Run("remembers the ids of messages received since", func(t *testing.T) {
		write(t, db, 0, recent)
	})
}

func TestTelemetryQueries(t *testing.T) {
	db := newDB(t)
	createDevice(t, db, tenantA, "d1", nil)
	const (
		s = time.Second
		m = time.Minute
	)
	write(t, db, 12,
		msg("m1", 0, num("temp", 0, 10), num("temp", 10*s, 20), num("temp", 70*s, 30), num("temp", 130*s, 40)),
		msg("m2", 0, boolean("on", 0, true), boolean("on", 30*s, false), boolean("on", 60*s, true)),
		msg("m3", 0, str("state", 5*s, "idle"), str("state", 65*s, "run")),
		msg("m4", 0, num("mixed", 0, 5), str("mixed", s, "x"), str("mixed", 61*s, "y")),
	)
	type series = map[string][]tether.Sample // key → samples, for readable tables
	none := []tether.Sample{}

	cases := []struct {
		name  string
		query tether.TelemetryQuery
		want  series
	}{
		{"returns every raw point of every key, typed by kind", tether.TelemetryQuery{}, series{
			"mixed": {sample(0, 5.0), sample(s, "x"), sample(61*s, "y")},
			"on":    {sample(0, true), sample(30*s, false), sample(60*s, true)},
			"state": {sample(5*s, "idle"), sample(65*s, "run")},
			"temp":  {sample(0, 10.0), sample(10*s, 20.0), sample(70*s, 30.0), sample(130*s, 40.0)},
		}},
		{"returns the earliest raw points up to the limit per key", tether.TelemetryQuery{Keys: []string{"temp", "on"}, Limit: 2}, series{
			"on":   {sample(0, true), sample(30*s, false)},
			"temp": {sample(0, 10.0), sample(10*s, 20.0)},
		}},
		{"returns only the keys asked for, once each", tether.TelemetryQuery{Keys: []string{"temp", "state", "temp"}}, series{
			"state": {sample(5*s, "idle"), sample(65*s, "run")},
			"temp":  {sample(0, 10.0), sample(10*s, 20.0), sample(70*s, 30.0), sample(130*s, 40.0)},
		}},
		{"returns an empty series for a key without points", tether.TelemetryQuery{Keys: []string{"nope"}}, series{
			"nope": none,
		}},
		{"includes the start of the range and excludes its end", tether.TelemetryQuery{Keys: []string{"temp"}, From: t0.Add(10 * s), To: t0.Add(70 * s)}, series{
			"temp": {sample(10*s, 20.0)},
		}},
		{"leaves the range open at the end without a To", tether.TelemetryQuery{Keys: []string{"temp"}, From: t0.Add(11 * s)}, series{
			"temp": {sample(70*s, 30.0), sample(130*s, 40.0)},
		}},
		{"leaves the range open at the start without a From", tether.TelemetryQuery{Keys: []string{"temp"}, To: t0.Add(70 * s)}, series{
			"temp": {sample(0, 10.0), sample(10*s, 20.0)},
		}},
		{"averages numbers and bools by bucket, skipping strings", tether.TelemetryQuery{Agg: "avg", Bucket: m}, series{
			"mixed": {sample(0, 5.0)},
			"on":    {sample(0, 0.5), sample(m, 1.0)},
			"state": none,
			"temp":  {sample(0, 15.0), sample(m, 30.0), sample(2*m, 40.0)},
		}},
		{"takes the minimum by bucket", tether.TelemetryQuery{Agg: "min", Bucket: m}, series{
			"mixed": {sample(0, 5.0)},
			"on":    {sample(0, 0.0), sample(m, 1.0)},
			"state": none,
			"temp":  {sample(0, 10.0), sample(m, 30.0), sample(2*m, 40.0)},
		}},
		{"takes the maximum by bucket", tether.TelemetryQuery{Agg: "max", Bucket: m}, series{
			"mixed": {sample(0, 5.0)},
			"on":    {sample(0, 1.0), sample(m, 1.0)},
			"state": none,
			"temp":  {sample(0, 20.0), sample(m, 30.0), sample(2*m, 40.0)},
		}},
		{"sums by bucket", tether.TelemetryQuery{Agg: "sum", Bucket: m}, series{
			"mixed": {sample(0, 5.0)},
			"on":    {sample(0, 1.0), sample(m, 1.0)},
			"state": none,
			"temp":  {sample(0, 30.0), sample(m, 30.0), sample(2*m, 40.0)},
		}},
		{"counts points of every kind by bucket as int64", tether.TelemetryQuery{Agg: "count", Bucket: m}, series{
			"mixed": {sample(0, int64(2)), sample(m, int64(1))},
			"on":    {sample(0, int64(2)), sample(m, int64(1))},
			"state": {sample(0, int64(1)), sample(m, int64(1))},
			"temp":  {sample(0, int64(2)), sample(m, int64(1)), sample(2*m, int64(1))},
		}},
		{"takes the typed value of the earliest point by bucket", tether.TelemetryQuery{Agg: "first", Bucket: m}, series{
			"mixed": {sample(0, 5.0), sample(m, "y")},
			"on":    {sample(0, true), sample(m, true)},
			"state": {sample(0, "idle"), sample(m, "run")},
			"temp":  {sample(0, 10.0), sample(m, 30.0), sample(2*m, 40.0)},
		}},
		{"takes the typed value of the latest point by bucket", tether.TelemetryQuery{Agg: "last", Bucket: m}, series{
			"mixed": {sample(0, "x"), sample(m, "y")},
			"on":    {sample(0, false), sample(m, true)},
			"state": {sample(0, "idle"), sample(m, "run")},
			"temp":  {sample(0, 20.0), sample(m, 30.0), sample(2*m, 40.0)},
		}},
		{"returns the earliest buckets up to the limit per key", tether.TelemetryQuery{Keys: []string{"temp"}, Agg: "max", Bucket: m, Limit: 2}, series{
			"temp": {sample(0, 20.0), sample(m, 30.0)},
		}},
		{"aligns buckets to the epoch, not to the start of the range", tether.TelemetryQuery{Keys: []string{"temp"}, Agg: "count", Bucket: time.Hour, From: t0.Add(10 * s)}, series{
			"temp": {sample(0, int64(3))},
		}},
		{"buckets only the points in the range", tether.TelemetryQuery{Keys: []string{"temp"}, Agg: "sum", Bucket: m, From: t0.Add(10 * s), To: t0.Add(130 * s)}, series{
			"temp": {sample(0, 20.0), sample(m, 30.0)},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := c.query
			q.TenantID, q.DeviceID = tenantA, "d1"
			got, err := db.Telemetry(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			gotMap := series{}
			for _, s := range got {
				keys = append(keys, s.Key)
				if s.Samples == nil {
					t.Errorf("series %s has nil samples, want an empty slice", s.Key)
				}
				gotMap[s.Key] = s.Samples
			}
			if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
				t.Errorf("series not in key order: %v", keys)
			}
			if !reflect.DeepEqual(gotMap, c.want) {
				t.Errorf("got\n%s\nwant\n%s", format(gotMap), format(c.want))
			}
		})
	}

	t.Run("starts a bucket before 1970 at the bucket's start, not its end", func(t *testing.T) {
		createDevice(t, db, tenantA, "old", nil)
		epoch := time.Unix(0, 0).UTC()
		old := tether.Message{ID: "old-1", TenantID: tenantA, DeviceID: "old", ReceivedAt: t0, Points: []tether.Point{
			{Key: "temp", Time: epoch.Add(-30 * s), Kind: tether.KindNumber, Num: 1},
			{Key: "temp", Time: epoch.Add(30 * s), Kind: tether.KindNumber, Num: 2},
		}}
		write(t, db, 2, old)
		got, err := db.Telemetry(context.Background(), tether.TelemetryQuery{TenantID: tenantA, DeviceID: "old", Agg: "sum", Bucket: m})
		if err != nil {
			t.Fatal(err)
		}
		want := []tether.Series{{Key: "temp", Samples: []tether.Sample{
			{Time: epoch.Add(-time.Minute), Value: 1.0},
			{Time: epoch, Value: 2.0},
		}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})

	t.Run("returns times in UTC", func(t *testing.T) {
		got, err := db.Telemetry(context.Background(), tether.TelemetryQuery{TenantID: tenantA, DeviceID: "d1", Keys: []string{"temp"}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if loc := got[0].Samples[0].Time.Location(); loc != time.UTC {
			t.Errorf("location %v, want UTC", loc)
		}
	})

	for _, c := range []struct {
		name  string
		query tether.TelemetryQuery
	}{
		{"an unknown aggregation", tether.TelemetryQuery{Agg: "median", Bucket: m}},
		{"an aggregation without a bucket", tether.TelemetryQuery{Agg: "avg"}},
		{"a bucket without an aggregation", tether.TelemetryQuery{Bucket: m}},
		{"a negative bucket", tether.TelemetryQuery{Agg: "avg", Bucket: -m}},
		{"a range that ends before it starts", tether.TelemetryQuery{From: t0.Add(m), To: t0}},
	} {
		t.Run("rejects "+c.name+" as invalid", func(t *testing.T) {
			q := c.query
			q.TenantID, q.DeviceID = tenantA, "d1"
			_, err := db.Telemetry(context.Background(), q)
			wantCode(t, err, tether.EINVALID)
		})
	}

	t.Run("reports a missing device as not found", func(t *testing.T) {
		_, err := db.Telemetry(context.Background(), tether.TelemetryQuery{TenantID: tenantA, DeviceID: "nope"})
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.Latest(context.Background(), tenantA, "nope")
		wantCode(t, err, tether.ENOTFOUND)
	})
}

func countPoints(msgs []tether.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Points)
	}
	return n
}

// format prints series with times relative to t0, for readable failures.
func format(s map[string][]tether.Sample) string {
	out := ""
	for _, k := range slices.Sorted(maps.Keys(s)) {
		out += k + ":"
		for _, x := range s[k] {
			out += fmt.Sprintf(" %v=%#v", x.Time.Sub(t0), x.Value)
		}
		out += "\n"
	}
	return out
}
