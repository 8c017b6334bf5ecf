package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/tether-iot/tether"
)

// The rule actions' outbox (migration 0009). A rule result's actions are
// written here in the transaction that records the result, then run by
// workers that claim due rows for a lease: a worker that dies with a row
// claimed leaves it to whoever claims it once the lease ends, so every
// action runs at least once. A row's attempts count is also its claim's
// fencing token: finishing, rescheduling, dead-lettering and releasing a
// row apply only while its attempts are still those of the caller's
// claim, never to a row another worker has claimed since.

// ActionJob and ActionDeadLetter are the outbox's rows, the domain
// package's types, so that the action runner fits the store as it is.
type (
	ActionJob        = tether.ActionJob
	ActionDeadLetter = tether.ActionDeadLetter
)

// MaxActionDeadLettersPage is the largest page ActionDeadLetters returns.
const MaxActionDeadLettersPage = 1000

const actionJobColumns = `id, tenant_id, rule_id, rule_version, device_id, action_index, action, result,
	attempts, next_attempt_at, last_error, created_at`

func scanActionJob(row interface{ Scan(...any) error }) (ActionJob, error) {
	var (
		j               ActionJob
		action, result  string
		next, createdAt int64
	)
	if err := row.Scan(&j.ID, &j.TenantID, &j.RuleID, &j.RuleVersion, &j.DeviceID, &j.Index, &action, &result,
		&j.Attempts, &next, &j.LastError, &createdAt); err != nil {
		return j, err
	}
	j.Action, j.Result = json.RawMessage(action), json.RawMessage(result)
	j.NextAttemptAt, j.CreatedAt = fromNanos(next), fromNanos(createdAt)
	return j, nil
}

// EnqueueActions stores jobs in the outbox, all in one transaction, each
// due at its NextAttemptAt with its Attempts (normally 0). It returns an
// ECONFLICT error, storing none, if an ID is taken.
func (db *DB) EnqueueActions(ctx context.Context, jobs []ActionJob) error {
	if len(jobs) == 0 {
		return nil
	}
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO rule_outbox (`+actionJobColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, j := range jobs {
			_, err := stmt.ExecContext(ctx, j.ID, j.TenantID, j.RuleID, j.RuleVersion, j.DeviceID, j.Index,
				string(j.Action), string(j.Result), j.Attempts, nanos(j.NextAttemptAt), j.LastError, nanos(j.CreatedAt))
			if constraintOf(err) == uniqueConstraint {
				return tether.Errorf(tether.ECONFLICT, "action delivery %q already exists", j.ID)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("enqueue %d actions: %w", len(jobs), err)
	}
	return nil
}

// ClaimActions claims up to limit outbox rows due at now (of every
// tenant), oldest due first: each one's attempts grow by one and it is not
// due again before now + lease, by when its worker must have finished,
// rescheduled, dead-lettered or released it. It returns the claimed rows
// in the order they were created.
func (db *DB) ClaimActions(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]ActionJob, error) {
	if limit <= 0 {
		return nil, nil
	}
	var jobs []ActionJob
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		jobs = jobs[:0]
		rows, err := tx.QueryContext(ctx, `UPDATE rule_outbox SET attempts = attempts + 1, next_attempt_at = ?
			WHERE id IN (SELECT id FROM rule_outbox WHERE next_attempt_at <= ? ORDER BY next_attempt_at, created_at LIMIT ?)
			RETURNING `+actionJobColumns, nanos(now.Add(lease)), nanos(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			j, err := scanActionJob(rows)
			if err != nil {
				return err
			}
			jobs = append(jobs, j)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim actions: %w", err)
	}
	// RETURNING gives the rows in no particular order.
	sort.Slice(jobs, func(a, b int) bool {
		if !jobs[a].CreatedAt.Equal(jobs[b].CreatedAt) {
			return jobs[a].CreatedAt.Before(jobs[b].CreatedAt)
		}
		return jobs[a].ID < jobs[b].ID
	})
	return jobs, nil
}

// NextActionDue returns when the outbox's next row is due (claimed rows
// when their lease ends), and false if the outbox is empty.
func (db *DB) NextActionDue(ctx context.Context) (time.Time, bool, error) {
	var next sql.NullInt64
	if err := db.read.QueryRowContext(ctx, "SELECT min(next_attempt_at) FROM rule_outbox").Scan(&next); err != nil {
		return time.Time{}, false, fmt.Errorf("next action due: %w", err)
	}
	if !next.Valid {
		return time.Time{}, false, nil
	}
	return fromNanos(next.Int64), true, nil
}

// FinishAction deletes the outbox row of an action that succeeded.
// attempts is the row's attempts as claimed; if the row has been claimed
// again since (or is gone), nothing changes and the error is ECONFLICT.
func (db *DB) FinishAction(ctx context.Context, tenantID, id string, attempts int) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM rule_outbox WHERE id = ? AND tenant_id = ? AND attempts = ?",
			id, tenantID, attempts)
		return claimed(res, err, id)
	})
	if err != nil {
		return fmt.Errorf("finish action %s: %w", id, err)
	}
	return nil
}

// RetryAction reschedules the outbox row of an action that failed: due
// at next, with the error. attempts is as for FinishAction.
func (db *DB) RetryAction(ctx context.Context, tenantID, id string, attempts int, next time.Time, lastErr string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE rule_outbox SET next_attempt_at = ?, last_error = ?
			WHERE id = ? AND tenant_id = ? AND attempts = ?`, nanos(next), lastErr, id, tenantID, attempts)
		return claimed(res, err, id)
	})
	if err != nil {
		return fmt.Errorf("retry action %s: %w", id, err)
	}
	return nil
}

