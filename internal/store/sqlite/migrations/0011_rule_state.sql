-- 0011: the rules engine's checkpointed state, one row per rule version
-- (key tenant/rule/version): open windows and anomaly function state, so
-- that they survive a restart.

CREATE TABLE rule_state (
	key        TEXT PRIMARY KEY,
	state      BLOB NOT NULL,
	updated_at INTEGER NOT NULL
);
