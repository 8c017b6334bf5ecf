package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

const presenceColumns = `tenant_id, device_id, status, reason, since, seq, transport`

// scanPresence reads a row of presenceColumns.
func scanPresence(row interface{ Scan(...any) error }) (*tether.Presence, error) {
	var (
		p     tether.Presence
		since int64
	)
	if err := row.Scan(&p.TenantID, &p.DeviceID, &p.Status, &p.Reason, &since, &p.Seq, &p.Transport); err != nil {
		return nil, err
	}
	p.Since = fromNanos(since)
	return &p, nil
}

// ConnectPresence records a new connection of a device, held by node: the
// device's presence seq grows by one (from 1 for its first) and it is
// online with reason connected (or the reason given) since at. It returns
// the stored presence, and an ENOTFOUND error if the device does not
// exist.
func (db *DB) ConnectPresence(ctx context.Context, tenantID, deviceID, transport, reason, node string, at time.Time) (*tether.Presence, error) {
	var p *tether.Presence
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		// RETURNING is in SQLite since 3.35 and in PostgreSQL.
		p, err = scanPresence(tx.QueryRowContext(ctx, `INSERT INTO presence
			(device_id, tenant_id, status, reason, since, seq, transport, node)
			VALUES (?, ?, 'online', ?, ?, 1, ?, ?)
			ON CONFLICT (device_id) DO UPDATE SET status = 'online', reason = excluded.reason,
				since = excluded.since, seq = presence.seq + 1, transport = excluded.transport, node = excluded.node
			RETURNING `+presenceColumns,
			deviceID, tenantID, reason, nanos(at), transport, node))
		if constraintOf(err) == foreignKeyConstraint {
			return deviceNotFound(deviceID)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect presence %s: %w", deviceID, err)
	}
	return p, nil
}

// UpdatePresence sets a device's presence status and reason, since at, if
// and only if its stored seq is seq and its status is one of from: a late
// event of an older connection (a lower seq) or one that no longer applies
// changes nothing. It returns the stored presence afterwards (nil if the
// device has none) and whether it changed.
func (db *DB) UpdatePresence(ctx context.Context, tenantID, deviceID string, seq int64, from []string, status, reason string, at time.Time) (*tether.Presence, bool, error) {
	if len(from) == 0 {
		return nil, false, tether.Errorf(tether.EINVALID, "update presence: no status to change from")
	}
	var (
		p       *tether.Presence
		changed bool
	)
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		args := []any{status, reason, nanos(at), deviceID, tenantID, seq}
		for _, s := range from {
			args = append(args, s)
		}
		var err error
		p, err = scanPresence(tx.QueryRowContext(ctx, `UPDATE presence SET status = ?, reason = ?, since = ?
			WHERE device_id = ? AND tenant_id = ? AND seq = ? AND status IN (?`+strings.Repeat(", ?", len(from)-1)+`)
			RETURNING `+presenceColumns, args...))
		if err == nil {
			changed = true
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		p, err = scanPresence(tx.QueryRowContext(ctx, "SELECT "+presenceColumns+
			" FROM presence WHERE device_id = ? AND tenant_id = ?", deviceID, tenantID))
		if errors.Is(err, sql.ErrNoRows) {
			p, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("update presence %s: %w", deviceID, err)
	}
	return p, changed, nil
}

// Presence returns a device's stored presence, or an ENOTFOUND error if it
// has none (it never connected).
func (db *DB) Presence(ctx context.Context, tenantID, deviceID string) (*tether.Presence, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+presenceColumns+
		" FROM presence WHERE device_id = ? AND tenant_id = ?", deviceID, tenantID), scanPresence,
		func() error { return tether.Errorf(tether.ENOTFOUND, "no presence of device %q", deviceID) }, "presence %s", deviceID)
}

// RecoverPresence marks every device that node left online or stale
// offline with reason, since at, and returns the changed presences: at
// start, the connections a node held before it stopped are gone.
func (db *DB) RecoverPresence(ctx context.Context, node, reason string, at time.Time) ([]*tether.Presence, error) {
	var ps []*tether.Presence
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE presence SET status = 'offline', reason = ?, since = ?
			WHERE node = ? AND status IN ('online', 'stale') RETURNING `+presenceColumns,
			reason, nanos(at), node)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			p, err := scanPresence(rows)
			if err != nil {
				return err
			}
			ps = append(ps, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("recover presence of node %q: %w", node, err)
	}
	return ps, nil
}
