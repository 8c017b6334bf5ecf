// Package registry manages who may talk to Tether: tenants, devices and
// their tokens, and API keys. It creates credentials, stores only their
// hashes, authenticates devices and API clients, and announces deletions
// and rotations on the bus so every gateway can cut the device's
// connections.
//
// Credentials are "<id>.<secret>" with a 256-bit random secret, so the
// credential alone names its owner (a protocol with one credential field,
// such as an HTTP bearer token, needs nothing else), and a plain SHA-256
// is the right hash: the secret is too long to guess, and a slow password
// hash would make every device connect cost tens of milliseconds.
package registry

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/secret"
)

// Store is the registry's storage.
type Store interface {
	EnsureTenant(ctx context.Context, t tether.Tenant) (bool, error)
	CreateDevice(ctx context.Context, d *tether.Device) error
	Device(ctx context.Context, tenantID, id string) (*tether.Device, error)
	DeviceByID(ctx context.Context, id string) (*tether.Device, error)
	Devices(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error)
	UpdateDevice(ctx context.Context, tenantID, id string, u tether.DeviceUpdate, now time.Time) (*tether.Device, error)
	SetDeviceToken(ctx context.Context, tenantID, id string, hash []byte, now time.Time) error
	DeleteDevice(ctx context.Context, tenantID, id string) error
	CreateAPIKey(ctx context.Context, k *tether.APIKey) error
	APIKey(ctx context.Context, id string) (*tether.APIKey, error)
	CountAPIKeys(ctx context.Context, tenantID, role string) (int, error)
	APIKeys(ctx context.Context, tenantID string) ([]*tether.APIKey, error)
	DeleteAPIKey(ctx context.Context, tenantID, id string) error
}

// Notifier tells the gateways of every node about a device's lifecycle.
type Notifier interface {
	PublishLifecycle(tenant, device, event string) error
}

// Lifecycle events.
const (
	EventDeleted      = "deleted"
	EventTokenRotated = "token_rotated"
)

// bootstrapKeyID is the ID under which a key supplied by
// TETHER_BOOTSTRAP_ADMIN_KEY is stored: such a key is any string the
// operator chose, so it may not carry an ID of its own.
const bootstrapKeyID = "bootstrap"

// Service is the registry.
type Service struct {
	store     Store
	creds     CredentialStore
	notify    Notifier
	pskSecret []byte
	log       *slog.Logger
	now       func() time.Time
}

// Options are what a registry needs beyond its store and notifier.
type Options struct {
	// PSKSecret is the node secret DTLS pre-shared keys are derived from;
	// without it no device can have one. Every node of a cluster needs the
	// same secret.
	PSKSecret []byte
	Logger    *slog.Logger
}

// New returns a registry over store that announces lifecycle events to n.
func New(store interface {
	Store
	CredentialStore
}, n Notifier, o Options) *Service {
	return &Service{store: store, creds: store, notify: n, pskSecret: o.PSKSecret, log: o.Logger, now: func() time.Time { return time.Now().UTC() }}
}

// Bootstrap makes sure the default tenant and an admin API key exist. When
// it creates the key it returns it in plain text, once; the caller prints
// it. A non-empty supplied key becomes that admin key instead (for
// automated deployments) and is not returned.
func (s *Service) Bootstrap(ctx context.Context, supplied string) (newKey string, err error) {
	created, err := s.store.EnsureTenant(ctx, tether.Tenant{ID: tether.DefaultTenantID, Name: "Default", CreatedAt: s.now()})
	if err != nil {
		return "", fmt.Errorf("bootstrap tenant: %w", err)
	}
	if created {
		s.log.Info("created default tenant", "tenant", tether.DefaultTenantID)
	}
	n, err := s.store.CountAPIKeys(ctx, tether.DefaultTenantID, tether.RoleAdmin)
	if err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	key := &tether.APIKey{TenantID: tether.DefaultTenantID, Name: "bootstrap admin", Role: tether.RoleAdmin, CreatedAt: s.now()}
	if supplied != "" {
		if len(supplied) < 32 {
			return "", tether.Errorf(tether.EINVALID, "TETHER_BOOTSTRAP_ADMIN_KEY must be at least 32 characters")
		}
		key.ID, key.Hash = bootstrapKeyID, secret.Hash(supplied)
	} else {
		key.ID = "ak_" + secret.ID()
		newKey = secret.Token(key.ID)
		key.Hash = secret.Hash(newKey)
	}
	if err := s.store.CreateAPIKey(ctx, key); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	return newKey, nil
}

