package httpapi

import (
	"context"
	"io"
	"time"

	"github.com/tether-iot/tether"
)

// Services are the device-state services behind the API. Each is
// optional: the routes of one that is nil answer 503 (code unavailable),
// so a node, or a test, can run with only some of them.
type Services struct {
	Profiles   Profiles
	Shadows    Shadows
	Commands   Commands
	Presence   Presence
	Quarantine Quarantine
	Provision  Provision
	Rules      Rules
	Alerts     Alerts
	RuleEngine RuleEngine
	Fleet      Fleet
	// Users signs people in (with a session cookie) and manages users;
	// APIKeys manages the keys of programs. Both in auth.go.
	Users   Users
	APIKeys APIKeys
}

// Profiles is what the API needs of the profile service.
type Profiles interface {
	Create(ctx context.Context, tenant string, p tether.Profile) (*tether.Profile, error)
	Put(ctx context.Context, tenant string, p tether.Profile) (*tether.Profile, error)
	Get(ctx context.Context, tenant, id string) (*tether.Profile, error)
	List(ctx context.Context, tenant string) ([]*tether.Profile, error)
	Delete(ctx context.Context, tenant, id string) error
}

// Shadows is what the API needs of the shadow service. Name "" is a
// device's classic shadow.
type Shadows interface {
	Get(ctx context.Context, tenant, deviceID, name string) (*tether.Shadow, error)
	// Update refuses a stale non-zero version with ECONFLICT.
	Update(ctx context.Context, tenant, deviceID, name string, u tether.ShadowUpdate) (*tether.Shadow, error)
	Names(ctx context.Context, tenant, deviceID string) ([]string, error)
	Delete(ctx context.Context, tenant, deviceID, name string) error
}

// Commands is what the API needs of the command service.
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

	// Pending lists the device's commands not yet done, in order.
	Pending(ctx context.Context, tenant, deviceID string) ([]*tether.Command, error)
	Delivered(ctx context.Context, tenant, deviceID, id string) error
	Reply(ctx context.Context, tenant, deviceID, id string, r tether.CommandReply) (*tether.Command, error)
}

// Presence is what the API needs of the presence service.
type Presence interface {
	// Seen records a device's request; it must not block.
	Seen(d *tether.Device, transport string)
	Get(ctx context.Context, tenant, deviceID string) (*tether.Presence, error)
}

// Quarantine reads a device's quarantined telemetry points.
type Quarantine interface {
	// Quarantined returns up to limit points received from from to to.
	Quarantined(ctx context.Context, tenant, deviceID string, from, to time.Time, limit int) ([]tether.QuarantinedPoint, error)
	// QuarantineCount is the number of the device's quarantined points.
	QuarantineCount(ctx context.Context, tenant, deviceID string) (int64, error)
}

// ImportedDevice is a device a bulk import created, with its token; its
// fields are those of the provisioning service's result, in order.
type ImportedDevice struct {
	Row   int    `json:"row"`
	ID    string `json:"id"`
	Token string `json:"token"`
}

// RegisterRequest is what a device asks for when it registers itself
// with a provisioning key; its fields are those of the provisioning
// service's request.
type RegisterRequest struct {
	DeviceID, Name string
	Labels         map[string]string
}

// RowErrors is implemented by an import error that names bad rows. The
// API answers it with 422 and the rows.
type RowErrors interface {
	error
	RowErrors() []tether.RowError
}

// Provision is what the API needs of the provisioning service: bulk
// import, provisioning keys and self-registration.
type Provision interface {
	// ParseCSV and ParseJSON read the rows of an import; a bad row is an
	// error implementing [RowErrors].
	ParseCSV(r io.Reader) ([]tether.DeviceImport, error)
	ParseJSON(r io.Reader) ([]tether.DeviceImport, error)
	// Import creates every row or none; bad rows are an error implementing
	// [RowErrors].
	Import(ctx context.Context, tenant string, rows []tether.DeviceImport) ([]ImportedDevice, error)

	CreateKey(ctx context.Context, tenant, profileID string, maxUses int, expiresAt *time.Time) (*tether.ProvisioningKey, string, error)
	Keys(ctx context.Context, tenant string) ([]*tether.ProvisioningKey, error)
	RevokeKey(ctx context.Context, tenant, id string) error
	RotateKey(ctx context.Context, tenant, id string) (*tether.ProvisioningKey, string, error)
	// Register creates a device with the key's profile and returns it with
	// its token; any bad key is EUNAUTHORIZED.
	Register(ctx context.Context, key string, r RegisterRequest) (*tether.Device, string, error)
}
