package telemetry_test

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

func sampleMessage() tether.Message {
	t := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	return tether.Message{
		ID:         "01HX3Q4ZK8M6W2B9T5N7R0C1DE",
		TenantID:   "default",
		DeviceID:   "boiler-7",
		ReceivedAt: t.Add(123456789),
		Points: []tether.Point{
			num("temp", 21.5, t),
			boolean("on", true, t),
			str("mode", "eco", t),
		},
	}
}

func TestMarshalMessageWritesTheDocumentedFormat(t *testing.T) {
	b, err := telemetry.MarshalMessage(sampleMessage())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"id":"01HX3Q4ZK8M6W2B9T5N7R0C1DE","tenant":"default","device":"boiler-7","rx":1714557600123456789,"points":[` +
		`{"k":"temp","t":1714557600000000000,"n":21.5},{"k":"on","t":1714557600000000000,"b":true},{"k":"mode","t":1714557600000000000,"s":"eco"}]}`
	if string(b) != want {
		t.Errorf("MarshalMessage =\n%s\nwant\n%s", b, want)
	}
}

func TestAppendMessageAppendsWhatMarshalMessageWrites(t *testing.T) {
	want, err := telemetry.MarshalMessage(sampleMessage())
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte("prefix")
	got, err := telemetry.AppendMessage(buf, sampleMessage())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "prefix"+string(want) {
		t.Errorf("AppendMessage =\n%s\nwant prefix followed by\n%s", got, want)
	}

	bad := sampleMessage()
	bad.Points = append(bad.Points, num("nan", math.NaN(), now))
	got, err = telemetry.AppendMessage(buf, bad)
	if err == nil {
		t.Fatal("AppendMessage of a NaN point succeeded")
	}
	if string(got) != "prefix" {
		t.Errorf("after an error AppendMessage returned %q, want the buffer as it was", got)
	}
}

// A quarantined point carries its reason in "q"; a message without one is
// encoded exactly as before the field existed (the documented format test
// above), so that readers of the old format see no change.
func TestMarshalMessageWritesTheQuarantineReasonOnlyWhenSet(t *testing.T) {
	m := tether.Message{ID: "i", TenantID: "t", DeviceID: "d", ReceivedAt: time.Unix(0, 5),
		Points: []tether.Point{quarantined(num("a", 1e6, time.Unix(0, 6)), tether.QuarantineAboveMax), num("b", 2, time.Unix(0, 6))}}
	b, err := telemetry.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"id":"i","tenant":"t","device":"d","rx":5,"points":[{"k":"a","t":6,"n":1e+06,"q":"above_max"},{"k":"b","t":6,"n":2}]}`
	if string(b) != want {
		t.Errorf("MarshalMessage =\n%s\nwant\n%s", b, want)
	}
	m.Points[0].Quarantine = "\xff"
	if _, err := telemetry.MarshalMessage(m); err == nil {
		t.Error("MarshalMessage of a reason that is not UTF-8 succeeded")
	}
}

func quarantined(p tether.Point, reason string) tether.Point {
	p.Quarantine = reason
	return p
}

// A field name with escapes is matched like any other.
func TestUnmarshalMessageReadsEscapedFieldNames(t *testing.T) {
	b := []byte(`{"\u0076":1,"id":"x","tenant":"t","device":"d","rx":1,"poi\u006ets":[{"\u006b":"a","t":2,"n":3}]}`)
	m, err := telemetry.UnmarshalMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Points) != 1 || m.Points[0].Key != "a" || m.Points[0].Num != 3 {
		t.Errorf("UnmarshalMessage(%s) = %+v", b, m)
	}
}

