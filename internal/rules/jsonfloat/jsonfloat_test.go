package jsonfloat_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/tether-iot/tether/internal/rules/jsonfloat"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   float64
		want string
	}{
		{"a number is a JSON number", 2.5, `2.5`},
		{"NaN is a string", math.NaN(), `"NaN"`},
		{"+Inf is a string", math.Inf(1), `"+Inf"`},
		{"-Inf is a string", math.Inf(-1), `"-Inf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(jsonfloat.Float(tt.in))
			if err != nil || string(b) != tt.want {
				t.Fatalf("marshal = %s, %v; want %s", b, err, tt.want)
			}
			var back jsonfloat.Float
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if x := float64(back); x != tt.in && !(math.IsNaN(x) && math.IsNaN(tt.in)) {
				t.Errorf("back = %v, want %v", x, tt.in)
			}
		})
	}
	t.Run("anything else is refused", func(t *testing.T) {
		var f jsonfloat.Float
		if err := json.Unmarshal([]byte(`"Infinity"`), &f); err == nil {
			t.Error("accepted")
		}
	})
}