// CreateDevice registers d in tenant and returns it with its token, which
// is shown this once and stored only as a hash. An empty d.ID gets a
// generated one.
func (s *Service) CreateDevice(ctx context.Context, tenant string, d tether.Device) (*tether.Device, string, error) {
	if d.ID == "" {
		d.ID = "d_" + secret.ID()
	}
	if !tether.ValidID(d.ID) {
		return nil, "", tether.Errorf(tether.EINVALID, "device id %q must be 1 to 64 letters, digits, '-' or '_'", truncate(d.ID))
	}
	if err := tether.ValidateDeviceFields(d.Name, d.Labels); err != nil {
		return nil, "", err
	}
	if err := validateProfileID(d.ProfileID); err != nil {
		return nil, "", err
	}
	now := s.now()
	token := secret.Token(d.ID)
	d.TenantID, d.CreatedAt, d.UpdatedAt, d.LastSeenAt = tenant, now, now, nil
	d.TokenHash = secret.Hash(token)
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	if d.Metadata == nil {
		d.Metadata = map[string]any{}
	}
	if err := s.store.CreateDevice(ctx, &d); err != nil {
		return nil, "", err
	}
	return &d, token, nil
}

// Device returns a device of tenant.
func (s *Service) Device(ctx context.Context, tenant, id string) (*tether.Device, error) {
	return s.store.Device(ctx, tenant, id)
}

// Devices lists devices of a tenant.
func (s *Service) Devices(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error) {
	return s.store.Devices(ctx, f)
}

// UpdateDevice changes a device's name, labels, metadata or profile.
func (s *Service) UpdateDevice(ctx context.Context, tenant, id string, u tether.DeviceUpdate) (*tether.Device, error) {
	name := ""
	if u.Name != nil {
		name = *u.Name
	}
	if err := tether.ValidateDeviceFields(name, u.Labels); err != nil {
		return nil, err
	}
	if u.Profile != nil {
		if err := validateProfileID(*u.Profile); err != nil {
			return nil, err
		}
	}
	return s.store.UpdateDevice(ctx, tenant, id, u, s.now())
}

// DeleteDevice removes a device with its data and cuts its connections.
func (s *Service) DeleteDevice(ctx context.Context, tenant, id string) error {
	if err := s.store.DeleteDevice(ctx, tenant, id); err != nil {
		return err
	}
	s.announce(tenant, id, EventDeleted)
	return nil
}

// RotateToken gives a device a new token and returns it; the old one stops
// working at once and the device's connections are cut, so a leaked token
// is dead the moment it is rotated.
func (s *Service) RotateToken(ctx context.Context, tenant, id string) (string, error) {
	token := secret.Token(id)
	if err := s.store.SetDeviceToken(ctx, tenant, id, secret.Hash(token), s.now()); err != nil {
		return "", err
	}
	s.announce(tenant, id, EventTokenRotated)
	return token, nil
}

func (s *Service) announce(tenant, id, event string) {
	if err := s.notify.PublishLifecycle(tenant, id, event); err != nil {
		// The device is refused at its next connect anyway.
		s.log.Warn("announce device event", "device", id, "event", event, "err", err)
	}
}

var errBadCredentials = tether.Errorf(tether.EUNAUTHORIZED, "unknown device or wrong token")

// AuthenticateDevice checks a device's token. If deviceID is not empty
// (an MQTT username), the token must belong to that device. Every failure
// is the same EUNAUTHORIZED error, so a caller learns nothing about which
// devices exist.
func (s *Service) AuthenticateDevice(ctx context.Context, deviceID, token string) (*tether.Device, error) {
	id, _, ok := strings.Cut(token, ".")
	if !ok || !tether.ValidID(id) || (deviceID != "" && deviceID != id) {
		return nil, errBadCredentials
	}
	d, err := s.store.DeviceByID(ctx, id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, errBadCredentials
	} else if err != nil {
		return nil, fmt.Errorf("authenticate device: %w", err)
	}
	if subtle.ConstantTimeCompare(d.TokenHash, secret.Hash(token)) != 1 {
		return nil, errBadCredentials
	}
	return d, nil
}

// AuthenticateAPIKey returns the API key that key is.
func (s *Service) AuthenticateAPIKey(ctx context.Context, key string) (*tether.APIKey, error) {
	bad := tether.Errorf(tether.EUNAUTHORIZED, "the API key is wrong or revoked; send Authorization: Bearer <key>")
	if key == "" {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "an API key is required; send Authorization: Bearer <key>")
	}
	ids := []string{bootstrapKeyID}
	if id, _, ok := strings.Cut(key, "."); ok && tether.ValidID(id) && id != bootstrapKeyID {
		ids = []string{id, bootstrapKeyID}
	}
	h := secret.Hash(key)
	for _, id := range ids {
		k, err := s.store.APIKey(ctx, id)
		if tether.ErrorCode(err) == tether.ENOTFOUND {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("authenticate api key: %w", err)
		}
		if subtle.ConstantTimeCompare(k.Hash, h) == 1 {
			return k, nil
		}
	}
	return nil, bad
}

// validateProfileID checks the form of a device's profile ID; "" means
// none. Whether the profile exists is the store's to check, in the
// transaction that stores the device.
func validateProfileID(id string) error {
	if id != "" && !tether.ValidID(id) {
		return tether.Errorf(tether.EINVALID, "profile id %q must be 1 to 64 letters, digits, '-' or '_'", truncate(id))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
