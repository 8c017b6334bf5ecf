package simulate

import (
	"encoding/json"
	"time"

	"github.com/tether-iot/tether"
)

// reportInterval is the profiles' report interval: a simulated device
// silent for longer is stale. It leaves room for a slower --interval.
const reportInterval = 30 * time.Second

// Profiles returns the profiles of the simulated kinds, in the order of
// [Kinds]: what each reports (types, units, ranges; a value outside them
// is quarantined, so the models stay inside) and which commands it takes,
// with their parameter schemas. Operators may send every command; a
// thermostat's reboot is rate-limited, a guardrail to see at work.
func Profiles() []tether.Profile {
	return []tether.Profile{
		{
			ID: KindThermostat, Name: "Thermostat", ReportInterval: tether.Duration(reportInterval),
			Telemetry: map[string]tether.KeySchema{
				"temperature": num("°C", -10, 45, 1),
				"humidity":    num("%", 0, 100, 5),
				"target_temp": num("°C", thermostatMinTarget, thermostatMaxTarget, 0),
				"power":       num("%", 0, 100, 0),
				"mode":        {Type: "string"},
			},
			Commands: map[string]tether.CommandDef{
				"set_mode": {
					Params: schema(map[string]any{
						"type": "object", "required": []string{"mode"}, "additionalProperties": false,
						"properties": map[string]any{"mode": map[string]any{"enum": thermostatModes}},
					}),
					Roles: operators,
				},
				"reboot": {
					Params:    noParams,
					Roles:     operators,
					RateLimit: &tether.Rate{Count: 2, Per: tether.Duration(time.Minute)},
				},
			},
		},
		{
			ID: KindFridge, Name: "Fridge", ReportInterval: tether.Duration(reportInterval),
			Telemetry: map[string]tether.KeySchema{
				"temp":       num("°C", -30, 25, 1),
				"door_open":  {Type: "bool"},
				"compressor": {Type: "bool"},
				"power_w":    num("W", 0, 400, 0),
			},
			Commands: map[string]tether.CommandDef{
				"defrost": {
					Params: schema(map[string]any{
						"type": "object", "additionalProperties": false,
						"properties": map[string]any{"seconds": map[string]any{
							"type": "integer", "minimum": fridgeMinDefrost, "maximum": fridgeMaxDefrost,
						}},
					}),
					Roles: operators,
				},
			},
		},
		{
			ID: KindRobotArm, Name: "Robot arm", ReportInterval: tether.Duration(reportInterval),
			Telemetry: map[string]tether.KeySchema{
				// No max_rate: a calibration drops the vibration at once.
				"vibration":   num("mm/s", 0, 20, 0),
				"temperature": num("°C", 0, 120, 2),
				"cycle_count": num("cycles", 0, 0, 0),
				"state":       {Type: "string"},
			},
			Commands: map[string]tether.CommandDef{
				"calibrate": {Params: noParams, Roles: operators},
			},
		},
		{
			ID: KindPatientMonitor, Name: "Patient monitor", ReportInterval: tether.Duration(reportInterval),
			Telemetry: map[string]tether.KeySchema{
				"heart_rate": num("bpm", 20, 250, 0),
				"spo2":       num("%", 50, 100, 0),
				"resp_rate":  num("/min", 0, 60, 0),
				"battery":    num("%", 0, 100, 0),
			},
			Commands: map[string]tether.CommandDef{
				"ping": {Params: noParams, Roles: operators},
			},
		},
	}
}

// operators may send the simulated devices' commands (admins always may).
var operators = []string{tether.RoleOperator}

// noParams is the schema of a command without parameters.
var noParams = schema(map[string]any{"type": "object", "additionalProperties": false})

// num is a numeric key's schema; a zero max means no maximum and a zero
// rate no rate limit.
func num(unit string, minV, maxV, maxRate float64) tether.KeySchema {
	k := tether.KeySchema{Type: "number", Unit: unit, Min: &minV}
	if maxV != 0 {
		k.Max = &maxV
	}
	if maxRate != 0 {
		k.MaxRate = &maxRate
	}
	return k
}

func schema(v map[string]any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a literal above
	}
	return b
}
