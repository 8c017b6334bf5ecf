package simulate

import (
	"time"

	"github.com/tether-iot/tether"
)

// ExampleRules are rules over the simulated kinds' telemetry, each
// raising an alert: what `tether serve --demo` starts with. With the
// incidents of the first device of each kind, the fridge's door raises
// an alert about 13 seconds after the start, the patient's racing heart
// after about 30 and the robot arm's trend within a minute or two.
func ExampleRules() []tether.Rule {
	alert := func(typ, severity string, minDuration, clearAfter time.Duration) []tether.RuleAction {
		return []tether.RuleAction{{Type: tether.ActionAlert, AlertType: typ, Severity: severity,
			MinDuration: tether.Duration(minDuration), ClearAfter: tether.Duration(clearAfter)}}
	}
	return []tether.Rule{
		{
			ID: "demo-fridge-door-open", Name: "Fridge door left open for more than 10 s",
			Statement: `SELECT door_open, temp, device.labels.site AS site
FROM telemetry
WHERE device.profile = 'fridge' AND door_open = true`,
			Actions: alert("door_open", "warning", 10*time.Second, 5*time.Second),
			Enabled: true,
		},
		{
			ID: "demo-arm-vibration-trend", Name: "Robot arm vibration will reach 6 mm/s within 10 minutes",
			Statement: `-- every 10 s window's average feeds a linear trend over the last 5 minutes
SELECT avg(vibration) AS vibration, max(temperature) AS temperature,
       time_to_threshold(avg(vibration), 6.0, 300) AS seconds_left
FROM telemetry
WHERE device.profile = 'robot-arm'
GROUP BY device, TUMBLING(10s)
HAVING seconds_left < 600`,
			Actions: alert("vibration_trend", "warning", 0, 30*time.Second),
			Enabled: true,
		},
		{
			ID: "demo-patient-heart-rate", Name: "Patient heart rate out of range (45 to 120 bpm)",
			Statement: `SELECT heart_rate, spo2, device.labels.site AS site
FROM telemetry
WHERE device.profile = 'patient-monitor' AND (heart_rate > 120 OR heart_rate < 45)`,
			Actions: alert("heart_rate", "critical", 5*time.Second, 10*time.Second),
			Enabled: true,
		},
		{
			ID: "demo-patient-spo2-low", Name: "Patient oxygen saturation below 92 % for 10 s",
			Statement: `SELECT spo2, heart_rate, device.labels.site AS site
FROM telemetry
WHERE device.profile = 'patient-monitor' AND spo2 < 92`,
			Actions: alert("spo2_low", "critical", 10*time.Second, 10*time.Second),
			Enabled: true,
		},
	}
}
