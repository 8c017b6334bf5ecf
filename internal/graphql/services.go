package graphql

import (
	"context"

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

// Alerts is what the resolvers need of the alert service.
type Alerts interface {
	Get(ctx context.Context, tenant, id string) (*tether.Alert, error)
	List(ctx context.Context, tenant string, f tether.AlertFilter) ([]*tether.Alert, error)
	Acknowledge(ctx context.Context, tenant, id, by string) (*tether.Alert, error)
	Clear(ctx context.Context, tenant, id, by string) (*tether.Alert, error)
}

// Commands is what the resolvers need of the command service.
type Commands interface {
	// Send returns created false with the first command for a repeated
	// idempotency key. A guardrail's refusal returns the command, stored
	// as rejected, with the error.
	Send(ctx context.Context, tenant, deviceID string, r tether.CommandRequest) (cmd *tether.Command, created bool, err error)
	Confirm(ctx context.Context, tenant, deviceID, id, by string) (*tether.Command, error)
	Get(ctx context.Context, tenant, deviceID, id string) (*tether.Command, error)
	List(ctx context.Context, tenant, deviceID string, f tether.CommandFilter) ([]*tether.Command, error)
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
