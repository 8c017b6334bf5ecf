package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// Input kinds, as lang.Source.Kind names them.
const (
	KindTelemetry = "telemetry"
	KindPresence  = "presence"
	KindShadow    = "shadow"
	KindCommand   = "command"
	KindAlert     = "alert"
	KindMQTT      = "mqtt"
)

// Input is one thing a rule may see: the values of one device at one time
// (telemetry), a device event (presence, shadow, command, alert) or an
// MQTT publish. Values, Event and Payload are read, never changed, so one
// Input may be shared by every rule.
type Input struct {
	Kind     string
	TenantID string
	// Device is the input's device; nil for an MQTT publish of no device.
	Device *tether.Device
	// Time is the input's event time: the points' time, the event's time.
	Time time.Time
	// Values are a telemetry input's values by key (a float64, a bool or a
	// string each).
	Values map[string]any
	// Topic and Payload are an MQTT publish's.
	Topic   string
	Payload []byte
	// Event is a device event's JSON as a map.
	Event     map[string]any
	MessageID string
}

// deviceID returns the input's device ID, or "".
func (in *Input) deviceID() string {
	if in.Device == nil {
		return ""
	}
	return in.Device.ID
}

// InputsFromMessage returns the inputs of one telemetry message of device
// d (which may be nil: the device is then known only by the message's
// device ID): one input per distinct point time, in time order, each with
// the values of that time. Quarantined points are left out, so rules never
// see a value that broke its device's profile; a message of only
// quarantined points gives no input.
func InputsFromMessage(m tether.Message, d *tether.Device) []Input {
	if d == nil {
		d = &tether.Device{TenantID: m.TenantID, ID: m.DeviceID}
	}
	var ins []Input
	for _, p := range m.Points {
		if p.Quarantine != "" {
			continue
		}
		i := slices.IndexFunc(ins, func(in Input) bool { return in.Time.Equal(p.Time) })
		if i < 0 {
			ins = append(ins, Input{Kind: KindTelemetry, TenantID: m.TenantID, Device: d, Time: p.Time,
				Values: make(map[string]any, len(m.Points)), MessageID: m.ID})
			i = len(ins) - 1
		}
		ins[i].Values[p.Key] = p.Value()
	}
	slices.SortStableFunc(ins, func(a, b Input) int { return a.Time.Compare(b.Time) })
	return ins
}

// InputFromEvent returns the input of a device event as the bus carries it
// (kind presence, shadow, command or alert; data the JSON of the
// tether.Presence, Shadow, Command or Alert after the change) at time t.
func InputFromEvent(tenant, kind string, d *tether.Device, t time.Time, data []byte) (Input, error) {
	var ev map[string]any
	if err := json.Unmarshal(data, &ev); err != nil {
		return Input{}, fmt.Errorf("%s event: %w", kind, err)
	}
	return Input{Kind: kind, TenantID: tenant, Device: d, Time: t, Event: ev}, nil
}

// deviceEnv returns the `device` variable of an expression environment.
func deviceEnv(d *tether.Device) map[string]any {
	if d == nil {
		return nil
	}
	// map[string]any rather than the device's map[string]string: expr
	// reads the former without reflection.
	labels := make(map[string]any, len(d.Labels))
	for k, v := range d.Labels {
		labels[k] = v
	}
	return map[string]any{"id": d.ID, "name": d.Name, "profile": d.ProfileID, "labels": labels}
}

// reserved are the names of a telemetry environment that a value key of
// the same name does not hide; the value stays reachable through values.
var reserved = map[string]bool{"device": true, "ts": true, "values": true, "message_id": true}

// env builds the expression environment of an input, as the rule language
// documents it. dev is the input's `device` variable (cached by the
// caller per device).
func env(in *Input, dev map[string]any) map[string]any {
	switch in.Kind {
	case KindTelemetry:
		e := make(map[string]any, len(in.Values)+4)
		e["device"], e["ts"], e["values"], e["message_id"] = dev, in.Time, in.Values, in.MessageID
		var dotted []string
		for k, v := range in.Values {
			if strings.Contains(k, ".") {
				dotted = append(dotted, k)
			} else if !reserved[k] {
				e[k] = v
			}
		}
		if len(dotted) > 0 {
			nest(e, in.Values, dotted)
		}
		return e
	case KindMQTT:
		var payload any = string(in.Payload)
		var v any
		if json.Unmarshal(in.Payload, &v) == nil {
			payload = v
		}
		return map[string]any{"topic": in.Topic, "payload": payload, "ts": in.Time, "device": dev}
	default:
		return map[string]any{"device": dev, "event": in.Event, "ts": in.Time}
	}
}

// nest sets the dotted keys as nested maps (fan.rpm → fan: {rpm: …}).
// Conflicts resolve the same way whatever the map order: a plain value
// wins over a nested one of the same name (fan and fan.rpm: fan is the
// value, fan.rpm is only in values), and a shorter key over a longer.
func nest(e map[string]any, values map[string]any, dotted []string) {
	slices.SortFunc(dotted, func(a, b string) int {
		if c := strings.Count(a, ".") - strings.Count(b, "."); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for _, k := range dotted {
		parts := strings.Split(k, ".")
		if reserved[parts[0]] {
			continue
		}
		m := e
		ok := true
		for _, p := range parts[:len(parts)-1] {
			next, exists := m[p]
			if !exists {
				nm := map[string]any{}
				m[p] = nm
				m = nm
				continue
			}
			nm, isMap := next.(map[string]any)
			if !isMap {
				ok = false
				break
			}
			m = nm
		}
		if !ok {
			continue
		}
		last := parts[len(parts)-1]
		if _, exists := m[last]; !exists {
			m[last] = values[k]
		}
	}
}

// topicMatches reports whether an MQTT topic matches a filter with + and #
// wildcards.
func topicMatches(filter, topic string) bool {
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a".
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
