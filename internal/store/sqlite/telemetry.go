package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
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
//
// A point with a Quarantine reason is stored in the quarantine table
// instead (see Quarantined), and never in the series: it makes no series,
// no latest value and no aggregate. It is not counted in stored.
func (db *DB) WriteMessages(ctx context.Context, msgs []tether.Message) (stored int, err error) {
	return db.writeMessages(ctx, msgs, nil)
}

// The bulk statements of WriteMessages.
var (
	// findProcessed returns which of some message IDs were stored before.
	findProcessed = &bulk{prefix: "SELECT id FROM processed_messages WHERE id IN (", row: "?", suffix: ")", params: 1}
	markProcessed = &bulk{prefix: "INSERT INTO processed_messages (id, at) VALUES ", row: "(?, ?)",
		suffix: " ON CONFLICT (id) DO NOTHING", params: 2}
	// touchDevices moves devices' last_seen_at forward. It updates the
	// rows of the devices that exist in the tenant, and no others, which
	// is how the writer learns that a device was deleted meanwhile.
	// UPDATE … FROM is in SQLite since 3.33 and in PostgreSQL.
	touchDevices = &bulk{prefix: "WITH v (tenant_id, id, at) AS (VALUES ", row: "(?, ?, ?)",
		suffix: `) UPDATE devices
			SET last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < v.at THEN v.at ELSE last_seen_at END
			FROM v WHERE devices.id = v.id AND devices.tenant_id = v.tenant_id`, params: 3,
		single: `UPDATE devices
			SET last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < ?3 THEN ?3 ELSE last_seen_at END
			WHERE id = ?2 AND tenant_id = ?1`}
	// A later row with the same series and time replaces an earlier one,
	// within one statement too.
	insertPoints = &bulk{prefix: "INSERT INTO telemetry (series_id, ts, kind, num, str) VALUES ", row: "(?, ?, ?, ?, ?)",
		suffix: " ON CONFLICT (series_id, ts) DO UPDATE SET kind = excluded.kind, num = excluded.num, str = excluded.str", params: 5}
	updateLatest = &bulk{prefix: "WITH v (id, ts, kind, num, str) AS (VALUES ", row: "(?, ?, ?, ?, ?)",
		suffix: `) UPDATE series
			SET latest_ts = v.ts, latest_kind = v.kind, latest_num = v.num, latest_str = v.str
			FROM v WHERE series.id = v.id AND (series.latest_ts IS NULL OR series.latest_ts <= v.ts)`, params: 5,
		single: `UPDATE series SET latest_ts = ?2, latest_kind = ?3, latest_num = ?4, latest_str = ?5
			WHERE id = ?1 AND (latest_ts IS NULL OR latest_ts <= ?2)`}
)

// point is a row of the telemetry table.
type point struct {
	series int64
	ts     int64
	kind   tether.Kind
	num    float64
	str    string
}

// value returns the point's num and str columns.
func (p *point) value() (num, str any) {
	if p.kind == tether.KindString {
		return nil, p.str
	}
	return p.num, nil
}

// device names a device of a tenant.
type device struct{ tenantID, id string }

