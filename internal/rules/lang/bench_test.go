package lang_test

import (
	"testing"

	"github.com/tether-iot/tether/internal/rules/lang"
)

// BenchmarkEval measures the per-input cost of typical expressions.
func BenchmarkEval(b *testing.B) {
	cases := []struct{ name, stmt string }{
		{"where=profile_and_threshold", "SELECT * FROM telemetry WHERE device.profile = 'robot-arm' AND vibration > 4.2"},
		{"where=nested_key_and_in", "SELECT * FROM telemetry WHERE fan.rpm >= 800 AND device.labels.line IN ('L1', 'L2')"},
		{"where=missing_key", "SELECT * FROM telemetry WHERE temperature > 30"},
	}
	for _, c := range cases {
		q, err := lang.Parse(c.stmt)
		if err != nil {
			b.Fatal(err)
		}
		env := telemetryEnv()
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := q.Where.Bool(env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParse measures compiling a statement (done once, on save).
func BenchmarkParse(b *testing.B) {
	stmt := "SELECT avg(vibration) AS v, device.labels.line AS line FROM telemetry WHERE device.profile = 'robot-arm' GROUP BY device, TUMBLING(1m) HAVING v > 4.2"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := lang.Parse(stmt); err != nil {
			b.Fatal(err)
		}
	}
}
