-- 0009: the rule actions' outbox and dead letters.
--
-- rule_outbox holds one row per rule result and action until the action
-- has run: written in the same transaction for all of a batch's results,
-- claimed by a worker (attempts + 1, next_attempt_at pushed out by a
-- lease, so that a worker that dies leaves the row to be claimed again
-- once the lease ends), deleted when the action succeeds, rescheduled
-- after a failure, and moved to rule_dead_letters after the last one.
-- attempts doubles as the claim's fencing token: a worker finishes only
-- the row it claimed, not one claimed again since. id is the delivery id
-- receivers dedupe by. action and result are JSON (tether.RuleAction and
-- tether.RuleResult) as they were when the result was enqueued.

CREATE TABLE rule_outbox (
	id              TEXT PRIMARY KEY,
	tenant_id       TEXT NOT NULL,
	rule_id         TEXT NOT NULL,
	rule_version    INTEGER NOT NULL,
	device_id       TEXT NOT NULL DEFAULT '',
	action_index    INTEGER NOT NULL,
	action          TEXT NOT NULL,
	result          TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	last_error      TEXT NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL
);

-- Workers claim the rows that are due, oldest first.
CREATE INDEX rule_outbox_due ON rule_outbox (next_attempt_at, created_at);

CREATE TABLE rule_dead_letters (
	id           TEXT PRIMARY KEY,
	tenant_id    TEXT NOT NULL,
	rule_id      TEXT NOT NULL,
	rule_version INTEGER NOT NULL,
	device_id    TEXT NOT NULL DEFAULT '',
	action_index INTEGER NOT NULL,
	action       TEXT NOT NULL,
	result       TEXT NOT NULL,
	attempts     INTEGER NOT NULL,
	error        TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	failed_at    INTEGER NOT NULL
);

-- A rule's dead letters are listed newest first.
CREATE INDEX rule_dead_letters_rule ON rule_dead_letters (tenant_id, rule_id, failed_at);