func TestMessageRoundTrips(t *testing.T) {
	berlin := time.FixedZone("CEST", 2*3600)
	odd := time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC) // the last Unix nanosecond
	tests := []struct {
		name string
		msg  tether.Message
	}{
		{"a message of every kind round-trips", sampleMessage()},
		{"a message without points round-trips with nil points", tether.Message{ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now}},
		{"times in another zone come back as the same instant in UTC", tether.Message{
			ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now.In(berlin),
			Points: []tether.Point{num("a", 1, now.In(berlin).Add(1))},
		}},
		{"the first and last Unix nanosecond round-trip", tether.Message{
			ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: time.Unix(0, math.MinInt64).UTC(),
			Points: []tether.Point{num("a", 1, odd)},
		}},
		{"numbers keep every bit", tether.Message{
			ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now,
			Points: []tether.Point{
				num("a", math.MaxFloat64, now), num("b", math.SmallestNonzeroFloat64, now),
				num("c", 0.1+0.2, now), num("d", -1e21, now), num("e", 1e21, now),
			},
		}},
		{"a false bool and an empty string round-trip", tether.Message{
			ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now,
			Points: []tether.Point{boolean("a", false, now), str("b", "", now)},
		}},
		{"a quarantine reason round-trips", tether.Message{
			ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now,
			Points: []tether.Point{quarantined(num("a", -40, now), tether.QuarantineBelowMin), num("b", 1, now),
				quarantined(str("c", "x", now), tether.QuarantineType)},
		}},
		{"strings with quotes, control characters and non-ASCII round-trip", tether.Message{
			ID: "x\"y", TenantID: "t\\", DeviceID: "d\x00", ReceivedAt: now,
			Points: []tether.Point{str("k\t\"é\x1f", "line\nline\r\u2028 😀 \x7f", now)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := telemetry.MarshalMessage(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := telemetry.UnmarshalMessage(b)
			if err != nil {
				t.Fatalf("UnmarshalMessage(%s): %v", b, err)
			}
			want := utcMessage(tt.msg)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip of %s\n got %+v\nwant %+v", b, got, want)
			}
		})
	}
}

// utcMessage returns m with its times in UTC, as UnmarshalMessage returns
// them.
func utcMessage(m tether.Message) tether.Message {
	m.ReceivedAt = m.ReceivedAt.UTC()
	if len(m.Points) == 0 {
		m.Points = nil
		return m
	}
	pts := make([]tether.Point, len(m.Points))
	for i, p := range m.Points {
		p.Time = p.Time.UTC()
		pts[i] = p
	}
	m.Points = pts
	return m
}

