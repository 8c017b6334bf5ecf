package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// MaxDevicesPage is the largest page Devices returns, and the page size
// it uses when the filter asks for none.
const MaxDevicesPage = 1000

const deviceColumns = `d.id, d.tenant_id, d.name, d.labels, d.metadata, d.token_hash,
	d.created_at, d.updated_at, d.last_seen_at, d.psk_nonce, d.profile_id`

// scanDevice reads a row of deviceColumns.
func scanDevice(row interface{ Scan(...any) error }) (*tether.Device, error) {
	var (
		d                tether.Device
		labels, metadata string
		created, updated int64
		lastSeen         sql.NullInt64
		profile          sql.NullString
	)
	if err := row.Scan(&d.ID, &d.TenantID, &d.Name, &labels, &metadata, &d.TokenHash,
		&created, &updated, &lastSeen, &d.PSKNonce, &profile); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(labels), &d.Labels); err != nil {
		return nil, fmt.Errorf("device %s: labels: %w", d.ID, err)
	}
	if err := json.Unmarshal([]byte(metadata), &d.Metadata); err != nil {
		return nil, fmt.Errorf("device %s: metadata: %w", d.ID, err)
	}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	if d.Metadata == nil {
		d.Metadata = map[string]any{}
	}
	d.CreatedAt = fromNanos(created)
	d.UpdatedAt = fromNanos(updated)
	d.LastSeenAt = timePtr(lastSeen)
	d.ProfileID = profile.String
	return &d, nil
}

// encodeMaps returns the JSON of a device's labels and metadata; nil maps
// are stored as empty objects.
func encodeMaps(labels map[string]string, metadata map[string]any) (string, string, error) {
	if labels == nil {
		labels = map[string]string{}
	}
	if metadata == nil {
		metadata = map[string]any{}
	}
	l, err := json.Marshal(labels)
	if err != nil {
		return "", "", tether.Errorf(tether.EINVALID, "labels: %v", err)
	}
	m, err := json.Marshal(metadata)
	if err != nil {
		return "", "", tether.Errorf(tether.EINVALID, "metadata cannot be stored as JSON: %v", err)
	}
	return string(l), string(m), nil
}

// insertLabels adds a device's labels to the device_labels index table.
func insertLabels(ctx context.Context, tx *sql.Tx, tenantID, deviceID string, labels map[string]string) error {
	if len(labels) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO device_labels (device_id, tenant_id, key, value) VALUES (?, ?, ?, ?)")
	if err != nil {
		return err
	}
	defer stmt.Close()
	for k, v := range labels {
		if _, err := stmt.ExecContext(ctx, deviceID, tenantID, k, v); err != nil {
			return fmt.Errorf("label %q: %w", k, err)
		}
	}
	return nil
}

// fillDevice fills in a new device's zero CreatedAt with the current
// time, its zero UpdatedAt with CreatedAt and its nil maps with empty ones,
// and returns its labels and metadata as stored.
func fillDevice(d *tether.Device) (labels, metadata string, err error) {
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now()
	}
	d.CreatedAt = d.CreatedAt.UTC()
	if d.UpdatedAt.IsZero() {
		d.UpdatedAt = d.CreatedAt
	}
	d.UpdatedAt = d.UpdatedAt.UTC()
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	if d.Metadata == nil {
		d.Metadata = map[string]any{}
	}
	return encodeMaps(d.Labels, d.Metadata)
}

// CreateDevice stores a new device. It fills in a zero CreatedAt with the
// current time, a zero UpdatedAt with CreatedAt and nil Labels and
// Metadata with empty maps. It returns an ECONFLICT error if a device with
// the ID exists in any tenant, an ENOTFOUND error if the tenant does not
// exist, and an EINVALID error if d.ProfileID names no profile of the
// tenant.
func (db *DB) CreateDevice(ctx context.Context, d *tether.Device) error {
	if !tether.ValidID(d.ID) {
		return tether.Errorf(tether.EINVALID, "invalid device id %q", d.ID)
	}
	if !tether.ValidID(d.TenantID) {
		return tether.Errorf(tether.EINVALID, "invalid tenant id %q", d.TenantID)
	}
	labels, metadata, err := fillDevice(d)
	if err != nil {
		return err
	}
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error { return insertDevice(ctx, tx, d, labels, metadata) })
	if err != nil {
		return fmt.Errorf("create device %s: %w", d.ID, err)
	}
	return nil
}

