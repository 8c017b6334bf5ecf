// Package stream fans the node's live events (telemetry, presence,
// shadow, command and alert) out to API clients: WebSocket and
// Server-Sent Events subscribers filtered by device, label selector or
// profile. Every subscriber has a bounded queue; one that falls behind
// loses events and is told so, and never slows ingest.
package stream

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Event kinds a subscriber may ask for.
const (
	KindTelemetry = "telemetry"
	KindPresence  = "presence"
	KindShadow    = "shadow"
	KindCommand   = "command"
	KindAlert     = "alert"
)

// Kinds are the event kinds, in the order the API documents them.
var Kinds = []string{KindTelemetry, KindPresence, KindShadow, KindCommand, KindAlert}

// ErrClosed is returned by [Subscription.Next] once the subscription or
// its hub is closed.
var ErrClosed = errors.New("stream: subscription closed")

// Event is one live event of a tenant's device.
type Event struct {
	Kind     string    `json:"kind"`
	TenantID string    `json:"-"`
	DeviceID string    `json:"device"`
	Time     time.Time `json:"time"`
	// Data is the event's body: for telemetry {"points":[{"key","ts","value"}]},
	// for the other kinds the JSON the bus carries for them.
	Data json.RawMessage `json:"data"`
}

// Filter selects events. Zero fields select everything.
type Filter struct {
	Kinds   []string
	Devices []string
	// Labels must all match the device's labels.
	Labels  map[string]string
	Profile string
}

// Subscription is one subscriber's bounded queue of events.
type Subscription interface {
	// Next waits for the next event. dropped is how many events were
	// dropped for this subscriber since the previous call because it was
	// lagging; they were due before ev.
	Next(ctx context.Context) (ev Event, dropped uint64, err error)
	Close()
}
