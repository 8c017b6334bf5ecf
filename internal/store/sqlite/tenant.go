package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tether-iot/tether"
)

// EnsureTenant inserts t unless a tenant with its ID exists, and reports
// whether it inserted it. An existing tenant is left as it is. A zero
// CreatedAt is stored as the current time.
func (db *DB) EnsureTenant(ctx context.Context, t tether.Tenant) (created bool, err error) {
	if !tether.ValidID(t.ID) {
		return false, tether.Errorf(tether.EINVALID, "invalid tenant id %q", t.ID)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)
			ON CONFLICT (id) DO NOTHING`, t.ID, t.Name, nanos(t.CreatedAt))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		created = n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("ensure tenant %s: %w", t.ID, err)
	}
	return created, nil
}
