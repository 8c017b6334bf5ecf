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

// The alert types are the domain package's, which the alert service and
// the HTTP API use too, so that the store fits their interfaces as it is.
type (
	AlertKey     = tether.AlertKey
	AlertPending = tether.AlertPending
	AlertState   = tether.AlertState
	AlertChannel = tether.AlertChannel
)

// MaxAlertsPage is the largest page Alerts returns, and the page size it
// uses when asked for none.
const MaxAlertsPage = 1000

const alertColumns = `id, tenant_id, rule_id, device_id, type, severity, status, message, vals, count,
	raised_at, last_seen_at, acknowledged_at, acknowledged_by, cleared_at, cleared_by`

// scanAlert reads a row of alertColumns.
func scanAlert(row interface{ Scan(...any) error }) (*tether.Alert, error) {
	var (
		a              tether.Alert
		vals           sql.NullString
		raised, seen   int64
		acked, cleared sql.NullInt64
	)
	if err := row.Scan(&a.ID, &a.TenantID, &a.RuleID, &a.DeviceID, &a.Type, &a.Severity, &a.Status, &a.Message,
		&vals, &a.Count, &raised, &seen, &acked, &a.AcknowledgedBy, &cleared, &a.ClearedBy); err != nil {
		return nil, err
	}
	if vals.Valid {
		if err := json.Unmarshal([]byte(vals.String), &a.Values); err != nil {
			return nil, fmt.Errorf("alert %s: values: %w", a.ID, err)
		}
	}
	a.RaisedAt, a.LastSeenAt = fromNanos(raised), fromNanos(seen)
	a.AcknowledgedAt, a.ClearedAt = timePtr(acked), timePtr(cleared)
	return &a, nil
}

// jsonValues returns values as nullable JSON text: NULL when empty.
func jsonValues(values map[string]any) (any, error) {
	if len(values) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return string(b), nil
}

// putAlert inserts a, or updates the stored alert with its ID.
func putAlert(ctx context.Context, tx *sql.Tx, a *tether.Alert) error {
	vals, err := jsonValues(a.Values)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO alerts (`+alertColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, status = excluded.status,
			message = excluded.message, vals = excluded.vals, count = excluded.count,
			last_seen_at = excluded.last_seen_at, acknowledged_at = excluded.acknowledged_at,
			acknowledged_by = excluded.acknowledged_by, cleared_at = excluded.cleared_at,
			cleared_by = excluded.cleared_by
		WHERE alerts.tenant_id = excluded.tenant_id`,
		a.ID, a.TenantID, a.RuleID, a.DeviceID, a.Type, a.Severity, a.Status, a.Message, vals, a.Count,
		nanos(a.RaisedAt), nanos(a.LastSeenAt), nullNanos(a.AcknowledgedAt), a.AcknowledgedBy,
		nullNanos(a.ClearedAt), a.ClearedBy)
	if constraintOf(err) == uniqueConstraint {
		return tether.Errorf(tether.ECONFLICT, "alert %s: its identity has another open alert", a.ID)
	}
	return err
}

func alertNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "alert %q not found", id)
}

