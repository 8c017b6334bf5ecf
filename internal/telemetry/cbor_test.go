package telemetry_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/telemetry"
)

// cborBytes decodes a CBOR item written in hex, spaces allowed.
func cborBytes(t testing.TB, s string) []byte {
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
			got, err := telemetry.CBORToJSON(cborBytes(t, tt.cbor), telemetry.Limits{})
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
	small := telemetry.Limits{MaxPayload: 64}
	tests := []struct {
		name       string
		cbor       string
		lim        telemetry.Limits
		wantReason string
		wantMsg    string
	}{
		{name: "an empty payload", cbor: "", wantReason: "malformed_cbor", wantMsg: "empty"},
		{name: "a truncated item", cbor: "a1 64 7465", wantReason: "malformed_cbor", wantMsg: "well-formed"},
		{name: "data after the item", cbor: "a1 61 61 01 01", wantReason: "malformed_cbor", wantMsg: "extraneous"},
		{name: "a byte string, naming where it is", cbor: "a1 61 61 a1 61 62 42 0102", wantReason: "bad_value", wantMsg: `byte string is not a value; send a number, a boolean or text at "a"."b"`},
		{name: "a byte string in a batch, naming the element", cbor: "82 a1 61 61 01 a1 61 61 40", wantReason: "bad_value", wantMsg: `at [1]."a"`},
		{name: "a key that is not text", cbor: "a1 01 02", wantReason: "bad_key", wantMsg: "not text"},
		{name: "a tagged key", cbor: "a1 c0 61 61 01", wantReason: "bad_key", wantMsg: "not text"},
		{name: "a tag other than a time", cbor: "a1 61 61 c2 41 01", wantReason: "bad_value", wantMsg: "tag 2 is not supported"},
		{name: "NaN", cbor: "a1 61 61 f9 7e00", wantReason: "bad_value", wantMsg: "NaN"},
		{name: "an infinity", cbor: "a1 61 61 fa 7f800000", wantReason: "bad_value", wantMsg: "infinities"},
		{name: "undefined", cbor: "a1 61 61 f7", wantReason: "bad_value", wantMsg: "undefined"},
		{name: "another simple value", cbor: "a1 61 61 f0", wantReason: "bad_value", wantMsg: "simple value 16"},
		{name: "text that is not UTF-8", cbor: "a1 61 61 62 c328", wantReason: "malformed_cbor", wantMsg: "UTF-8"},
		{name: "a time tag around text that is not a time", cbor: "a1 61 61 c0 63 616263", wantReason: "bad_value", wantMsg: "tag 0"},
		{name: "a time tag around text", cbor: "a1 61 61 c1 61 31", wantReason: "bad_value", wantMsg: "tag 1"},
		{name: "a time past the year 9999", cbor: "a1 61 61 c1 1b 00000f0000000000", wantReason: "bad_value", wantMsg: "9999"},
		{name: "a time of NaN seconds", cbor: "a1 61 61 c1 f9 7e00", wantReason: "bad_value", wantMsg: "tag 1"},
		{name: "nesting deeper than 32", cbor: deep, wantReason: "malformed_cbor", wantMsg: "nested"},
		{name: "a payload over the limit", cbor: "a1 61 61 78 40" + strings.Repeat("78", 64), lim: small,
			wantReason: "too_large", wantMsg: "payloads may be at most 64 bytes"},
		{name: "a payload whose JSON would be over the limit", cbor: "a1 61 61 78 30" + strings.Repeat("01", 48), lim: small,
			wantReason: "too_large", wantMsg: "converts to more than 64 bytes of JSON"},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			got, err := telemetry.CBORToJSON(cborBytes(t, tt.cbor), tt.lim)
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

// TestDecodeCBOR checks that a typical CBOR payload decodes to the points
// its JSON would, and that the payload rules are Decode's.
func TestDecodeCBOR(t *testing.T) {
	// [{"temp": 21.5, "ts": 1(1714560000)}, {"temp": 21.7, "ts": 1(1714560060)}]
	in := cborBytes(t, "82 a2 64 74656d70 f9 4d60 62 7473 c1 1a 66321c00 a2 64 74656d70 fb 4035b33333333333 62 7473 c1 1a 66321c3c")
	pts, err := telemetry.DecodeCBOR(in, now, telemetry.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 || pts[0].Num != 21.5 || !pts[0].Time.Equal(time.Unix(1714560000, 0)) || !pts[1].Time.Equal(time.Unix(1714560060, 0)) {
		t.Errorf("points %+v", pts)
	}
	// {"temp": null}: refused by Decode, as JSON null is.
	_, err = telemetry.DecodeCBOR(cborBytes(t, "a1 64 74656d70 f6"), now, telemetry.Limits{})
	var te *telemetry.Error
	if !errors.As(err, &te) || te.Reason != telemetry.ReasonBadValue || !strings.Contains(te.Message, `"temp" is null`) {
		t.Errorf("null refused with %v, want bad_value naming the key", err)
	}
}

var cborReasons = map[string]bool{"malformed_cbor": true, "bad_value": true, "bad_key": true, "too_large": true}

// FuzzCBORToJSON checks that the conversion never panics, that whatever it
// accepts is valid JSON within the payload limit that Decode then handles
// as it handles any JSON (checkDecode), that whatever it refuses it refuses
// with a known reason, and that DecodeCBOR is the conversion then Decode.
// Each input runs under the default limits and under tight ones.
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
		f.Add(cborBytes(f, s))
	}
	tight := telemetry.Limits{MaxPayload: 64, MaxKeyLen: 8, MaxPoints: 5, MaxDepth: 3, MaxFuture: time.Minute}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lim := range []telemetry.Limits{{}, tight} {
			out, err := telemetry.CBORToJSON(data, lim)
			pts, derr := telemetry.DecodeCBOR(data, now, lim)
			if err != nil {
				var te *telemetry.Error
				if !errors.As(err, &te) || !cborReasons[te.Reason] || te.Message == "" || strings.Contains(te.Message, "\n") {
					t.Fatalf("refused with %v", err)
				}
				if derr == nil || derr.Error() != err.Error() || pts != nil {
					t.Fatalf("DecodeCBOR returned %v, %v; CBORToJSON refused with %v", pts, derr, err)
				}
				continue
			}
			maxPayload := telemetry.DefaultLimits().MaxPayload
			if lim.MaxPayload > 0 {
				maxPayload = lim.MaxPayload
			}
			if !json.Valid(out) || len(out) > maxPayload {
				t.Fatalf("accepted % x as %d bytes of JSON %q", data, len(out), out)
			}
			want, werr := telemetry.Decode(out, now, lim)
			if (derr == nil) != (werr == nil) || derr != nil && derr.Error() != werr.Error() || len(pts) != len(want) {
				t.Fatalf("DecodeCBOR returned %d points, %v; Decode of the JSON %d points, %v", len(pts), derr, len(want), werr)
			}
			checkDecode(t, out, lim)
		}
	})
}
