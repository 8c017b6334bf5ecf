package sqlite_test

// Benchmarks of the hot paths. Compare the drivers with
//
//	go test -run x -bench . -count 6 ./internal/store/sqlite/ > mattn.txt
//	go test -run x -bench . -count 6 -tags modernc ./internal/store/sqlite/ > modernc.txt
//	go run golang.org/x/perf/cmd/benchstat@latest mattn.txt modernc.txt
//
// docs/sqlite-driver.md records the results.

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// BenchmarkWriteMessages measures the storage writer's batch: msgs
// messages of devices devices (100 unless named), each with points number
// points. devices=1000/msgs=1000/points=10 is the batch the end-to-end
// fan-in benchmark's writer commits: every series gets about one point
// per batch.
func BenchmarkWriteMessages(b *testing.B) {
	for _, c := range []struct{ devices, msgs, points int }{
		{100, 100, 10},
		{100, 500, 1},
		{100, 500, 10},
		{100, 2000, 5},
		{1000, 1000, 10},
		{1000, 5000, 10},
	} {
		name := fmt.Sprintf("msgs=%d/points=%d", c.msgs, c.points)
		if c.devices != 100 {
			name = fmt.Sprintf("devices=%d/", c.devices) + name
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			db := newDB(b)
			for i := range c.devices {
				createDevice(b, db, tenantA, "dev-"+strconv.Itoa(i), nil)
			}
			keys := make([]string, c.points)
			for i := range keys {
				keys[i] = "key-" + strconv.Itoa(i)
			}
			msgs := make([]tether.Message, c.msgs)
			for i := range msgs {
				msgs[i] = tether.Message{TenantID: tenantA, DeviceID: "dev-" + strconv.Itoa(i%c.devices),
					Points: make([]tether.Point, c.points)}
			}
			seq := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				for i := range msgs {
					seq++
					at := t0.Add(time.Duration(seq) * time.Millisecond)
					msgs[i].ID = fmt.Sprintf("msg-%016x", seq)
					msgs[i].ReceivedAt = at
					for j := range msgs[i].Points {
						msgs[i].Points[j] = tether.Point{Key: keys[j], Time: at, Kind: tether.KindNumber, Num: float64(seq)}
					}
				}
				b.StartTimer()
				n, err := db.WriteMessages(ctx, msgs)
				if err != nil {
					b.Fatal(err)
				}
				if n != c.msgs*c.points {
					b.Fatalf("stored %d points, want %d", n, c.msgs*c.points)
				}
			}
			b.ReportMetric(float64(b.N*c.msgs*c.points)/b.Elapsed().Seconds(), "points/s")
		})
	}
}

// BenchmarkTelemetry queries one day of one-second data of three keys of
// one device (259,200 points), among the same data of a second device.
func BenchmarkTelemetry(b *testing.B) {
	ctx := context.Background()
	db := newDB(b)
	const (
		day  = 24 * 60 * 60
		keys = 3
	)
	for _, dev := range []string{"d1", "d2"} {
		createDevice(b, db, tenantA, dev, nil)
		batch := make([]tether.Message, 0, 1000)
		for s := range day {
			at := t0.Add(time.Duration(s) * time.Second)
			m := tether.Message{ID: dev + "-" + strconv.Itoa(s), TenantID: tenantA, DeviceID: dev, ReceivedAt: at}
			for k := range keys {
				m.Points = append(m.Points, tether.Point{Key: "key-" + strconv.Itoa(k), Time: at, Kind: tether.KindNumber, Num: float64(s % 100)})
			}
			batch = append(batch, m)
			if len(batch) == cap(batch) || s == day-1 {
				if _, err := db.WriteMessages(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	for _, c := range []struct {
		name   string
		agg    string
		bucket time.Duration
		limit  int
		want   int // samples per key
	}{
		{"agg=avg/bucket=1m", "avg", time.Minute, 0, 1000},
		{"agg=avg/bucket=1h", "avg", time.Hour, 0, 24},
		{"agg=last/bucket=1m", "last", time.Minute, 0, 1000},
		{"agg=count/bucket=1m", "count", time.Minute, 1440, 1440},
		{"raw/limit=1000", "", 0, 1000, 1000},
	} {
		b.Run(c.name, func(b *testing.B) {
			q := tether.TelemetryQuery{TenantID: tenantA, DeviceID: "d1", From: t0, To: t0.Add(day * time.Second),
				Agg: c.agg, Bucket: c.bucket, Limit: c.limit}
			b.ReportAllocs()
			for b.Loop() {
				series, err := db.Telemetry(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				if len(series) != keys || len(series[0].Samples) != c.want {
					b.Fatalf("got %d series of %d samples, want %d of %d", len(series), len(series[0].Samples), keys, c.want)
				}
			}
		})
	}
}

// BenchmarkDevices lists one page of devices of a tenant with 100k, by a
// label selector that matches a tenth of them (dense) and by one that
// matches ten (sparse), through the device_labels table and, to compare,
// through json_extract on the labels' JSON.
func BenchmarkDevices(b *testing.B) {
	ctx := context.Background()
	db := newDB(b)
	const n = 100_000
	ds := make([]*tether.Device, n)
	for i := range ds {
		labels := map[string]string{"site": "site-" + strconv.Itoa(i%10), "serial": strconv.Itoa(i)}
		if i%10_000 == 0 {
			labels["zone"] = "yes"
		}
		ds[i] = &tether.Device{TenantID: tenantA, ID: fmt.Sprintf("dev-%06d", i), Labels: labels, CreatedAt: t0}
	}
	if err := sqlite.CreateDevicesInOneTx(ctx, db, ds); err != nil {
		b.Fatal(err)
	}
	list := map[string]func(context.Context, tether.DeviceFilter) ([]*tether.Device, error){
		"labels=table": db.Devices,
		"labels=json": func(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error) {
			return sqlite.DevicesByJSON(ctx, db, f)
		},
	}
	for _, impl := range []string{"labels=table", "labels=json"} {
		for _, c := range []struct {
			name   string
			filter tether.DeviceFilter
			want   int
		}{
			{"selector=none", tether.DeviceFilter{Limit: 100}, 100},
			{"selector=dense", tether.DeviceFilter{Labels: map[string]string{"site": "site-3"}, Limit: 100}, 100},
			{"selector=sparse", tether.DeviceFilter{Labels: map[string]string{"zone": "yes"}, Limit: 100}, 10},
			{"selector=dense+sparse", tether.DeviceFilter{Labels: map[string]string{"site": "site-0", "zone": "yes"}, Limit: 100}, 10},
		} {
			b.Run(impl+"/"+c.name, func(b *testing.B) {
				f := c.filter
				f.TenantID = tenantA
				b.ReportAllocs()
				for b.Loop() {
					got, err := list[impl](ctx, f)
					if err != nil {
						b.Fatal(err)
					}
					if len(got) != c.want {
						b.Fatalf("got %d devices, want %d", len(got), c.want)
					}
				}
			})
		}
	}
}
