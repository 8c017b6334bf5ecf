package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tether-iot/tether"
)

// Users, their sessions and failed sign-ins (see migration 0012). The
// user service (internal/user) decides the rules: password hashing,
// lockout, session lifetimes. The store keeps what those rules need
// atomic: the last admin of a tenant cannot be removed or demoted, a
// sign-in attempt is counted in the transaction that reads the count and
// the lock, and a password or role change ends sessions in the
// transaction that makes it. login_failures keys its rows by the SHA-256
// of the address (loginFailureKey), whatever its column's name says.

const userColumns = `id, tenant_id, email, role, password_hash, failed_logins, locked_until, created_at, last_login_at`

func scanUser(row interface{ Scan(...any) error }) (*tether.User, error) {
	var (
		u                 tether.User
		created           int64
		locked, lastLogin sql.NullInt64
	)
	if err := row.Scan(&u.ID, &u.TenantID, &u.Email, &u.Role, &u.PasswordHash, &u.FailedLogins, &locked, &created, &lastLogin); err != nil {
		return nil, err
	}
	u.CreatedAt, u.LockedUntil, u.LastLoginAt = fromNanos(created), timePtr(locked), timePtr(lastLogin)
	return &u, nil
}

func userNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "user %q not found", id)
}

// CreateUser stores a new user. Its e-mail address must be in lower
// case (the service normalizes it): addresses are unique across tenants,
// so another user with the address is ECONFLICT, as is a taken ID. A
// missing tenant is ENOTFOUND. A zero CreatedAt is the current time.
func (db *DB) CreateUser(ctx context.Context, u *tether.User) error {
	if !tether.ValidID(u.ID) || !tether.ValidID(u.TenantID) {
		return tether.Errorf(tether.EINVALID, "invalid user %q or tenant %q id", u.ID, u.TenantID)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	u.CreatedAt = u.CreatedAt.UTC()
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.TenantID, u.Email, u.Role, u.PasswordHash, u.FailedLogins, nullNanos(u.LockedUntil),
			nanos(u.CreatedAt), nullNanos(u.LastLoginAt))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "a user with e-mail address %q or id %q exists already", u.Email, u.ID)
		case foreignKeyConstraint:
			return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", u.TenantID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.ID, err)
	}
	return nil
}

// User returns a user of the tenant, or ENOTFOUND.
func (db *DB) User(ctx context.Context, tenantID, id string) (*tether.User, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users WHERE tenant_id = ? AND id = ?", tenantID, id), scanUser,
		func() error { return userNotFound(id) }, "user %s", id)
}

// UserByEmail returns the user, of any tenant, with the (lower-case)
// e-mail address, or ENOTFOUND.
func (db *DB) UserByEmail(ctx context.Context, email string) (*tether.User, error) {
	return one(db.read.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users WHERE email = ?", email), scanUser,
		func() error { return tether.Errorf(tether.ENOTFOUND, "no user with e-mail address %q", email) }, "user by e-mail")
}

// Users returns the tenant's users in the order of their e-mail
// addresses.
func (db *DB) Users(ctx context.Context, tenantID string) ([]*tether.User, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT "+userColumns+" FROM users WHERE tenant_id = ? ORDER BY email", tenantID)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	us, err := collect(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	return us, nil
}

// CountUsers returns the number of users of every tenant, for deciding
// whether to create a first admin at start-up.
func (db *DB) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// lastAdmin returns ECONFLICT if the user is the tenant's only admin.
func lastAdmin(ctx context.Context, tx *sql.Tx, u *tether.User, doing string) error {
	if u.Role != tether.RoleAdmin {
		return nil
	}
	var others int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE tenant_id = ? AND role = ? AND id <> ?",
		u.TenantID, tether.RoleAdmin, u.ID).Scan(&others); err != nil {
		return err
	}
	if others == 0 {
		return tether.Errorf(tether.ECONFLICT, "%s is the last admin user; make another user admin before %s", u.Email, doing)
	}
	return nil
}

