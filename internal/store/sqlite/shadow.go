package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tether-iot/tether"
)

// Shadows are one row per device and name, their documents JSON text
// read and written whole (see migration 0004). The device row is read in
// the same statement, so that a missing device and a never-written
// shadow are told apart in one query.

const shadowQuery = `SELECT d.id, s.desired, s.reported, s.metadata, s.version, s.updated_at
	FROM devices d LEFT JOIN shadows s ON s.device_id = d.id AND s.name = ?
	WHERE d.id = ? AND d.tenant_id = ?`

// scanShadow reads a row of shadowQuery into a shadow; a device without
// the shadow gives version 0 and empty documents.
func scanShadow(row *sql.Row, tenantID, deviceID, name string) (*tether.Shadow, error) {
	var (
		id                          string
		desired, reported, metadata sql.NullString
		version, updated            sql.NullInt64
	)
	err := row.Scan(&id, &desired, &reported, &metadata, &version, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, deviceNotFound(deviceID)
	}
	if err != nil {
		return nil, err
	}
	sh := &tether.Shadow{
		TenantID: tenantID, DeviceID: deviceID, Name: name,
		State:    tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}},
		Metadata: tether.ShadowMetadata{Desired: map[string]any{}, Reported: map[string]any{}},
	}
	if !version.Valid {
		return sh, nil
	}
	sh.Version, sh.UpdatedAt = version.Int64, fromNanos(updated.Int64)
	if err := json.Unmarshal([]byte(desired.String), &sh.State.Desired); err != nil {
		return nil, fmt.Errorf("desired: %w", err)
	}
	if err := json.Unmarshal([]byte(reported.String), &sh.State.Reported); err != nil {
		return nil, fmt.Errorf("reported: %w", err)
	}
	if err := json.Unmarshal([]byte(metadata.String), &sh.Metadata); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	// A document stored as "null" (never written so, but cheap to guard)
	// decodes to a nil map; callers expect empty ones.
	for _, m := range []*map[string]any{&sh.State.Desired, &sh.State.Reported, &sh.Metadata.Desired, &sh.Metadata.Reported} {
		if *m == nil {
			*m = map[string]any{}
		}
	}
	return sh, nil
}

// Shadow returns a device's shadow, a version 0 one with empty documents
// if it was never written, or an ENOTFOUND error if the tenant has no
// such device.
func (db *DB) Shadow(ctx context.Context, tenantID, deviceID, name string) (*tether.Shadow, error) {
	sh, err := scanShadow(db.read.QueryRowContext(ctx, shadowQuery, name, deviceID, tenantID), tenantID, deviceID, name)
	if err != nil {
		return nil, fmt.Errorf("shadow %s/%q: %w", deviceID, name, err)
	}
	return sh, nil
}

// MaxNamedShadows bounds a device's named shadows (besides its classic
// one), so that a device cannot fill the store with them.
const MaxNamedShadows = 16

// UpdateShadow reads a shadow, calls apply with it and stores the shadow
// apply returns as the next version, all in one write transaction: the
// write is a compare-and-swap on the version read, so that no update is
// ever lost. (On SQLite's one write connection the swap cannot fail; a
// store with concurrent writers returns ECONFLICT when it does.) It
// returns an ENOTFOUND error if the tenant has no such device, an
// ETOOMANY error for a new named shadow beyond MaxNamedShadows, and an
// error from apply as it is, storing nothing.
func (db *DB) UpdateShadow(ctx context.Context, tenantID, deviceID, name string,
	apply func(cur *tether.Shadow) (*tether.Shadow, error)) (*tether.Shadow, error) {
	var next *tether.Shadow
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		cur, err := scanShadow(tx.QueryRowContext(ctx, shadowQuery, name, deviceID, tenantID), tenantID, deviceID, name)
		if err != nil {
			return err
		}
		if next, err = apply(cur); err != nil {
			return err
		}
		next.TenantID, next.DeviceID, next.Name, next.Version = tenantID, deviceID, name, cur.Version+1
		desired, err := json.Marshal(next.State.Desired)
		if err != nil {
			return fmt.Errorf("desired: %w", err)
		}
		reported, err := json.Marshal(next.State.Reported)
		if err != nil {
			return fmt.Errorf("reported: %w", err)
		}
		metadata, err := json.Marshal(next.Metadata)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		var res sql.Result
		if cur.Version == 0 {
			if name != "" {
				var n int
				if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM shadows WHERE device_id = ? AND name <> ''", deviceID).Scan(&n); err != nil {
					return err
				}
				if n >= MaxNamedShadows {
					return tether.Errorf(tether.ETOOMANY, "a device has at most %d named shadows; delete one first", MaxNamedShadows)
				}
			}
			res, err = tx.ExecContext(ctx, `INSERT INTO shadows
				(device_id, name, tenant_id, desired, reported, metadata, version, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, name) DO NOTHING`,
				deviceID, name, tenantID, string(desired), string(reported), string(metadata), next.Version, nanos(next.UpdatedAt))
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE shadows
				SET desired = ?, reported = ?, metadata = ?, version = ?, updated_at = ?
				WHERE device_id = ? AND name = ? AND version = ?`,
				string(desired), string(reported), string(metadata), next.Version, nanos(next.UpdatedAt), deviceID, name, cur.Version)
		}
		if err != nil {
			return err
		}
		if err := affected(res, func() error {
			return tether.Errorf(tether.ECONFLICT, "the shadow changed meanwhile; it is past version %d", cur.Version)
		}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update shadow %s/%q: %w", deviceID, name, err)
	}
	return next, nil
}

// ShadowNames returns the names of a device's named shadows (not the
// classic one, whose name is empty) in order, or an ENOTFOUND error if
// the tenant has no such device.
func (db *DB) ShadowNames(ctx context.Context, tenantID, deviceID string) ([]string, error) {
	names := []string{}
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM devices WHERE id = ? AND tenant_id = ?",
			deviceID, tenantID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return deviceNotFound(deviceID)
		}
		rows, err := tx.QueryContext(ctx, "SELECT name FROM shadows WHERE device_id = ? AND name <> '' ORDER BY name", deviceID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return err
			}
			names = append(names, name)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("shadow names of %s: %w", deviceID, err)
	}
	return names, nil
}

// DeleteShadow deletes a shadow, or returns an ENOTFOUND error if the
// tenant's device has no such shadow.
func (db *DB) DeleteShadow(ctx context.Context, tenantID, deviceID, name string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM shadows WHERE device_id = ? AND name = ? AND tenant_id = ?",
			deviceID, name, tenantID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			if name == "" {
				return tether.Errorf(tether.ENOTFOUND, "device %q has no shadow", deviceID)
			}
			return tether.Errorf(tether.ENOTFOUND, "device %q has no shadow %q", deviceID, name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete shadow %s/%q: %w", deviceID, name, err)
	}
	return nil
}
