package coap_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/coap"
	"github.com/tether-iot/tether/internal/telemetry"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCBORToJSON(t *testing.T) {
	tests := []struct {
		name string
		cbor string // hex
		want string // JSON
	}{
		{"a map of text keys to numbers, booleans and text keeps its key order", "a3 64 74656d70 fb 4035800000000000 62 6f6e f5 64 6d6f6465 63 65636f", `{"temp":21.5,"on":true,"mode":"eco"}`},
		{"an array is a batch", "82 a1 61 61 01 a1 61 61 02", `[{"a":1},{"a":2}]`},
		{"nested maps stay nested", "a1 63 677073 a2 63 6c6174 fa 42280000 63 6c6f6e 20", `{"gps":{"lat":42,"lon":-1}}`},
		{"half, single and double floats are exact", "a3 61 68 f9 3e00 61 73 fa 3fc00000 61 64 fb 3ff8000000000000", `{"h":1.5,"s":1.5,"d":1.5}`},
		{"the largest unsigned integer is written exactly", "a1 61 75 1b ffffffffffffffff", `{"u":18446744073709551615}`},
		{"the smallest negative integer is written exactly", "a1 61 6e 3b ffffffffffffffff", `{"n":-18446744073709551616}`},
		{"negative zero stays a number", "a1 61 7a f9 8000", `{"z":-0}`},
		{"tag 1 seconds become an RFC 3339 ts", "a2 62 7473 c1 1a 66321c00 61 74 01", `{"ts":"2024-05-01T10:40:00Z","t":1}`},
		{"tag 1 with a fraction keeps it", "a2 62 7473 c1 fb 41d98c8700200000 61 74 01", `{"ts":"2024-05-01T10:40:00.5Z","t":1}`},
		{"tag 0 text becomes UTC", "a2 62 7473 c0 78 19 323032342d30352d30315431323a34303a30302b30323a3030 61 74 01", `{"ts":"2024-05-01T10:40:00Z","t":1}`},
		{"the self-described CBOR tag is skipped", "d9d9f7 a1 61 61 01", `{"a":1}`},
		{"indefinite-length maps, arrays and text are read", "bf 61 61 9f 01 ff 61 62 7f 62 6869 61 21 ff ff", `{"a":[1],"b":"hi!"}`},
		{"null is passed on for the decoder to refuse", "a1 61 61 f6", `{"a":null}`},
		{"text is escaped as JSON needs", "a1 61 6b 66 22 5c 0a 01 c3a9", `{"k":"\"\\\u000a\u0001é"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := coap.CBORToJSON(unhex(t, tt.cbor))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestCBORToJSONRefuses(t *testing.T) {
	deep := strings.Repeat("81", 40) + "01"
	tests := []struct {
		name       string
		cbor       string
		wantReason string
		wantMsg    string
	}{
		{"an empty payload", "", "malformed_cbor", "empty"},
		{"a truncated item", "a1 64 7465", "malformed_cbor", "well-formed"},
		{"data after the item", "a1 61 61 01 01", "malformed_cbor", "extraneous"},
		{"a byte string, naming where it is", "a1 61 61 a1 61 62 42 0102", "bad_value", `byte string is not a value; send a number, a boolean or text at "a"."b"`},
		{"a byte string in a batch, naming the element", "82 a1 61 61 01 a1 61 61 40", "bad_value", `at [1]."a"`},
		{"a key that is not text", "a1 01 02", "bad_key", "not text"},
		{"a tagged key", "a1 c0 61 61 01", "bad_key", "not text"},
		{"a tag other than a time", "a1 61 61 c2 41 01", "bad_value", "tag 2 is not supported"},
		{"NaN", "a1 61 61 f9 7e00", "bad_value", "NaN"},
		{"an infinity", "a1 61 61 fa 7f800000", "bad_value", "infinities"},
		{"undefined", "a1 61 61 f7", "bad_value", "undefined"},
		{"another simple value", "a1 61 61 f0", "bad_value", "simple value 16"},
		{"text that is not UTF-8", "a1 61 61 62 c328", "malformed_cbor", "UTF-8"},
		{"a time tag around text that is not a time", "a1 61 61 c0 63 616263", "bad_value", "tag 0"},
		{"a time tag around text", "a1 61 61 c1 61 31", "bad_value", "tag 1"},
		{"a time past the year 9999", "a1 61 61 c1 1b 00000f0000000000", "bad_value", "9999"},
		{"a time of NaN seconds", "a1 61 61 c1 f9 7e00", "bad_value", "tag 1"},
		{"nesting deeper than 32", deep, "malformed_cbor", "nested"},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			got, err := coap.CBORToJSON(unhex(t, tt.cbor))
			var te *telemetry.Error
			if !errors.As(err, &te) {
				t.Fatalf("got %s, %v; want a *telemetry.Error", got, err)
			}
			if te.Reason != tt.wantReason || !strings.Contains(te.Message, tt.wantMsg) {
				t.Errorf("refused %s: %q; want %s containing %q", te.Reason, te.Message, tt.wantReason, tt.wantMsg)
			}
		})
	}
}

// TestCBORTelemetryDecodes checks that what the conversion makes of a
// typical CBOR payload is what the ingest decoder wants.
func TestCBORTelemetryDecodes(t *testing.T) {
	// [{"temp": 21.5, "ts": 1(1714560000)}, {"temp": 21.7, "ts": 1(1714560060)}]
	in := unhex(t, "82 a2 64 74656d70 f9 4d60 62 7473 c1 1a 66321c00 a2 64 74656d70 fb 4035b33333333333 62 7473 c1 1a 66321c3c")
	js, err := coap.CBORToJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := telemetry.Decode(js, time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), telemetry.Limits{})
	if err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	if len(pts) != 2 || pts[0].Num != 21.5 || !pts[0].Time.Equal(time.Unix(1714560000, 0)) || !pts[1].Time.Equal(time.Unix(1714560060, 0)) {
		t.Errorf("points %+v", pts)
	}
}

var cborReasons = map[string]bool{"malformed_cbor": true, "bad_value": true, "bad_key": true}

// FuzzCBORToJSON checks that the conversion never panics, that whatever it
// accepts is valid JSON, and that whatever it refuses it refuses with a
// known reason.
func FuzzCBORToJSON(f *testing.F) {
	for _, s := range []string{
		"a3 64 74656d70 fb 4035800000000000 62 6f6e f5 64 6d6f6465 63 65636f",
		"82 a1 61 61 01 a1 61 61 02",
		"bf 61 61 9f 01 ff 61 62 7f 62 6869 61 21 ff ff",
		"a2 62 7473 c1 fb 41d98c8700200000 61 74 3b ffffffffffffffff",
		"d9d9f7 a1 61 61 c0 74 323032342d30352d30315431303a34303a30305a",
		"a1 61 6b 66 22 5c 0a 01 c3a9",
		"a1 61 61 f9 7e00",
		"a1 01 02",
		"a1 61 61 42 0102",
	} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := coap.CBORToJSON(data)
		if err != nil {
			var te *telemetry.Error
			if !errors.As(err, &te) || !cborReasons[te.Reason] {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("accepted % x as invalid JSON %q", data, out)
		}
	})
}
