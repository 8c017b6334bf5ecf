package tether

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("30s", "1h").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string (or a number of seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if json.Unmarshal(b, &secs) != nil {
			return fmt.Errorf("duration: want a string such as \"30s\" or a number of seconds")
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a string such as \"30s\" or \"1h\"", s)
	}
	*d = Duration(v)
	return nil
}

// Profile is a device type: what its telemetry looks like, how often it
// reports, and which commands it takes. A device without a profile gets
// permissive defaults: any telemetry, any command, never stale.
type Profile struct {
	TenantID string `json:"tenant_id"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	// Telemetry is the schema of each key. Keys not in it are accepted as
	// they are.
	Telemetry map[string]KeySchema `json:"telemetry,omitempty"`
	// ReportInterval is how often a device is expected to send; a
	// connected device silent for longer is stale. 0 means never stale.
	ReportInterval Duration `json:"report_interval,omitempty"`
	// Commands are the commands its devices take. With none, any command
	// is allowed (with the node's per-device rate limit); with some, only
	// those.
	Commands  map[string]CommandDef `json:"commands,omitempty"`
	CreatedAt time.Time             `json:"created_at"`
	UpdatedAt time.Time             `json:"updated_at"`
}

// KeySchema is what one telemetry key of a profile must be. A point that
// breaks it is quarantined.
type KeySchema struct {
	// Type is "number", "bool" or "string"; empty accepts any.
	Type string   `json:"type,omitempty"`
	Unit string   `json:"unit,omitempty"`
	Min  *float64 `json:"min,omitempty"`
	Max  *float64 `json:"max,omitempty"`
	// MaxRate is the largest change per second from the key's previous
	// accepted point; a bigger jump is impossible and quarantined.
	MaxRate *float64 `json:"max_rate,omitempty"`
}

// CommandDef is a command a profile's devices take.
type CommandDef struct {
	// Params is a JSON Schema (draft 2020-12) the parameters must meet.
	Params json.RawMessage `json:"params,omitempty"`
	// Roles may send it; empty means admin only.
	Roles []string `json:"roles,omitempty"`
	// RateLimit caps how often it may be sent to one device.
	RateLimit *Rate `json:"rate_limit,omitempty"`
	// Confirm makes each command wait for a second API call approving it.
	Confirm bool `json:"confirm,omitempty"`
}

// Rate is Count events per Per.
type Rate struct {
	Count int      `json:"count"`
	Per   Duration `json:"per"`
}

// Quarantine reasons of a telemetry point that broke its profile.
const (
	QuarantineType     = "wrong_type"
	QuarantineBelowMin = "below_min"
	QuarantineAboveMax = "above_max"
	QuarantineJump     = "impossible_jump"
)

// QuarantinedPoint is a stored point that broke its device's profile. It
// is kept apart from the series: aggregates, latest values and rules do
// not see it.
type QuarantinedPoint struct {
	Key        string    `json:"key"`
	Time       time.Time `json:"ts"`
	Value      any       `json:"value"`
	Reason     string    `json:"reason"`
	MessageID  string    `json:"message_id"`
	ReceivedAt time.Time `json:"received_at"`
}

// Shadow is the digital twin of a device (or, named, of one of its
// components): what the device last reported, what apps want it to be,
// and the difference.
type Shadow struct {
	TenantID string `json:"tenant_id"`
	DeviceID string `json:"device_id"`
	// Name is empty for the device's classic shadow.
	Name     string         `json:"name"`
	State    ShadowState    `json:"state"`
	Metadata ShadowMetadata `json:"metadata"`
	// Version counts the updates; 0 means the shadow was never written.
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ShadowState is a shadow's documents. Delta holds the desired fields
// whose value differs from (or is missing in) reported.
type ShadowState struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
	Delta    map[string]any `json:"delta,omitempty"`
}

// ShadowMetadata mirrors the shape of Desired and Reported with the time
// each leaf was last written (RFC 3339 strings at the leaves).
type ShadowMetadata struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

// ShadowUpdate changes a shadow. Desired and Reported are JSON merge
// patches (RFC 7386): a null deletes a field. A non-zero Version must be
// the shadow's current version, or the update is refused (ECONFLICT).
type ShadowUpdate struct {
	State struct {
		Desired  map[string]any `json:"desired,omitempty"`
		Reported map[string]any `json:"reported,omitempty"`
	} `json:"state"`
	Version     int64  `json:"version,omitempty"`
	ClientToken string `json:"client_token,omitempty"`
}

// Command statuses. A command moves forward only: queued → sent →
// delivered → succeeded or failed; expired when its TTL passes before it
// was delivered; rejected by a guardrail; awaiting_confirmation before
// queued when its definition asks for a second approval.
const (
	CommandAwaitingConfirmation = "awaiting_confirmation"
	CommandQueued               = "queued"
	CommandSent                 = "sent"
	CommandDelivered            = "delivered"
	CommandSucceeded            = "succeeded"
	CommandFailed               = "failed"
	CommandExpired              = "expired"
	CommandRejected             = "rejected"
)

// CommandDone reports whether a status is final.
func CommandDone(status string) bool {
	switch status {
	case CommandSucceeded, CommandFailed, CommandExpired, CommandRejected:
		return true
	}
	return false
}

// Command is a request to a device to do something, kept until it is
// done (or expired) so that an offline device receives it when it returns.
type Command struct {
	TenantID string          `json:"tenant_id"`
	DeviceID string          `json:"device_id"`
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Params   json.RawMessage `json:"params,omitempty"`
	// OneWay commands expect no reply: delivered is success.
	OneWay bool `json:"one_way"`
	// Seq orders a device's commands: they are delivered in Seq order.
	Seq            int64  `json:"seq"`
	Status         string `json:"status"`
	Reason         string `json:"reason,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Source is who sent it: "api:<key id>", "rule:<rule id>", ...
	Source string `json:"source"`
	// ConfirmedBy is who approved a command that needed confirmation.
	ConfirmedBy string `json:"confirmed_by,omitempty"`
	// Result is the device's reply.
	Result json.RawMessage `json:"result,omitempty"`
	// Timeout is how long a device has to reply once the command is sent.
	Timeout Duration `json:"timeout"`
	// ExpiresAt ends a command not yet delivered.
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// History is every transition, oldest first.
	History []CommandTransition `json:"history"`
}

