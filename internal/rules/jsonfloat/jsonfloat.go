// Package jsonfloat is a float64 that survives a JSON round trip even when
// it is infinite or NaN (a sum can overflow; a trend can be flat), for the
// snapshots of rule state. Standard library only.
package jsonfloat

import (
	"encoding/json"
	"math"
)

// Float is a float64 written as a JSON number, or as "NaN", "+Inf" or
// "-Inf".
type Float float64

// MarshalJSON writes f.
func (f Float) MarshalJSON() ([]byte, error) {
	x := float64(f)
	switch {
	case math.IsNaN(x):
		return []byte(`"NaN"`), nil
	case math.IsInf(x, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(x, -1):
		return []byte(`"-Inf"`), nil
	}
	return json.Marshal(x)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Float) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*f = Float(math.NaN())
		return nil
	case `"+Inf"`:
		*f = Float(math.Inf(1))
		return nil
	case `"-Inf"`:
		*f = Float(math.Inf(-1))
		return nil
	}
	var x float64
	if err := json.Unmarshal(b, &x); err != nil {
		return err
	}
	*f = Float(x)
	return nil
}
