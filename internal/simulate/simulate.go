// Package simulate runs simulated devices against a Tether node, over the
// same protocols and with the same credentials as real ones: a thermostat,
// a fridge with a door sensor, a robot arm whose vibration drifts towards
// failure and a patient monitor. Each publishes telemetry, answers its
// commands and follows its desired state, so that a fresh node (or any
// node, with `tether simulate`) shows a live fleet.
//
// A device is two parts. Its [Model] is a small state machine that
// advances one step at a time from a random source: given the same seed
// and the same steps, commands and desired states, it produces the same
// values, so its behaviour is unit-tested without a network. The [Runner]
// connects each device over MQTT 5 (or CoAP), publishes a step's values
// every interval, hands the model the commands and desired states the
// node sends, and reconnects with backoff when the connection drops.
//
// Devices are registered through a [Provisioner]: over the REST API of
// any node ([API]), or inside the node itself for `tether serve --demo`.
// The package is a client of Tether: it imports the domain package only.
package simulate

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// The kinds of simulated device; each is also the ID of its profile.
const (
	KindThermostat     = "thermostat"
	KindFridge         = "fridge"
	KindRobotArm       = "robot-arm"
	KindPatientMonitor = "patient-monitor"
)

// Kinds are the simulated device kinds, in the order a fleet cycles
// through them.
var Kinds = []string{KindThermostat, KindFridge, KindRobotArm, KindPatientMonitor}

// Model is the behaviour of one simulated device. It is not safe for
// concurrent use: the runner drives each model from one goroutine.
type Model interface {
	// Step advances the device by dt and returns the telemetry it sends
	// for that step (without "ts"), or nil when it sends nothing (while
	// it reboots).
	Step(dt time.Duration, rng *rand.Rand) map[string]any
	// Command runs a command and returns its result, or an error that
	// the device reports as a failed command.
	Command(name string, params json.RawMessage) (any, error)
	// Desire applies the desired state it understands and reports
	// whether anything changed. Values it cannot apply are ignored, so
	// they stay in the shadow's delta.
	Desire(desired map[string]any) bool
	// Reported is the state the device reports in its shadow.
	Reported() map[string]any
}

// NewModel returns a model of the kind, with its own character (a base
// heart rate, a drift rate) drawn from rng. With incident set, the
// model's characteristic incident happens early (a fridge door left open
// within seconds, a robot arm drifting fast, a patient's heart racing
// within half a minute), so that a demo shows alerts at once.
func NewModel(kind string, rng *rand.Rand, incident bool) (Model, error) {
	switch kind {
	case KindThermostat:
		return newThermostat(rng), nil
	case KindFridge:
		return newFridge(rng, incident), nil
	case KindRobotArm:
		return newRobotArm(rng, incident), nil
	case KindPatientMonitor:
		return newPatientMonitor(rng, incident), nil
	}
	return nil, fmt.Errorf("unknown device kind %q (kinds: %s)", kind, strings.Join(Kinds, ", "))
}

// ParseKinds reads a comma-separated list of kinds ("thermostat,fridge");
// empty means all of them. Duplicates are dropped.
func ParseKinds(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return slices.Clone(Kinds), nil
	}
	var out []string
	for k := range strings.SplitSeq(s, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(Kinds, k) {
			return nil, fmt.Errorf("unknown device kind %q (kinds: %s)", k, strings.Join(Kinds, ", "))
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// Seed returns the random seed of a device: a hash of its ID, so that a
// device behaves the same way at every start.
func Seed(deviceID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(deviceID))
	return h.Sum64()
}

// NewRand returns the random source of a device.
func NewRand(deviceID string) *rand.Rand {
	return rand.New(rand.NewPCG(Seed(deviceID), 0x7e7e))
}

// noise is a normally distributed value with standard deviation sd.
func noise(rng *rand.Rand, sd float64) float64 { return rng.NormFloat64() * sd }

// between is a uniform value in [lo, hi).
func between(rng *rand.Rand, lo, hi float64) float64 { return lo + rng.Float64()*(hi-lo) }

// seconds is a uniform duration in [lo, hi) seconds.
func seconds(rng *rand.Rand, lo, hi float64) time.Duration {
	return time.Duration(between(rng, lo, hi) * float64(time.Second))
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// round rounds to the given number of decimals, as a device would send.
func round(x float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(x*p) / p
}

// params decodes a command's parameters into v; none is an empty object.
func params(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("parameters: %v", err)
	}
	return nil
}

// errUnknownCommand is the failure of a command the model does not know
// (a profile edited to allow more than the device does).
func errUnknownCommand(kind, name string) error {
	return fmt.Errorf("a %s does not know the command %q", kind, name)
}

// number returns a desired value as a number.
func number(v any) (float64, bool) {
	f, ok := v.(float64)
	return f, ok && !math.IsNaN(f) && !math.IsInf(f, 0)
}
