// Package provision onboards devices in numbers: a bulk import of devices
// from CSV or JSON (all or nothing, with a report naming every bad row),
// and zero-touch registration, where a device presents its profile's
// provisioning key and receives its own credentials.
//
// Credentials are made in the registry's format (see package registry):
// a device token is "<device id>.<secret>" and a provisioning key
// "pk_<random id>.<secret>", each with a 256-bit random secret, stored
// only as the SHA-256 of the whole string. The package makes them itself
// rather than importing the registry, so that the HTTP API, which parses
// imports with it, keeps out of the registry's dependencies.
package provision

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

// Store keeps imported devices and provisioning keys.
type Store interface {
	// CheckImport returns what would make ImportDevices refuse, storing
	// nothing.
	CheckImport(ctx context.Context, ds []*tether.Device, certs []*tether.Certificate) ([]tether.RowError, error)
	// ImportDevices stores the devices and certificates in one
	// transaction, or, if a device ID is taken, a fingerprint registered
	// or a profile missing, nothing: then it returns a RowError (ID and
	// Error set) for each device at fault.
	ImportDevices(ctx context.Context, ds []*tether.Device, certs []*tether.Certificate) ([]tether.RowError, error)
	CreateProvisioningKey(ctx context.Context, k *tether.ProvisioningKey) error
	// ProvisioningKey returns a key of any tenant, or ENOTFOUND.
	ProvisioningKey(ctx context.Context, id string) (*tether.ProvisioningKey, error)
	ProvisioningKeys(ctx context.Context, tenantID string) ([]*tether.ProvisioningKey, error)
	RevokeProvisioningKey(ctx context.Context, tenantID, id string, now time.Time) error
	// RotateProvisioningKey revokes a key and stores next with its
	// profile, limits and uses, in one transaction.
	RotateProvisioningKey(ctx context.Context, tenantID, id string, next *tether.ProvisioningKey, now time.Time) error
	// RegisterDevice creates a device in the key's tenant with its
	// profile and counts the use in one transaction; EUNAUTHORIZED if the
	// key cannot be used, ECONFLICT if the device ID is taken.
	RegisterDevice(ctx context.Context, keyID string, d *tether.Device, now time.Time) error
}

// Profiles looks up device profiles.
type Profiles interface {
	Get(ctx context.Context, tenant, id string) (*tether.Profile, error)
}

// Options are what a Service needs beyond its store and profiles.
type Options struct {
	Logger *slog.Logger
	// Now is the clock of creation times and key expiry; time.Now if nil.
	Now func() time.Time
}

// Service imports devices and runs zero-touch registration.
type Service struct {
	store    Store
	profiles Profiles
	log      *slog.Logger
	now      func() time.Time
}