// UpdateAlertState calls fn, inside one write transaction, with the state
// of the alert identity k: its pending condition and its alert that is
// not cleared. If fn reports a change, what it left in the state is
// stored: the pending condition replaces the stored one (nil deletes
// it), and the alert, if not nil, is inserted or updated by its ID (it
// must be of identity k). It returns the state afterwards.
//
// One transaction per signal keeps the identity's condition and its
// alert in step, also with several nodes signalling the same identity.
func (db *DB) UpdateAlertState(ctx context.Context, k AlertKey, fn func(*AlertState) (bool, error)) (AlertState, error) {
	var st AlertState
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		st = AlertState{}
		var (
			met              bool
			since, last, due int64
			action           string
			vals             sql.NullString
		)
		err := tx.QueryRowContext(ctx, `SELECT met, since, last_at, due_at, action, vals FROM alert_pending
			WHERE tenant_id = ? AND rule_id = ? AND device_id = ? AND type = ?`,
			k.TenantID, k.RuleID, k.DeviceID, k.Type).Scan(&met, &since, &last, &due, &action, &vals)
		switch {
		case err == nil:
			p := &AlertPending{Met: met, Since: fromNanos(since), Last: fromNanos(last), Due: fromNanos(due)}
			if err := json.Unmarshal([]byte(action), &p.Action); err != nil {
				return fmt.Errorf("pending action: %w", err)
			}
			if vals.Valid {
				if err := json.Unmarshal([]byte(vals.String), &p.Values); err != nil {
					return fmt.Errorf("pending values: %w", err)
				}
			}
			st.Pending = p
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		st.Alert, err = scanAlert(tx.QueryRowContext(ctx, "SELECT "+alertColumns+` FROM alerts
			WHERE tenant_id = ? AND rule_id = ? AND device_id = ? AND type = ? AND status <> 'cleared'`,
			k.TenantID, k.RuleID, k.DeviceID, k.Type))
		if errors.Is(err, sql.ErrNoRows) {
			st.Alert, err = nil, nil
		}
		if err != nil {
			return err
		}
		changed, err := fn(&st)
		if err != nil || !changed {
			return err
		}
		if p := st.Pending; p == nil {
			if _, err := tx.ExecContext(ctx, `DELETE FROM alert_pending
				WHERE tenant_id = ? AND rule_id = ? AND device_id = ? AND type = ?`,
				k.TenantID, k.RuleID, k.DeviceID, k.Type); err != nil {
				return err
			}
		} else {
			action, err := json.Marshal(p.Action)
			if err != nil {
				return fmt.Errorf("pending action: %w", err)
			}
			vals, err := jsonValues(p.Values)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO alert_pending
				(tenant_id, rule_id, device_id, type, met, since, last_at, due_at, action, vals)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (tenant_id, rule_id, device_id, type) DO UPDATE SET met = excluded.met,
					since = excluded.since, last_at = excluded.last_at, due_at = excluded.due_at,
					action = excluded.action, vals = excluded.vals`,
				k.TenantID, k.RuleID, k.DeviceID, k.Type, p.Met, nanos(p.Since), nanos(p.Last), nanos(p.Due),
				string(action), vals); err != nil {
				if constraintOf(err) == foreignKeyConstraint {
					return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", k.TenantID)
				}
				return err
			}
		}
		if a := st.Alert; a != nil {
			if (AlertKey{TenantID: a.TenantID, RuleID: a.RuleID, DeviceID: a.DeviceID, Type: a.Type}) != k {
				return fmt.Errorf("alert %s is of identity %s/%s/%s, not of %s/%s/%s",
					a.ID, a.RuleID, a.DeviceID, a.Type, k.RuleID, k.DeviceID, k.Type)
			}
			if err := putAlert(ctx, tx, a); err != nil {
				if constraintOf(err) == foreignKeyConstraint {
					return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", k.TenantID)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return AlertState{}, fmt.Errorf("update alert state of %s/%s/%s: %w", k.RuleID, k.DeviceID, k.Type, err)
	}
	return st, nil
}

// DueAlertPending returns the identities, of any tenant, of up to limit
// pending conditions due at or before t.
func (db *DB) DueAlertPending(ctx context.Context, t time.Time, limit int) ([]AlertKey, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT tenant_id, rule_id, device_id, type FROM alert_pending
		WHERE due_at <= ? ORDER BY due_at LIMIT ?`, nanos(t), limit)
	if err != nil {
		return nil, fmt.Errorf("due alert conditions: %w", err)
	}
	defer rows.Close()
	var ks []AlertKey
	for rows.Next() {
		var k AlertKey
		if err := rows.Scan(&k.TenantID, &k.RuleID, &k.DeviceID, &k.Type); err != nil {
			return nil, fmt.Errorf("due alert conditions: %w", err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("due alert conditions: %w", err)
	}
	return ks, nil
}

// Alert returns one of the tenant's alerts, or an ENOTFOUND error.
func (db *DB) Alert(ctx context.Context, tenantID, id string) (*tether.Alert, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+alertColumns+
		" FROM alerts WHERE id = ? AND tenant_id = ?", id, tenantID), scanAlert,
		func() error { return alertNotFound(id) }, "alert %s", id)
}

// Alerts returns a page of the tenant's alerts, newest first: those with
// the status (any if ""; "open" is any but cleared), the device and the
// rule (any if ""), with an ID before after (if set), at most limit of
// them (MaxAlertsPage if limit is out of (0, MaxAlertsPage]).
func (db *DB) Alerts(ctx context.Context, tenantID, status, deviceID, ruleID, after string, limit int) ([]*tether.Alert, error) {
	if limit <= 0 || limit > MaxAlertsPage {
		limit = MaxAlertsPage
	}
	q := "SELECT " + alertColumns + " FROM alerts WHERE tenant_id = ?"
	args := []any{tenantID}
	switch status {
	case "":
	case "open":
		q += " AND status <> 'cleared'"
	default:
		q += " AND status = ?"
		args = append(args, status)
	}
	if deviceID != "" {
		q += " AND device_id = ?"
		args = append(args, deviceID)
	}
	if ruleID != "" {
		q += " AND rule_id = ?"
		args = append(args, ruleID)
	}
	if after != "" {
		q += " AND id < ?"
		args = append(args, after)
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	as, err := collect(rows, scanAlert)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	return as, nil
}

// UpdateAlert calls fn with one of the tenant's stored alerts inside a
// write transaction and stores what fn made of it if fn reports a change.
// It returns the alert afterwards and whether it changed, or an
// ENOTFOUND error.
func (db *DB) UpdateAlert(ctx context.Context, tenantID, id string, fn func(*tether.Alert) (bool, error)) (*tether.Alert, bool, error) {
	var (
		a       *tether.Alert
		changed bool
	)
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		a, err = scanAlert(tx.QueryRowContext(ctx, "SELECT "+alertColumns+
			" FROM alerts WHERE id = ? AND tenant_id = ?", id, tenantID))
		if errors.Is(err, sql.ErrNoRows) {
			return alertNotFound(id)
		}
		if err != nil {
			return err
		}
		before := *a
		if changed, err = fn(a); err != nil || !changed {
			return err
		}
		// The identity and the ID are the alert's for good.
		a.ID, a.TenantID, a.RuleID, a.DeviceID, a.Type = before.ID, before.TenantID, before.RuleID, before.DeviceID, before.Type
		return putAlert(ctx, tx, a)
	})
	if err != nil {
		return nil, false, fmt.Errorf("update alert %s: %w", id, err)
	}
	return a, changed, nil
}

