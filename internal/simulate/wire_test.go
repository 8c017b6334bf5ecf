package simulate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The decoders read what the node sends a device; whatever arrives, they
// return an error or a value, never panic, and a command they accept has
// an ID and a name.

func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"id":"c_1","name":"set_mode","params":{"mode":"cool"},"one_way":false}`,
		`{"id":"c_2","name":"reboot"}`, `{"id":"","name":"x"}`, `null`, `[]`, `{"id":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err == nil && (c.ID == "" || c.Name == "") {
			t.Errorf("accepted %q as %+v", b, c)
		}
		if err == nil && len(c.Params) > 0 && !json.Valid(c.Params) {
			t.Errorf("params %q are not JSON", c.Params)
		}
	})
}

func FuzzDecodeShadow(f *testing.F) {
	for _, s := range []string{
		`{"state":{"target_temp":22},"version":3}`,
		`{"state":{"desired":{"a":1},"reported":{},"delta":{"a":1}},"version":2}`,
		`{"state":null}`, `{}`, `"x"`, `{"state":{"desired":[1]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeDelta(b)
		_, _ = decodeShadowDesired(b)
	})
}

func FuzzParseKinds(f *testing.F) {
	for _, s := range []string{"", "fridge", "fridge,thermostat", " robot-arm ,", "x,y", ",,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kinds, err := ParseKinds(s)
		if err != nil {
			return
		}
		if len(kinds) == 0 {
			t.Errorf("%q: no kinds and no error", s)
		}
		for _, k := range kinds {
			if _, err := NewModel(k, NewRand("x"), false); err != nil {
				t.Errorf("%q gave %q: %v", s, k, err)
			}
		}
	})
}

func TestDecoders(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		decode   func([]byte) (map[string]any, error)
		want     string // the JSON of the result, or "error"
	}{
		{"a delta's state is the desired state", `{"state":{"target_temp":22},"version":3}`, decodeDelta, `{"target_temp":22}`},
		{"a shadow's desired state is all of it, not only the delta", `{"state":{"desired":{"a":1,"b":2},"reported":{"b":2},"delta":{"a":1}},"version":2}`, decodeShadowDesired, `{"a":1,"b":2}`},
		{"a shadow without a desired state has none", `{"state":{"reported":{"b":2}},"version":2}`, decodeShadowDesired, `null`},
		{"a delta that is not JSON is an error", `{"state":`, decodeDelta, "error"},
		{"a shadow whose desired state is no object is an error", `{"state":{"desired":[1]}}`, decodeShadowDesired, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.decode([]byte(tc.in))
			if tc.want == "error" {
				if err == nil {
					t.Errorf("decoded %v", got)
				}
				return
			}
			b, _ := json.Marshal(got)
			if err != nil || string(b) != tc.want {
				t.Errorf("got %s, %v; want %s", b, err, tc.want)
			}
		})
	}
	t.Run("a command without an id is refused", func(t *testing.T) {
		if _, err := decodeCommand([]byte(`{"name":"reboot"}`)); err == nil || !strings.Contains(err.Error(), "no id") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestBackoff(t *testing.T) {
	const minD, maxD = 500 * time.Millisecond, 30 * time.Second
	for _, tc := range []struct {
		failures int
		lo, hi   time.Duration
	}{
		{0, 375 * time.Millisecond, minD},
		{1, 750 * time.Millisecond, time.Second},
		{3, 3 * time.Second, 4 * time.Second},
		{6, 22500 * time.Millisecond, maxD},
		{100, 22500 * time.Millisecond, maxD},
	} {
		t.Run(fmt.Sprintf("after %d failures the wait is within bounds", tc.failures), func(t *testing.T) {
			for range 100 {
				if d := backoff(tc.failures, minD, maxD); d < tc.lo || d > tc.hi {
					t.Fatalf("backoff(%d) = %v, want %v to %v", tc.failures, d, tc.lo, tc.hi)
				}
			}
		})
	}
}
