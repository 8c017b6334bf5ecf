-- 0006: presence. A device without a row has never connected (offline,
-- never_connected). seq grows with each connection of the device, so a
-- late event of an older connection never overrides a newer one. node is
-- the node that holds the connection.

CREATE TABLE presence (
	device_id TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
	tenant_id TEXT NOT NULL,
	status    TEXT NOT NULL,
	reason    TEXT NOT NULL,
	since     INTEGER NOT NULL,
	seq       INTEGER NOT NULL,
	transport TEXT NOT NULL DEFAULT '',
	node      TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE INDEX presence_status ON presence (tenant_id, status, device_id);
