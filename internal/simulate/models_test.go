package simulate_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
	"github.com/tether-iot/tether/internal/rules"
	"github.com/tether-iot/tether/internal/simulate"
)

const step = time.Second

// device is a model with its random source, stepped one second at a time.
type device struct {
	t   *testing.T
	m   simulate.Model
	rng *rand.Rand
	now time.Duration // since the start
}

func newDevice(t *testing.T, kind, id string, incident bool) *device {
	t.Helper()
	rng := simulate.NewRand(id)
	m, err := simulate.NewModel(kind, rng, incident)
	if err != nil {
		t.Fatal(err)
	}
	return &device{t: t, m: m, rng: rng}
}

// step advances one second and returns what the device sends.
func (d *device) step() map[string]any {
	d.now += step
	return d.m.Step(step, d.rng)
}

// run steps for the duration and returns every reading sent.
func (d *device) run(dur time.Duration) []map[string]any {
	var out []map[string]any
	for end := d.now + dur; d.now < end; {
		if v := d.step(); v != nil {
			out = append(out, v)
		}
	}
	return out
}

func (d *device) command(name, params string) any {
	d.t.Helper()
	res, err := d.m.Command(name, json.RawMessage(params))
	if err != nil {
		d.t.Fatalf("%s %s: %v", name, params, err)
	}
	return res
}