// UpdateUser changes a user's role and password hash (each if not nil).
// A new password hash also forgets failed sign-ins and lifts a lock. If
// anything changed, the user's sessions end, all but keepSession (""
// for none). Demoting the tenant's last admin user is ECONFLICT; a
// missing user ENOTFOUND. It returns the user afterwards.
func (db *DB) UpdateUser(ctx context.Context, tenantID, id string, role, passwordHash *string, keepSession string) (*tether.User, error) {
	var u *tether.User
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users WHERE tenant_id = ? AND id = ?", tenantID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return userNotFound(id)
		}
		if err != nil {
			return err
		}
		changed := false
		if role != nil && *role != u.Role {
			if *role != tether.RoleAdmin {
				if err := lastAdmin(ctx, tx, u, "demoting them"); err != nil {
					return err
				}
			}
			u.Role, changed = *role, true
			if _, err := tx.ExecContext(ctx, "UPDATE users SET role = ? WHERE id = ?", u.Role, id); err != nil {
				return err
			}
		}
		if passwordHash != nil {
			u.PasswordHash, u.FailedLogins, u.LockedUntil, changed = *passwordHash, 0, nil, true
			if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ?, failed_logins = 0,
				last_failed_at = NULL, locked_until = NULL WHERE id = ?`, u.PasswordHash, id); err != nil {
				return err
			}
		}
		if changed {
			_, err = tx.ExecContext(ctx, "DELETE FROM sessions WHERE user_id = ? AND id <> ?", id, keepSession)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update user %s: %w", id, err)
	}
	return u, nil
}

// DeleteUser deletes a user and, with it, the user's sessions. Deleting
// the tenant's last admin user is ECONFLICT; a missing user ENOTFOUND.
func (db *DB) DeleteUser(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		u, err := scanUser(tx.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users WHERE tenant_id = ? AND id = ?", tenantID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return userNotFound(id)
		}
		if err != nil {
			return err
		}
		if err := lastAdmin(ctx, tx, u, "deleting them"); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM users WHERE id = ?", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete user %s: %w", id, err)
	}
	return nil
}

// RecordLoginAttempt counts a sign-in attempt of the user at now,
// before its password is checked, unless sign-in is locked at now: then
// it counts nothing and returns until when. count decides, from the
// attempts counted so far and the time of the last one (nil if none),
// the new count and until when to lock the user (nil: no new lock). The
// user service owns that rule; the store runs it inside the transaction
// that reads the lock and stores the result, so that however many
// attempts arrive at once, on however many nodes, only those counted
// before the lock have their password checked. A successful sign-in
// (RecordLogin) forgets the count. A missing user is ENOTFOUND.
func (db *DB) RecordLoginAttempt(ctx context.Context, id string, now time.Time, count func(attempts int, last *time.Time) (int, *time.Time)) (*time.Time, error) {
	var refused *time.Time
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		refused = nil
		var (
			n            int
			last, locked sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, "SELECT failed_logins, last_failed_at, locked_until FROM users WHERE id = ?", id).
			Scan(&n, &last, &locked)
		if errors.Is(err, sql.ErrNoRows) {
			return userNotFound(id)
		}
		if err != nil {
			return err
		}
		if l := timePtr(locked); l != nil && now.Before(*l) {
			refused = l
			return nil
		}
		n, until := count(n, timePtr(last))
		_, err = tx.ExecContext(ctx, `UPDATE users SET failed_logins = ?, last_failed_at = ?,
			locked_until = coalesce(?, locked_until) WHERE id = ?`, n, nanos(now), nullNanos(until), id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record sign-in attempt of user %s: %w", id, err)
	}
	return refused, nil
}

// RecordLogin records a successful sign-in: the failures are forgotten
// and the time kept as the last sign-in.
func (db *DB) RecordLogin(ctx context.Context, id string, at time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET failed_logins = 0, last_failed_at = NULL,
			locked_until = NULL, last_login_at = ? WHERE id = ?`, nanos(at), id)
		if err != nil {
			return err
		}
		return affected(res, func() error { return userNotFound(id) })
	})
	if err != nil {
		return fmt.Errorf("record login of user %s: %w", id, err)
	}
	return nil
}

// unknownFailureRetention is how long a failed sign-in with an unknown
// e-mail address is kept; the user service forgets failures sooner.
const unknownFailureRetention = 7 * 24 * time.Hour

// loginFailureKey is how login_failures names an e-mail address: its
// SHA-256 in hex. A row then has the same small size whatever address an
// attacker sends, and the table keeps no mistyped addresses, which are
// often nearly someone's real one.
func loginFailureKey(email string) string {
	h := sha256.Sum256([]byte(email))
	return hex.EncodeToString(h[:])
}

