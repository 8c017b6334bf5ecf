package telemetry_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// now is the server's time in every test.
var now = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// tsMillis is 2024-05-01T10:00:00Z in epoch milliseconds.
const tsMillis = "1714557600000"

var tsTime = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func num(key string, v float64, t time.Time) tether.Point {
	return tether.Point{Key: key, Time: t, Kind: tether.KindNumber, Num: v}
}

func boolean(key string, v bool, t time.Time) tether.Point {
	p := tether.Point{Key: key, Time: t, Kind: tether.KindBool}
	if v {
		p.Num = 1
	}
	return p
}

func str(key, v string, t time.Time) tether.Point {
	return tether.Point{Key: key, Time: t, Kind: tether.KindString, Str: v}
}

func TestDecodeAccepts(t *testing.T) {
	key128 := strings.Repeat("k", 128)
	nested8 := `{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":1}}}}}}}}`
	tests := []struct {
		name    string
		payload string
		lim     telemetry.Limits
		want    []tether.Point
	}{
		{
			name:    "an object of a number, a boolean and a string is three points in key order at the server's time",
			payload: `{"temp": 21.5, "on": true, "mode": "eco"}`,
			want:    []tether.Point{num("temp", 21.5, now), boolean("on", true, now), str("mode", "eco", now)},
		},
		{
			name:    "false is a bool point with value 0",
			payload: `{"on":false}`,
			want:    []tether.Point{boolean("on", false, now)},
		},
		{
			name:    "a batch is the points of each element in order, each at its own ts",
			payload: `[{"temp":1,"ts":1714557600000},{"temp":2,"hum":40,"ts":1714557660000},{"temp":3}]`,
			want: []tether.Point{
				num("temp", 1, tsTime),
				num("temp", 2, tsTime.Add(time.Minute)), num("hum", 40, tsTime.Add(time.Minute)),
				num("temp", 3, now),
			},
		},
		{
			name:    "a batch of one element is accepted",
			payload: `[{"x":1}]`,
			want:    []tether.Point{num("x", 1, now)},
		},
		{
			name:    "an RFC 3339 ts with an offset and a fraction is converted to UTC to the nanosecond",
			payload: `{"ts":"2024-05-01T12:30:00.123456789+02:30","x":1}`,
			want:    []tether.Point{num("x", 1, tsTime.Add(123456789))},
		},
		{
			name:    "an RFC 3339 ts in UTC is accepted",
			payload: `{"x":1,"ts":"2024-05-01T10:00:00Z"}`,
			want:    []tether.Point{num("x", 1, tsTime)},
		},
		{
			name:    "an integer ts is epoch milliseconds",
			payload: `{"x":1,"ts":` + tsMillis + `}`,
			want:    []tether.Point{num("x", 1, tsTime)},
		},
		{
			name:    "a fractional ts is epoch milliseconds to the nanosecond",
			payload: `{"x":1,"ts":` + tsMillis + `.123456}`,
			want:    []tether.Point{num("x", 1, tsTime.Add(123456))},
		},
		{
			name:    "digits of a fractional ts below the nanosecond are dropped",
			payload: `{"x":1,"ts":` + tsMillis + `.5000009}`,
			want:    []tether.Point{num("x", 1, tsTime.Add(500000))},
		},
		{
			name:    "a ts with an exponent is epoch milliseconds",
			payload: `{"x":1,"ts":1.7145576e12}`,
			want:    []tether.Point{num("x", 1, tsTime)},
		},
		{
			name:    "a ts before the values applies to them too",
			payload: `{"ts":` + tsMillis + `,"x":1,"y":2}`,
			want:    []tether.Point{num("x", 1, tsTime), num("y", 2, tsTime)},
		},
		{
			name:    "a ts at now plus MaxFuture is accepted",
			payload: `{"x":1,"ts":"2024-05-01T13:00:00Z"}`,
			want:    []tether.Point{num("x", 1, now.Add(time.Hour))},
		},
		{
			name:    "a ts at MinTime is accepted",
			payload: `{"x":1,"ts":"2000-01-01T00:00:00Z"}`,
			want:    []tether.Point{num("x", 1, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))},
		},
		{
			name:    "an escaped ts key is still the ts",
			payload: `{"x":1,"t\u0073":` + tsMillis + `}`,
			want:    []tether.Point{num("x", 1, tsTime)},
		},
		{
			name:    "nested objects are flattened to dotted keys depth first",
			payload: `{"gps":{"lat":52.5,"lon":13.4},"a":{"b":{"c":true}},"z":0}`,
			want: []tether.Point{
				num("gps.lat", 52.5, now), num("gps.lon", 13.4, now),
				boolean("a.b.c", true, now), num("z", 0, now),
			},
		},
		{
			name:    "a nested ts is an ordinary value",
			payload: `{"a":{"ts":5},"ts":` + tsMillis + `}`,
			want:    []tether.Point{num("a.ts", 5, tsTime)},
		},
		{
			name:    "objects nested MaxDepth deep are accepted",
			payload: nested8,
			want:    []tether.Point{num("a.b.c.d.e.f.g.h", 1, now)},
		},
		{
			name:    "a key of exactly 128 bytes is accepted",
			payload: `{"` + key128 + `":1}`,
			want:    []tether.Point{num(key128, 1, now)},
		},
		{
			name:    "a key with a dot is accepted as it is",
			payload: `{"a.b":1}`,
			want:    []tether.Point{num("a.b", 1, now)},
		},
		{
			name:    "escapes in keys and strings are decoded",
			payload: `{"t\u00e9mp":"a\nb \"q\" \ud83d\ude00"}`,
			want:    []tether.Point{str("témp", "a\nb \"q\" 😀", now)},
		},
		{
			name:    "UTF-8 in keys and strings is kept",
			payload: `{"température":"élevée"}`,
			want:    []tether.Point{str("température", "élevée", now)},
		},
		{
			name:    "negative numbers, exponents and zero are numbers",
			payload: `{"a":-1.5e3,"b":0,"c":-0.25,"d":1E2}`,
			want:    []tether.Point{num("a", -1500, now), num("b", 0, now), num("c", -0.25, now), num("d", 100, now)},
		},
		{
			name:    "a number too small for a float64 is zero",
			payload: `{"a":1e-400}`,
			want:    []tether.Point{num("a", 0, now)},
		},
		{
			name:    "white space around and between tokens is ignored",
			payload: " \n[ { \"a\" :\t1 , \"ts\" : " + tsMillis + " } ]\r\n",
			want:    []tether.Point{num("a", 1, tsTime)},
		},
		{
			name:    "zero limits mean the defaults",
			payload: `{"` + key128 + `":1}`,
			lim:     telemetry.Limits{},
			want:    []tether.Point{num(key128, 1, now)},
		},
		{
			name:    "MaxPoints values are accepted",
			payload: `[{"a":1,"b":2},{"c":3}]`,
			lim:     telemetry.Limits{MaxPoints: 3},
			want:    []tether.Point{num("a", 1, now), num("b", 2, now), num("c", 3, now)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := telemetry.Decode([]byte(tt.payload), now, tt.lim)
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.payload, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode(%s)\n got %v\nwant %v", tt.payload, got, tt.want)
			}
			if ref, reason := refDecode([]byte(tt.payload), now, tt.lim); !reflect.DeepEqual(ref, tt.want) {
				t.Errorf("the reference decoder disagrees: %v %q", ref, reason)
			}
			for _, p := range got {
				if p.Time.Location() != time.UTC {
					t.Errorf("point %q has time in %v, want UTC", p.Key, p.Time.Location())
				}
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	long := strings.Repeat("k", 129)
	tests := []struct {
		name    string
		payload string
		lim     telemetry.Limits
		reason  string
		message string // a part of the message, if set
	}{
		{"a payload over MaxPayload is too large before it is parsed", `{"a":1} not json at all`, telemetry.Limits{MaxPayload: 10}, "too_large", "payload is 23 bytes; payloads may be at most 10 bytes"},
		{"an empty payload is malformed", ``, telemetry.Limits{}, "malformed_json", ""},
		{"an unterminated object is malformed", `{"a":1`, telemetry.Limits{}, "malformed_json", "not valid JSON"},
		{"trailing garbage is malformed", `{"a":1} x`, telemetry.Limits{}, "malformed_json", ""},
		{"two objects in a row are malformed", `{"a":1}{"b":2}`, telemetry.Limits{}, "malformed_json", ""},
		{"a trailing comma is malformed", `{"a":1,}`, telemetry.Limits{}, "malformed_json", ""},
		{"single quotes are malformed", `{'a':1}`, telemetry.Limits{}, "malformed_json", ""},
		{"a number with a leading zero is malformed", `{"a":01}`, telemetry.Limits{}, "malformed_json", ""},
		{"NaN is malformed", `{"a":NaN}`, telemetry.Limits{}, "malformed_json", ""},
		{"a raw control character in a string is malformed", "{\"a\":\"x\x01\"}", telemetry.Limits{}, "malformed_json", ""},
		{"an invalid escape is malformed", `{"a":"\x"}`, telemetry.Limits{}, "malformed_json", ""},
		{"invalid UTF-8 in a key is malformed", "{\"a\xff\":1}", telemetry.Limits{}, "malformed_json", "not valid UTF-8"},
		{"invalid UTF-8 in a string is malformed", "{\"a\":\"\xc3\x28\"}", telemetry.Limits{}, "malformed_json", "not valid UTF-8"},
		{"malformed JSON is reported even after another problem", `{"a":null,`, telemetry.Limits{}, "malformed_json", ""},
		{"a malformed array value is malformed, not an unsupported value", `{"a":[1,}`, telemetry.Limits{}, "malformed_json", ""},
		{"a string payload is not an object", `"x"`, telemetry.Limits{}, "not_object", "payload is a string"},
		{"a number payload is not an object", `42`, telemetry.Limits{}, "not_object", "payload is a number"},
		{"a null payload is not an object", `null`, telemetry.Limits{}, "not_object", ""},
		{"a batch element that is not an object is refused", `[{"a":1},2]`, telemetry.Limits{}, "not_object", "element 1 of the batch is a number"},
		{"a batch of batches is refused", `[[{"a":1}]]`, telemetry.Limits{}, "not_object", "element 0 of the batch is an array"},
		{"an empty object has no values", `{}`, telemetry.Limits{}, "no_values", ""},
		{"an empty batch has no values", `[]`, telemetry.Limits{}, "no_values", "the batch is empty"},
		{"an object with only a ts has no values", `{"ts":` + tsMillis + `}`, telemetry.Limits{}, "no_values", "has a ts but no values"},
		{"an empty element of a batch has no values", `[{"a":1},{}]`, telemetry.Limits{}, "no_values", "element 1 of the batch"},
		{"an empty nested object has no values", `{"a":1,"b":{}}`, telemetry.Limits{}, "no_values", `object "b" is empty`},
		{"a null value is refused", `{"a":null}`, telemetry.Limits{}, "bad_value", `key "a" is null`},
		{"an array value is refused as unsupported", `{"a":[1,2]}`, telemetry.Limits{}, "bad_value", "arrays are not supported as values"},
		{"a number too large for a float64 is refused", `{"a":1e400}`, telemetry.Limits{}, "bad_value", "does not fit a 64-bit float"},
		{"a number too negative for a float64 is refused", `{"a":-1e400}`, telemetry.Limits{}, "bad_value", ""},
		{"an empty key is refused", `{"":1}`, telemetry.Limits{}, "bad_key", "a key is empty"},
		{"an empty nested key is refused", `{"a":{"":1}}`, telemetry.Limits{}, "bad_key", `a key inside "a" is empty`},
		{"a key with an escaped control character is refused", `{"a\u0001":1}`, telemetry.Limits{}, "bad_key", "control character"},
		{"a key with a newline is refused", `{"a\nb":1}`, telemetry.Limits{}, "bad_key", "control character"},
		{"a key with DEL is refused", `{"a\u007f":1}`, telemetry.Limits{}, "bad_key", "control character"},
		{"a key with a C1 control character is refused", `{"a\u0085":1}`, telemetry.Limits{}, "bad_key", "control character"},
		{"a duplicate key is refused", `{"a":1,"b":2,"a":3}`, telemetry.Limits{}, "bad_key", `duplicate key "a"`},
		{"a duplicate nested key is refused", `{"a":{"b":1,"b":2}}`, telemetry.Limits{}, "bad_key", `duplicate key "a.b"`},
		{"a dotted key that repeats a flattened key is refused", `{"a.b":1,"a":{"b":2}}`, telemetry.Limits{}, "bad_key", `duplicate key "a.b"`},
		{"a key repeated for a value and an object is refused", `{"a":1,"a":{"b":2}}`, telemetry.Limits{}, "bad_key", `duplicate key "a"`},
		{"a key repeated for two objects is refused", `{"a":{"b":1},"a":{"c":2}}`, telemetry.Limits{}, "bad_key", `duplicate key "a"`},
		{"a key repeated for two objects in an object of many keys is refused", manyKeys(40) + `,"o":{"x":1},"o":{"y":1}}`, telemetry.Limits{}, "bad_key", `duplicate key "o"`},
		{"a duplicate key in an object of many keys is refused", manyKeys(40) + `,"k7":1}`, telemetry.Limits{}, "bad_key", `duplicate key "k7"`},
		{"a duplicate ts is refused", `{"ts":` + tsMillis + `,"a":1,"ts":` + tsMillis + `}`, telemetry.Limits{}, "bad_key", `duplicate key "ts"`},
		{"a key of 129 bytes is too long", `{"` + long + `":1}`, telemetry.Limits{}, "key_too_long", `key "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…" is 129 bytes; keys may be at most 128 bytes`},
		{"a flattened key over MaxKeyLen is too long", `{"abc":{"def":1}}`, telemetry.Limits{MaxKeyLen: 6}, "key_too_long", `key "abc.def" is 7 bytes`},
		{"objects nested deeper than MaxDepth are refused", `{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}`, telemetry.Limits{}, "too_deep", `key "a.b.c.d.e.f.g.h" is an object nested 9 deep`},
		{"more than MaxPoints values over a batch are too many", `[{"a":1,"b":2},{"a":3,"b":4}]`, telemetry.Limits{MaxPoints: 3}, "too_many_points", "more than 3 values"},
		{"a ts that is neither RFC 3339 nor a number is refused", `[{"a":1},{"a":1,"ts":"yesterday"}]`, telemetry.Limits{}, "bad_ts", `element 1 of the batch: ts "yesterday" is neither RFC 3339 nor epoch milliseconds`},
		{"an RFC 3339 ts without a zone is refused", `{"a":1,"ts":"2024-05-01T10:00:00"}`, telemetry.Limits{}, "bad_ts", ""},
		{"a ts of NaN is refused", `{"a":1,"ts":"NaN"}`, telemetry.Limits{}, "bad_ts", ""},
		{"a boolean ts is refused", `{"a":1,"ts":true}`, telemetry.Limits{}, "bad_ts", "ts is a boolean"},
		{"a null ts is refused", `{"a":1,"ts":null}`, telemetry.Limits{}, "bad_ts", "ts is null"},
		{"an object ts is refused", `{"a":1,"ts":{"x":1}}`, telemetry.Limits{}, "bad_ts", "ts is an object"},
		{"a ts in epoch seconds lands in 1970 and is refused with a hint", `{"a":1,"ts":1714557600}`, telemetry.Limits{}, "ts_out_of_range", "ts is epoch milliseconds, not seconds"},
		{"a ts before MinTime is refused", `{"a":1,"ts":"1999-12-31T23:59:59Z"}`, telemetry.Limits{}, "ts_out_of_range", "before 2000-01-01T00:00:00Z"},
		{"a batch with one key twice and no ts is refused, not half lost", `[{"a":1},{"a":2}]`, telemetry.Limits{}, "duplicate_point", "give each element its own ts"},
		{"a batch with one key twice at the same ts is refused", `[{"a":1,"ts":1714557600000},{"b":1},{"a":2,"ts":"2024-05-01T10:00:00Z"}]`, telemetry.Limits{}, "duplicate_point", `key "a" has two values`},
		{"a ts more than MaxFuture ahead is refused", `{"a":1,"ts":"2024-05-01T13:00:00.000000001Z"}`, telemetry.Limits{}, "ts_out_of_range", "more than 1h0m0s after the server's time"},
		{"a negative ts is refused", `{"a":1,"ts":-1}`, telemetry.Limits{}, "ts_out_of_range", ""},
		{"a ts too large for a float64 is refused", `{"a":1,"ts":1e400}`, telemetry.Limits{}, "ts_out_of_range", ""},
		{"a ts far in the future is refused", `{"a":1,"ts":99999999999999999999}`, telemetry.Limits{}, "ts_out_of_range", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pts, err := telemetry.Decode([]byte(tt.payload), now, tt.lim)
			if err == nil {
				t.Fatalf("Decode(%q) = %v, want an error", tt.payload, pts)
			}
			if pts != nil {
				t.Errorf("Decode(%q) returned points with the error %v", tt.payload, err)
			}
			var e *telemetry.Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%q) error %T %v, want *telemetry.Error", tt.payload, err, err)
			}
			if e.Reason != tt.reason {
				t.Errorf("Decode(%q) reason %q (%v), want %q", tt.payload, e.Reason, err, tt.reason)
			}
			if _, reason := refDecode([]byte(tt.payload), now, tt.lim); reason != tt.reason {
				t.Errorf("the reference decoder disagrees: %q", reason)
			}
			wantCode := tether.EINVALID
			if tt.reason == "too_large" || tt.reason == "too_many_points" {
				wantCode = tether.ETOOLARGE
			}
			if code := tether.ErrorCode(err); code != wantCode {
				t.Errorf("tether.ErrorCode = %q, want %q", code, wantCode)
			}
			if msg := tether.ErrorMessage(err); msg != e.Message {
				t.Errorf("tether.ErrorMessage = %q, want the message %q", msg, e.Message)
			}
			if !strings.Contains(e.Message, tt.message) {
				t.Errorf("message %q does not contain %q", e.Message, tt.message)
			}
			if strings.Contains(e.Message, "\n") {
				t.Errorf("message %q is more than one line", e.Message)
			}
		})
	}
}

// manyKeys returns an unterminated object of n distinct keys k0…kn-1.
func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k` + itoa(i) + `":1`)
	}
	return b.String()
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func TestDecodeAcceptsManyDistinctKeysInOneObject(t *testing.T) {
	pts, err := telemetry.Decode([]byte(manyKeys(500)+"}"), now, telemetry.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 500 || pts[499].Key != "k499" {
		t.Fatalf("got %d points, last %v", len(pts), pts[len(pts)-1])
	}
}

func TestDecodeShortensLongValuesInMessages(t *testing.T) {
	ts := strings.Repeat("9", 10000)
	_, err := telemetry.Decode([]byte(`{"a":1,"ts":"`+ts+`"}`), now, telemetry.Limits{})
	if err == nil {
		t.Fatal("no error")
	}
	if msg := tether.ErrorMessage(err); len(msg) > 200 || !strings.Contains(msg, "…") {
		t.Errorf("message is %d bytes: %.300s", len(msg), msg)
	}
}

func TestErrorStringNamesReasonAndMessage(t *testing.T) {
	e := &telemetry.Error{Reason: "bad_key", Message: `duplicate key "a"`}
	if got, want := e.Error(), `telemetry: bad_key: duplicate key "a"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
