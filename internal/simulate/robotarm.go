package simulate

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"time"
)

// Robot arm constants.
const (
	// armFault is the vibration (mm/s) at which an arm's gearbox gives up:
	// the arm stops in state "fault".
	armFault = 6.5
	// armService is how long a faulted arm waits for a technician, who
	// recalibrates it, so that a demo left running goes round again.
	armService = 2 * time.Minute
	// armCalibrate is how long a calibration takes.
	armCalibrate = 5 * time.Second
	// armCycle is the time of one work cycle.
	armCycle = 4 * time.Second
	// armIncidentDrift is the drift (mm/s per second) of an incident arm:
	// from about 2 to the fault in six minutes, so a trend rule predicts
	// the failure within a minute of the start.
	armIncidentDrift = 0.012
)

// robotArm works in cycles while its vibration drifts slowly upwards
// (wear), with the motor's temperature following. Calibrating resets the
// drift; past armFault the arm stops until it is calibrated.
type robotArm struct {
	base, drift, driftRate float64
	temp                   float64
	cycles                 int64
	progress               float64 // of the current cycle, 0..1
	faulted                bool
	faultFor               time.Duration
	calibrating            time.Duration
	vibration              float64 // the last reading
}

func newRobotArm(rng *rand.Rand, incident bool) *robotArm {
	a := &robotArm{base: between(rng, 1.6, 2.4), driftRate: between(rng, 0.0004, 0.0015),
		cycles: int64(10_000 + rng.IntN(40_000))}
	if incident {
		a.driftRate = armIncidentDrift
	}
	a.temp, a.vibration = 38+noise(rng, 0.5), a.base
	return a
}

func (a *robotArm) Step(dt time.Duration, rng *rand.Rand) map[string]any {
	s := dt.Seconds()
	state := "running"
	var v float64
	switch {
	case a.calibrating > 0:
		a.calibrating -= dt
		state = "calibrating"
		v = a.base*0.4 + math.Abs(noise(rng, 0.02))
	case a.faulted:
		a.faultFor += dt
		state = "fault"
		v = a.base + a.drift + noise(rng, 0.1)
		if a.faultFor >= armService {
			a.calibrate()
		}
	default:
		a.drift += a.driftRate * s
		v = a.base + a.drift + noise(rng, 0.05)
		for a.progress += s / armCycle.Seconds(); a.progress >= 1; a.progress-- {
			a.cycles++
		}
		if v >= armFault {
			a.faulted, a.faultFor = true, 0
		}
	}
	a.vibration = math.Max(v, 0)
	// The motor runs warmer the more the gearbox shakes.
	want := 38 + 4*(a.vibration-a.base)
	a.temp = clamp(a.temp+(want-a.temp)*0.05*s+noise(rng, 0.1), 0, 120)
	return map[string]any{
		"vibration":   round(a.vibration, 3),
		"temperature": round(a.temp, 1),
		"cycle_count": a.cycles,
		"state":       state,
	}
}

// calibrate resets the drift and starts a calibration.
func (a *robotArm) calibrate() {
	a.drift, a.faulted, a.faultFor, a.calibrating = 0, false, 0, armCalibrate
}

func (a *robotArm) Command(name string, _ json.RawMessage) (any, error) {
	if name != "calibrate" {
		return nil, errUnknownCommand(KindRobotArm, name)
	}
	before := a.vibration
	a.calibrate()
	return map[string]any{"vibration_before": round(before, 2), "calibrating_s": armCalibrate.Seconds()}, nil
}

func (a *robotArm) Desire(map[string]any) bool { return false }

func (a *robotArm) Reported() map[string]any {
	return map[string]any{"firmware": "5.0.3"}
}
