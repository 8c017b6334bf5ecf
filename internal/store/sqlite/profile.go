package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tether-iot/tether"
)

// profileDoc is the stored JSON of a profile's schema: everything but its
// identity, name and times, which have columns of their own.
type profileDoc struct {
	Telemetry      map[string]tether.KeySchema  `json:"telemetry,omitempty"`
	ReportInterval tether.Duration              `json:"report_interval,omitempty"`
	Commands       map[string]tether.CommandDef `json:"commands,omitempty"`
}

func encodeProfile(p *tether.Profile) (string, error) {
	b, err := json.Marshal(profileDoc{Telemetry: p.Telemetry, ReportInterval: p.ReportInterval, Commands: p.Commands})
	if err != nil {
		return "", tether.Errorf(tether.EINVALID, "profile %q cannot be stored as JSON: %v", p.ID, err)
	}
	return string(b), nil
}

const profileColumns = "tenant_id, id, name, doc, created_at, updated_at"

func scanProfile(row interface{ Scan(...any) error }) (*tether.Profile, error) {
	var (
		p                tether.Profile
		doc              string
		created, updated int64
	)
	if err := row.Scan(&p.TenantID, &p.ID, &p.Name, &doc, &created, &updated); err != nil {
		return nil, err
	}
	var d profileDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.ID, err)
	}
	p.Telemetry, p.ReportInterval, p.Commands = d.Telemetry, d.ReportInterval, d.Commands
	p.CreatedAt, p.UpdatedAt = fromNanos(created), fromNanos(updated)
	return &p, nil
}

func profileNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "profile %q not found", id)
}

// stampProfile fills in a profile's zero times with now and makes them UTC.
func stampProfile(p *tether.Profile) {
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = p.CreatedAt
	}
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
}

// CreateProfile stores a new profile of p.TenantID. It does not validate
// the schema (the profile service does). It returns an ECONFLICT error if
// the tenant has a profile with the ID and an ENOTFOUND error if the
// tenant does not exist. A zero CreatedAt is the current time, a zero
// UpdatedAt CreatedAt.
func (db *DB) CreateProfile(ctx context.Context, p *tether.Profile) error {
	if !tether.ValidID(p.ID) {
		return tether.Errorf(tether.EINVALID, "invalid profile id %q", p.ID)
	}
	doc, err := encodeProfile(p)
	if err != nil {
		return err
	}
	stampProfile(p)
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO profiles ("+profileColumns+") VALUES (?, ?, ?, ?, ?, ?)",
			p.TenantID, p.ID, p.Name, doc, nanos(p.CreatedAt), nanos(p.UpdatedAt))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "profile %q already exists", p.ID)
		case foreignKeyConstraint:
			return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", p.TenantID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create profile %s: %w", p.ID, err)
	}
	return nil
}

// PutProfile stores p, replacing the tenant's profile with its ID or
// creating it, and reports whether it created it. Replacing keeps the
// stored CreatedAt (p.CreatedAt is set to it) and sets UpdatedAt from p
// (the current time if zero).
func (db *DB) PutProfile(ctx context.Context, p *tether.Profile) (created bool, err error) {
	if !tether.ValidID(p.ID) {
		return false, tether.Errorf(tether.EINVALID, "invalid profile id %q", p.ID)
	}
	doc, err := encodeProfile(p)
	if err != nil {
		return false, err
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = time.Now()
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = p.UpdatedAt
	}
	stampProfile(p)
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var old int64
		err := tx.QueryRowContext(ctx, "SELECT created_at FROM profiles WHERE tenant_id = ? AND id = ?",
			p.TenantID, p.ID).Scan(&old)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			_, err = tx.ExecContext(ctx, "INSERT INTO profiles ("+profileColumns+") VALUES (?, ?, ?, ?, ?, ?)",
				p.TenantID, p.ID, p.Name, doc, nanos(p.CreatedAt), nanos(p.UpdatedAt))
			if constraintOf(err) == foreignKeyConstraint {
				return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", p.TenantID)
			}
			return err
		case err != nil:
			return err
		}
		p.CreatedAt = fromNanos(old)
		_, err = tx.ExecContext(ctx, "UPDATE profiles SET name = ?, doc = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
			p.Name, doc, nanos(p.UpdatedAt), p.TenantID, p.ID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("put profile %s: %w", p.ID, err)
	}
	return created, nil
}

// Profile returns the tenant's profile with the ID, or an ENOTFOUND error.
func (db *DB) Profile(ctx context.Context, tenantID, id string) (*tether.Profile, error) {
	return one(db.read.QueryRowContext(ctx,
		"SELECT "+profileColumns+" FROM profiles WHERE tenant_id = ? AND id = ?", tenantID, id), scanProfile,
		func() error { return profileNotFound(id) }, "profile %s", id)
}

// Profiles returns every profile of the tenant in ID order.
func (db *DB) Profiles(ctx context.Context, tenantID string) ([]*tether.Profile, error) {
	rows, err := db.read.QueryContext(ctx,
		"SELECT "+profileColumns+" FROM profiles WHERE tenant_id = ? ORDER BY id", tenantID)
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	ps, err := collect(rows, scanProfile)
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	return ps, nil
}

// DeleteProfile deletes the tenant's profile with the ID. It returns an
// ENOTFOUND error if there is none, and an ECONFLICT error while a device
// or a provisioning key that is not revoked refers to it: deleting it
// would leave them with a profile that does not exist.
func (db *DB) DeleteProfile(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var device string
		err := tx.QueryRowContext(ctx, "SELECT id FROM devices WHERE tenant_id = ? AND profile_id = ? LIMIT 1",
			tenantID, id).Scan(&device)
		if err == nil {
			return tether.Errorf(tether.ECONFLICT, "profile %q is used by devices (device %q and perhaps more); move them to another profile first", id, device)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var key string
		err = tx.QueryRowContext(ctx, `SELECT id FROM provisioning_keys
			WHERE tenant_id = ? AND profile_id = ? AND revoked_at IS NULL LIMIT 1`, tenantID, id).Scan(&key)
		if err == nil {
			return tether.Errorf(tether.ECONFLICT, "profile %q has provisioning key %q; revoke its keys first", id, key)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM profiles WHERE tenant_id = ? AND id = ?", tenantID, id)
		if err != nil {
			return err
		}
		if err := affected(res, func() error { return profileNotFound(id) }); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete profile %s: %w", id, err)
	}
	return nil
}

// checkProfile returns an EINVALID error if the tenant has no profile id;
// "" (no profile) is always fine.
func checkProfile(ctx context.Context, tx *sql.Tx, tenantID, id string) error {
	if id == "" {
		return nil
	}
	var one int
	err := tx.QueryRowContext(ctx, "SELECT 1 FROM profiles WHERE tenant_id = ? AND id = ?", tenantID, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return tether.Errorf(tether.EINVALID, "unknown profile %q", id)
	}
	return err
}

// nullProfileID returns s, or NULL for "".
func nullProfileID(s string) any {
	if s == "" {
		return nil
	}
	return s
}
