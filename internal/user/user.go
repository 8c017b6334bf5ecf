// Package user signs people in to Tether: users with an e-mail address,
// a role and an argon2id password hash; sessions carried by a cookie,
// each with its CSRF token; lockout after repeated failed sign-ins,
// counted in the store so that it holds across nodes; and the first
// admin user, created at first start.
//
// A session's cookie is "<session id>.<secret>" with a 256-bit random
// secret; the store keeps only its SHA-256, as it does for API keys and
// device tokens. Passwords, which people choose, get a slow hash
// instead: argon2id, at most a few at a time, so that a storm of
// sign-ins queues instead of exhausting memory.
package user

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/secret"
)

// Store is what the user service needs of storage.
type Store interface {
	CreateUser(ctx context.Context, u *tether.User) error
	User(ctx context.Context, tenantID, id string) (*tether.User, error)
	UserByEmail(ctx context.Context, email string) (*tether.User, error)
	Users(ctx context.Context, tenantID string) ([]*tether.User, error)
	CountUsers(ctx context.Context) (int, error)
	// UpdateUser ends the user's sessions but keepSession if anything
	// changed, and refuses to demote the tenant's last admin.
	UpdateUser(ctx context.Context, tenantID, id string, role, passwordHash *string, keepSession string) (*tether.User, error)
	// DeleteUser refuses to delete the tenant's last admin.
	DeleteUser(ctx context.Context, tenantID, id string) error

	// RecordLoginAttempt counts a sign-in attempt before its password
	// is checked, applying count in the transaction that reads the lock;
	// if the user is locked at now it counts nothing and returns the
	// lock's end instead.
	RecordLoginAttempt(ctx context.Context, id string, now time.Time, count func(attempts int, last *time.Time) (int, *time.Time)) (*time.Time, error)
	// RecordLogin forgets the attempts and lifts a lock.
	RecordLogin(ctx context.Context, id string, at time.Time) error
	// RecordUnknownLoginAttempt is RecordLoginAttempt for an address no
	// user has; it keeps the counts of at most keep such addresses.
	RecordUnknownLoginAttempt(ctx context.Context, email string, now time.Time, keep int, count func(attempts int, last *time.Time) (int, *time.Time)) (*time.Time, error)
	UnknownLoginLock(ctx context.Context, email string) (*time.Time, error)

	CreateSession(ctx context.Context, s *tether.Session, idleSince time.Time, maxPerUser int) error
	SessionUser(ctx context.Context, id string) (*tether.Session, *tether.User, error)
	TouchSession(ctx context.Context, id string, seen time.Time) error
	DeleteSession(ctx context.Context, id string) error
}

