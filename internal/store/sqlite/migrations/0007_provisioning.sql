-- 0007: provisioning keys. Only the SHA-256 of a key's secret is stored.

CREATE TABLE provisioning_keys (
	id         TEXT PRIMARY KEY,
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	profile_id TEXT NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	max_uses   INTEGER NOT NULL DEFAULT 0,
	uses       INTEGER NOT NULL DEFAULT 0,
	expires_at INTEGER,
	revoked_at INTEGER,
	created_at INTEGER NOT NULL
);

CREATE INDEX provisioning_keys_tenant ON provisioning_keys (tenant_id, profile_id);
