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

// MaxCommandsPage is the largest page Commands returns, and the page size
// it uses when asked for none.
const MaxCommandsPage = 1000

const commandColumns = `id, tenant_id, device_id, seq, name, params, one_way, status, reason,
	idempotency_key, source, confirmed_by, result, timeout, expires_at, created_at, updated_at, history`

// openStatuses is the SQL list of the statuses of a command that is not
// done. It is spelled as in the partial indexes of migration 0005, so that
// SQLite sees a query's condition imply the index's and uses it.
const openStatuses = `('awaiting_confirmation', 'queued', 'sent', 'delivered')`

// scanCommand reads a row of commandColumns.
func scanCommand(row interface{ Scan(...any) error }) (*tether.Command, error) {
	var (
		c                         tether.Command
		params, key, result       sql.NullString
		oneWay                    bool
		timeout, expires, created int64
		updated                   int64
		history                   string
	)
	if err := row.Scan(&c.ID, &c.TenantID, &c.DeviceID, &c.Seq, &c.Name, &params, &oneWay, &c.Status, &c.Reason,
		&key, &c.Source, &c.ConfirmedBy, &result, &timeout, &expires, &created, &updated, &history); err != nil {
		return nil, err
	}
	if params.Valid {
		c.Params = json.RawMessage(params.String)
	}
	if result.Valid {
		c.Result = json.RawMessage(result.String)
	}
	c.OneWay = oneWay
	c.IdempotencyKey = key.String
	c.Timeout = tether.Duration(timeout)
	c.ExpiresAt = fromNanos(expires)
	c.CreatedAt = fromNanos(created)
	c.UpdatedAt = fromNanos(updated)
	if err := json.Unmarshal([]byte(history), &c.History); err != nil {
		return nil, fmt.Errorf("command %s: history: %w", c.ID, err)
	}
	return &c, nil
}

// nullText returns s as a nullable TEXT value: NULL when empty.
func nullText[T ~string | ~[]byte](s T) any {
	if len(s) == 0 {
		return nil
	}
	return string(s)
}

// sentAt returns the time of a command's last sent transition, from which
// its timeout runs, or NULL if it was never sent.
func sentAt(c *tether.Command) any {
	for i := len(c.History) - 1; i >= 0; i-- {
		if c.History[i].Status == tether.CommandSent {
			return nanos(c.History[i].At)
		}
	}
	return nil
}

// CommandGuard answers, inside CreateCommand's transaction, what the
// command guardrails ask about a device's earlier commands. It is an
// alias of an interface literal so that a consumer can spell the same
// type (and so the same CreateCommand signature) without importing this
// package.
type CommandGuard = interface {
	// CountCommands counts the device's commands created after since
	// that were not rejected; name "" counts every name.
	CountCommands(name string, since time.Time) (int, error)
	// FinishedCommands returns the device's n most recently finished
	// commands (succeeded, failed or expired), newest first.
	FinishedCommands(n int) ([]*tether.Command, error)
	// OpenCommands counts the device's commands created at or after since
	// that are not done.
	OpenCommands(since time.Time) (int, error)
}

// commandGuard is the CommandGuard of one device inside a transaction.
type commandGuard struct {
	ctx      context.Context
	tx       *sql.Tx
	deviceID string
}

func (g commandGuard) CountCommands(name string, since time.Time) (int, error) {
	var n int
	var err error
	if name == "" {
		err = g.tx.QueryRowContext(g.ctx, `SELECT count(*) FROM commands
			WHERE device_id = ? AND created_at > ? AND status <> 'rejected'`,
			g.deviceID, nanos(since)).Scan(&n)
	} else {
		err = g.tx.QueryRowContext(g.ctx, `SELECT count(*) FROM commands
			WHERE device_id = ? AND name = ? AND created_at > ? AND status <> 'rejected'`,
			g.deviceID, name, nanos(since)).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("count commands: %w", err)
	}
	return n, nil
}