// CommandTransition is one status change of a command.
type CommandTransition struct {
	Status string    `json:"status"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// CommandRequest is a command to send, as the command service takes it
// from the APIs and from rules.
type CommandRequest struct {
	Name   string
	Params json.RawMessage
	// OneWay commands expect no reply: delivered is success.
	OneWay bool
	// Timeout and TTL of 0 take the service's defaults.
	Timeout, TTL time.Duration
	// IdempotencyKey makes a repeated request (with the same key, to the
	// same device) return the first command instead of sending again.
	IdempotencyKey string
	// Source is who sends it: "api:<key id>", "user:<id>", "rule:<id>".
	Source string
	// Role is the sender's role, checked against the command's roles.
	Role string
}

// CommandFilter selects commands of a device to list.
type CommandFilter struct {
	// Status, if set, selects one status.
	Status string
	// After is the cursor: only commands with a greater Seq.
	After int64
	// Limit is the page size; the store caps it.
	Limit int
}

// CommandReply is what a device answers to a command.
type CommandReply struct {
	// Status is succeeded (the default) or failed.
	Status string          `json:"status,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Presence statuses.
const (
	PresenceOnline  = "online"
	PresenceStale   = "stale"
	PresenceOffline = "offline"
)

// Presence reasons.
const (
	ReasonConnected        = "connected"
	ReasonActivity         = "activity" // a CoAP or HTTP request
	ReasonSilent           = "silent"   // stale: no message within the profile's interval
	ReasonCleanDisconnect  = "clean_disconnect"
	ReasonKeepAliveTimeout = "keepalive_timeout"
	ReasonWill             = "will" // the connection was lost and its will published
	ReasonConnectionLost   = "connection_lost"
	ReasonTakeover         = "takeover"
	ReasonServerShutdown   = "server_shutdown"
	ReasonNeverConnected   = "never_connected"
)

// Presence is whether a device is alive, why, and since when. Seq orders
// a device's presence events: an event with a lower Seq than the stored
// one is late and never overrides it.
type Presence struct {
	TenantID  string    `json:"tenant_id"`
	DeviceID  string    `json:"device_id"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason"`
	Since     time.Time `json:"since"`
	Seq       int64     `json:"seq"`
	Transport string    `json:"transport,omitempty"` // mqtt, coap, http
}

// ProvisioningKey lets devices of one profile register themselves. Only
// its hash is stored.
type ProvisioningKey struct {
	TenantID  string     `json:"tenant_id"`
	ID        string     `json:"id"`
	ProfileID string     `json:"profile"`
	MaxUses   int        `json:"max_uses,omitempty"` // 0: unlimited
	Uses      int        `json:"uses"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`

	Hash []byte `json:"-"`
}

// DeviceImport is one row of a bulk import.
type DeviceImport struct {
	ID      string            `json:"id"`
	Name    string            `json:"name,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Profile string            `json:"profile,omitempty"`
	// Fingerprint, if set, registers a client certificate by its SHA-256
	// fingerprint (lowercase hex).
	Fingerprint string `json:"certificate_fingerprint,omitempty"`
}

// RowError names a bad row of a bulk import (rows count from 1, the
// header of a CSV file not included).
type RowError struct {
	Row   int    `json:"row"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error"`
}

// Event kinds on the bus (tether.<tenant>.events.<kind>.<device>).
const (
	EventPresence = "presence"
	EventShadow   = "shadow"
	EventCommand  = "command"
)
