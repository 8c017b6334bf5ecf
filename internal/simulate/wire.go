package simulate

import (
	"encoding/json"
	"errors"
	"fmt"
)

// command is a command as a device receives it, over MQTT
// (devices/<id>/commands/<command id>) or CoAP (a notification of
// /commands).
type command struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params"`
	OneWay bool            `json:"one_way"`
}

// decodeCommand reads a command; it needs an ID and a name.
func decodeCommand(b []byte) (command, error) {
	var c command
	if err := json.Unmarshal(b, &c); err != nil {
		return command{}, fmt.Errorf("command: %w", err)
	}
	if c.ID == "" || c.Name == "" {
		return command{}, errors.New("command: no id or no name")
	}
	return c, nil
}

// decodeDelta reads an MQTT shadow delta, {"state":{…},"version":n}, and
// returns its state.
func decodeDelta(b []byte) (map[string]any, error) {
	var d struct {
		State map[string]any `json:"state"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("shadow delta: %w", err)
	}
	return d.State, nil
}

// decodeShadowDesired reads a whole shadow (an MQTT get/accepted answer,
// a CoAP /shadow notification) and returns its desired state. The device
// applies what differs from its own state, rather than the shadow's
// delta: the delta is against what it reported last, which after a
// restart may not be what it is now.
func decodeShadowDesired(b []byte) (map[string]any, error) {
	desired, _, err := decodeShadow(b)
	return desired, err
}

// decodeShadow reads a whole shadow and returns its desired and reported
// states; reported is never nil (a shadow with no reported state yet has
// an empty one), so that the device can tell that it must report.
func decodeShadow(b []byte) (desired, reported map[string]any, err error) {
	var sh struct {
		State struct {
			Desired  map[string]any `json:"desired"`
			Reported map[string]any `json:"reported"`
		} `json:"state"`
	}
	if err := json.Unmarshal(b, &sh); err != nil {
		return nil, nil, fmt.Errorf("shadow: %w", err)
	}
	if sh.State.Reported == nil {
		sh.State.Reported = map[string]any{}
	}
	return sh.State.Desired, sh.State.Reported, nil
}
