-- 0001: the registry (tenants, devices, API keys) and telemetry.
--
-- Times are INTEGER Unix nanoseconds (BIGINT in PostgreSQL). Labels and
-- metadata are JSON text on the device row, which is what reads return;
-- device_labels repeats the labels as rows so that a label selector is an
-- index range instead of a scan of every device's JSON.

CREATE TABLE tenants (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL
);

CREATE TABLE devices (
	id           TEXT PRIMARY KEY,
	tenant_id    TEXT NOT NULL REFERENCES tenants (id),
	name         TEXT NOT NULL,
	labels       TEXT NOT NULL,
	metadata     TEXT NOT NULL,
	token_hash   BLOB,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	last_seen_at INTEGER
);

-- Listing pages through one tenant's devices in id order.
CREATE INDEX devices_tenant_id ON devices (tenant_id, id);

CREATE TABLE device_labels (
	device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	tenant_id TEXT NOT NULL,
	key       TEXT NOT NULL,
	value     TEXT NOT NULL,
	PRIMARY KEY (device_id, key)
) WITHOUT ROWID;

-- A label selector walks the devices of one tenant that carry one
-- key=value pair, in id order, from the cursor on.
CREATE INDEX device_labels_selector ON device_labels (tenant_id, key, value, device_id);

CREATE TABLE api_keys (
	id           TEXT PRIMARY KEY,
	tenant_id    TEXT NOT NULL REFERENCES tenants (id),
	name         TEXT NOT NULL,
	role         TEXT NOT NULL,
	hash         BLOB NOT NULL,
	created_at   INTEGER NOT NULL,
	last_used_at INTEGER
);

CREATE INDEX api_keys_tenant_role ON api_keys (tenant_id, role);

-- Message IDs already stored, for exactly-once writes of redelivered
-- messages. at is the message's receive time; PruneDedup deletes old ones.
CREATE TABLE processed_messages (
	id TEXT PRIMARY KEY,
	at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX processed_messages_at ON processed_messages (at);

-- One row per series (a key of a device), with its newest point. The
-- points refer to it by its integer id, so that their rows are small and
-- their key compares are integer ones (see docs/sqlite-driver.md, "Schema:
-- series ids"). latest_* is the newest point of the series and moves only
-- forward in time; it is NULL only inside the transaction that creates the
-- series. tenant_id repeats the device's, so that reads check the tenant
-- without a join. There is no foreign key to devices, for the same reason
-- as on telemetry: DeleteDevice deletes a device's series itself.
CREATE TABLE series (
	id          INTEGER PRIMARY KEY,
	device_id   TEXT NOT NULL,
	key         TEXT NOT NULL,
	tenant_id   TEXT NOT NULL,
	latest_ts   INTEGER,
	latest_kind INTEGER,
	latest_num  REAL,
	latest_str  TEXT,
	UNIQUE (device_id, key)
);

-- One row per point, clustered by (series_id, ts): every query reads one
-- series over a time range, so a WITHOUT ROWID table keyed that way is
-- both the table and the index (one B-tree write per point, and range
-- reads touch adjacent pages). A second point with the same series and
-- time replaces the first. There is no foreign key to series: the writer
-- resolves each series once per batch (or from its cache), and
-- DeleteDevice deletes the points itself.
CREATE TABLE telemetry (
	series_id INTEGER NOT NULL,
	ts        INTEGER NOT NULL,
	kind      INTEGER NOT NULL,
	num       REAL,
	str       TEXT,
	PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
