package stream

import (
	"encoding/json"
	"time"

	"github.com/tether-iot/tether"
)

// livePoint is a telemetry point as a live client receives it.
type livePoint struct {
	Key   string    `json:"key"`
	TS    time.Time `json:"ts"`
	Value any       `json:"value"`
}

type livePoints struct {
	Points []livePoint `json:"points"`
}

// TelemetryEvent returns the live event of an accepted telemetry message:
// {"points":[{"key","ts","value"}]}. Quarantined points (those that broke
// the device's profile) are left out, as they are of latest values and
// rules; ok is false when no point is left.
func TelemetryEvent(m tether.Message) (ev Event, ok bool) {
	pts := make([]livePoint, 0, len(m.Points))
	for _, p := range m.Points {
		if p.Quarantine == "" {
			pts = append(pts, livePoint{Key: p.Key, TS: p.Time.UTC(), Value: p.Value()})
		}
	}
	if len(pts) == 0 {
		return Event{}, false
	}
	data, err := json.Marshal(livePoints{pts})
	if err != nil {
		// Only a NaN or an infinity would fail, and the decoder
		// accepts neither.
		return Event{}, false
	}
	return Event{Kind: KindTelemetry, TenantID: m.TenantID, DeviceID: m.DeviceID, Time: m.ReceivedAt.UTC(), Data: data}, true
}
