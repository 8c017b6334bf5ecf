package tether

import (
	"regexp"
	"time"
)

// DefaultTenantID is the tenant created on first start. Every record carries
// a tenant so that multi-tenant deployments need no migration of data.
const DefaultTenantID = "default"

// Tenant is an isolated customer of a Tether deployment.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Device is a registered thing that may connect and send telemetry.
// Its ID is unique across tenants, because protocols with a single
// credential field (MQTT username, HTTP bearer token) name the device
// without its tenant.
type Device struct {
	TenantID string            `json:"tenant_id"`
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels"`
	Metadata map[string]any    `json:"metadata"`
	// ProfileID names the device's profile; empty means none.
	ProfileID  string     `json:"profile,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	LastSeenAt *time.Time `json:"last_seen_at"`

	// TokenHash is the SHA-256 of the device token's secret part. It never
	// leaves the server.
	TokenHash []byte `json:"-"`
	// PSKNonce selects the device's DTLS pre-shared key, which is derived
	// from it and a node secret; 0 means the device has no key.
	PSKNonce int64 `json:"-"`
}

// DeviceUpdate names the fields of a device to change; nil means keep.
type DeviceUpdate struct {
	Name     *string
	Labels   map[string]string
	Metadata map[string]any
	// Profile sets the profile; a pointer to "" removes it.
	Profile *string
}

// DeviceFilter selects devices of one tenant for listing.
type DeviceFilter struct {
	TenantID string
	// Labels must all match exactly (a label selector of equalities).
	Labels map[string]string
	// Profile, if set, selects the devices of one profile.
	Profile string
	// Status, if set, selects by presence: online, stale or offline.
	Status string
	// Query, if set, selects the devices whose ID starts with it or whose
	// name contains it, both ignoring the case of ASCII letters: the
	// dashboard's search box.
	Query string
	// After is the cursor: list devices with an ID greater than it.
	After string
	// Limit is the page size; the store caps it.
	Limit int
}

// APIKey is a credential for programs calling the REST API.
type APIKey struct {
	TenantID   string     `json:"tenant_id"`
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`

	// Hash is the SHA-256 of the key's secret part.
	Hash []byte `json:"-"`
}

// ValidateDeviceFields checks a device's name and labels: a name of at
// most 256 bytes, at most 64 labels, each key a valid ID and each value at
// most 256 bytes.
func ValidateDeviceFields(name string, labels map[string]string) error {
	if len(name) > 256 {
		return Errorf(EINVALID, "name is %d bytes; at most 256", len(name))
	}
	if len(labels) > 64 {
		return Errorf(EINVALID, "%d labels; at most 64", len(labels))
	}
	for k, v := range labels {
		if !ValidID(k) {
			return Errorf(EINVALID, "label key %q must be 1 to 64 letters, digits, '-' or '_'", truncateID(k))
		}
		if len(v) > 256 {
			return Errorf(EINVALID, "label %q is %d bytes; at most 256", k, len(v))
		}
	}
	return nil
}

// truncateID shortens what claimed to be an ID for an error message.
func truncateID(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether s may be a device, tenant or key ID: 1 to 64
// letters, digits, '-' or '_'. The set excludes '.', '/', '*', '>', '+' and
// '#', so an ID is always one token of a NATS subject and one level of an
// MQTT topic.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Certificate is an X.509 client certificate registered for a device,
// named by its fingerprint (the lowercase hex SHA-256 of its DER). A device
// that presents it in a TLS handshake is that device, without a token.
type Certificate struct {
	Fingerprint string    `json:"fingerprint"`
	TenantID    string    `json:"tenant_id"`
	DeviceID    string    `json:"device_id"`
	Subject     string    `json:"subject"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	CreatedAt   time.Time `json:"created_at"`
}

// CA is a certificate authority a tenant trusts for device certificates:
// a client certificate it signed (directly or through intermediates the
// device sends) whose common name or SAN URI urn:tether:device:<id> names
// a device of the tenant authenticates as that device.
type CA struct {
	ID        string    `json:"id"` // the CA certificate's fingerprint
	TenantID  string    `json:"tenant_id"`
	Subject   string    `json:"subject"`
	NotAfter  time.Time `json:"not_after"`
	PEM       string    `json:"pem"`
	CreatedAt time.Time `json:"created_at"`
}

// FleetCounts counts a tenant's devices by presence status (a device that
// never connected is offline) and its alerts that are not cleared, by
// status: the fleet overview.
type FleetCounts struct {
	Devices, Online, Stale, Offline  int64
	ActiveAlerts, AcknowledgedAlerts int64
}