// insertDevice inserts the row and labels of a device whose labels and
// metadata are encoded already. A profile it names must exist in its
// tenant (EINVALID otherwise).
func insertDevice(ctx context.Context, tx *sql.Tx, d *tether.Device, labels, metadata string) error {
	if err := checkProfile(ctx, tx, d.TenantID, d.ProfileID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO devices
		(id, tenant_id, name, labels, metadata, token_hash, created_at, updated_at, last_seen_at, profile_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.TenantID, d.Name, labels, metadata, d.TokenHash,
		nanos(d.CreatedAt), nanos(d.UpdatedAt), nullNanos(d.LastSeenAt), nullProfileID(d.ProfileID))
	switch constraintOf(err) {
	case uniqueConstraint:
		return tether.Errorf(tether.ECONFLICT, "device %q already exists", d.ID)
	case foreignKeyConstraint:
		return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", d.TenantID)
	}
	if err != nil {
		return err
	}
	return insertLabels(ctx, tx, d.TenantID, d.ID, d.Labels)
}

// Device returns the device with the ID in the tenant, or an ENOTFOUND
// error if there is none (also when the ID belongs to another tenant).
func (db *DB) Device(ctx context.Context, tenantID, id string) (*tether.Device, error) {
	return one(db.read.QueryRowContext(ctx,
		"SELECT "+deviceColumns+" FROM devices d WHERE d.id = ? AND d.tenant_id = ?", id, tenantID), scanDevice,
		func() error { return deviceNotFound(id) }, "device %s", id)
}

// DeviceByID returns the device with the ID in whichever tenant it is, for
// authenticating a device that names itself without its tenant. It returns
// an ENOTFOUND error if there is none.
func (db *DB) DeviceByID(ctx context.Context, id string) (*tether.Device, error) {
	return one(db.read.QueryRowContext(ctx,
		"SELECT "+deviceColumns+" FROM devices d WHERE d.id = ?", id), scanDevice,
		func() error { return deviceNotFound(id) }, "device %s", id)
}

func deviceNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "device %q not found", id)
}

// Devices returns one page of the tenant's devices that carry all of
// f.Labels (and, if set, have profile f.Profile and presence status
// f.Status), in ID order, starting after the ID f.After. A page holds at
// most f.Limit devices, and MaxDevicesPage if f.Limit is out of (0,
// MaxDevicesPage]. A device without a presence row has never connected
// and counts as offline. An unknown status is an EINVALID error.
//
// Labels are matched through the device_labels table rather than with
// json_extract on the devices' JSON: a selector then reads one index range
// (tenant, key, value, id > after) in ID order and stops after a page, so
// its cost follows the page size, not the tenant's number of devices. With
// json_extract every page of a selective selector scans and parses every
// device of the tenant after the cursor. BenchmarkDevices, 100k devices, a
// page of 100: a label on 10 devices takes 0.06 ms through the table and
// 21 ms through json_extract; a label on 10% of them 0.3 ms and 0.5 ms.
// The price is a second write per label when a device is created or its
// labels change, which is rare.
//
// Without labels, a status of online or stale is walked the same way
// through presence's (tenant, status, device) index, and a profile through
// devices' (tenant, profile, id) index; offline cannot be an index range
// (it includes the devices without a row), so it is a check per device.
//
// f.Query (see [tether.DeviceFilter]) is a check per device too: a name
// substring has no index range, so a search walks the devices in ID order
// until it fills a page (see searchCondition for its cost).
func (db *DB) Devices(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error) {
	query, args, err := db.devicesSQL(ctx, f)
	if err != nil {
		return nil, err
	}
	rows, err := db.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	devices, err := collect(rows, scanDevice)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return devices, nil
}

