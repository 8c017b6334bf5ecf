package simulate

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Thermostat modes.
var thermostatModes = []string{"off", "heat", "cool", "auto"}

// Limits of a thermostat's set point.
const (
	thermostatMinTarget = 5.0
	thermostatMaxTarget = 30.0
	// thermostatBoot is how long a thermostat is silent after a reboot.
	thermostatBoot = 5 * time.Second
)

// thermostat heats or cools a room towards its target temperature. The
// room loses heat to the outside; the heater (or cooler) output is
// proportional to the gap, up to full power.
type thermostat struct {
	temp, humidity, ambient float64
	target                  float64
	mode                    string
	power                   float64 // % of full output, 0..100
	booting                 time.Duration
}

func newThermostat(rng *rand.Rand) *thermostat {
	target := float64(19 + rng.IntN(4)) // 19..22
	return &thermostat{
		temp: target + between(rng, -1.5, 0.5), humidity: between(rng, 38, 52), ambient: between(rng, 8, 16),
		target: target, mode: "heat",
	}
}

func (t *thermostat) Step(dt time.Duration, rng *rand.Rand) map[string]any {
	s := dt.Seconds()
	if t.booting > 0 {
		t.booting -= dt
		return nil
	}
	// The outside wanders slowly around 12 °C.
	t.ambient = clamp(t.ambient+(12-t.ambient)*0.001*s+noise(rng, 0.02)*s, -5, 25)
	gap := t.target - t.temp
	var heat float64 // -1 cooling .. 1 heating
	switch t.mode {
	case "heat":
		heat = clamp(gap*0.8, 0, 1)
	case "cool":
		heat = clamp(gap*0.8, -1, 0)
	case "auto":
		heat = clamp(gap*0.8, -1, 1)
	}
	t.power = math.Abs(heat) * 100
	// Full output moves the room 0.05 °C a second; the walls leak.
	t.temp += ((t.ambient-t.temp)*0.002 + heat*0.05) * s
	t.temp = clamp(t.temp+noise(rng, 0.01), -10, 45)
	t.humidity = clamp(t.humidity+(45-t.humidity)*0.01*s+noise(rng, 0.1), 20, 80)
	return map[string]any{
		"temperature": round(t.temp, 2),
		"humidity":    round(t.humidity, 1),
		"target_temp": t.target,
		"mode":        t.mode,
		"power":       round(t.power, 0),
	}
}

func (t *thermostat) Command(name string, raw json.RawMessage) (any, error) {
	switch name {
	case "set_mode":
		var p struct {
			Mode string `json:"mode"`
		}
		if err := params(raw, &p); err != nil {
			return nil, err
		}
		if !slices.Contains(thermostatModes, p.Mode) {
			return nil, fmt.Errorf("mode %q: want one of %v", p.Mode, thermostatModes)
		}
		t.mode = p.Mode
		return map[string]any{"mode": t.mode}, nil
	case "reboot":
		t.booting = thermostatBoot
		return map[string]any{"rebooting": true, "back_in_s": thermostatBoot.Seconds()}, nil
	}
	return nil, errUnknownCommand(KindThermostat, name)
}

func (t *thermostat) Desire(desired map[string]any) bool {
	changed := false
	if v, ok := number(desired["target_temp"]); ok && v >= thermostatMinTarget && v <= thermostatMaxTarget && v != t.target {
		t.target, changed = v, true
	}
	if m, ok := desired["mode"].(string); ok && slices.Contains(thermostatModes, m) && m != t.mode {
		t.mode, changed = m, true
	}
	return changed
}

func (t *thermostat) Reported() map[string]any {
	return map[string]any{"target_temp": t.target, "mode": t.mode, "firmware": "2.4.1"}
}