// Options tune a [Service]; zero values take the defaults named.
type Options struct {
	// Params are the argon2id costs of new hashes (DefaultParams).
	Params Params
	// MaxFailures wrong passwords in a row (5), none more than a day
	// apart, lock sign-in for LockFor (15 minutes). An attempt counts
	// before its password is checked, so that attempts made at once
	// cannot get more passwords checked: see [Service.Login].
	MaxFailures int
	LockFor     time.Duration
	// IdleTimeout ends a session not used for that long (12 hours);
	// MaxAge ends every session that long after sign-in (7 days).
	IdleTimeout time.Duration
	MaxAge      time.Duration
	// MaxConcurrentHashes bounds the argon2id computations running at
	// once (2); each takes Params.Memory. At most MaxHashQueue more (4
	// times MaxConcurrentHashes) wait for their turn; one more is
	// refused at once, and one that waits longer than HashWait (5 s) is
	// refused then, both with ETOOMANY and a RetryAfter method. The
	// queue is short so that a storm of sign-ins is refused quickly
	// rather than holding every request for seconds.
	MaxConcurrentHashes int
	MaxHashQueue        int
	HashWait            time.Duration
	// Now is the clock (time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Service manages users and their sessions.
type Service struct {
	store Store
	o     Options
	// sem holds a token for each argon2id computation running; queued
	// counts those running and those waiting for a token.
	sem    chan struct{}
	queued atomic.Int64
	// dummy is a hash no password matches, verified when the e-mail
	// address is unknown, so that the time an answer takes does not
	// tell whether a user has the address.
	dummy string
}

// Defaults.
const (
	DefaultMaxFailures = 5
	DefaultLockFor     = 15 * time.Minute
	DefaultIdleTimeout = 12 * time.Hour
	DefaultMaxAge      = 7 * 24 * time.Hour
	// DefaultAdminEmail is the first admin user's address unless
	// another is given.
	DefaultAdminEmail = "admin@tether.local"

	// forgetFailures is how long after the last failed sign-in the
	// count starts again.
	forgetFailures = 24 * time.Hour
	// touchEvery is how often at most a session's last use is written.
	touchEvery = time.Minute
	// maxSessionsPerUser bounds a user's sessions; signing in beyond it
	// ends the oldest.
	maxSessionsPerUser = 50
	// unknownAddressesKept bounds the addresses no user has whose
	// failed sign-ins the store counts; beyond it the oldest counts go.
	// Each is a row of about a hundred bytes.
	unknownAddressesKept = 10000
	// maxEmailBytes is the longest e-mail address (RFC 5321's path
	// limit less its angle brackets).
	maxEmailBytes = 254
)

// New returns the user service over store.
func New(store Store, o Options) *Service {
	if o.Params == (Params{}) {
		o.Params = DefaultParams()
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.LockFor <= 0 {
		o.LockFor = DefaultLockFor
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxConcurrentHashes <= 0 {
		o.MaxConcurrentHashes = 2
	}
	if o.MaxHashQueue <= 0 {
		o.MaxHashQueue = 4 * o.MaxConcurrentHashes
	}
	if o.HashWait <= 0 {
		o.HashWait = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	salt, key := make([]byte, saltLen), make([]byte, keyLen)
	_, _ = rand.Read(salt)
	_, _ = rand.Read(key)
	return &Service{store: store, o: o, sem: make(chan struct{}, o.MaxConcurrentHashes), dummy: formatHash(o.Params, salt, key)}
}

func (s *Service) now() time.Time { return s.o.Now().UTC() }

// errBadLogin is the one answer to a wrong e-mail address or password.
var errBadLogin = tether.Errorf(tether.EUNAUTHORIZED, "wrong e-mail address or password")

// errNoSession is the one answer to a missing, wrong or ended session.
var errNoSession = tether.Errorf(tether.EUNAUTHORIZED, "not signed in, or the session has ended; sign in again")

// LockedError refuses a sign-in while it is locked after repeated
// failures. Its code is ETOOMANY; RetryAfter says when to try again.
type LockedError struct {
	err   *tether.Error
	retry time.Duration
}

func lockedError(until, now time.Time) *LockedError {
	retry := until.Sub(now).Round(time.Second)
	if retry < time.Second {
		retry = time.Second
	}
	return &LockedError{tether.Errorf(tether.ETOOMANY, "sign-in is locked after repeated failures; try again in %s", retry), retry}
}

func (e *LockedError) Error() string { return e.err.Error() }
func (e *LockedError) Unwrap() error { return e.err }

// RetryAfter is how long the lock lasts.
func (e *LockedError) RetryAfter() time.Duration { return e.retry }

// busyError refuses a hash when too many wait for their turn. Its code
// is ETOOMANY; RetryAfter is a second, about the time the queue takes.
type busyError struct{ err *tether.Error }

func (e *busyError) Error() string { return e.err.Error() }
func (e *busyError) Unwrap() error { return e.err }

// RetryAfter is when to try again.
func (*busyError) RetryAfter() time.Duration { return time.Second }

var errBusy = &busyError{tether.Errorf(tether.ETOOMANY, "too many sign-ins at once; try again in a moment")}

// hash computes an argon2id hash in its turn.
func (s *Service) hash(ctx context.Context, password string) (string, error) {
	var h string
	err := s.inTurn(ctx, func() error { h = HashPassword(password, s.o.Params); return nil })
	return h, err
}

// attempt counts a sign-in attempt with record and then, unless record
// returns a lock, checks password against hash. Both happen in one hash
// turn, the count first: a lock that a concurrent attempt set, on any
// node, after the caller last read the user is seen here, and an
// attempt refused for want of a turn is not counted.
func (s *Service) attempt(ctx context.Context, password, hash string, record func(now time.Time) (*time.Time, error)) (bool, error) {
	var ok bool
	err := s.inTurn(ctx, func() error {
		now := s.now()
		locked, err := record(now)
		if err != nil {
			return err
		}
		if locked != nil {
			return lockedError(*locked, now)
		}
		if ok, err = VerifyPassword(password, hash); err != nil {
			return fmt.Errorf("verify the password: %w", err)
		}
		return nil
	})
	return ok, err
}

// inTurn runs f once fewer than MaxConcurrentHashes others run, unless
// MaxHashQueue others wait already or the turn takes longer than
// HashWait to come.
func (s *Service) inTurn(ctx context.Context, f func() error) error {
	defer s.queued.Add(-1)
	if s.queued.Add(1) > int64(s.o.MaxConcurrentHashes+s.o.MaxHashQueue) {
		return errBusy
	}
	t := time.NewTimer(s.o.HashWait)
	defer t.Stop()
	select {
	case s.sem <- struct{}{}:
	case <-t.C:
		return errBusy
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.sem }()
	return f()
}

// countAttempt is the lockout rule the store applies atomically, to
// every attempt before its password is checked: the MaxFailures-th
// attempt since the last success, lock or a day without attempts locks
// sign-in, and is itself still checked. A right password then lifts the
// lock again (RecordLogin); a wrong one needs no more recording.
func (s *Service) countAttempt(now time.Time) func(int, *time.Time) (int, *time.Time) {
	return func(attempts int, last *time.Time) (int, *time.Time) {
		if last == nil || now.Sub(*last) > forgetFailures {
			attempts = 0
		}
		attempts++
		if attempts >= s.o.MaxFailures {
			until := now.Add(s.o.LockFor)
			return 0, &until
		}
		return attempts, nil
	}
}

// NormalizeEmail is how an e-mail address is compared and stored:
// trimmed, in lower case.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// checkEmail returns an EINVALID error unless email (normalized) is a
// plain address, local@domain, of at most 254 bytes.
func checkEmail(email string) error {
	if len(email) > maxEmailBytes || !strings.Contains(email, "@") {
		return tether.Errorf(tether.EINVALID, "%q is not an e-mail address (name@example.com)", truncate(email))
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Name != "" || a.Address != email {
		return tether.Errorf(tether.EINVALID, "%q is not an e-mail address (name@example.com)", truncate(email))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// Login checks an e-mail address and password and starts a session. It
// returns the user, the session and the cookie value that carries it.
// Wrong credentials are EUNAUTHORIZED with one message whether or not
// the address belongs to a user, and take the same time; so is an
// address that is not one (local@domain, at most 254 bytes) or a
// password over MaxPasswordBytes, refused before the store is asked or
// a hash computed.
//
// After MaxFailures failures in a row sign-in is locked (a
// [*LockedError]), for addresses that belong to no user too. Every
// attempt is counted in the store, in the transaction that reads the
// lock, before its password is checked; so of the attempts for one
// address since its last successful sign-in or lock, on any number of
// nodes and however many at once, at most MaxFailures have their
// password checked, and every later one is refused with the lock,
// including one with the right password that was waiting for its turn
// when the lock was set. One of those MaxFailures that has the right
// password signs in and lifts the lock.
func (s *Service) Login(ctx context.Context, email, password string) (*tether.User, *tether.Session, string, error) {
	email = NormalizeEmail(email)
	if email == "" || password == "" {
		return nil, nil, "", tether.Errorf(tether.EINVALID, "send an e-mail address and a password")
	}
	// No user has such an address (CreateUser checks it), so this says
	// nothing about users; it keeps arbitrary strings out of the store
	// and off the hashing queue.
	if len(password) > MaxPasswordBytes || checkEmail(email) != nil {
		return nil, nil, "", errBadLogin
	}
	u, err := s.store.UserByEmail(ctx, email)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, nil, "", s.unknownLogin(ctx, email, password)
	}
	if err != nil {
		return nil, nil, "", err
	}
	// A lock already known costs neither a turn nor a write.
	if now := s.now(); u.LockedUntil != nil && now.Before(*u.LockedUntil) {
		return nil, nil, "", lockedError(*u.LockedUntil, now)
	}
	ok, err := s.attempt(ctx, password, u.PasswordHash, func(now time.Time) (*time.Time, error) {
		return s.store.RecordLoginAttempt(ctx, u.ID, now, s.countAttempt(now))
	})
	if err != nil {
		return nil, nil, "", err
	}
	if !ok {
		s.o.Logger.Info("sign-in failed: wrong password", "user", u.ID)
		return nil, nil, "", errBadLogin
	}
	now := s.now()
	if err := s.store.RecordLogin(ctx, u.ID, now); err != nil {
		return nil, nil, "", err
	}
	sess, cookie, err := s.startSession(ctx, u, now)
	if err != nil {
		return nil, nil, "", err
	}
	u.FailedLogins, u.LockedUntil, u.LastLoginAt = 0, nil, &now
	s.o.Logger.Info("signed in", "user", u.ID, "session", sess.ID)
	return u, sess, cookie, nil
}

// unknownLogin answers a sign-in with an address no user has as a wrong
// password is answered: the same hash work, the same count and lock.
func (s *Service) unknownLogin(ctx context.Context, email, password string) error {
	locked, err := s.store.UnknownLoginLock(ctx, email)
	if err != nil {
		return err
	}
	if now := s.now(); locked != nil && now.Before(*locked) {
		return lockedError(*locked, now)
	}
	if _, err := s.attempt(ctx, password, s.dummy, func(now time.Time) (*time.Time, error) {
		return s.store.RecordUnknownLoginAttempt(ctx, email, now, unknownAddressesKept, s.countAttempt(now))
	}); err != nil {
		return err
	}
	s.o.Logger.Info("sign-in failed: unknown e-mail address")
	return errBadLogin
}

// startSession stores a new session of u and returns it with its cookie.
func (s *Service) startSession(ctx context.Context, u *tether.User, now time.Time) (*tether.Session, string, error) {
	sess := &tether.Session{ID: secret.ID(), TenantID: u.TenantID, UserID: u.ID, CSRFToken: secret.New(),
		CreatedAt: now, ExpiresAt: now.Add(s.o.MaxAge), LastSeen: now}
	cookie := secret.Token(sess.ID)
	sess.Hash = secret.Hash(cookie)
	if err := s.store.CreateSession(ctx, sess, now.Add(-s.o.IdleTimeout), maxSessionsPerUser); err != nil {
		return nil, "", err
	}
	return sess, cookie, nil
}

// Authenticate returns the user and session a cookie value carries. A
// wrong, unknown or ended session is EUNAUTHORIZED; an ended one is
// deleted.
func (s *Service) Authenticate(ctx context.Context, cookie string) (*tether.User, *tether.Session, error) {
	id, _, ok := strings.Cut(cookie, ".")
	if !ok || !tether.ValidID(id) {
		return nil, nil, errNoSession
	}
	sess, u, err := s.store.SessionUser(ctx, id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, nil, errNoSession
	}
	if err != nil {
		return nil, nil, err
	}
	if subtle.ConstantTimeCompare(sess.Hash, secret.Hash(cookie)) != 1 {
		return nil, nil, errNoSession
	}
	now := s.now()
	if !now.Before(sess.ExpiresAt) || now.Sub(sess.LastSeen) >= s.o.IdleTimeout {
		if err := s.store.DeleteSession(ctx, sess.ID); err != nil {
			s.o.Logger.Warn("delete ended session", "session", sess.ID, "err", err)
		}
		return nil, nil, errNoSession
	}
	if now.Sub(sess.LastSeen) >= touchEvery {
		// Best effort: a failed touch costs the session at most a
		// minute of its idle time.
		if err := s.store.TouchSession(ctx, sess.ID, now); err != nil {
			s.o.Logger.Warn("touch session", "session", sess.ID, "err", err)
		} else {
			sess.LastSeen = now
		}
	}
	return u, sess, nil
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, sessionID string) error {
	return s.store.DeleteSession(ctx, sessionID)
}

// ChangePassword sets a signed-in user's own password after checking
// the current one, and ends the user's other sessions. A wrong current
// password is EFORBIDDEN and counts as a failed sign-in.
func (s *Service) ChangePassword(ctx context.Context, p *tether.Principal, current, next string) error {
	if p.Kind != tether.PrincipalUser {
		return tether.Errorf(tether.EFORBIDDEN, "an API key has no password; sign in as a user to change yours")
	}
	if err := CheckPassword(next); err != nil {
		return err
	}
	u, err := s.store.User(ctx, p.TenantID, p.ID)
	if err != nil {
		return err
	}
	if now := s.now(); u.LockedUntil != nil && now.Before(*u.LockedUntil) {
		return lockedError(*u.LockedUntil, now)
	}
	// Counted as a sign-in attempt, as Login counts it. The new
	// password's hash forgets the count; should that hash or the update
	// fail, the attempt stays counted, as a failure.
	ok, err := s.attempt(ctx, current, u.PasswordHash, func(now time.Time) (*time.Time, error) {
		return s.store.RecordLoginAttempt(ctx, u.ID, now, s.countAttempt(now))
	})
	if err != nil {
		return err
	}
	if !ok {
		return tether.Errorf(tether.EFORBIDDEN, "the current password is wrong")
	}
	h, err := s.hash(ctx, next)
	if err != nil {
		return err
	}
	if _, err := s.store.UpdateUser(ctx, u.TenantID, u.ID, nil, &h, p.SessionID); err != nil {
		return err
	}
	s.o.Logger.Info("password changed; other sessions ended", "user", u.ID)
	return nil
}

// Users lists a tenant's users.
func (s *Service) Users(ctx context.Context, tenant string) ([]*tether.User, error) {
	return s.store.Users(ctx, tenant)
}

// CreateUser adds a user to the tenant.
func (s *Service) CreateUser(ctx context.Context, tenant, email, password, role string) (*tether.User, error) {
	email = NormalizeEmail(email)
	if err := checkEmail(email); err != nil {
		return nil, err
	}
	if !tether.ValidRole(role) {
		return nil, tether.Errorf(tether.EINVALID, "role %q must be admin, operator or viewer", truncate(role))
	}
	if err := CheckPassword(password); err != nil {
		return nil, err
	}
	h, err := s.hash(ctx, password)
	if err != nil {
		return nil, err
	}
	u := &tether.User{TenantID: tenant, ID: "u_" + secret.ID(), Email: email, Role: role, PasswordHash: h, CreatedAt: s.now()}
	if err := s.store.CreateUser(ctx, u); err != nil {
		return nil, err
	}
	s.o.Logger.Info("user created", "user", u.ID, "role", role)
	return u, nil
}

// UpdateUser changes a user's role or sets a new password (each if not
// nil), as the admin by. Either ends the user's sessions, except by's
// own when by edits itself; a new password also lifts a lock. Demoting
// the tenant's last admin is ECONFLICT.
func (s *Service) UpdateUser(ctx context.Context, by *tether.Principal, id string, role, password *string) (*tether.User, error) {
	if role != nil && !tether.ValidRole(*role) {
		return nil, tether.Errorf(tether.EINVALID, "role %q must be admin, operator or viewer", truncate(*role))
	}
	var hash *string
	if password != nil {
		if err := CheckPassword(*password); err != nil {
			return nil, err
		}
		h, err := s.hash(ctx, *password)
		if err != nil {
			return nil, err
		}
		hash = &h
	}
	keep := ""
	if by.Kind == tether.PrincipalUser && by.ID == id {
		keep = by.SessionID
	}
	u, err := s.store.UpdateUser(ctx, by.TenantID, id, role, hash, keep)
	if err != nil {
		return nil, err
	}
	s.o.Logger.Info("user updated", "user", id, "role", u.Role, "password", password != nil, "by", by.Source())
	return u, nil
}

// DeleteUser removes a user and ends its sessions. Deleting the
// tenant's last admin is ECONFLICT.
func (s *Service) DeleteUser(ctx context.Context, tenant, id string) error {
	if err := s.store.DeleteUser(ctx, tenant, id); err != nil {
		return err
	}
	s.o.Logger.Info("user deleted", "user", id)
	return nil
}

// Bootstrap creates the first admin user, in the default tenant, when
// no user exists at all (which the registry's bootstrap made sure of),
// with the e-mail address email (DefaultAdminEmail if empty) and the
// password password. An empty password gets a generated one, returned
// this once for the caller to print. It returns the user it created, or
// nil if there were users already.
func (s *Service) Bootstrap(ctx context.Context, email, password string) (*tether.User, string, error) {
	n, err := s.store.CountUsers(ctx)
	if err != nil || n > 0 {
		return nil, "", err
	}
	if email == "" {
		email = DefaultAdminEmail
	}
	generated := ""
	if password == "" {
		// 144 random bits in 24 characters that survive copy and paste.
		password = secret.New()[:24]
		generated = password
	}
	u, err := s.CreateUser(ctx, tether.DefaultTenantID, email, password, tether.RoleAdmin)
	if tether.ErrorCode(err) == tether.ECONFLICT {
		// Another node, starting at the same time, created it.
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	return u, generated, nil
}