func (g commandGuard) FinishedCommands(n int) ([]*tether.Command, error) {
	// Only what the circuit breaker reads: a whole row (params, result,
	// history) would be decoded for every command sent.
	rows, err := g.tx.QueryContext(g.ctx, `SELECT id, status, updated_at FROM commands
		WHERE device_id = ? AND status IN ('succeeded', 'failed', 'expired')
		ORDER BY updated_at DESC LIMIT ?`, g.deviceID, n)
	if err != nil {
		return nil, fmt.Errorf("finished commands: %w", err)
	}
	defer rows.Close()
	var cs []*tether.Command
	for rows.Next() {
		var c tether.Command
		var at int64
		if err := rows.Scan(&c.ID, &c.Status, &at); err != nil {
			return nil, fmt.Errorf("finished commands: %w", err)
		}
		c.UpdatedAt = fromNanos(at)
		cs = append(cs, &c)
	}
	return cs, rows.Err()
}

func (g commandGuard) OpenCommands(since time.Time) (int, error) {
	var n int
	err := g.tx.QueryRowContext(g.ctx, `SELECT count(*) FROM commands
		WHERE device_id = ? AND status IN `+openStatuses+` AND created_at >= ?`,
		g.deviceID, nanos(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count open commands: %w", err)
	}
	return n, nil
}

// CreateCommand stores c as its device's next command, in one write
// transaction that:
//
//  1. returns the device's command with c.IdempotencyKey, if there is one,
//     and created false, storing nothing;
//  2. calls admit (unless nil), which may change c (typically to rejected
//     with a reason) after asking the guard about the device's earlier
//     commands; an error from admit rolls back and is returned;
//  3. gives c the device's next seq and inserts it.
//
// The guardrails' counts and the insert are one transaction on the one
// write connection, so concurrent calls (also from several processes)
// cannot both see room for one more command. It returns an ENOTFOUND
// error if the device does not exist.
func (db *DB) CreateCommand(ctx context.Context, c *tether.Command, admit func(CommandGuard) error) (*tether.Command, bool, error) {
	var (
		existing *tether.Command
		seq      int64
	)
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if c.IdempotencyKey != "" {
			e, err := scanCommand(tx.QueryRowContext(ctx, "SELECT "+commandColumns+
				" FROM commands WHERE device_id = ? AND idempotency_key = ?", c.DeviceID, c.IdempotencyKey))
			if err == nil {
				existing = e
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if admit != nil {
			if err := admit(commandGuard{ctx: ctx, tx: tx, deviceID: c.DeviceID}); err != nil {
				return err
			}
		}
		history, err := json.Marshal(c.History)
		if err != nil {
			return err
		}
		// ORDER BY … LIMIT 1 reads one index entry; max(seq) would read
		// every one of the device's.
		err = tx.QueryRowContext(ctx, "SELECT seq FROM commands WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
			c.DeviceID).Scan(&seq)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			seq = 0
		case err != nil:
			return err
		}
		seq++
		_, err = tx.ExecContext(ctx, `INSERT INTO commands (`+commandColumns+`, sent_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.TenantID, c.DeviceID, seq, c.Name, nullText(c.Params), c.OneWay, c.Status, c.Reason,
			nullText(c.IdempotencyKey), c.Source, c.ConfirmedBy, nullText(c.Result), int64(c.Timeout),
			nanos(c.ExpiresAt), nanos(c.CreatedAt), nanos(c.UpdatedAt), string(history), sentAt(c))
		switch constraintOf(err) {
		case foreignKeyConstraint:
			return deviceNotFound(c.DeviceID)
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "command %q already exists", c.ID)
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("create command %s: %w", c.ID, err)
	}
	if existing != nil {
		return existing, false, nil
	}
	c.Seq = seq
	return c, true, nil
}

// Command returns a command of a device, or an ENOTFOUND error.
func (db *DB) Command(ctx context.Context, tenantID, deviceID, id string) (*tether.Command, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+commandColumns+
		" FROM commands WHERE id = ? AND tenant_id = ? AND device_id = ?", id, tenantID, deviceID), scanCommand,
		func() error { return commandNotFound(id) }, "command %s", id)
}

// CommandByKey returns the device's command with an idempotency key, or
// an ENOTFOUND error.
func (db *DB) CommandByKey(ctx context.Context, tenantID, deviceID, key string) (*tether.Command, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+commandColumns+
		" FROM commands WHERE device_id = ? AND idempotency_key = ? AND tenant_id = ?", deviceID, key, tenantID), scanCommand,
		func() error { return tether.Errorf(tether.ENOTFOUND, "no command with idempotency key %q", key) }, "command by key")
}

func commandNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "command %q not found", id)
}

// Commands returns a page of a device's commands in seq order: those with
// the status (any if ""), after the seq after, at most limit of them
// (MaxCommandsPage if limit is out of (0, MaxCommandsPage]).
func (db *DB) Commands(ctx context.Context, tenantID, deviceID, status string, after int64, limit int) ([]*tether.Command, error) {
	if limit <= 0 || limit > MaxCommandsPage {
		limit = MaxCommandsPage
	}
	q := "SELECT " + commandColumns + " FROM commands WHERE device_id = ? AND tenant_id = ? AND seq > ?"
	args := []any{deviceID, tenantID, after}
	if status != "" {
		q += " AND status = ?"
		args = append(args, status)
	}
	q += " ORDER BY seq LIMIT ?"
	args = append(args, limit)
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	cs, err := collect(rows, scanCommand)
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	return cs, nil
}

// OpenCommands returns a device's commands that are not done, in seq
// order.
func (db *DB) OpenCommands(ctx context.Context, tenantID, deviceID string) ([]*tether.Command, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT "+commandColumns+
		" FROM commands WHERE device_id = ? AND status IN "+openStatuses+" AND tenant_id = ? ORDER BY seq",
		deviceID, tenantID)
	if err != nil {
		return nil, fmt.Errorf("open commands: %w", err)
	}
	cs, err := collect(rows, scanCommand)
	if err != nil {
		return nil, fmt.Errorf("open commands: %w", err)
	}
	return cs, nil
}

// UpdateCommand reads a command and calls fn with it inside a write
// transaction; if fn reports a change, the command is written back as fn
// left it. Because every update goes through the one write connection,
// fn sees the latest state and no other update runs in between, so fn
// can decide on the command's current status. It returns the command as
// stored afterwards, whether fn changed it, and an ENOTFOUND error if
// there is no such command.
func (db *DB) UpdateCommand(ctx context.Context, tenantID, deviceID, id string, fn func(*tether.Command) (bool, error)) (*tether.Command, bool, error) {
	var (
		c       *tether.Command
		changed bool
	)
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		c, err = scanCommand(tx.QueryRowContext(ctx, "SELECT "+commandColumns+
			" FROM commands WHERE id = ? AND tenant_id = ? AND device_id = ?", id, tenantID, deviceID))
		if errors.Is(err, sql.ErrNoRows) {
			return commandNotFound(id)
		}
		if err != nil {
			return err
		}
		if changed, err = fn(c); err != nil || !changed {
			return err
		}
		history, err := json.Marshal(c.History)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE commands SET status = ?, reason = ?, confirmed_by = ?,
			result = ?, expires_at = ?, sent_at = ?, updated_at = ?, history = ? WHERE id = ?`,
			c.Status, c.Reason, c.ConfirmedBy, nullText(c.Result), nanos(c.ExpiresAt), sentAt(c),
			nanos(c.UpdatedAt), string(history), c.ID)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("update command %s: %w", id, err)
	}
	return c, changed, nil
}

// DueCommands returns up to limit commands, of any tenant, that are due
// for a sweep at now: not yet delivered and past their expiry time, or
// two-way, sent or delivered, and past their timeout since they were
// sent.
func (db *DB) DueCommands(ctx context.Context, now time.Time, limit int) ([]*tether.Command, error) {
	n := nanos(now)
	// Two selects, so that the first reads a range of the index
	// commands_open per status; the second reads the commands in flight,
	// which are few. Each repeats the index's condition, which SQLite
	// must find in a query to use a partial index. UNION drops a command
	// that is both.
	rows, err := db.read.QueryContext(ctx, "SELECT "+commandColumns+` FROM commands
			WHERE status IN `+openStatuses+` AND status IN ('awaiting_confirmation', 'queued', 'sent')
			AND expires_at <= ?
		UNION
		SELECT `+commandColumns+` FROM commands
			WHERE status IN `+openStatuses+` AND status IN ('sent', 'delivered')
			AND one_way = 0 AND sent_at + timeout <= ?
		LIMIT ?`, n, n, limit)
	if err != nil {
		return nil, fmt.Errorf("due commands: %w", err)
	}
	cs, err := collect(rows, scanCommand)
	if err != nil {
		return nil, fmt.Errorf("due commands: %w", err)
	}
	return cs, nil
}
