package profile_test

import (
	"encoding/json"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
)

// FuzzProfile feeds profile documents, as the REST API receives them,
// through validation and compilation, and a compiled profile's commands
// through the parameter check: none may panic, and what Validate and
// Compile accept must compile again the same from its own JSON.
func FuzzProfile(f *testing.F) {
	for _, s := range []string{
		`{"id":"boiler","telemetry":{"temp":{"type":"number","min":-20,"max":120,"max_rate":2}},"report_interval":"1m"}`,
		`{"id":"p","commands":{"set":{"params":{"type":"object","properties":{"t":{"type":"number","maximum":90}},"required":["t"]},"roles":["operator"],"rate_limit":{"count":1,"per":"1h"}}}}`,
		`{"id":"p","commands":{"x":{"params":{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/a"}}}}}}`,
		`{"id":"p","commands":{"x":{"params":{"$ref":"http://example.com/s.json"}}}}`,
		`{"id":"p","telemetry":{"":{"min":1,"max":0}}}`,
		`{"id":"p","report_interval":-5}`,
	} {
		f.Add([]byte(s), []byte(`{"t":50}`))
	}
	f.Fuzz(func(t *testing.T, doc, params []byte) {
		var p tether.Profile
		if json.Unmarshal(doc, &p) != nil {
			return
		}
		if err := profile.Validate(&p); err != nil {
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Fatalf("Validate: %v, want an invalid error", err)
			}
			return
		}
		c, err := profile.Compile(&p)
		if err != nil {
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Fatalf("Compile: %v, want an invalid error", err)
			}
			return
		}
		for name := range p.Commands {
			if err := c.CheckParams(name, params); err != nil && tether.ErrorCode(err) != tether.EINVALID {
				t.Fatalf("CheckParams: %v, want nil or an invalid error", err)
			}
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var again tether.Profile
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatal(err)
		}
		if err := profile.Validate(&again); err != nil {
			t.Fatalf("a valid profile is invalid after a JSON round trip: %v", err)
		}
		if _, err := profile.Compile(&again); err != nil {
			t.Fatalf("a compiled profile fails to compile after a JSON round trip: %v", err)
		}
	})
}