// writeMessages is WriteMessages; a non-nil beforeCommit runs last in the
// transaction, and an error from it rolls the transaction back (for tests).
//
// It works in whole-batch steps, each a few bulk statements (see bulk):
// drop the messages stored before, touch the devices (learning which
// still exist), insert the points sorted by series and time, and move each
// series' latest value forward.
func (db *DB) writeMessages(ctx context.Context, msgs []tether.Message, beforeCommit func() error) (stored int, err error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	now := time.Now()
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
	series := seriesResolver{ctx: ctx, cache: db.series}

	err = db.inWriteTxCommit(ctx, func(tx *sql.Tx) error {
		series.tx = tx
		defer series.close()
		e := &bulkExec{ctx: ctx, tx: tx, cache: db.stmts}

		fresh, err := freshMessages(e, msgs, now)
		if err != nil {
			return err
		}
		exists, err := touch(e, msgs, fresh, newest)
		if err != nil {
			return err
		}

		n := 0
		for _, i := range fresh {
			n += len(msgs[i].Points)
		}
		points := make([]point, 0, n)
		var quarantine quarantineWriter
		defer quarantine.close()
		for _, i := range fresh {
			m := &msgs[i]
			if !exists[device{m.TenantID, m.DeviceID}] {
				continue
			}
			recv := receivedAt(m, now)
			for _, p := range m.Points {
				ts := p.Time
				if ts.IsZero() {
					ts = recv
				}
				if p.Quarantine != "" {
					if err := quarantine.write(ctx, tx, m, &p, ts, recv); err != nil {
						return fmt.Errorf("device %s key %q: quarantine: %w", m.DeviceID, p.Key, err)
					}
					continue
				}
				id, err := series.id(m.TenantID, m.DeviceID, p.Key)
				if err != nil {
					return fmt.Errorf("device %s key %q: series: %w", m.DeviceID, p.Key, err)
				}
				points = append(points, point{series: id, ts: nanos(ts), kind: p.Kind, num: p.Num, str: p.Str})
			}
		}
		// In key order, so that each statement walks the table's pages
		// once; stable, so that of two points with the same series and
		// time the later one is written last and stays.
		slices.SortStableFunc(points, func(a, b point) int {
			if c := cmp.Compare(a.series, b.series); c != 0 {
				return c
			}
			return cmp.Compare(a.ts, b.ts)
		})
		err = e.exec(insertPoints, len(points), func(dst []any, i int) []any {
			p := &points[i]
			num, str := p.value()
			return append(dst, p.series, p.ts, int64(p.kind), num, str)
		}, nil)
		if err != nil {
			return fmt.Errorf("insert points: %w", err)
		}
		stored = len(points)

		// Each series' newest point of this call is the last of its run
		// (of two at the same time, the later one, as in the table).
		// They are gathered in place: the points are written.
		latest := points[:0]
		for i := range points {
			if i+1 == len(points) || points[i+1].series != points[i].series {
				latest = append(latest, points[i])
			}
		}
		err = e.exec(updateLatest, len(latest), func(dst []any, i int) []any {
			p := &latest[i]
			num, str := p.value()
			return append(dst, p.series, p.ts, int64(p.kind), num, str)
		}, nil)
		if err != nil {
			return fmt.Errorf("latest values: %w", err)
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

// freshMessages returns the indexes of the messages in msgs that were not
// stored before and marks them stored: a message whose ID is in
// processed_messages, or that repeats the ID of an earlier one in msgs, is
// left out. A message without an ID is always fresh.
func freshMessages(e *bulkExec, msgs []tether.Message, now time.Time) ([]int, error) {
	var ids []string // of the messages with an ID, each once
	first := make(map[string]int, len(msgs))
	fresh := make([]int, 0, len(msgs))
	for i := range msgs {
		id := msgs[i].ID
		if id == "" {
			fresh = append(fresh, i)
			continue
		}
		if _, seen := first[id]; !seen {
			first[id] = i
			ids = append(ids, id)
		}
	}
	// Usually none of them was stored before, and the query returns
	// nothing.
	err := e.query(findProcessed, len(ids), func(dst []any, i int) []any { return append(dst, ids[i]) },
		func(rs *sql.Rows) error {
			var id string
			if err := rs.Scan(&id); err != nil {
				return err
			}
			delete(first, id)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("find stored messages: %w", err)
	}
	if len(first) < len(ids) {
		ids = slices.DeleteFunc(ids, func(id string) bool { _, ok := first[id]; return !ok })
	}
	err = e.exec(markProcessed, len(ids), func(dst []any, i int) []any {
		m := &msgs[first[ids[i]]]
		return append(dst, m.ID, nanos(receivedAt(m, now)))
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("mark messages stored: %w", err)
	}
	for _, i := range first {
		fresh = append(fresh, i)
	}
	// In message order, so that the order of points in msgs decides which
	// of two with the same series and time stays.
	slices.Sort(fresh)
	return fresh, nil
}

// touch moves the last_seen_at of the devices of the fresh messages to the
// newest receive time of their messages and returns which of them exist
// in their message's tenant.
func touch(e *bulkExec, msgs []tether.Message, fresh []int, newest map[device]int64) (map[device]bool, error) {
	var devices []device
	exists := make(map[device]bool)
	for _, i := range fresh {
		k := device{msgs[i].TenantID, msgs[i].DeviceID}
		if _, ok := exists[k]; !ok {
			exists[k] = true
			devices = append(devices, k)
		}
	}
	// Each chunk's update changes one row per device that exists; when
	// it changes fewer, look up which are missing.
	err := e.exec(touchDevices, len(devices), func(dst []any, i int) []any {
		d := devices[i]
		return append(dst, d.tenantID, d.id, newest[d])
	}, func(res sql.Result, from, to int) error {
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if int(n) == to-from {
			return nil
		}
		for _, d := range devices[from:to] {
			var one int
			err := e.tx.QueryRowContext(e.ctx, "SELECT 1 FROM devices WHERE id = ? AND tenant_id = ?", d.id, d.tenantID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				exists[d] = false
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("touch devices: %w", err)
	}
	return exists, nil
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
	return bucketsSQL(q.Agg, int64(q.Bucket)), nil
}

// bucketOf is the SQL expression of the start of the bucket of width b
// that holds time ts: floor(ts / b) * b, also for times before 1970 (%
// truncates toward zero). The width is an integer, so formatting it in is
// safe.
func bucketOf(ts string, b int64) string {
	return fmt.Sprintf("(%[1]s - (((%[1]s %% %[2]d) + %[2]d) %% %[2]d))", ts, b)
}

// bucketsSQL returns the query of one series' buckets of width b for
// agg, with the parameters of telemetrySQL (as ?1 to ?4). Its rows are a
// bucket's start and its aggregate, or for first and last the start and
// the point's ts, kind, num and str.
//
// It walks the primary key from bucket to bucket rather than grouping by
// the bucket: SQLite cannot know that the bucket grows with ts, so a
// GROUP BY sorts every point of the range in a temporary B-tree first,
// which for 30 days of 1 s points in 1 h buckets cost five times as long
// as reading them in key order. A recursive CTE finds each bucket's first
// point, one search of the key each: the first point of the range, then
// the first at or after the end of the previous one's bucket, so that
// buckets without points cost nothing. The outer query aggregates each
// bucket by a search of the key range from its first point to its end (or
// the end of the range, whichever is first); first and last read one
// point each. Every point is read once, in key order, and none is sorted.
//
// With fewer than about ten points per bucket the walk costs more than
// the sort: two searches of the key per bucket rather than a sorted row
// per point, at one point per bucket two to four times as much (720
// buckets: 1.0 against 0.45 ms with mattn, 3.3 against 0.85 ms with
// modernc; see BenchmarkBuckets). That is a few milliseconds at most,
// while the sort's cost grows with the points of the range whatever the
// limit. Which one wins depends on the points per bucket, which neither
// the range nor the number of buckets tells, so the query does not choose
// between them.
//
// Each row of the CTE but a last NULL is a bucket that GROUP BY would
// make (for avg, min, max and sum, one with a point that is not a string,
// as only those pass their filter), in time order, so its LIMIT stops the
// walk at the limit. The CTE is a co-routine that the outer query reads
// in that order; CROSS JOIN keeps it the outer loop of first and last,
// which the planner would otherwise make an automatic index of.
func bucketsSQL(agg string, b int64) string {
	var filter string
	if agg == "avg" || agg == "min" || agg == "max" || agg == "sum" {
		filter = fmt.Sprintf(" AND kind <> %d", tether.KindString)
	}
	bucket := bucketOf("w.first", b)
	// When the bucket's start plus b overflows, SQLite makes the sum a
	// REAL above every integer: the walk ends and min picks ?3.
	next := fmt.Sprintf("%s + %d", bucket, b)
	end := "min(" + next + ", ?3)"
	cte := "WITH RECURSIVE w(first) AS (" +
		"SELECT (SELECT ts FROM telemetry WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3" + filter + " ORDER BY ts LIMIT 1)" +
		" UNION ALL SELECT (SELECT ts FROM telemetry WHERE series_id = ?1 AND ts >= " + next + " AND ts < ?3" + filter +
		" ORDER BY ts LIMIT 1) FROM w WHERE w.first IS NOT NULL LIMIT ?4) "
	var sel string
	switch agg {
	case "avg", "min", "max", "sum":
		sel = agg + "(num)"
	case "count":
		sel = "count(*)"
	case "first":
		return cte + "SELECT " + bucket + ", p.ts, p.kind, p.num, p.str FROM w CROSS JOIN telemetry p" +
			" ON p.series_id = ?1 AND p.ts = w.first"
	case "last":
		return cte + "SELECT " + bucket + ", p.ts, p.kind, p.num, p.str FROM w CROSS JOIN telemetry p" +
			" ON p.series_id = ?1 AND p.ts = (SELECT ts FROM telemetry WHERE series_id = ?1 AND ts < " + end + " ORDER BY ts DESC LIMIT 1)"
	}
	return cte + "SELECT " + bucket + ", (SELECT " + sel + " FROM telemetry WHERE series_id = ?1 AND ts >= w.first AND ts < " + end + filter +
		") FROM w WHERE w.first IS NOT NULL"
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
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
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
