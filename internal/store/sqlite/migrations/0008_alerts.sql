-- 0008: alerts raised by rules, the pending condition of each alert
-- identity (so that minimum durations and clear delays survive a
-- restart), and the tenants' notification channels.

CREATE TABLE alerts (
	id              TEXT PRIMARY KEY,
	tenant_id       TEXT NOT NULL REFERENCES tenants (id),
	rule_id         TEXT NOT NULL,
	device_id       TEXT NOT NULL,
	type            TEXT NOT NULL,
	severity        TEXT NOT NULL,
	status          TEXT NOT NULL,
	message         TEXT NOT NULL DEFAULT '',
	vals            TEXT,
	count           INTEGER NOT NULL,
	raised_at       INTEGER NOT NULL,
	last_seen_at    INTEGER NOT NULL,
	acknowledged_at INTEGER,
	acknowledged_by TEXT NOT NULL DEFAULT '',
	cleared_at      INTEGER,
	cleared_by      TEXT NOT NULL DEFAULT ''
);

-- At most one alert of an identity is not cleared: a repeat updates it.
CREATE UNIQUE INDEX alerts_open ON alerts (tenant_id, rule_id, device_id, type) WHERE status <> 'cleared';
-- Listing a tenant's alerts newest first (IDs sort by creation time).
CREATE INDEX alerts_tenant ON alerts (tenant_id, id);

CREATE TABLE alert_pending (
	tenant_id TEXT NOT NULL REFERENCES tenants (id),
	rule_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	type      TEXT NOT NULL,
	met       INTEGER NOT NULL,
	since     INTEGER NOT NULL,
	last_at   INTEGER NOT NULL,
	due_at    INTEGER NOT NULL,
	action    TEXT NOT NULL,
	vals      TEXT,
	PRIMARY KEY (tenant_id, rule_id, device_id, type)
);

CREATE INDEX alert_pending_due ON alert_pending (due_at);

CREATE TABLE alert_channels (
	id              TEXT PRIMARY KEY,
	tenant_id       TEXT NOT NULL REFERENCES tenants (id),
	kind            TEXT NOT NULL,
	url             TEXT NOT NULL DEFAULT '',
	secret          TEXT NOT NULL DEFAULT '',
	smtp_addr       TEXT NOT NULL DEFAULT '',
	from_addr       TEXT NOT NULL DEFAULT '',
	to_addrs        TEXT NOT NULL DEFAULT '[]',
	min_severity    TEXT NOT NULL DEFAULT '',
	rate_per_minute INTEGER NOT NULL DEFAULT 0,
	created_at      INTEGER NOT NULL
);

CREATE INDEX alert_channels_tenant ON alert_channels (tenant_id, id);
