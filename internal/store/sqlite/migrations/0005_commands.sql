-- 0005: commands. seq orders a device's commands (delivery order);
-- history is the JSON array of transitions. sent_at is the time of the
-- sent transition, from which a two-way command's timeout runs.

CREATE TABLE commands (
	id              TEXT PRIMARY KEY,
	tenant_id       TEXT NOT NULL,
	device_id       TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	seq             INTEGER NOT NULL,
	name            TEXT NOT NULL,
	params          TEXT,
	one_way         INTEGER NOT NULL,
	status          TEXT NOT NULL,
	reason          TEXT NOT NULL DEFAULT '',
	idempotency_key TEXT,
	source          TEXT NOT NULL,
	confirmed_by    TEXT NOT NULL DEFAULT '',
	result          TEXT,
	timeout         INTEGER NOT NULL,
	expires_at      INTEGER NOT NULL,
	sent_at         INTEGER,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	history         TEXT NOT NULL
);

CREATE UNIQUE INDEX commands_device_seq ON commands (device_id, seq);

CREATE UNIQUE INDEX commands_idempotency ON commands (device_id, idempotency_key)
	WHERE idempotency_key IS NOT NULL;

-- Rate limits count a device's recent commands, of one name and of all.
CREATE INDEX commands_device_name_created ON commands (device_id, name, created_at);
CREATE INDEX commands_device_created ON commands (device_id, created_at);

-- The circuit breaker reads a device's last finished commands.
CREATE INDEX commands_device_finished ON commands (device_id, updated_at)
	WHERE status IN ('succeeded', 'failed', 'expired');

-- Delivery and the pull endpoints read a device's open commands in order.
CREATE INDEX commands_device_open ON commands (device_id, seq)
	WHERE status IN ('awaiting_confirmation', 'queued', 'sent', 'delivered');

-- The sweeper finds the commands that are not done.
CREATE INDEX commands_open ON commands (status, expires_at)
	WHERE status IN ('awaiting_confirmation', 'queued', 'sent', 'delivered');
