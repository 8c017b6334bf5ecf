package simulate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// Limits of a fridge.
const (
	fridgeMinTarget = 1.0
	fridgeMaxTarget = 8.0
	fridgeRoom      = 20.0 // °C around the fridge
	// fridgeDefrost is a defrost's default length; params may ask for
	// fridgeMinDefrost to fridgeMaxDefrost seconds.
	fridgeDefrost    = 30
	fridgeMinDefrost = 5
	fridgeMaxDefrost = 600
	// fridgeIncidentOpen is when an incident fridge's door is opened and
	// fridgeIncidentOpenFor how long it is left open.
	fridgeIncidentOpen    = 3 * time.Second
	fridgeIncidentOpenFor = 90 * time.Second
)

// fridge keeps its inside between target-1 and target+1 °C with a
// compressor that switches with hysteresis. The door opens now and then
// for a few seconds; sometimes it is left open, and the inside warms.
type fridge struct {
	temp, target float64
	compressor   bool
	door         bool
	doorLeft     time.Duration // while open: until it closes
	nextOpen     time.Duration // while closed: until it opens
	leaveOpen    bool          // the next opening is the incident's
	defrost      time.Duration
}

func newFridge(rng *rand.Rand, incident bool) *fridge {
	f := &fridge{target: 4, nextOpen: seconds(rng, 30, 180)}
	f.temp = f.target + between(rng, -0.8, 0.8)
	if incident {
		f.nextOpen, f.leaveOpen = fridgeIncidentOpen, true
	}
	return f
}

func (f *fridge) Step(dt time.Duration, rng *rand.Rand) map[string]any {
	s := dt.Seconds()
	if f.door {
		if f.doorLeft -= dt; f.doorLeft <= 0 {
			f.door, f.nextOpen = false, seconds(rng, 60, 300)
		}
	} else if f.nextOpen -= dt; f.nextOpen <= 0 {
		f.door = true
		switch {
		case f.leaveOpen:
			f.doorLeft, f.leaveOpen = fridgeIncidentOpenFor, false
		case rng.Float64() < 0.15:
			f.doorLeft = seconds(rng, 40, 90) // left open
		default:
			f.doorLeft = seconds(rng, 3, 9)
		}
	}
	switch {
	case f.defrost > 0:
		f.defrost -= dt
		f.compressor = false
	case f.temp > f.target+1:
		f.compressor = true
	case f.temp < f.target-1:
		f.compressor = false
	}
	// The walls leak heat in; an open door lets in five times as much.
	rate := (fridgeRoom - f.temp) * 0.0008
	if f.door {
		rate *= 6
	}
	if f.compressor {
		rate -= 0.03
	}
	if f.defrost > 0 {
		rate += 0.01
	}
	f.temp = clamp(f.temp+rate*s+noise(rng, 0.01), -30, 25)
	power := 4.0
	switch {
	case f.compressor:
		power = 110 + noise(rng, 3)
	case f.defrost > 0:
		power = 180 + noise(rng, 3)
	}
	if f.door {
		power += 2 // the light
	}
	return map[string]any{
		"temp":       round(f.temp, 2),
		"door_open":  f.door,
		"compressor": f.compressor,
		"power_w":    round(power, 0),
	}
}

func (f *fridge) Command(name string, raw json.RawMessage) (any, error) {
	if name != "defrost" {
		return nil, errUnknownCommand(KindFridge, name)
	}
	p := struct {
		Seconds *int `json:"seconds"`
	}{}
	if err := params(raw, &p); err != nil {
		return nil, err
	}
	secs := fridgeDefrost
	if p.Seconds != nil {
		secs = *p.Seconds
	}
	if secs < fridgeMinDefrost || secs > fridgeMaxDefrost {
		return nil, fmt.Errorf("seconds %d: want %d to %d", secs, fridgeMinDefrost, fridgeMaxDefrost)
	}
	f.defrost = time.Duration(secs) * time.Second
	return map[string]any{"defrost_seconds": secs}, nil
}

func (f *fridge) Desire(desired map[string]any) bool {
	if v, ok := number(desired["target_temp"]); ok && v >= fridgeMinTarget && v <= fridgeMaxTarget && v != f.target {
		f.target = v
		return true
	}
	return false
}

func (f *fridge) Reported() map[string]any {
	return map[string]any{"target_temp": f.target, "firmware": "1.3.0"}
}
