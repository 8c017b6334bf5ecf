package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/tether-iot/tether"
)

// DefaultTelemetryLimit is the number of raw points or buckets per key a
// telemetry query returns when it asks for no limit.
const DefaultTelemetryLimit = 1000

// WriteMessages stores the points of msgs in one transaction and returns
// how many points it stored.
//
// It stores each message at most once: a message whose ID was stored
// before (and not pruned since, see PruneDedup) is skipped whole, so a
// redelivered batch stores nothing twice. A message with an empty ID is
// not deduplicated. Points of a device that does not exist in the
// message's tenant (deleted meanwhile) are skipped without an error, so
// one such message does not fail the batch. A point with a zero Time is
// stored at its message's ReceivedAt, and a zero ReceivedAt counts as now.
//
// A point with the same device, key and time as a stored one replaces it.
// Each key's latest value moves only forward in time, and each device's
// LastSeenAt becomes the newest ReceivedAt of its messages if that is
// later than the stored one.
func (db *DB) WriteMessages(ctx context.Context, msgs []tether.Message) (stored int, err error) {
	return db.writeMessages(ctx, msgs, nil)
}

// writeMessages is WriteMessages; a non-nil beforeCommit runs last in the
// transaction, and an error from it rolls the transaction back (for tests).
func (db *DB) writeMessages(ctx context.Context, msgs []tether.Message, beforeCommit func() error) (stored int, err error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	now := time.Now()
	type device struct{ tenantID, id string }
	// The newest receive time of each device's messages, so that each
	// device's row is updated once per call rather than once per message.
	newest := make(map[device]int64)
	for i := range msgs {
		m := &msgs[i]
		k := device{m.TenantID, m.DeviceID}
		r := nanos(receivedAt(m, now))
		if old, ok := newest[k]; !ok || r > old {
			newest[k] = r
		}
	}
	type sample struct {
		ts       int64
		kind     tether.Kind
		num, str any
	}
	// The newest point of each series (by id) in this call: the series'
	// latest value is updated once per series, not once per point.
	latest := make(map[int64]sample)
	series := seriesResolver{ctx: ctx, cache: db.series}

	err = db.inWriteTxCommit(ctx, func(tx *sql.Tx) error {
		series.tx = tx
		defer series.close()
		mark, err := tx.PrepareContext(ctx, `INSERT INTO processed_messages (id, at) VALUES (?, ?)
			ON CONFLICT (id) DO NOTHING`)
		if err != nil {
			return err
		}
		defer mark.Close()
		// Updating the device row doubles as the check that the device
		// still exists in the tenant: no row changed means skip its points.
		// It also makes every series the writer resolves one of a device
		// of the message's tenant.
		touch, err := tx.PrepareContext(ctx, `UPDATE devices
			SET last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < ? THEN ? ELSE last_seen_at END
			WHERE id = ? AND tenant_id = ?`)
		if err != nil {
			return err
		}
		defer touch.Close()
		insert, err := tx.PrepareContext(ctx, `INSERT INTO telemetry (series_id, ts, kind, num, str)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (series_id, ts) DO UPDATE SET kind = excluded.kind, num = excluded.num, str = excluded.str`)
		if err != nil {
			return err
		}
		defer insert.Close()

		exists := make(map[device]bool)
		for i := range msgs {
			m := &msgs[i]
			recv := receivedAt(m, now)
			if m.ID != "" {
				res, err := mark.ExecContext(ctx, m.ID, nanos(recv))
				if err != nil {
					return fmt.Errorf("message %s: %w", m.ID, err)
				}
				if n, err := res.RowsAffected(); err != nil {
					return err
				} else if n == 0 {
					continue // stored before
				}
			}
			k := device{m.TenantID, m.DeviceID}
			ok, checked := exists[k]
			if !checked {
				r := newest[k]
				res, err := touch.ExecContext(ctx, r, r, m.DeviceID, m.TenantID)
				if err != nil {
					return fmt.Errorf("device %s: %w", m.DeviceID, err)
				}
				n, err := res.RowsAffected()
				if err != nil {
					return err
				}
				ok = n > 0
				exists[k] = ok
			}
			if !ok {
				continue
			}
			for _, p := range m.Points {
				ts := p.Time
				if ts.IsZero() {
					ts = recv
				}
				s := sample{ts: nanos(ts), kind: p.Kind}
				if p.Kind == tether.KindString {
					s.str = p.Str
				} else {
					s.num = p.Num
				}
				id, err := series.id(m.TenantID, m.DeviceID, p.Key)
				if err != nil {
					return fmt.Errorf("device %s key %q: series: %w", m.DeviceID, p.Key, err)
				}
				if _, err := insert.ExecContext(ctx, id, s.ts, int64(s.kind), s.num, s.str); err != nil {
					return fmt.Errorf("device %s key %q: %w", m.DeviceID, p.Key, err)
				}
				stored++
				if old, ok := latest[id]; !ok || s.ts >= old.ts {
					latest[id] = s
				}
			}
		}

		if len(latest) > 0 {
			update, err := tx.PrepareContext(ctx, `UPDATE series
				SET latest_ts = ?, latest_kind = ?, latest_num = ?, latest_str = ?
				WHERE id = ? AND (latest_ts IS NULL OR latest_ts <= ?)`)
			if err != nil {
				return err
			}
			defer update.Close()
			// In id order, so that the updates walk the table's pages once.
			for _, id := range slices.Sorted(maps.Keys(latest)) {
				s := latest[id]
				if _, err := update.ExecContext(ctx, s.ts, int64(s.kind), s.num, s.str, id, s.ts); err != nil {
					return fmt.Errorf("latest of series %d: %w", id, err)
				}
			}
		}
		if beforeCommit != nil {
			return beforeCommit()
		}
		return nil
	}, func(tx *sql.Tx) error { return db.series.commitAdding(tx, series.found) })
	if err != nil {
		return 0, fmt.Errorf("write messages: %w", err)
	}
	return stored, nil
}