// ReleaseAction hands back a claimed outbox row whose attempt was
// interrupted before it ended (its worker is stopping): the attempt is
// not counted and the row is due at at. attempts is as for FinishAction.
func (db *DB) ReleaseAction(ctx context.Context, tenantID, id string, attempts int, at time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE rule_outbox SET attempts = attempts - 1, next_attempt_at = ?
			WHERE id = ? AND tenant_id = ? AND attempts = ?`, nanos(at), id, tenantID, attempts)
		return claimed(res, err, id)
	})
	if err != nil {
		return fmt.Errorf("release action %s: %w", id, err)
	}
	return nil
}

// DeadLetterAction moves the outbox row of an action that failed for
// good to the dead letters, with the error and the time, in one
// transaction. attempts is as for FinishAction.
func (db *DB) DeadLetterAction(ctx context.Context, tenantID, id string, attempts int, at time.Time, lastErr string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO rule_dead_letters
			(id, tenant_id, rule_id, rule_version, device_id, action_index, action, result, attempts, error, created_at, failed_at)
			SELECT id, tenant_id, rule_id, rule_version, device_id, action_index, action, result, attempts, ?, created_at, ?
			FROM rule_outbox WHERE id = ? AND tenant_id = ? AND attempts = ?`,
			lastErr, nanos(at), id, tenantID, attempts)
		if err := claimed(res, err, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM rule_outbox WHERE id = ?", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("dead-letter action %s: %w", id, err)
	}
	return nil
}

// claimed turns the result of a statement on one claimed outbox row into
// an ECONFLICT error if it changed no row.
func claimed(res sql.Result, err error, id string) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return tether.Errorf(tether.ECONFLICT, "action delivery %q is no longer claimed by this attempt", id)
	}
	return nil
}

// ActionDeadLetters returns a tenant's dead letters, of one rule (or of
// all if ruleID is ""), newest first, at most limit of them (100 if limit
// is 0, never more than MaxActionDeadLettersPage).
func (db *DB) ActionDeadLetters(ctx context.Context, tenantID, ruleID string, limit int) ([]ActionDeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxActionDeadLettersPage)
	q := `SELECT id, tenant_id, rule_id, rule_version, device_id, action_index, action, result, attempts, error, created_at, failed_at
		FROM rule_dead_letters WHERE tenant_id = ?`
	args := []any{tenantID}
	if ruleID != "" {
		q += " AND rule_id = ?"
		args = append(args, ruleID)
	}
	q += " ORDER BY failed_at DESC, id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("dead letters of rule %s: %w", ruleID, err)
	}
	defer rows.Close()
	dls := []ActionDeadLetter{}
	for rows.Next() {
		var (
			d                 ActionDeadLetter
			action, result    string
			created, failedAt int64
		)
		if err := rows.Scan(&d.ID, &d.TenantID, &d.RuleID, &d.RuleVersion, &d.DeviceID, &d.Index, &action, &result,
			&d.Attempts, &d.Error, &created, &failedAt); err != nil {
			return nil, fmt.Errorf("dead letters of rule %s: %w", ruleID, err)
		}
		d.Action, d.Result = json.RawMessage(action), json.RawMessage(result)
		d.CreatedAt, d.FailedAt = fromNanos(created), fromNanos(failedAt)
		dls = append(dls, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dead letters of rule %s: %w", ruleID, err)
	}
	return dls, nil
}
