package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/engine"
)

type nopRunner struct{}

func (nopRunner) Enqueue(context.Context, *tether.Rule, []tether.RuleResult) error { return nil }

// benchRules returns n rules, half filters and half windows, in the
// shapes the examples have: a profile and threshold filter with
// projections, a per-device tumbling average with HAVING, and a hopping
// maximum; one rule in ten has an anomaly function.
func benchRules(n int) []*tether.Rule {
	var rs []*tether.Rule
	for i := range n {
		var stmt string
		switch i % 10 {
		case 0, 2, 4, 6:
			stmt = fmt.Sprintf(`SELECT temp AS t, device.labels.line AS line FROM telemetry WHERE device.profile = 'robot-arm' AND temp > %d`, 80+i%7)
		case 8:
			stmt = `SELECT vibration AS v FROM telemetry WHERE zscore(vibration, 30) > 4`
		case 1, 5:
			stmt = fmt.Sprintf(`SELECT avg(vibration) AS v, device.labels.line AS line FROM telemetry GROUP BY device, TUMBLING(1m) HAVING v > %d.2`, 4+i%3)
		case 3, 7:
			stmt = `SELECT max(temp) AS m, count(*) AS n FROM telemetry GROUP BY device, HOPPING(5m, 1m) ALLOWED LATENESS 10s`
		case 9:
			stmt = `SELECT avg(fan.rpm) AS rpm, percentile(temp, 95) AS p95 FROM telemetry WHERE device.profile = 'robot-arm' GROUP BY device, TUMBLING(1m)`
		}
		r := newRule(fmt.Sprintf("r%03d", i), stmt)
		rs = append(rs, r)
	}
	return rs
}

// BenchmarkHandle measures the engine's work per telemetry message (10
// values, one time; 1000 devices sending in turn, one message a second
// each) handed to Handle in bus-sized batches of 100, with 0, 10 and 100
// enabled rules (mixed filters and windows). The cost with 0 rules is
// the floor (grouping by tenant); the ratio to the ingest path's own cost
// per message is what the 90% target is about.
func BenchmarkHandle(b *testing.B) {
	const devices, batch = 1000, 100
	devs := make([]*tether.Device, devices)
	for i := range devs {
		profile := "robot-arm"
		if i%3 == 0 {
			profile = "sensor"
		}
		devs[i] = &tether.Device{TenantID: tenant, ID: fmt.Sprintf("dev-%04d", i), Name: fmt.Sprintf("device %d", i),
			ProfileID: profile, Labels: map[string]string{"line": fmt.Sprintf("L%d", i%8), "site": "plant-1"}}
	}
	// Messages are built up front: this measures the engine, not decoding.
	msgs := make([]tether.Message, 20_000)
	for i := range msgs {
		d := devs[i%devices]
		at := t0.Add(time.Duration(i/devices) * time.Second).Add(time.Duration(i%devices) * time.Microsecond)
		m := tether.Message{ID: fmt.Sprintf("%016x", i), TenantID: tenant, DeviceID: d.ID, ReceivedAt: at}
		vals := map[string]float64{"temp": 60 + float64(i%40), "hum": 40, "vibration": 3 + float64(i%30)/10, "fan.rpm": 900,
			"fan.current": 1.2, "pressure": 1013, "voltage": 230, "power": 120, "rssi": -60, "battery": 90}
		for k, v := range vals {
			m.Points = append(m.Points, tether.Point{Key: k, Time: at, Kind: tether.KindNumber, Num: v})
		}
		msgs[i] = m
	}
	var ins [][]engine.Input
	for i := 0; i < len(msgs); i += batch {
		var bi []engine.Input
		for _, m := range msgs[i : i+batch] {
			bi = append(bi, engine.InputsFromMessage(m, devs[msgIndex(m.DeviceID)])...)
		}
		ins = append(ins, bi)
	}
	for _, n := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			ctx := context.Background()
			e := engine.New(&fakeRules{rules: benchRules(n)}, nil, nopRunner{}, &memStore{},
				engine.Options{Logger: slog.New(slog.DiscardHandler)})
			if err := e.Reload(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			msgsDone := 0
			for i := 0; i < b.N; i += batch {
				// The same data goes round again: windows see late
				// inputs after the first round, which costs what on-time
				// ones do.
				if err := e.Handle(ctx, ins[(i/batch)%len(ins)]); err != nil {
					b.Fatal(err)
				}
				msgsDone += batch
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(msgsDone), "ns/msg")
			// CPU time (all threads, GC included) per message: on a busy
			// machine this is the figure to compare.
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(msgsDone), "cpu-ns/msg")
		})
	}
}

func msgIndex(id string) int {
	var n int
	fmt.Sscanf(id, "dev-%d", &n)
	return n
}
