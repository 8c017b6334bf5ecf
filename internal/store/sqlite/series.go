package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// seriesCache maps a device's key to the id of its row in the series
// table, so that the writer binds one integer per point instead of looking
// the series up.
//
// Ids enter the cache only after the transaction that created or read
// them has committed, and leave it when their device is deleted. Both
// happen while mu is held across the commit, so that the cache changes in
// commit order: otherwise a writer that committed new ids could add them
// after a DeleteDevice that committed later had evicted the device, and
// leave ids of deleted rows behind. The writer and DeleteDevice share the
// one write connection, so holding mu across a commit makes nobody wait
// who would not wait for the connection anyway.
//
// The cache holds every series written since Open (about 100 bytes each,
// so 1 MiB for 10,000 series) and is never trimmed.
type seriesCache struct {
	mu  sync.Mutex
	ids map[string]map[string]int64 // device id → key → series id
}

func newSeriesCache() *seriesCache {
	return &seriesCache{ids: make(map[string]map[string]int64)}
}

// lookup returns the cached id of a device's key.
func (c *seriesCache) lookup(deviceID, key string) (int64, bool) {
	c.mu.Lock()
	id, ok := c.ids[deviceID][key]
	c.mu.Unlock()
	return id, ok
}

// commitAdding commits tx and, if that succeeds, adds ids (device id → key
// → series id) to the cache.
func (c *seriesCache) commitAdding(tx *sql.Tx, ids map[string]map[string]int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := tx.Commit(); err != nil {
		return err
	}
	for dev, keys := range ids {
		m := c.ids[dev]
		if m == nil {
			m = make(map[string]int64, len(keys))
			c.ids[dev] = m
		}
		for k, id := range keys {
			m[k] = id
		}
	}
	return nil
}

// commitEvicting commits tx and drops the ids of device deviceID from the
// cache, also if the commit failed: a dropped id only costs a lookup.
func (c *seriesCache) commitEvicting(tx *sql.Tx, deviceID string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := tx.Commit()
	delete(c.ids, deviceID)
	return err
}

// seriesResolver finds or creates the series ids of one write
// transaction. Ids it finds in the table or creates are kept in found
// until the transaction commits.
type seriesResolver struct {
	ctx    context.Context
	tx     *sql.Tx
	cache  *seriesCache
	found  map[string]map[string]int64
	lookup *sql.Stmt // prepared on first use: most batches need neither
	create *sql.Stmt
}

// id returns the id of the series of a device's key, creating the series
// if it does not exist. The device must exist in the tenant.
func (r *seriesResolver) id(tenantID, deviceID, key string) (int64, error) {
	if id, ok := r.found[deviceID][key]; ok {
		return id, nil
	}
	if id, ok := r.cache.lookup(deviceID, key); ok {
		return id, nil
	}
	if r.lookup == nil {
		var err error
		if r.lookup, err = r.tx.PrepareContext(r.ctx, "SELECT id FROM series WHERE device_id = ? AND key = ?"); err != nil {
			return 0, err
		}
		// RETURNING is in SQLite since 3.35 and in PostgreSQL.
		if r.create, err = r.tx.PrepareContext(r.ctx, `INSERT INTO series (device_id, key, tenant_id) VALUES (?, ?, ?)
			ON CONFLICT (device_id, key) DO NOTHING RETURNING id`); err != nil {
			return 0, err
		}
	}
	// After a restart every series is missing from the cache but most
	// exist, so look before inserting.
	var id int64
	err := r.lookup.QueryRowContext(r.ctx, deviceID, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = r.create.QueryRowContext(r.ctx, deviceID, key, tenantID).Scan(&id)
	}
	if err != nil {
		return 0, err
	}
	if r.found == nil {
		r.found = make(map[string]map[string]int64)
	}
	m := r.found[deviceID]
	if m == nil {
		m = make(map[string]int64)
		r.found[deviceID] = m
	}
	m[key] = id
	return id, nil
}

// close closes the statements the resolver prepared.
func (r *seriesResolver) close() {
	if r.lookup != nil {
		r.lookup.Close()
	}
	if r.create != nil {
		r.create.Close()
	}
}