func values(readings []map[string]any, key string) []float64 {
	var out []float64
	for _, r := range readings {
		switch v := r[key].(type) {
		case float64:
			out = append(out, v)
		case int64:
			out = append(out, float64(v))
		case bool:
			out = append(out, map[bool]float64{false: 0, true: 1}[v])
		}
	}
	return out
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func profileOf(t *testing.T, kind string) tether.Profile {
	t.Helper()
	for _, p := range simulate.Profiles() {
		if p.ID == kind {
			return p
		}
	}
	t.Fatalf("no profile %s", kind)
	return tether.Profile{}
}

// TestEveryReadingFitsItsProfile runs each kind, incident or not, for
// six hours of readings (faults, services, episodes, open doors and
// calibrations included) and checks every value against the profile the
// node quarantines by: a model that broke it would show gaps on the
// dashboard instead of its incidents.
func TestEveryReadingFitsItsProfile(t *testing.T) {
	for _, kind := range simulate.Kinds {
		for _, incident := range []bool{false, true} {
			name := kind + " readings fit the profile"
			if incident {
				name = "an incident " + name
			}
			t.Run(name, func(t *testing.T) {
				p := profileOf(t, kind)
				d := newDevice(t, kind, "fit-"+kind, incident)
				prev := map[string]float64{}
				for i := range 6 * 3600 {
					if kind == simulate.KindRobotArm && i%1800 == 900 {
						d.command("calibrate", "")
					}
					r := d.step()
					if r == nil {
						continue
					}
					for key, v := range r {
						k, ok := p.Telemetry[key]
						if !ok {
							t.Fatalf("at %v: key %s is not in the profile", d.now, key)
						}
						var x float64
						switch v := v.(type) {
						case float64:
							x = v
						case int64:
							x = float64(v)
						case bool:
							if k.Type != "bool" {
								t.Fatalf("%s = %v, a bool; the profile says %s", key, v, k.Type)
							}
							continue
						case string:
							if k.Type != "string" {
								t.Fatalf("%s = %q, a string; the profile says %s", key, v, k.Type)
							}
							continue
						default:
							t.Fatalf("%s = %#v (%T)", key, v, v)
						}
						if k.Type != "number" || math.IsNaN(x) || math.IsInf(x, 0) {
							t.Fatalf("%s = %v; the profile says %s", key, x, k.Type)
						}
						if (k.Min != nil && x < *k.Min) || (k.Max != nil && x > *k.Max) {
							t.Fatalf("at %v: %s = %v outside [%v, %v]", d.now, key, x, deref(k.Min), deref(k.Max))
						}
						if last, ok := prev[key]; ok && k.MaxRate != nil && math.Abs(x-last) > *k.MaxRate {
							t.Fatalf("at %v: %s jumped from %v to %v in 1 s; max_rate %v", d.now, key, last, x, *k.MaxRate)
						}
						prev[key] = x
					}
				}
			})
		}
	}
}

func deref(p *float64) any {
	if p == nil {
		return "none"
	}
	return *p
}

func TestTheProfilesAreValidAndTheirCommandsKnown(t *testing.T) {
	for _, p := range simulate.Profiles() {
		t.Run(p.ID+" compiles and its model knows its commands", func(t *testing.T) {
			c, err := profile.Compile(&p)
			if err != nil {
				t.Fatal(err)
			}
			for name := range p.Commands {
				if err := c.CheckParams(name, nil); err != nil && name != "set_mode" {
					t.Errorf("%s without params: %v", name, err)
				}
				m, _ := simulate.NewModel(p.ID, simulate.NewRand("x"), false)
				params := ""
				if name == "set_mode" {
					params = `{"mode":"auto"}`
				}
				if err := c.CheckParams(name, json.RawMessage(params)); params != "" && err != nil {
					t.Errorf("%s %s: %v", name, params, err)
				}
				if _, err := m.Command(name, json.RawMessage(params)); err != nil {
					t.Errorf("the model refuses %s: %v", name, err)
				}
			}
		})
	}
	t.Run("a wrong set_mode is refused by the profile before it reaches a device", func(t *testing.T) {
		p := profileOf(t, simulate.KindThermostat)
		c, _ := profile.Compile(&p)
		for _, params := range []string{`{}`, `{"mode":"turbo"}`, `{"mode":"heat","x":1}`} {
			if err := c.CheckParams("set_mode", json.RawMessage(params)); err == nil {
				t.Errorf("set_mode %s accepted", params)
			}
		}
	})
}

func TestTheExampleRulesAreValid(t *testing.T) {
	svc := rules.New(nil, nil, rules.Options{})
	seen := map[string]bool{}
	for _, r := range simulate.ExampleRules() {
		t.Run(r.ID+" is valid", func(t *testing.T) {
			if err := svc.Validate(r.Statement, r.Actions); err != nil {
				t.Error(err)
			}
			if !tether.ValidID(r.ID) || seen[r.ID] || !r.Enabled || len(r.Actions) != 1 || r.Actions[0].Type != tether.ActionAlert {
				t.Errorf("rule %+v", r)
			}
			seen[r.ID] = true
		})
	}
}

func TestTheSameSeedGivesTheSameReadings(t *testing.T) {
	for _, kind := range simulate.Kinds {
		t.Run(kind+" repeats itself", func(t *testing.T) {
			a := newDevice(t, kind, "same", true).run(10 * time.Minute)
			b := newDevice(t, kind, "same", true).run(10 * time.Minute)
			c := newDevice(t, kind, "other", true).run(10 * time.Minute)
			if !reflect.DeepEqual(a, b) {
				t.Error("two runs of one seed differ")
			}
			if reflect.DeepEqual(a, c) {
				t.Error("two seeds gave the same readings")
			}
		})
	}
}

func TestThermostat(t *testing.T) {
	t.Run("it heats towards a desired target and reports it", func(t *testing.T) {
		d := newDevice(t, simulate.KindThermostat, "th-1", false)
		d.run(time.Minute)
		if !d.m.Desire(map[string]any{"target_temp": 25.0}) {
			t.Fatal("the desired target was not taken")
		}
		if got := d.m.Reported()["target_temp"]; got != 25.0 {
			t.Errorf("reported target_temp = %v", got)
		}
		r := d.run(10 * time.Minute)
		temps := values(r, "temperature")
		if last := mean(temps[len(temps)-30:]); math.Abs(last-25) > 0.8 {
			t.Errorf("after 10 minutes the room is at %.2f, want about 25", last)
		}
		if r[len(r)-1]["target_temp"] != 25.0 {
			t.Errorf("telemetry target_temp = %v", r[len(r)-1]["target_temp"])
		}
	})
	t.Run("in auto mode it cools to a lower target and holds it", func(t *testing.T) {
		d := newDevice(t, simulate.KindThermostat, "th-2", false)
		d.run(time.Minute)
		d.command("set_mode", `{"mode":"auto"}`)
		d.m.Desire(map[string]any{"target_temp": 16.0})
		before := mean(values(d.run(10*time.Second), "temperature"))
		after := values(d.run(10*time.Minute), "temperature")
		if got := mean(after[len(after)-30:]); got > before-2 || math.Abs(got-16) > 0.8 {
			t.Errorf("from %.2f to %.2f, want about 16", before, got)
		}
		if got := d.m.Reported()["mode"]; got != "auto" {
			t.Errorf("reported mode = %v", got)
		}
	})
	t.Run("in cool mode it never heats", func(t *testing.T) {
		d := newDevice(t, simulate.KindThermostat, "th-7", false)
		d.command("set_mode", `{"mode":"cool"}`)
		d.m.Desire(map[string]any{"target_temp": 28.0})
		r := d.run(10 * time.Minute)
		if p := values(r, "power"); slices.Max(p) != 0 {
			t.Errorf("power %v below a target it would have to heat to", slices.Max(p))
		}
		if temps := values(r, "temperature"); temps[len(temps)-1] > temps[0] {
			t.Errorf("from %.2f to %.2f", temps[0], temps[len(temps)-1])
		}
	})
	t.Run("switched off it drifts towards the outside and uses no power", func(t *testing.T) {
		d := newDevice(t, simulate.KindThermostat, "th-3", false)
		start := mean(values(d.run(10*time.Second), "temperature"))
		d.command("set_mode", `{"mode":"off"}`)
		r := d.run(20 * time.Minute)
		if end := mean(values(r[len(r)-30:], "temperature")); end > start-1 {
			t.Errorf("from %.2f to %.2f: not cooling down", start, end)
		}
		if p := values(r, "power"); slices.Max(p) != 0 {
			t.Errorf("power %v while off", slices.Max(p))
		}
	})
	t.Run("desired values it cannot apply change nothing and stay in the delta", func(t *testing.T) {
		d := newDevice(t, simulate.KindThermostat, "th-4", false)
		before := d.m.Reported()
		for _, desired := range []map[string]any{
			{"target_temp": 100.0}, {"target_temp": "warm"}, {"mode": "turbo"}, {"fan": "on"}, {"target_temp": math.NaN()},
		} {
			if d.m.Desire(desired) {
				t.Errorf("Desire(%v) changed something", desired)
			}
		}
		if after := d.m.Reported(); !reflect.DeepEqual(before, after) {
			t.Errorf("reported %v, then %v", before, after)
		}
	})
	t.Run("a reboot silences it for five seconds", func(t *testing.T) {
		d := newDevice(t, simulate.KindThermostat, "th-5", false)
		d.step()
		d.command("reboot", "")
		var silent int
		for range 10 {
			if d.step() == nil {
				silent++
			}
		}
		if silent != 5 {
			t.Errorf("%d silent seconds, want 5", silent)
		}
	})
	for _, tc := range []struct{ name, cmd, params, want string }{
		{"set_mode refuses an unknown mode", "set_mode", `{"mode":"turbo"}`, "turbo"},
		{"set_mode refuses parameters that are not an object", "set_mode", `[1]`, "parameters"},
		{"an unknown command fails", "defrost", ``, "does not know"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, simulate.KindThermostat, "th-6", false)
			if _, err := d.m.Command(tc.cmd, json.RawMessage(tc.params)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestFridge(t *testing.T) {
	t.Run("an incident fridge's door is left open early and the inside warms", func(t *testing.T) {
		d := newDevice(t, simulate.KindFridge, "fr-1", true)
		r := d.run(2 * time.Minute)
		open := values(r, "door_open")
		first := slices.Index(open, 1)
		if first < 0 || first > 5 {
			t.Fatalf("the door opened at %d s, want within 5 s", first)
		}
		closed := slices.Index(open[first:], 0)
		if closed < 60 {
			t.Errorf("the door was open for %d s, want over a minute", closed)
		}
		temp := values(r, "temp")
		if rise := temp[first+closed-1] - temp[first]; rise < 1.5 {
			t.Errorf("the inside warmed %.2f °C with the door open, want over 1.5", rise)
		}
	})
	t.Run("the door opens now and then, mostly briefly, and the compressor holds the temperature", func(t *testing.T) {
		d := newDevice(t, simulate.KindFridge, "fr-2", false)
		r := d.run(6 * time.Hour)
		open := values(r, "door_open")
		var openings, openSeconds int
		for i, v := range open {
			if v == 1 {
				openSeconds++
				if i == 0 || open[i-1] == 0 {
					openings++
				}
			}
		}
		if openings < 40 || openings > 200 {
			t.Errorf("%d openings in 6 hours", openings)
		}
		if share := float64(openSeconds) / float64(len(open)); share > 0.2 {
			t.Errorf("the door was open %.0f%% of the time", share*100)
		}
		temp := values(r, "temp")
		if m := mean(temp); math.Abs(m-4) > 1.5 {
			t.Errorf("mean temperature %.2f, want about 4", m)
		}
		if on := mean(values(r, "compressor")); on < 0.1 || on > 0.9 {
			t.Errorf("the compressor ran %.0f%% of the time", on*100)
		}
	})
	t.Run("a defrost stops the compressor and heats", func(t *testing.T) {
		d := newDevice(t, simulate.KindFridge, "fr-3", false)
		d.run(time.Minute)
		if res := d.command("defrost", `{"seconds": 60}`); !reflect.DeepEqual(res, map[string]any{"defrost_seconds": 60}) {
			t.Errorf("result %v", res)
		}
		r := d.run(59 * time.Second)
		if on := slices.Max(values(r, "compressor")); on != 0 {
			t.Error("the compressor ran during the defrost")
		}
		if p := slices.Min(values(r, "power_w")); p < 150 {
			t.Errorf("power %v W during the defrost, want the heater's", p)
		}
	})
	t.Run("it follows a desired target within its range", func(t *testing.T) {
		d := newDevice(t, simulate.KindFridge, "fr-4", false)
		if !d.m.Desire(map[string]any{"target_temp": 2.0}) || d.m.Desire(map[string]any{"target_temp": 20.0}) {
			t.Fatal("Desire")
		}
		r := d.run(time.Hour)
		if m := mean(values(r[len(r)/2:], "temp")); math.Abs(m-2) > 1.5 {
			t.Errorf("mean %.2f, want about 2", m)
		}
	})
	for _, params := range []string{`{"seconds": 1}`, `{"seconds": 10000}`, `{"seconds": "long"}`} {
		t.Run("a defrost of "+params+" is refused", func(t *testing.T) {
			d := newDevice(t, simulate.KindFridge, "fr-5", false)
			if _, err := d.m.Command("defrost", json.RawMessage(params)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestRobotArm(t *testing.T) {
	t.Run("its vibration drifts upwards", func(t *testing.T) {
		for _, id := range []string{"arm-a", "arm-b", "arm-c"} {
			d := newDevice(t, simulate.KindRobotArm, id, false)
			first := mean(values(d.run(time.Minute), "vibration"))
			d.run(8 * time.Minute)
			tenth := mean(values(d.run(time.Minute), "vibration"))
			if tenth-first < 0.15 {
				t.Errorf("%s: from %.3f to %.3f in 9 minutes, want a rise", id, first, tenth)
			}
		}
	})
	t.Run("an incident arm reaches its fault within eight minutes and stops", func(t *testing.T) {
		d := newDevice(t, simulate.KindRobotArm, "arm-d", true)
		r := d.run(8 * time.Minute)
		i := slices.IndexFunc(r, func(v map[string]any) bool { return v["state"] == "fault" })
		if i < 0 {
			t.Fatalf("no fault; vibration reached %.2f", slices.Max(values(r, "vibration")))
		}
		if v := values(r, "vibration")[i-1]; v < 5.5 {
			t.Errorf("vibration %.2f before the fault", v)
		}
		cycles := values(d.run(30*time.Second), "cycle_count")
		if cycles[0] != cycles[len(cycles)-1] {
			t.Error("a faulted arm keeps counting cycles")
		}
		t.Run("a technician recalibrates it after two minutes", func(t *testing.T) {
			r := d.run(2 * time.Minute)
			if s := r[len(r)-1]["state"]; s != "running" {
				t.Errorf("state %v", s)
			}
			if v := values(r, "vibration"); v[len(v)-1] > 3 {
				t.Errorf("vibration %.2f after the service", v[len(v)-1])
			}
		})
	})
	t.Run("calibrate resets the drift", func(t *testing.T) {
		d := newDevice(t, simulate.KindRobotArm, "arm-e", true)
		base := mean(values(d.run(30*time.Second), "vibration"))
		d.run(4 * time.Minute)
		res := d.command("calibrate", "").(map[string]any)
		if before := res["vibration_before"].(float64); before < base+2 {
			t.Errorf("vibration before calibrating %.2f, want well above %.2f", before, base)
		}
		r := d.run(10 * time.Second)
		if r[0]["state"] != "calibrating" || r[len(r)-1]["state"] != "running" {
			t.Errorf("states %v … %v", r[0]["state"], r[len(r)-1]["state"])
		}
		if after := values(r, "vibration")[9]; math.Abs(after-base) > 0.5 {
			t.Errorf("vibration %.2f after calibrating, want about %.2f", after, base)
		}
	})
	t.Run("it counts about fifteen cycles a minute while running", func(t *testing.T) {
		d := newDevice(t, simulate.KindRobotArm, "arm-f", false)
		c := values(d.run(10*time.Minute), "cycle_count")
		if n := c[len(c)-1] - c[0]; n < 140 || n > 160 {
			t.Errorf("%v cycles in 10 minutes", n)
		}
	})
}

func TestPatientMonitor(t *testing.T) {
	t.Run("between episodes the vital signs stay in their normal ranges", func(t *testing.T) {
		for _, id := range []string{"pm-a", "pm-b", "pm-c", "pm-d"} {
			r := newDevice(t, simulate.KindPatientMonitor, id, false).run(5 * time.Minute)
			for _, c := range []struct {
				key    string
				lo, hi float64
			}{{"heart_rate", 50, 100}, {"spo2", 94, 100}, {"resp_rate", 8, 24}} {
				v := values(r, c.key)
				if slices.Min(v) < c.lo || slices.Max(v) > c.hi {
					t.Errorf("%s: %s from %v to %v, want within [%v, %v]", id, c.key, slices.Min(v), slices.Max(v), c.lo, c.hi)
				}
			}
		}
	})
	t.Run("an incident patient's heart races after about 20 s for a minute", func(t *testing.T) {
		d := newDevice(t, simulate.KindPatientMonitor, "pm-e", true)
		hr := values(d.run(3*time.Minute), "heart_rate")
		first := slices.IndexFunc(hr, func(v float64) bool { return v > 120 })
		if first < 20 || first > 35 {
			t.Fatalf("above 120 bpm first at %d s, want 20 to 35", first)
		}
		last := first
		for i, v := range hr {
			if v > 120 {
				last = i
			}
		}
		if d := last - first; d < 45 || d > 75 {
			t.Errorf("above 120 bpm for %d s, want about 60", d)
		}
		if hr[len(hr)-1] > 100 {
			t.Errorf("%v bpm a minute after the episode", hr[len(hr)-1])
		}
	})
	t.Run("episodes are rare", func(t *testing.T) {
		r := newDevice(t, simulate.KindPatientMonitor, "pm-f", false).run(12 * time.Hour)
		var out int
		for _, v := range r {
			if hr, spo2 := v["heart_rate"].(float64), v["spo2"].(float64); hr > 120 || hr < 45 || spo2 < 92 {
				out++
			}
		}
		if share := float64(out) / float64(len(r)); out == 0 || share > 0.1 {
			t.Errorf("out of range %d s of %d", out, len(r))
		}
	})
	t.Run("ping answers with the battery", func(t *testing.T) {
		d := newDevice(t, simulate.KindPatientMonitor, "pm-g", false)
		r := d.run(time.Second)
		res := d.command("ping", "").(map[string]any)
		if res["pong"] != true || res["battery"] != r[0]["battery"] {
			t.Errorf("ping = %v, battery %v", res, r[0]["battery"])
		}
	})
}

func TestParseKinds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", simulate.Kinds, ""},
		{"fridge", []string{"fridge"}, ""},
		{" fridge , thermostat,fridge", []string{"fridge", "thermostat"}, ""},
		{"toaster", nil, `unknown device kind "toaster"`},
		{"fridge,", nil, `unknown device kind ""`},
	} {
		t.Run("kinds "+tc.in, func(t *testing.T) {
			got, err := simulate.ParseKinds(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %v, %v", got, err)
			}
		})
	}
}

func TestFleet(t *testing.T) {
	fleet := simulate.Fleet(simulate.FleetOptions{Devices: 6, Kinds: []string{"fridge", "patient-monitor"}, Prefix: "x-", CoAP: true})
	want := []struct {
		id, kind, site string
		coap, incident bool
	}{
		{"x-fridge-1", "fridge", "berlin", false, true},
		{"x-patient-monitor-1", "patient-monitor", "berlin", true, true},
		{"x-fridge-2", "fridge", "lyon", false, false},
		{"x-patient-monitor-2", "patient-monitor", "lyon", true, false},
		{"x-fridge-3", "fridge", "austin", false, false},
		{"x-patient-monitor-3", "patient-monitor", "austin", true, false},
	}
	if len(fleet) != len(want) {
		t.Fatalf("%d devices", len(fleet))
	}
	for i, w := range want {
		s := fleet[i]
		t.Run(w.id+" is a "+w.kind+" in "+w.site, func(t *testing.T) {
			d := s.Device
			if d.ID != w.id || s.Kind != w.kind || d.ProfileID != w.kind || s.CoAP != w.coap || s.Incident != w.incident ||
				d.Labels["site"] != w.site || d.Labels["kind"] != w.kind || d.Labels["demo"] != "true" || d.Name == "" {
				t.Errorf("%+v", s)
			}
		})
	}
}
