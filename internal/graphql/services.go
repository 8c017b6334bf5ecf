package graphql

import (
	"context"
	"encoding/json"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
)

// Devices is what the resolvers need of the device registry.
type Devices interface {
	Device(ctx context.Context, tenant, id string) (*tether.Device, error)
	Devices(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error)
	CreateDevice(ctx context.Context, tenant string, d tether.Device) (*tether.Device, string, error)
	UpdateDevice(ctx context.Context, tenant, id string, u tether.DeviceUpdate) (*tether.Device, error)
	DeleteDevice(ctx context.Context, tenant, id string) error
	RotateToken(ctx context.Context, tenant, id string) (string, error)
}

// Telemetry reads stored telemetry.
type Telemetry interface {
	Telemetry(ctx context.Context, q tether.TelemetryQuery) ([]tether.Series, error)
	Latest(ctx context.Context, tenantID, deviceID string) ([]tether.Latest, error)
}

// Shadows is what the resolvers need of the shadow service. Name "" is
// a device's classic shadow.
type Shadows interface {
	Get(ctx context.Context, tenant, deviceID, name string) (*tether.Shadow, error)
	// Update refuses a stale non-zero version with ECONFLICT.
	Update(ctx context.Context, tenant, deviceID, name string, u tether.ShadowUpdate) (*tether.Shadow, error)
	Names(ctx context.Context, tenant, deviceID string) ([]string, error)
}

// Presence reads whether a device is alive.
type Presence interface {
	Get(ctx context.Context, tenant, deviceID string) (*tether.Presence, error)
}

// AlertFilter selects alerts to list; it is the alert service's filter
// (an alias of the same type literal, so that the service fits [Alerts]
// as it is). Status is an alert status, "open" (any but cleared) or ""
// (any); After is the ID of the last alert of the previous page.
type AlertFilter = struct {
	Status, DeviceID, RuleID string
	After                    string
	Limit                    int
}

// Alerts is what the resolvers need of the alert service.
type Alerts interface {
	Get(ctx context.Context, tenant, id string) (*tether.Alert, error)
	List(ctx context.Context, tenant string, f AlertFilter) ([]*tether.Alert, error)
	Acknowledge(ctx context.Context, tenant, id, by string) (*tether.Alert, error)
	Clear(ctx context.Context, tenant, id, by string) (*tether.Alert, error)
}

// CommandRequest is a command to send. Its fields are those of the
// command service's request, in the same order, so that one converts to
// the other.
type CommandRequest struct {
	Name   string
	Params json.RawMessage
	OneWay bool
	// Timeout and TTL of 0 take the service's defaults.
	Timeout, TTL   time.Duration
	IdempotencyKey string
	// Source is who sends it: "api:<key id>" or "user:<id>".
	Source string
	// Role is the sender's role, checked against the command's roles.
	Role string
}

// CommandFilter selects a device's commands; its fields are those of the
// command service's filter.
type CommandFilter struct {
	Status string
	// After is a sequence number: only commands with a greater one.
	After int64
	Limit int
}

// Commands is what the resolvers need of the command service.
type Commands interface {
	// Send returns created false with the first command for a repeated
	// idempotency key. A guardrail's refusal returns the command, stored
	// as rejected, with the error.
	Send(ctx context.Context, tenant, deviceID string, r CommandRequest) (cmd *tether.Command, created bool, err error)
	Confirm(ctx context.Context, tenant, deviceID, id, by string) (*tether.Command, error)
	Get(ctx context.Context, tenant, deviceID, id string) (*tether.Command, error)
	List(ctx context.Context, tenant, deviceID string, f CommandFilter) ([]*tether.Command, error)
	// Wait returns once the command is done, or with its current state
	// (and no error) once ctx ends.
	Wait(ctx context.Context, tenant, deviceID, id string) (*tether.Command, error)
}

// Rules is what the resolvers need of the rules service.
type Rules interface {
	Get(ctx context.Context, tenant, id string) (*tether.Rule, error)
	List(ctx context.Context, tenant string) ([]*tether.Rule, error)
	SetEnabled(ctx context.Context, tenant, id string, on bool) (*tether.Rule, error)
}

// Profiles reads device profiles.
type Profiles interface {
	Get(ctx context.Context, tenant, id string) (*tether.Profile, error)
	List(ctx context.Context, tenant string) ([]*tether.Profile, error)
}

// Subscriber hands out live events of a tenant: the node's stream hub.
type Subscriber interface {
	Subscribe(ctx context.Context, tenant string, f stream.Filter) (stream.Subscription, error)
}