// devicesSQL returns the query of Devices for f and its arguments.
func (db *DB) devicesSQL(ctx context.Context, f tether.DeviceFilter) (string, []any, error) {
	limit := f.Limit
	if limit <= 0 || limit > MaxDevicesPage {
		limit = MaxDevicesPage
	}
	switch f.Status {
	case "", tether.PresenceOnline, tether.PresenceStale, tether.PresenceOffline:
	default:
		return "", nil, tether.Errorf(tether.EINVALID, "unknown status %q; want online, stale or offline", f.Status)
	}
	var (
		q    strings.Builder
		args []any
		// where holds the conditions beyond the driving index range.
		where     []string
		whereArgs []any
		cursor    = "d.id"
	)
	if f.Profile != "" {
		where = append(where, "d.profile_id = ?")
		whereArgs = append(whereArgs, f.Profile)
	}
	if f.Query != "" {
		cond, condArgs, err := searchCondition(f.Query)
		if err != nil {
			return "", nil, err
		}
		where = append(where, cond)
		whereArgs = append(whereArgs, condArgs...)
	}
	statusDrives := len(f.Labels) == 0 && (f.Status == tether.PresenceOnline || f.Status == tether.PresenceStale)
	switch f.Status {
	case "":
	case tether.PresenceOffline:
		where = append(where, "NOT EXISTS (SELECT 1 FROM presence p WHERE p.device_id = d.id AND p.status <> ?)")
		whereArgs = append(whereArgs, tether.PresenceOffline)
	default:
		if !statusDrives {
			where = append(where, "EXISTS (SELECT 1 FROM presence p WHERE p.device_id = d.id AND p.status = ?)")
			whereArgs = append(whereArgs, f.Status)
		}
	}
	and := func() {
		for _, w := range where {
			q.WriteString(" AND " + w)
		}
		args = append(args, whereArgs...)
	}
	switch {
	case len(f.Labels) > 0:
		keys, err := db.labelsBySelectivity(ctx, f)
		if err != nil {
			return "", nil, fmt.Errorf("list devices: %w", err)
		}
		// The first label drives the scan: its index range is walked in
		// device ID order, and each device found is checked for the other
		// labels by primary key. CROSS JOIN is SQLite's way to fix that
		// join order; its planner has no statistics to choose it.
		q.WriteString("SELECT " + deviceColumns + " FROM device_labels l0 CROSS JOIN devices d")
		for i, k := range keys[1:] {
			fmt.Fprintf(&q, " JOIN device_labels l%[1]d ON l%[1]d.device_id = d.id AND l%[1]d.key = ? AND l%[1]d.value = ?", i+1)
			args = append(args, k, f.Labels[k])
		}
		q.WriteString(` WHERE l0.tenant_id = ? AND l0.key = ? AND l0.value = ? AND l0.device_id > ?
			AND d.id = l0.device_id`)
		args = append(args, f.TenantID, keys[0], f.Labels[keys[0]], f.After)
		cursor = "l0.device_id"
	case statusDrives:
		q.WriteString("SELECT " + deviceColumns + ` FROM presence ps CROSS JOIN devices d
			WHERE ps.tenant_id = ? AND ps.status = ? AND ps.device_id > ? AND d.id = ps.device_id AND d.tenant_id = ?`)
		args = append(args, f.TenantID, f.Status, f.After, f.TenantID)
		cursor = "ps.device_id"
	default:
		q.WriteString("SELECT " + deviceColumns + " FROM devices d WHERE d.tenant_id = ? AND d.id > ?")
		args = append(args, f.TenantID, f.After)
	}
	and()
	q.WriteString(" ORDER BY " + cursor + " LIMIT ?")
	args = append(args, limit)
	return q.String(), args, nil
}

// selectivityProbe caps how many devices labelsBySelectivity counts per
// label: enough to tell a rare label from a common one, cheap enough
// (tens of microseconds) to do on every multi-label listing.
const selectivityProbe = 1000

