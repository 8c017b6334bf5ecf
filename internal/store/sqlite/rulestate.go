package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SaveStates stores the rules engine's program states by key
// (tenant/rule/version) in one transaction: a nil state deletes its key,
// any other replaces it. It is the engine's checkpoint, so it is all or
// nothing.
func (db *DB) SaveStates(ctx context.Context, states map[string][]byte) error {
	if len(states) == 0 {
		return nil
	}
	now := nanos(time.Now())
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for k, b := range states {
			var err error
			if b == nil {
				_, err = tx.ExecContext(ctx, `DELETE FROM rule_state WHERE key = ?`, k)
			} else {
				_, err = tx.ExecContext(ctx, `INSERT INTO rule_state (key, state, updated_at) VALUES (?, ?, ?)
					ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`, k, b, now)
			}
			if err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save rule states: %w", err)
	}
	return nil
}

// LoadStates returns every stored rules engine program state by key.
func (db *DB) LoadStates(ctx context.Context) (map[string][]byte, error) {
	states := map[string][]byte{}
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT key, state FROM rule_state`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k string
				b []byte
			)
			if err := rows.Scan(&k, &b); err != nil {
				return err
			}
			states[k] = b
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("load rule states: %w", err)
	}
	return states, nil
}