func TestUnmarshalMessageIgnoresUnknownFieldsAndWhiteSpace(t *testing.T) {
	b := ` { "x" : {"y":[1,{"z":null}]}, "v":1, "id":"i", "tenant":"t", "device":"d", "rx":5,
		"points":[ {"k":"a","t":6,"n":1.5,"unit":"°C"} ], "later":[true] } `
	got, err := telemetry.UnmarshalMessage([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	want := tether.Message{ID: "i", TenantID: "t", DeviceID: "d", ReceivedAt: time.Unix(0, 5).UTC(),
		Points: []tether.Point{num("a", 1.5, time.Unix(0, 6).UTC())}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestUnmarshalMessageRejects(t *testing.T) {
	const head = `{"v":1,"id":"i","tenant":"t","device":"d","rx":5,"points":`
	tests := []struct {
		name string
		msg  string
		want string // a part of the error
	}{
		{"an empty input is refused", ``, "message is not valid JSON"},
		{"a non-object is refused", `[]`, "not an object"},
		{"another version is refused", `{"v":2,"id":"i","tenant":"t","device":"d","rx":5,"points":[]}`, "version 2 is not supported"},
		{"another version is named even if the rest differs", `{"points":{"new":"shape"},"v":2}`, "version 2 is not supported"},
		{"a version of another type is refused", `{"v":"1","id":"i","tenant":"t","device":"d","rx":5,"points":[]}`, "version"},
		{"a missing version is refused", `{"id":"i","tenant":"t","device":"d","rx":5,"points":[]}`, `missing field "v"`},
		{"an empty object is refused", `{}`, `missing field "v"`},
		{"a missing field is refused", `{"v":1,"id":"i","tenant":"t","rx":5,"points":[]}`, `missing field "device"`},
		{"a repeated field is refused", `{"v":1,"id":"i","id":"j","tenant":"t","device":"d","rx":5,"points":[]}`, `field "id" is repeated`},
		{"trailing garbage is refused", head + `[]} x`, "message is not valid JSON"},
		{"an unterminated message is refused", head + `[`, "message is not valid JSON"},
		{"a fractional time is refused", `{"v":1,"id":"i","tenant":"t","device":"d","rx":5.5,"points":[]}`, `field "rx" is malformed`},
		{"a time beyond int64 is refused", `{"v":1,"id":"i","tenant":"t","device":"d","rx":9223372036854775808,"points":[]}`, `field "rx" is malformed`},
		{"points that are not an array are refused", head + `{}}`, "not an array"},
		{"a point that is not an object is refused", head + `[1]}`, "point 0: not an object"},
		{"a point without a value is refused", head + `[{"k":"a","t":1}]}`, "missing a value"},
		{"a point with two values is refused", head + `[{"k":"a","t":1,"n":1,"s":"x"}]}`, `more than one of "n", "b" and "s"`},
		{"a point without a key is refused", head + `[{"t":1,"n":1}]}`, `missing field "k"`},
		{"a point without a time is refused", head + `[{"k":"a","n":1}]}`, `missing field "t"`},
		{"a number too large for a float64 is refused", head + `[{"k":"a","t":1,"n":1e400}]}`, `field "n" is malformed`},
		{"a null value is refused", head + `[{"k":"a","t":1,"s":null}]}`, `field "s" is malformed`},
		{"a quarantine reason that is not a string is refused", head + `[{"k":"a","t":1,"n":1,"q":1}]}`, `field "q" is malformed`},
		{"a repeated quarantine reason is refused", head + `[{"k":"a","t":1,"n":1,"q":"x","q":"y"}]}`, `field "q" is repeated`},
		{"invalid UTF-8 is refused", head + "[{\"k\":\"\xff\",\"t\":1,\"n\":1}]}", "message is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := telemetry.UnmarshalMessage([]byte(tt.msg))
			if err == nil {
				t.Fatalf("UnmarshalMessage(%s) = %+v, want an error", tt.msg, m)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("UnmarshalMessage(%s) error %q, want it to contain %q", tt.msg, err, tt.want)
			}
		})
	}
}

func TestMarshalMessageRefusesWhatCannotRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		point tether.Point
		rx    time.Time
		want  string
	}{
		{"NaN is refused", num("a", math.NaN(), now), now, "JSON cannot hold"},
		{"infinity is refused", num("a", math.Inf(1), now), now, "JSON cannot hold"},
		{"an unknown kind is refused", tether.Point{Key: "a", Time: now, Kind: 9}, now, "unknown kind 9"},
		{"an invalid UTF-8 key is refused", num("a\xff", 1, now), now, "not valid UTF-8"},
		{"an invalid UTF-8 string is refused", str("a", "\xff", now), now, "not valid UTF-8"},
		{"a point time beyond Unix nanoseconds is refused", num("a", 1, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)), now, "cannot be Unix nanoseconds"},
		{"a zero received time is refused", num("a", 1, now), time.Time{}, "cannot be Unix nanoseconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tether.Message{ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: tt.rx, Points: []tether.Point{tt.point}}
			b, err := telemetry.MarshalMessage(m)
			if err == nil {
				t.Fatalf("MarshalMessage = %s, want an error", b)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodedPointsMarshalAndUnmarshalUnchanged(t *testing.T) {
	payload := `[{"temp":21.5,"on":true,"mode":"eco\n","gps":{"lat":52.52,"lon":13.405},"ts":"2024-05-01T10:00:00.123456789Z"},{"temp":-0.5}]`
	pts, err := telemetry.Decode([]byte(payload), now, telemetry.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m := tether.Message{ID: "x", TenantID: "t", DeviceID: "d", ReceivedAt: now, Points: pts}
	b, err := telemetry.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := telemetry.UnmarshalMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("got %+v\nwant %+v", got, m)
	}
}
