package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tether-iot/tether"
)

// CreateAPIKey stores a new API key, filling in a zero CreatedAt with the
// current time. It returns an ECONFLICT error if a key with the ID exists
// and an ENOTFOUND error if the tenant does not exist.
func (db *DB) CreateAPIKey(ctx context.Context, k *tether.APIKey) error {
	if !tether.ValidID(k.ID) {
		return tether.Errorf(tether.EINVALID, "invalid API key id %q", k.ID)
	}
	if !tether.ValidID(k.TenantID) {
		return tether.Errorf(tether.EINVALID, "invalid tenant id %q", k.TenantID)
	}
	if len(k.Hash) == 0 {
		return tether.Errorf(tether.EINVALID, "API key %q has no hash", k.ID)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	k.CreatedAt = k.CreatedAt.UTC()
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (id, tenant_id, name, role, hash, created_at, last_used_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.TenantID, k.Name, k.Role, k.Hash, nanos(k.CreatedAt), nullNanos(k.LastUsedAt))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "API key %q already exists", k.ID)
		case foreignKeyConstraint:
			return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", k.TenantID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create API key %s: %w", k.ID, err)
	}
	return nil
}

// APIKey returns the API key with the ID, in whichever tenant it is, or an
// ENOTFOUND error if there is none.
func (db *DB) APIKey(ctx context.Context, id string) (*tether.APIKey, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+apiKeyColumns+" FROM api_keys WHERE id = ?", id), scanAPIKey,
		func() error { return tether.Errorf(tether.ENOTFOUND, "API key %q not found", id) }, "API key %s", id)
}

const apiKeyColumns = "id, tenant_id, name, role, hash, created_at, last_used_at"

func scanAPIKey(row interface{ Scan(...any) error }) (*tether.APIKey, error) {
	var (
		k        tether.APIKey
		created  int64
		lastUsed sql.NullInt64
	)
	if err := row.Scan(&k.ID, &k.TenantID, &k.Name, &k.Role, &k.Hash, &created, &lastUsed); err != nil {
		return nil, err
	}
	k.CreatedAt, k.LastUsedAt = fromNanos(created), timePtr(lastUsed)
	return &k, nil
}

// CountAPIKeys returns the number of API keys of the tenant with the role.
// An empty tenantID counts the keys of every tenant and an empty role the
// keys of every role, so CountAPIKeys(ctx, "", "") counts all keys (for
// deciding whether to create a first admin key on start-up).
func (db *DB) CountAPIKeys(ctx context.Context, tenantID, role string) (int, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM api_keys
		WHERE (? = '' OR tenant_id = ?) AND (? = '' OR role = ?)`,
		tenantID, tenantID, role, role).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count API keys: %w", err)
	}
	return n, nil
}

// APIKeys returns the tenant's API keys, oldest first.
func (db *DB) APIKeys(ctx context.Context, tenantID string) ([]*tether.APIKey, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT "+apiKeyColumns+" FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id", tenantID)
	if err != nil {
		return nil, fmt.Errorf("API keys: %w", err)
	}
	ks, err := collect(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("API keys: %w", err)
	}
	return ks, nil
}

// DeleteAPIKey deletes an API key of the tenant, or returns ENOTFOUND.
func (db *DB) DeleteAPIKey(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM api_keys WHERE tenant_id = ? AND id = ?", tenantID, id)
		if err != nil {
			return err
		}
		return affected(res, func() error { return tether.Errorf(tether.ENOTFOUND, "API key %q not found", id) })
	})
	if err != nil {
		return fmt.Errorf("delete API key %s: %w", id, err)
	}
	return nil
}
