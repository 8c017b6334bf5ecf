-- 0004: device shadows. One row per device and shadow name ('' is the
-- classic shadow); the documents are JSON text, read and written whole.

CREATE TABLE shadows (
	device_id  TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	tenant_id  TEXT NOT NULL,
	desired    TEXT NOT NULL,
	reported   TEXT NOT NULL,
	metadata   TEXT NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (device_id, name)
) WITHOUT ROWID;
