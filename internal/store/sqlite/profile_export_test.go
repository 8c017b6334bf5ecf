package sqlite

// This file gives the profile and quarantine tests in package sqlite_test
// what they need but the API should not offer.

import (
	"context"
	"database/sql"

	"github.com/tether-iot/tether"
)

// SetPresenceRow writes a device's presence row directly, so that the
// device listing's status filter can be tested without the presence
// store's rules.
func SetPresenceRow(ctx context.Context, db *DB, tenantID, deviceID, status string) error {
	return db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO presence (device_id, tenant_id, status, reason, since, seq)
			VALUES (?, ?, ?, ?, 0, 1)
			ON CONFLICT (device_id) DO UPDATE SET status = excluded.status`, deviceID, tenantID, status, tether.ReasonConnected)
		return err
	})
}