func receivedAt(m *tether.Message, now time.Time) time.Time {
	if m.ReceivedAt.IsZero() {
		return now
	}
	return m.ReceivedAt
}

// Telemetry returns the points of one device of the tenant, one series per
// key in key order: the keys q.Keys names, or every key the device has
// ever sent if it names none. A key without points in the range has a
// series with no samples. It returns an ENOTFOUND error if the tenant has
// no such device and an EINVALID error for a malformed query.
//
// The range is From <= t < To; a zero From or To leaves that end open.
//
// Without Agg and Bucket the samples are the raw points, the earliest
// q.Limit (DefaultTelemetryLimit if q.Limit <= 0) of each key in time
// order. With both, a sample is one bucket of Bucket length, aligned to
// the Unix epoch and timed at its start, again at most q.Limit per key:
//
//   - avg, min, max and sum use the number and bool (as 0 or 1) points of
//     the bucket; a bucket with only string points has no sample;
//   - count counts every point of the bucket, as an int64;
//   - first and last are the value of the earliest and the latest point of
//     the bucket, typed by its kind like a raw sample.
//
// A sample's Value is a float64 for a number or an aggregate, a bool for a
// bool and a string for a string.
func (db *DB) Telemetry(ctx context.Context, q tether.TelemetryQuery) ([]tether.Series, error) {
	query, err := telemetrySQL(q)
	if err != nil {
		return nil, err
	}
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.From.IsZero() {
		from = nanos(q.From)
	}
	if !q.To.IsZero() {
		to = nanos(q.To)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultTelemetryLimit
	}
	var result []tether.Series
	err = db.inReadTx(ctx, func(tx *sql.Tx) error {
		if err := checkDevice(ctx, tx, q.TenantID, q.DeviceID); err != nil {
			return err
		}
		keys, err := seriesKeys(ctx, tx, q)
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, query)
		if err != nil {
			return err
		}
		defer stmt.Close()
		result = make([]tether.Series, 0, len(keys))
		for _, k := range keys {
			samples := []tether.Sample{}
			if k.id != 0 {
				samples, err = querySamples(ctx, stmt, q.Agg, k.id, from, to, limit)
				if err != nil {
					return fmt.Errorf("key %q: %w", k.key, err)
				}
			}
			result = append(result, tether.Series{Key: k.key, Samples: samples})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry of %s: %w", q.DeviceID, err)
	}
	return result, nil
}

// telemetrySQL validates q and returns the query for one series' samples.
// Its parameters are series_id, from, to and limit.
func telemetrySQL(q tether.TelemetryQuery) (string, error) {
	const where = "WHERE series_id = ? AND ts >= ? AND ts < ?"
	switch {
	case !q.From.IsZero() && !q.To.IsZero() && q.To.Before(q.From):
		return "", tether.Errorf(tether.EINVALID, "the end of the time range is before its start")
	case q.Bucket < 0:
		return "", tether.Errorf(tether.EINVALID, "bucket must be positive")
	case q.Agg == "" && q.Bucket == 0:
		return "SELECT ts, kind, num, str FROM telemetry " + where + " ORDER BY ts LIMIT ?", nil
	case q.Agg == "":
		return "", tether.Errorf(tether.EINVALID, "a bucket needs an aggregation")
	case !slices.Contains(tether.Aggregations, q.Agg):
		return "", tether.Errorf(tether.EINVALID, "unknown aggregation %q", q.Agg)
	case q.Bucket == 0:
		return "", tether.Errorf(tether.EINVALID, "aggregation %q needs a bucket", q.Agg)
	}
	// floor(ts / b) * b, also for times before 1970 (% truncates toward
	// zero). The width is an integer, so formatting it in is safe.
	b := int64(q.Bucket)
	bucket := fmt.Sprintf("(ts - (((ts %% %d) + %d) %% %d))", b, b, b)
	var sel, filter string
	switch q.Agg {
	case "avg", "min", "max", "sum":
		sel = q.Agg + "(num)"
		filter = fmt.Sprintf(" AND kind <> %d", tether.KindString)
	case "count":
		sel = "count(*)"
	case "first":
		// SQLite takes the bare columns of a row with min() or max() from
		// the row that has the minimum or maximum; PostgreSQL needs
		// DISTINCT ON or a window function instead.
		sel = "min(ts), kind, num, str"
	case "last":
		sel = "max(ts), kind, num, str"
	}
	return "SELECT " + bucket + " AS bucket, " + sel + " FROM telemetry " + where + filter +
		" GROUP BY bucket ORDER BY bucket LIMIT ?", nil
}

// querySamples runs a telemetrySQL query for one series.
func querySamples(ctx context.Context, stmt *sql.Stmt, agg string, seriesID, from, to int64, limit int) ([]tether.Sample, error) {
	rows, err := stmt.QueryContext(ctx, seriesID, from, to, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	samples := []tether.Sample{}
	for rows.Next() {
		var (
			t, ts, kind int64
			num         sql.NullFloat64
			str         sql.NullString
			count       int64
			s           tether.Sample
		)
		switch agg {
		case "":
			err = rows.Scan(&t, &kind, &num, &str)
			s = tether.Sample{Time: fromNanos(t), Value: value(kind, num, str)}
		case "count":
			err = rows.Scan(&t, &count)
			s = tether.Sample{Time: fromNanos(t), Value: count}
		case "first", "last":
			err = rows.Scan(&t, &ts, &kind, &num, &str)
			s = tether.Sample{Time: fromNanos(t), Value: value(kind, num, str)}
		default:
			err = rows.Scan(&t, &num)
			if err == nil && !num.Valid {
				continue
			}
			s = tether.Sample{Time: fromNanos(t), Value: num.Float64}
		}
		if err != nil {
			return nil, err
		}
		samples = append(samples, s)
	}
	return samples, rows.Err()
}

// seriesKey is a key a query asks for and the id of its series, 0 if the
// device has no points of that key.
type seriesKey struct {
	key string
	id  int64
}

// seriesKeys returns the keys a query asks for, sorted and without
// duplicates, with their series ids; no keys means every key of the
// device. Series are looked up by device and tenant, so that a series of
// another tenant's device is never read.
func seriesKeys(ctx context.Context, tx *sql.Tx, q tether.TelemetryQuery) ([]seriesKey, error) {
	if len(q.Keys) > 0 {
		keys := slices.Clone(q.Keys)
		slices.Sort(keys)
		keys = slices.Compact(keys)
		stmt, err := tx.PrepareContext(ctx, "SELECT id FROM series WHERE device_id = ? AND key = ? AND tenant_id = ?")
		if err != nil {
			return nil, err
		}
		defer stmt.Close()
		result := make([]seriesKey, len(keys))
		for i, k := range keys {
			result[i].key = k
			err := stmt.QueryRowContext(ctx, q.DeviceID, k, q.TenantID).Scan(&result[i].id)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
		}
		return result, nil
	}
	// Every series has points: a series is created in the transaction
	// that writes its first point, and deleted with its points.
	rows, err := tx.QueryContext(ctx, "SELECT key, id FROM series WHERE device_id = ? AND tenant_id = ? ORDER BY key",
		q.DeviceID, q.TenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []seriesKey
	for rows.Next() {
		var k seriesKey
		if err := rows.Scan(&k.key, &k.id); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// Latest returns the newest value of each key of one device of the
// tenant, in key order. It returns an ENOTFOUND error if the tenant has no
// such device.
func (db *DB) Latest(ctx context.Context, tenantID, deviceID string) ([]tether.Latest, error) {
	result := []tether.Latest{}
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		if err := checkDevice(ctx, tx, tenantID, deviceID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT key, latest_ts, latest_kind, latest_num, latest_str FROM series
			WHERE device_id = ? AND tenant_id = ? AND latest_ts IS NOT NULL ORDER BY key`, deviceID, tenantID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				l        tether.Latest
				ts, kind int64
				num      sql.NullFloat64
				str      sql.NullString
			)
			if err := rows.Scan(&l.Key, &ts, &kind, &num, &str); err != nil {
				return err
			}
			l.Time = fromNanos(ts)
			l.Value = value(kind, num, str)
			result = append(result, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("latest of %s: %w", deviceID, err)
	}
	return result, nil
}

// PruneDedup forgets the IDs of messages received before before and
// returns how many it forgot. A message redelivered after its ID is
// forgotten is stored again, so before must be older than the bus's
// redelivery window.
func (db *DB) PruneDedup(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := db.inWriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM processed_messages WHERE at < ?", nanos(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune dedup: %w", err)
	}
	return n, nil
}

// checkDevice returns an ENOTFOUND error if the tenant has no device id.
func checkDevice(ctx context.Context, tx *sql.Tx, tenantID, id string) error {
	var one int
	err := tx.QueryRowContext(ctx, "SELECT 1 FROM devices WHERE id = ? AND tenant_id = ?", id, tenantID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return deviceNotFound(id)
	}
	return err
}

// value returns a stored point's value typed by its kind, as
// [tether.Point.Value] does.
func value(kind int64, num sql.NullFloat64, str sql.NullString) any {
	return tether.Point{Kind: tether.Kind(kind), Num: num.Float64, Str: str.String}.Value()
}