// RecordUnknownLoginAttempt counts a sign-in attempt, at now, with an
// e-mail address no user has, as RecordLoginAttempt counts a user's, and
// as it does returns the lock instead if one holds. It also deletes the
// counts of addresses with no attempt for a week and, when it adds an
// address, the oldest counts beyond keep (at least 1): sign-in with
// made-up addresses must not fill the disk. Counts that hold a lock go
// last, so that flooding the table with made-up addresses does not lift
// a lock early (nor tell, by lifting it, that an address is no user's).
func (db *DB) RecordUnknownLoginAttempt(ctx context.Context, email string, now time.Time, keep int, count func(attempts int, last *time.Time) (int, *time.Time)) (*time.Time, error) {
	key := loginFailureKey(email)
	var refused *time.Time
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		refused = nil
		if _, err := tx.ExecContext(ctx, "DELETE FROM login_failures WHERE updated_at < ?",
			nanos(now.Add(-unknownFailureRetention))); err != nil {
			return err
		}
		var (
			n            int
			last, locked sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, "SELECT failures, updated_at, locked_until FROM login_failures WHERE email = ?", key).
			Scan(&n, &last, &locked)
		added := errors.Is(err, sql.ErrNoRows)
		if err != nil && !added {
			return err
		}
		if l := timePtr(locked); l != nil && now.Before(*l) {
			refused = l
			return nil
		}
		n, until := count(n, timePtr(last))
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_failures (email, failures, locked_until, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (email) DO UPDATE SET failures = excluded.failures, locked_until = excluded.locked_until,
			updated_at = excluded.updated_at`, key, n, nullNanos(until), nanos(now)); err != nil {
			return err
		}
		if !added {
			return nil
		}
		// Sorts at most the table's keep+1 rows, and only when an address
		// is added.
		_, err = tx.ExecContext(ctx, `DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM login_failures
			ORDER BY coalesce(locked_until, 0) > ? DESC, updated_at DESC, rowid DESC LIMIT -1 OFFSET ?)`, nanos(now), max(keep, 1))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record sign-in attempt: %w", err)
	}
	return refused, nil
}

// UnknownLoginLock returns until when sign-ins with an e-mail address no
// user has are locked, or nil.
func (db *DB) UnknownLoginLock(ctx context.Context, email string) (*time.Time, error) {
	var locked sql.NullInt64
	err := db.read.QueryRowContext(ctx, "SELECT locked_until FROM login_failures WHERE email = ?", loginFailureKey(email)).Scan(&locked)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("login lock: %w", err)
	}
	return timePtr(locked), nil
}

const sessionColumns = `id, tenant_id, user_id, hash, csrf_token, created_at, expires_at, last_seen`

// CreateSession stores a new session of a user. In the same transaction
// it deletes every session that expired (ExpiresAt passed at
// s.CreatedAt, or not seen since idleSince) and the user's oldest
// sessions beyond maxPerUser, so that the table holds only live sessions.
// A missing user is ENOTFOUND.
func (db *DB) CreateSession(ctx context.Context, s *tether.Session, idleSince time.Time, maxPerUser int) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			s.ID, s.TenantID, s.UserID, s.Hash, s.CSRFToken, nanos(s.CreatedAt), nanos(s.ExpiresAt), nanos(s.LastSeen))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "session %q exists already", s.ID)
		case foreignKeyConstraint:
			return userNotFound(s.UserID)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE expires_at <= ? OR last_seen < ?",
			nanos(s.CreatedAt), nanos(idleSince)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND id NOT IN
			(SELECT id FROM sessions WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?)`,
			s.UserID, s.UserID, maxPerUser)
		return err
	})
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// SessionUser returns a session and its user, or ENOTFOUND.
func (db *DB) SessionUser(ctx context.Context, id string) (*tether.Session, *tether.User, error) {
	var (
		s                      tether.Session
		u                      tether.User
		created, expires, seen int64
		userCreated            int64
		locked, lastLogin      sql.NullInt64
	)
	err := db.read.QueryRowContext(ctx, `SELECT s.id, s.tenant_id, s.user_id, s.hash, s.csrf_token, s.created_at,
		s.expires_at, s.last_seen, u.id, u.tenant_id, u.email, u.role, u.password_hash, u.failed_logins, u.locked_until,
		u.created_at, u.last_login_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`, id).
		Scan(&s.ID, &s.TenantID, &s.UserID, &s.Hash, &s.CSRFToken, &created, &expires, &seen,
			&u.ID, &u.TenantID, &u.Email, &u.Role, &u.PasswordHash, &u.FailedLogins, &locked, &userCreated, &lastLogin)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, tether.Errorf(tether.ENOTFOUND, "session %q not found", id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("session %s: %w", id, err)
	}
	s.CreatedAt, s.ExpiresAt, s.LastSeen = fromNanos(created), fromNanos(expires), fromNanos(seen)
	u.CreatedAt, u.LockedUntil, u.LastLoginAt = fromNanos(userCreated), timePtr(locked), timePtr(lastLogin)
	return &s, &u, nil
}

// TouchSession records that a session was used at seen (unless a later
// use is recorded already).
func (db *DB) TouchSession(ctx context.Context, id string, seen time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE sessions SET last_seen = ? WHERE id = ? AND last_seen < ?", nanos(seen), id, nanos(seen))
		return err
	})
	if err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	return nil
}

// DeleteSession ends a session; one that is gone already is no error.
func (db *DB) DeleteSession(ctx context.Context, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE id = ?", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}