// CreateAlertChannel stores a notification channel of the tenant, unless
// the tenant has max channels already (ETOOMANY; max <= 0: no limit). It
// returns ECONFLICT for a channel ID in use and ENOTFOUND for a tenant
// that does not exist.
func (db *DB) CreateAlertChannel(ctx context.Context, tenantID string, c AlertChannel, at time.Time, max int) error {
	to, err := json.Marshal(c.To)
	if err != nil {
		return fmt.Errorf("create alert channel %s: %w", c.ID, err)
	}
	if c.To == nil {
		to = []byte("[]")
	}
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if max > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM alert_channels WHERE tenant_id = ?", tenantID).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return tether.Errorf(tether.ETOOMANY, "the tenant has %d alert channels, the most it may have", n)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO alert_channels
			(id, tenant_id, kind, url, secret, smtp_addr, from_addr, to_addrs, min_severity, rate_per_minute, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, tenantID, c.Kind, c.URL, c.Secret, c.SMTPAddr, c.From, string(to), c.MinSeverity, c.RatePerMinute, nanos(at))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "alert channel %q exists", c.ID)
		case foreignKeyConstraint:
			return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", tenantID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create alert channel %s: %w", c.ID, err)
	}
	return nil
}

// AlertChannels returns the tenant's notification channels in the order
// they were created.
func (db *DB) AlertChannels(ctx context.Context, tenantID string) ([]AlertChannel, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT id, kind, url, secret, smtp_addr, from_addr, to_addrs,
		min_severity, rate_per_minute FROM alert_channels WHERE tenant_id = ? ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("alert channels: %w", err)
	}
	defer rows.Close()
	cs := []AlertChannel{}
	for rows.Next() {
		var (
			c  AlertChannel
			to string
		)
		if err := rows.Scan(&c.ID, &c.Kind, &c.URL, &c.Secret, &c.SMTPAddr, &c.From, &to, &c.MinSeverity, &c.RatePerMinute); err != nil {
			return nil, fmt.Errorf("alert channels: %w", err)
		}
		if to != "[]" {
			if err := json.Unmarshal([]byte(to), &c.To); err != nil {
				return nil, fmt.Errorf("alert channel %s: recipients: %w", c.ID, err)
			}
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("alert channels: %w", err)
	}
	return cs, nil
}

// DeleteAlertChannel deletes one of the tenant's notification channels,
// or returns an ENOTFOUND error.
func (db *DB) DeleteAlertChannel(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM alert_channels WHERE id = ? AND tenant_id = ?", id, tenantID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = tether.Errorf(tether.ENOTFOUND, "alert channel %q not found", id)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete alert channel %s: %w", id, err)
	}
	return nil
}
