package telemetry_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// benchPayloads are the shapes of payload BenchmarkDecode measures: a flat
// object, a batch as a device sends after being offline, and a nested
// object.
func benchPayloads() []struct{ name, payload string } {
	var obj strings.Builder
	obj.WriteString(`{"ts":1714557600000`)
	for i := range 10 {
		switch i % 5 {
		case 3:
			fmt.Fprintf(&obj, `,"switch_%d":true`, i)
		case 4:
			fmt.Fprintf(&obj, `,"mode_%d":"eco"`, i)
		default:
			fmt.Fprintf(&obj, `,"sensor_%d":%d.%d`, i, 20+i, i*7%10)
		}
	}
	obj.WriteString("}")

	var batch strings.Builder
	batch.WriteString("[")
	for i := range 100 {
		if i > 0 {
			batch.WriteString(",")
		}
		fmt.Fprintf(&batch, `{"temp":%d.%d,"hum":%d,"pressure":1013.%d,"on":%t,"ts":%d}`,
			20+i%5, i%10, 40+i%20, i%10, i%2 == 0, 1714557600000+int64(i)*1000)
	}
	batch.WriteString("]")

	nested := `{"gps":{"lat":52.520008,"lon":13.404954,"alt":34.5},` +
		`"env":{"temp":21.5,"hum":40,"air":{"co2":412,"voc":0.12}},` +
		`"power":{"v":229.8,"a":0.42,"on":true},"fw":"1.4.2","ts":"2024-05-01T10:00:00.123Z"}`

	return []struct{ name, payload string }{
		{"shape=object/keys=10", obj.String()},
		{"shape=batch/elements=100", batch.String()},
		{"shape=nested", nested},
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bp := range benchPayloads() {
		b.Run(bp.name, func(b *testing.B) {
			payload := []byte(bp.payload)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, err := telemetry.Decode(payload, now, telemetry.Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeReference measures refDecode, the same decoder written
// over json.Decoder's token API, to show what the hand-written scanner
// buys.
func BenchmarkDecodeReference(b *testing.B) {
	for _, bp := range benchPayloads() {
		b.Run(bp.name, func(b *testing.B) {
			payload := []byte(bp.payload)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, reason := refDecode(payload, now, telemetry.Limits{}); reason != "" {
					b.Fatal(reason)
				}
			}
		})
	}
}

func benchMessage(points int) tether.Message {
	m := tether.Message{ID: "01HX3Q4ZK8M6W2B9T5N7R0C1DE", TenantID: "default", DeviceID: "boiler-7", ReceivedAt: now}
	for i := range points {
		t := now.Add(-time.Duration(i) * time.Second)
		switch i % 5 {
		case 3:
			m.Points = append(m.Points, boolean("switch_"+strconv.Itoa(i), true, t))
		case 4:
			m.Points = append(m.Points, str("mode_"+strconv.Itoa(i), "eco", t))
		default:
			m.Points = append(m.Points, num("sensor_"+strconv.Itoa(i), 20.5+float64(i), t))
		}
	}
	return m
}

func BenchmarkMarshalMessage(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("points=%d", n), func(b *testing.B) {
			m := benchMessage(n)
			enc, _ := telemetry.MarshalMessage(m)
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := telemetry.MarshalMessage(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnmarshalMessage(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("points=%d", n), func(b *testing.B) {
			enc, err := telemetry.MarshalMessage(benchMessage(n))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := telemetry.UnmarshalMessage(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
