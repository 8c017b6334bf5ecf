package telemetry_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

var reasons = map[string]bool{
	"too_large": true, "malformed_json": true, "not_object": true, "no_values": true,
	"bad_value": true, "bad_key": true, "key_too_long": true, "too_deep": true,
	"too_many_points": true, "bad_ts": true, "ts_out_of_range": true, "duplicate_point": true,
}

// FuzzDecode checks that Decode never panics, that what it accepts keeps
// every limit, that what it refuses it refuses with a known reason, and
// that it agrees with refDecode, a simpler implementation over
// json.Decoder. It runs each input under the default limits and under
// tight ones, so that the limits are reached often.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"temp": 21.5, "on": true, "mode": "eco"}`,
		`[{"temp":1,"ts":1714557600000},{"temp":2,"ts":"2024-05-01T10:01:00.5+02:00"}]`,
		`{"a":{"b":{"c":1}},"a.d":"x","ts":1714557600000.25}`,
		`{"a":{"ts":5},"t\u0073":1.7145576e12}`,
		`{"k\u00e9":"\ud83d\ude00\n","x":-0.0e-0}`,
		`{"a":1,"a":{"b":2}}`,
		`{"a":[1,{"b":null}],"c":null}`,
		`{"ts":1714557600}`,
		`[{"a":1},{}]`,
		`{"a":1e400,"b":1e-400}`,
		"{\"a\xff\":1}",
		`{"a":1} x`,
	} {
		f.Add([]byte(s))
	}
	tight := telemetry.Limits{MaxPayload: 1024, MaxKeyLen: 8, MaxPoints: 5, MaxDepth: 3, MaxFuture: time.Minute}
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, lim := range []telemetry.Limits{{}, tight} {
			checkDecode(t, payload, lim)
		}
	})
}

func checkDecode(t *testing.T, payload []byte, lim telemetry.Limits) {
	t.Helper()
	pts, err := telemetry.Decode(payload, now, lim)
	want, wantReason := refDecode(payload, now, lim)

	def := telemetry.DefaultLimits()
	maxKeyLen, maxPoints, maxFuture := def.MaxKeyLen, def.MaxPoints, def.MaxFuture
	if lim.MaxKeyLen > 0 {
		maxKeyLen, maxPoints, maxFuture = lim.MaxKeyLen, lim.MaxPoints, lim.MaxFuture
	}
	if err != nil {
		var e *telemetry.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %T %v, want *telemetry.Error", err, err)
		}
		if !reasons[e.Reason] || e.Message == "" || strings.Contains(e.Message, "\n") {
			t.Fatalf("error with reason %q, message %q", e.Reason, e.Message)
		}
		if pts != nil {
			t.Fatalf("points %v with error %v", pts, err)
		}
		if wantReason != e.Reason {
			t.Fatalf("Decode refused with %v, the reference decoder with %q and %v", err, wantReason, want)
		}
		return
	}
	if wantReason != "" {
		t.Fatalf("Decode accepted %v, the reference decoder refused with %q", pts, wantReason)
	}
	if !utf8.Valid(payload) || !json.Valid(payload) {
		t.Fatalf("Decode accepted invalid JSON")
	}
	if len(pts) == 0 || len(pts) > maxPoints {
		t.Fatalf("%d points", len(pts))
	}
	for _, p := range pts {
		if p.Key == "" || len(p.Key) > maxKeyLen || !utf8.ValidString(p.Key) {
			t.Fatalf("key %q", p.Key)
		}
		switch p.Kind {
		case tether.KindNumber:
			if math.IsInf(p.Num, 0) || math.IsNaN(p.Num) {
				t.Fatalf("point %q is %v", p.Key, p.Num)
			}
		case tether.KindBool:
			if p.Num != 0 && p.Num != 1 {
				t.Fatalf("bool point %q is %v", p.Key, p.Num)
			}
		case tether.KindString:
		default:
			t.Fatalf("point %q has kind %d", p.Key, p.Kind)
		}
		if p.Time.Before(def.MinTime) || p.Time.After(now.Add(maxFuture)) || p.Time.Location() != time.UTC {
			t.Fatalf("point %q has time %v", p.Key, p.Time)
		}
	}
	if !reflect.DeepEqual(pts, want) {
		t.Fatalf("Decode returned\n%v\nthe reference decoder\n%v", pts, want)
	}
	// Whatever Decode accepts crosses the bus unchanged.
	m := tether.Message{ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now, Points: pts}
	b, err := telemetry.MarshalMessage(m)
	if err != nil {
		t.Fatalf("MarshalMessage of decoded points: %v", err)
	}
	if got, err := telemetry.UnmarshalMessage(b); err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip of decoded points: %v\n got %v\nwant %v", err, got, m)
	}
}

// FuzzUnmarshalMessage checks that UnmarshalMessage never panics and that
// whatever it accepts marshals and reads back the same.
func FuzzUnmarshalMessage(f *testing.F) {
	b, err := telemetry.MarshalMessage(sampleMessage())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, s := range []string{
		`{"v":1,"id":"i","tenant":"t","device":"d","rx":5,"points":[]}`,
		`{"v":1,"id":"i\u00e9","tenant":"t","device":"d","rx":-5,"points":[{"k":"a","t":1,"b":false,"x":[{}]}]}`,
		`{"v":2,"id":"i","tenant":"t","device":"d","rx":5,"points":[]}`,
		`{"v":1,"id":"i","tenant":"t","device":"d","rx":5,"points":[{"k":"a","t":1,"n":1e308,"s":""}]}`,
		`{"points":[{"k":"\ud800","t":9223372036854775807,"s":"\u0000"}],"rx":-9223372036854775808,"device":"","tenant":"","id":"","v":1}`,
		`{"v":1,"id":"i","tenant":"t","device":"d","rx":5,"points":[{"q":"below_min","k":"a","t":1,"n":-1},{"k":"b","t":1,"b":true,"q":""}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := telemetry.UnmarshalMessage(b)
		if err != nil {
			return
		}
		b2, err := telemetry.MarshalMessage(m)
		if err != nil {
			t.Fatalf("MarshalMessage of %+v: %v", m, err)
		}
		m2, err := telemetry.UnmarshalMessage(b2)
		if err != nil {
			t.Fatalf("UnmarshalMessage(%s): %v", b2, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip\n got %+v\nwant %+v", m2, m)
		}
	})
}