// New returns a provisioning service over st.
func New(st Store, profiles Profiles, o Options) *Service {
	s := &Service{store: st, profiles: profiles, log: o.Logger, now: o.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Created is a device an import created, with its token (shown this once).
type Created struct {
	Row   int    `json:"row"`
	ID    string `json:"id"`
	Token string `json:"token"`
}

// Import creates the devices of rows in tenant, all or none, and returns
// them with their tokens in row order. Rows count from 1.
//
// Every row is checked before anything is written: its id must be a valid
// ID, appear once in the import and not exist yet (in any tenant); its
// name at most 256 bytes; at most 64 labels with ID-like keys and values
// of at most 256 bytes; its profile, if any, must exist in the tenant; its
// certificate fingerprint, if any, must be 64 lowercase hex digits, appear
// once and not be registered. If any row is bad Import returns an
// *ImportError naming every bad row and creates nothing. The devices are
// written in one transaction, which checks the store's part again, so
// nothing created meanwhile slips in.
func (s *Service) Import(ctx context.Context, tenant string, rows []tether.DeviceImport) ([]Created, error) {
	if len(rows) == 0 {
		return nil, tether.Errorf(tether.EINVALID, "the import has no devices")
	}
	if len(rows) > MaxImportRows {
		return nil, tether.Errorf(tether.ETOOLARGE, "the import has %d devices; at most %d in one import", len(rows), MaxImportRows)
	}
	var (
		bad      []tether.RowError
		ds       = make([]*tether.Device, 0, len(rows))
		certs    []*tether.Certificate
		rowOf    = make(map[string]int, len(rows)) // device ID → first row with it
		fpRow    = map[string]int{}                // fingerprint → first row with it
		now      = s.now().UTC()
		problems []string
	)
	for i, r := range rows {
		row := i + 1
		problems = problems[:0]
		if !tether.ValidID(r.ID) {
			problems = append(problems, fmt.Sprintf("id %q must be 1 to 64 letters, digits, '-' or '_'", truncate(r.ID)))
		} else if first, dup := rowOf[r.ID]; dup {
			problems = append(problems, fmt.Sprintf("id %q is also in row %d", r.ID, first))
		} else {
			rowOf[r.ID] = row
		}
		if err := tether.ValidateDeviceFields(r.Name, r.Labels); err != nil {
			problems = append(problems, tether.ErrorMessage(err))
		}
		if r.Profile != "" && !tether.ValidID(r.Profile) {
			problems = append(problems, fmt.Sprintf("profile %q does not exist", truncate(r.Profile)))
		}
		if r.Fingerprint != "" {
			if !validFingerprint(r.Fingerprint) {
				problems = append(problems, "certificate_fingerprint must be 64 lowercase hex digits (the SHA-256 of the certificate's DER)")
			} else if first, dup := fpRow[r.Fingerprint]; dup {
				problems = append(problems, fmt.Sprintf("certificate_fingerprint is also in row %d", first))
			} else {
				fpRow[r.Fingerprint] = row
			}
		}
		if len(problems) > 0 {
			bad = append(bad, tether.RowError{Row: row, ID: r.ID, Error: strings.Join(problems, "; ")})
			continue
		}
		d := &tether.Device{
			TenantID: tenant, ID: r.ID, Name: r.Name, Labels: r.Labels, Metadata: map[string]any{},
			ProfileID: r.Profile, CreatedAt: now, UpdatedAt: now,
		}
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		ds = append(ds, d)
		if r.Fingerprint != "" {
			certs = append(certs, &tether.Certificate{Fingerprint: r.Fingerprint, TenantID: tenant, DeviceID: r.ID, CreatedAt: now})
		}
	}

	// With bad rows already, the store is only asked what else is wrong,
	// so that one report names every bad row.
	if len(bad) > 0 {
		more, err := s.store.CheckImport(ctx, ds, certs)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		return nil, importError(append(bad, withRows(more, rowOf)...))
	}

	created := make([]Created, len(ds))
	for i, d := range ds {
		token := secret.Token(d.ID)
		d.TokenHash = secret.Hash(token)
		created[i] = Created{Row: rowOf[d.ID], ID: d.ID, Token: token}
	}
	more, err := s.store.ImportDevices(ctx, ds, certs)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if len(more) > 0 {
		return nil, importError(withRows(more, rowOf))
	}
	s.log.Info("imported devices", "tenant", tenant, "devices", len(ds), "certificates", len(certs))
	return created, nil
}

// withRows sets the row of each store problem from its device ID.
func withRows(problems []tether.RowError, rowOf map[string]int) []tether.RowError {
	for i := range problems {
		problems[i].Row = rowOf[problems[i].ID]
	}
	return problems
}

// CreateKey creates a provisioning key for the tenant's profile and
// returns it with the key itself, shown this once. maxUses 0 means
// unlimited; a nil expiresAt means it never expires. It returns an
// EINVALID error if the profile does not exist, maxUses is negative or
// expiresAt is not in the future.
func (s *Service) CreateKey(ctx context.Context, tenant, profileID string, maxUses int, expiresAt *time.Time) (*tether.ProvisioningKey, string, error) {
	if !tether.ValidID(profileID) {
		return nil, "", tether.Errorf(tether.EINVALID, "a provisioning key needs a profile; %q is not a profile id", truncate(profileID))
	}
	if _, err := s.profiles.Get(ctx, tenant, profileID); tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, "", tether.Errorf(tether.EINVALID, "profile %q does not exist", profileID)
	} else if err != nil {
		return nil, "", fmt.Errorf("create provisioning key: %w", err)
	}
	if maxUses < 0 {
		return nil, "", tether.Errorf(tether.EINVALID, "max_uses is %d; give 0 for unlimited or a positive count", maxUses)
	}
	now := s.now().UTC()
	if expiresAt != nil {
		if !expiresAt.After(now) {
			return nil, "", tether.Errorf(tether.EINVALID, "expires_at %s is not in the future", expiresAt.UTC().Format(time.RFC3339))
		}
		t := expiresAt.UTC()
		expiresAt = &t
	}
	k := &tether.ProvisioningKey{TenantID: tenant, ID: newKeyID(), ProfileID: profileID, MaxUses: maxUses, ExpiresAt: expiresAt, CreatedAt: now}
	key := secret.Token(k.ID)
	k.Hash = secret.Hash(key)
	if err := s.store.CreateProvisioningKey(ctx, k); err != nil {
		return nil, "", err
	}
	s.log.Info("created provisioning key", "tenant", tenant, "key", k.ID, "profile", profileID)
	return k, key, nil
}

// Keys returns the tenant's provisioning keys, revoked ones included.
func (s *Service) Keys(ctx context.Context, tenant string) ([]*tether.ProvisioningKey, error) {
	return s.store.ProvisioningKeys(ctx, tenant)
}

// RevokeKey revokes a provisioning key: devices can no longer register
// with it (the ones that did keep their credentials). It returns an
// ENOTFOUND error if the tenant has no such key.
func (s *Service) RevokeKey(ctx context.Context, tenant, id string) error {
	if err := s.store.RevokeProvisioningKey(ctx, tenant, id, s.now().UTC()); err != nil {
		return err
	}
	s.log.Info("revoked provisioning key", "tenant", tenant, "key", id)
	return nil
}

// RotateKey replaces a provisioning key by a new one with a new ID and
// secret and the same profile, limits and count of uses, and revokes the
// old one, at once. It returns the new key and the key itself, shown
// this once; an ENOTFOUND error if the tenant has no such key and an
// ECONFLICT error if it is revoked.
func (s *Service) RotateKey(ctx context.Context, tenant, id string) (*tether.ProvisioningKey, string, error) {
	now := s.now().UTC()
	k := &tether.ProvisioningKey{ID: newKeyID(), CreatedAt: now}
	key := secret.Token(k.ID)
	k.Hash = secret.Hash(key)
	if err := s.store.RotateProvisioningKey(ctx, tenant, id, k, now); err != nil {
		return nil, "", err
	}
	s.log.Info("rotated provisioning key", "tenant", tenant, "old", id, "key", k.ID)
	return k, key, nil
}

// Request is what a device asks for when it registers itself.
type Request struct {
	DeviceID string            `json:"id"`
	Name     string            `json:"name,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// errBadKey is the one answer to every key that cannot register a device,
// so that a caller learns nothing about which keys exist or why one fails.
var errBadKey = tether.Errorf(tether.EUNAUTHORIZED, "the provisioning key is unknown, revoked, expired or used up")

// Register creates the device a provisioning key's holder asks for, in
// the key's tenant with the key's profile, and returns it with its token
// (shown this once). The device and the key's count of uses are written
// in one transaction, so a key limited to n uses registers exactly n
// devices however many try at once.
//
// It returns the same EUNAUTHORIZED error for a key that is malformed,
// unknown, revoked, expired or used up, an EINVALID error for a bad
// device ID, name or labels, and an ECONFLICT error if the device ID is
// taken (in any tenant).
func (s *Service) Register(ctx context.Context, key string, r Request) (*tether.Device, string, error) {
	id, _, ok := strings.Cut(key, ".")
	if !ok || !strings.HasPrefix(id, keyPrefix) || !tether.ValidID(id) {
		return nil, "", errBadKey
	}
	k, err := s.store.ProvisioningKey(ctx, id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, "", errBadKey
	} else if err != nil {
		return nil, "", fmt.Errorf("register device: %w", err)
	}
	// The lookup by ID is an index probe whose timing tells only whether
	// the ID exists; the secret is compared in constant time.
	if subtle.ConstantTimeCompare(k.Hash, secret.Hash(key)) != 1 {
		return nil, "", errBadKey
	}
	now := s.now().UTC()
	if k.RevokedAt != nil || (k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)) || (k.MaxUses > 0 && k.Uses >= k.MaxUses) {
		s.log.Info("refused provisioning key", "key", k.ID, "tenant", k.TenantID, "revoked", k.RevokedAt != nil, "uses", k.Uses)
		return nil, "", errBadKey
	}
	if !tether.ValidID(r.DeviceID) {
		return nil, "", tether.Errorf(tether.EINVALID, "device id %q must be 1 to 64 letters, digits, '-' or '_'", truncate(r.DeviceID))
	}
	if err := tether.ValidateDeviceFields(r.Name, r.Labels); err != nil {
		return nil, "", err
	}
	token := secret.Token(r.DeviceID)
	d := &tether.Device{ID: r.DeviceID, Name: r.Name, Labels: r.Labels, Metadata: map[string]any{},
		TokenHash: secret.Hash(token), CreatedAt: now, UpdatedAt: now}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	err = s.store.RegisterDevice(ctx, k.ID, d, now)
	if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
		// Revoked, expired or used up since it was read, or its profile
		// was deleted; the store's message says which.
		s.log.Info("refused provisioning key", "key", k.ID, "tenant", k.TenantID, "why", tether.ErrorMessage(err))
		return nil, "", errBadKey
	}
	if err != nil {
		return nil, "", err
	}
	s.log.Info("device registered itself", "tenant", d.TenantID, "device", d.ID, "key", k.ID, "profile", d.ProfileID)
	return d, token, nil
}

func validFingerprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// keyPrefix starts every provisioning key's ID, as "ak_" starts an API
// key's, so that a key says what it is.
const keyPrefix = "pk_"

func newKeyID() string { return keyPrefix + secret.ID() }
