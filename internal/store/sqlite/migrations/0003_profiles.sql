-- 0003: device profiles, the device's profile, and quarantined points.
--
-- A profile's schema (telemetry keys, report interval, commands) is one
-- JSON document: it is read and written whole and compiled in memory.

CREATE TABLE profiles (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	id         TEXT NOT NULL,
	name       TEXT NOT NULL,
	doc        TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

-- NULL: the device has no profile (permissive defaults).
ALTER TABLE devices ADD COLUMN profile_id TEXT;

CREATE INDEX devices_profile ON devices (tenant_id, profile_id, id);

-- Points that broke their device's profile, kept apart from the series so
-- that aggregates and latest values never see them. No foreign key to
-- devices, for the same reason as telemetry: the writer must not fail a
-- batch for a device deleted meanwhile; DeleteDevice deletes them itself.
CREATE TABLE quarantine (
	device_id   TEXT NOT NULL,
	ts          INTEGER NOT NULL,
	key         TEXT NOT NULL,
	tenant_id   TEXT NOT NULL,
	kind        INTEGER NOT NULL,
	num         REAL,
	str         TEXT,
	reason      TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	received_at INTEGER NOT NULL,
	PRIMARY KEY (device_id, ts, key)
) WITHOUT ROWID;
