package profile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/tether-iot/tether"
)

// Compiled is a profile ready for the hot paths: its command parameter
// schemas compiled once, when the profile is saved or first read.
type Compiled struct {
	// Profile is nil for the permissive profile of a device without one.
	Profile *tether.Profile
	params  map[string]*jsonschema.Schema
	// keys are the telemetry keys with a rule to check, and rated tells
	// whether any has a max_rate (and so needs the previous point).
	keys  map[string]*keyRule
	rated bool
}

// keyRule is a telemetry key's schema in the form the Checker reads.
type keyRule struct {
	kind     tether.Kind // 0: any
	min, max float64     // -Inf, +Inf: none
	rate     float64     // 0: none
}

// permissive is the profile of a device without one: any telemetry, any
// command, never stale.
var permissive = &Compiled{}

// Compile checks a profile's command parameter schemas and compiles them.
func Compile(p *tether.Profile) (*Compiled, error) {
	c := &Compiled{Profile: p, params: map[string]*jsonschema.Schema{}, keys: map[string]*keyRule{}}
	for key, k := range p.Telemetry {
		r := &keyRule{min: math.Inf(-1), max: math.Inf(1)}
		switch k.Type {
		case "number":
			r.kind = tether.KindNumber
		case "bool":
			r.kind = tether.KindBool
		case "string":
			r.kind = tether.KindString
		}
		if k.Min != nil {
			r.min = *k.Min
		}
		if k.Max != nil {
			r.max = *k.Max
		}
		if k.MaxRate != nil && *k.MaxRate > 0 {
			r.rate = *k.MaxRate
			c.rated = true
		}
		if r.kind != 0 || k.Min != nil || k.Max != nil || r.rate > 0 {
			c.keys[key] = r
		}
	}
	for name, def := range p.Commands {
		if len(bytes.TrimSpace(def.Params)) == 0 {
			continue
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(def.Params))
		if err != nil {
			return nil, tether.Errorf(tether.EINVALID, "command %q: params schema is not JSON: %v", name, err)
		}
		comp := jsonschema.NewCompiler()
		// A schema comes from a tenant: it may refer only to itself. The
		// default loader would read file:// references from the server's
		// disk.
		comp.UseLoader(jsonschema.SchemeURLLoader{})
		url := "tether:/profiles/" + p.ID + "/commands/" + name
		if err := comp.AddResource(url, doc); err != nil {
			return nil, tether.Errorf(tether.EINVALID, "command %q: params schema: %v", name, err)
		}
		sch, err := comp.Compile(url)
		if err != nil {
			return nil, tether.Errorf(tether.EINVALID, "command %q: params schema: %s", name, oneLine(err))
		}
		c.params[name] = sch
	}
	return c, nil
}

// Command returns the definition of a command. A profile with no commands
// allows any (with a zero definition); one with commands allows only those.
func (c *Compiled) Command(name string) (def tether.CommandDef, ok bool) {
	if c.Profile == nil || len(c.Profile.Commands) == 0 {
		return tether.CommandDef{}, true
	}
	def, ok = c.Profile.Commands[name]
	return def, ok
}

// CheckParams validates a command's parameters against its schema. Empty
// params are checked as {}.
func (c *Compiled) CheckParams(name string, params json.RawMessage) error {
	if _, ok := c.Command(name); !ok {
		return tether.Errorf(tether.EINVALID, "unknown command %q for profile %q", name, c.Profile.ID)
	}
	sch := c.params[name]
	if sch == nil {
		if len(bytes.TrimSpace(params)) > 0 && !json.Valid(params) {
			return tether.Errorf(tether.EINVALID, "params are not valid JSON")
		}
		return nil
	}
	if len(bytes.TrimSpace(params)) == 0 {
		params = json.RawMessage("{}")
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(params))
	if err != nil {
		return tether.Errorf(tether.EINVALID, "params are not valid JSON")
	}
	if err := sch.Validate(v); err != nil {
		return tether.Errorf(tether.EINVALID, "params: %s", oneLine(err))
	}
	return nil
}

// ReportInterval is how often the profile's devices are expected to send;
// 0 means never stale.
func (c *Compiled) ReportInterval() time.Duration {
	if c.Profile == nil {
		return 0
	}
	return time.Duration(c.Profile.ReportInterval)
}

var english = message.NewPrinter(language.English)

// oneLine turns a validation error (a tree, printed over several lines)
// into its most specific line.
func oneLine(err error) string {
	if ve, ok := err.(*jsonschema.ValidationError); ok {
		for len(ve.Causes) > 0 {
			ve = ve.Causes[0]
		}
		loc := "/" + strings.Join(ve.InstanceLocation, "/")
		return fmt.Sprintf("at %s: %s", loc, ve.ErrorKind.LocalizedString(english))
	}
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	return s
}
