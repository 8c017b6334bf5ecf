package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/tether-iot/tether"
)

// DefaultQuarantineLimit is the number of quarantined points Quarantined
// returns when it is asked for no limit, and MaxQuarantineLimit the most
// it returns.
const (
	DefaultQuarantineLimit = 100
	MaxQuarantineLimit     = 1000
)

// quarantineWriter stores the quarantined points of a WriteMessages
// transaction. Quarantined points are rare (a device that breaks its
// profile), so they go one row per statement, prepared only in a
// transaction that has one, rather than in bulk statements prepared for
// every store.
type quarantineWriter struct {
	stmt *sql.Stmt
}

// write stores p, a point of m at time ts. A second point with the same
// device, key and time replaces the first, as in the series.
func (w *quarantineWriter) write(ctx context.Context, tx *sql.Tx, m *tether.Message, p *tether.Point, ts, recv time.Time) error {
	if w.stmt == nil {
		s, err := tx.PrepareContext(ctx, `INSERT INTO quarantine
			(device_id, ts, key, tenant_id, kind, num, str, reason, message_id, received_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (device_id, ts, key) DO UPDATE SET tenant_id = excluded.tenant_id, kind = excluded.kind,
				num = excluded.num, str = excluded.str, reason = excluded.reason,
				message_id = excluded.message_id, received_at = excluded.received_at`)
		if err != nil {
			return err
		}
		w.stmt = s
	}
	var num, str any = p.Num, nil
	if p.Kind == tether.KindString {
		num, str = nil, p.Str
	}
	_, err := w.stmt.ExecContext(ctx, m.DeviceID, nanos(ts), p.Key, m.TenantID, int64(p.Kind), num, str,
		p.Quarantine, m.ID, nanos(recv))
	return err
}

func (w *quarantineWriter) close() {
	if w.stmt != nil {
		w.stmt.Close()
		w.stmt = nil
	}
}

// Quarantined returns the quarantined points of one device of the tenant
// with From <= t < To (a zero From or To leaves that end open), newest
// first, at most limit of them (DefaultQuarantineLimit if limit <= 0,
// never more than MaxQuarantineLimit). It returns an ENOTFOUND error if
// the tenant has no such device.
func (db *DB) Quarantined(ctx context.Context, tenantID, deviceID string, from, to time.Time, limit int) ([]tether.QuarantinedPoint, error) {
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return nil, tether.Errorf(tether.EINVALID, "the end of the time range is before its start")
	}
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !from.IsZero() {
		lo = nanos(from)
	}
	if !to.IsZero() {
		hi = nanos(to)
	}
	if limit <= 0 {
		limit = DefaultQuarantineLimit
	}
	limit = min(limit, MaxQuarantineLimit)
	result := []tether.QuarantinedPoint{}
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		if err := checkDevice(ctx, tx, tenantID, deviceID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT ts, key, kind, num, str, reason, message_id, received_at
			FROM quarantine WHERE device_id = ? AND tenant_id = ? AND ts >= ? AND ts < ?
			ORDER BY ts DESC, key LIMIT ?`, deviceID, tenantID, lo, hi, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				q            tether.QuarantinedPoint
				ts, kind, rx int64
				num          sql.NullFloat64
				str          sql.NullString
			)
			if err := rows.Scan(&ts, &q.Key, &kind, &num, &str, &q.Reason, &q.MessageID, &rx); err != nil {
				return err
			}
			q.Time, q.ReceivedAt = fromNanos(ts), fromNanos(rx)
			q.Value = value(kind, num, str)
			result = append(result, q)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("quarantine of %s: %w", deviceID, err)
	}
	return result, nil
}

// QuarantineCount returns how many quarantined points one device of the
// tenant has. It returns an ENOTFOUND error if the tenant has no such
// device.
func (db *DB) QuarantineCount(ctx context.Context, tenantID, deviceID string) (int, error) {
	var n int
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		if err := checkDevice(ctx, tx, tenantID, deviceID); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT count(*) FROM quarantine WHERE device_id = ? AND tenant_id = ?",
			deviceID, tenantID).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine count of %s: %w", deviceID, err)
	}
	return n, nil
}
