-- 0010: rules and their versions.
--
-- rules holds each rule as it is now: its current version's definition
-- (name, statement, actions) and its state (enabled, the engine's status
-- and error). rule_versions holds the definition of every version kept,
-- the current one included, so that an old one can be read and rolled
-- back to. actions is the JSON array of the rule's actions, webhook
-- secrets included: the action runner signs with them, and the API
-- leaves them out of its answers.

CREATE TABLE rules (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	id         TEXT NOT NULL,
	name       TEXT NOT NULL,
	statement  TEXT NOT NULL,
	actions    TEXT NOT NULL,
	enabled    INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	status     TEXT NOT NULL,
	error      TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

-- The engine reads the enabled rules of every tenant when it starts.
CREATE INDEX rules_enabled ON rules (tenant_id, id) WHERE enabled = 1;

CREATE TABLE rule_versions (
	tenant_id  TEXT NOT NULL,
	rule_id    TEXT NOT NULL,
	version    INTEGER NOT NULL,
	name       TEXT NOT NULL,
	statement  TEXT NOT NULL,
	actions    TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, rule_id, version),
	FOREIGN KEY (tenant_id, rule_id) REFERENCES rules (tenant_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