// labelsBySelectivity returns the keys of f.Labels with the key matching
// the fewest devices after the cursor first, so that a selector such as
// site=north,serial=123 walks the devices with serial 123, not every device
// in the north. At 100k devices that is 0.1 ms instead of 4 ms
// (BenchmarkDevices, selector=dense+sparse).
func (db *DB) labelsBySelectivity(ctx context.Context, f tether.DeviceFilter) ([]string, error) {
	keys := slices.Sorted(maps.Keys(f.Labels))
	if len(keys) == 1 {
		return keys, nil
	}
	counts := make(map[string]int, len(keys))
	for _, k := range keys {
		var n int
		err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM device_labels
			WHERE tenant_id = ? AND key = ? AND value = ? AND device_id > ? LIMIT ?)`,
			f.TenantID, k, f.Labels[k], f.After, selectivityProbe).Scan(&n)
		if err != nil {
			return nil, err
		}
		counts[k] = n
	}
	slices.SortStableFunc(keys, func(a, b string) int { return counts[a] - counts[b] })
	return keys, nil
}

// UpdateDevice changes the fields of the device that u names, sets its
// UpdatedAt to now and returns the device as stored. Non-nil Labels and
// Metadata replace the whole map; a non-nil Profile sets the profile ("":
// none). It returns an ENOTFOUND error if the tenant has no such device
// and an EINVALID error if the profile does not exist in the tenant.
func (db *DB) UpdateDevice(ctx context.Context, tenantID, id string, u tether.DeviceUpdate, now time.Time) (*tether.Device, error) {
	var d *tether.Device
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		d, err = scanDevice(tx.QueryRowContext(ctx,
			"SELECT "+deviceColumns+" FROM devices d WHERE d.id = ? AND d.tenant_id = ?", id, tenantID))
		if errors.Is(err, sql.ErrNoRows) {
			return deviceNotFound(id)
		}
		if err != nil {
			return err
		}
		if u.Name != nil {
			d.Name = *u.Name
		}
		if u.Labels != nil {
			d.Labels = u.Labels
		}
		if u.Metadata != nil {
			d.Metadata = u.Metadata
		}
		if u.Profile != nil && *u.Profile != d.ProfileID {
			if err := checkProfile(ctx, tx, tenantID, *u.Profile); err != nil {
				return err
			}
			d.ProfileID = *u.Profile
		}
		d.UpdatedAt = now.UTC()
		labels, metadata, err := encodeMaps(d.Labels, d.Metadata)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET name = ?, labels = ?, metadata = ?, updated_at = ?, profile_id = ?
			WHERE id = ?`, d.Name, labels, metadata, nanos(d.UpdatedAt), nullProfileID(d.ProfileID), id); err != nil {
			return err
		}
		if u.Labels == nil {
			return nil
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM device_labels WHERE device_id = ?", id); err != nil {
			return err
		}
		return insertLabels(ctx, tx, tenantID, id, d.Labels)
	})
	if err != nil {
		return nil, fmt.Errorf("update device %s: %w", id, err)
	}
	return d, nil
}

// SetDeviceToken stores the hash of a device's new token, replacing any
// old one, and sets its UpdatedAt to now. It returns an ENOTFOUND error if
// the tenant has no such device.
func (db *DB) SetDeviceToken(ctx context.Context, tenantID, id string, hash []byte, now time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE devices SET token_hash = ?, updated_at = ? WHERE id = ? AND tenant_id = ?",
			hash, nanos(now), id, tenantID)
		if err != nil {
			return err
		}
		return mustAffect(res, id)
	})
	if err != nil {
		return fmt.Errorf("set device token %s: %w", id, err)
	}
	return nil
}

// SetDevicePSKNonce stores the nonce of a device's DTLS pre-shared key (0
// for none) and sets its UpdatedAt to now. It returns an ENOTFOUND error if
// the tenant has no such device.
func (db *DB) SetDevicePSKNonce(ctx context.Context, tenantID, id string, nonce int64, now time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE devices SET psk_nonce = ?, updated_at = ? WHERE id = ? AND tenant_id = ?",
			nonce, nanos(now), id, tenantID)
		if err != nil {
			return err
		}
		return mustAffect(res, id)
	})
	if err != nil {
		return fmt.Errorf("set device psk %s: %w", id, err)
	}
	return nil
}

// DeleteDevice deletes the device with its labels, telemetry, latest
// values and quarantined points in one transaction. It returns an ENOTFOUND error if the tenant
// has no such device.
func (db *DB) DeleteDevice(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTxCommit(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM devices WHERE id = ? AND tenant_id = ?", id, tenantID)
		if err != nil {
			return err
		}
		if err := mustAffect(res, id); err != nil {
			return err
		}
		// device_labels goes by its foreign key's ON DELETE CASCADE; the
		// series and points have none (see the telemetry table).
		for _, q := range []string{
			"DELETE FROM telemetry WHERE series_id IN (SELECT id FROM series WHERE device_id = ?)",
			"DELETE FROM series WHERE device_id = ?",
			"DELETE FROM quarantine WHERE device_id = ?",
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	}, func(tx *sql.Tx) error { return db.series.commitEvicting(tx, id) })
	if err != nil {
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	return nil
}

// mustAffect returns an ENOTFOUND error for device id if res changed no row.
func mustAffect(res sql.Result, id string) error {
	return affected(res, func() error { return deviceNotFound(id) })
}

// affected returns none() if res changed no row: the thing addressed is
// not there (or, for a compare-and-swap, changed meanwhile).
func affected(res sql.Result, none func() error) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return none()
	}
	return nil
}
