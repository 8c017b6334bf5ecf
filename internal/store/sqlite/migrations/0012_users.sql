-- 0012: users who sign in with an e-mail address and a password, their
-- sessions, and failed sign-ins with unknown e-mail addresses.
--
-- An e-mail address is unique across tenants, because signing in names no
-- tenant: the address alone finds the user. It is stored in lower case,
-- so uniqueness is case-insensitive without an expression index.
-- password_hash is a PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
-- failed_logins counts wrong passwords since the last success, the last
-- lock or a day without one (last_failed_at); a user whose locked_until
-- is in the future may not sign in.

CREATE TABLE users (
	id             TEXT PRIMARY KEY,
	tenant_id      TEXT NOT NULL REFERENCES tenants (id),
	email          TEXT NOT NULL UNIQUE,
	role           TEXT NOT NULL,
	password_hash  TEXT NOT NULL,
	failed_logins  INTEGER NOT NULL DEFAULT 0,
	last_failed_at INTEGER,
	locked_until   INTEGER,
	created_at     INTEGER NOT NULL,
	last_login_at  INTEGER
);

-- Listing a tenant's users, and counting its admins.
CREATE INDEX users_tenant_role ON users (tenant_id, role);

-- A session's cookie is "<id>.<secret>"; only the SHA-256 of the whole
-- cookie value is stored. csrf_token must come back in the X-CSRF-Token
-- header of every unsafe request made with the cookie. A session ends at
-- expires_at, or earlier when last_seen is older than the idle timeout.
CREATE TABLE sessions (
	id         TEXT PRIMARY KEY,
	tenant_id  TEXT NOT NULL,
	user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	hash       BLOB NOT NULL,
	csrf_token TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_id, created_at);

-- Failed sign-ins with an e-mail address that no user has, counted and
-- locked exactly as a user's, so that a lockout does not tell whether an
-- address belongs to a user. A row not updated for a day counts nothing
-- any more and is deleted.
CREATE TABLE login_failures (
	email        TEXT PRIMARY KEY,
	failures     INTEGER NOT NULL,
	locked_until INTEGER,
	updated_at   INTEGER NOT NULL
);

CREATE INDEX login_failures_updated ON login_failures (updated_at);
