package user_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/secret"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/user"
)

// cheap are argon2id costs that keep the tests fast; the hash format and
// the algorithm are the same as with the defaults.
var cheap = user.Params{Memory: 64, Time: 1, Threads: 1}

const password = "correct horse battery staple"

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a user service over a real store in a temporary directory.
type env struct {
	db    *sqlite.DB
	svc   *user.Service
	clock *clock
}

func newEnv(t *testing.T, o user.Options) *env {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tether.DefaultTenantID, Name: "Default", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if o.Params == (user.Params{}) {
		o.Params = cheap
	}
	o.Now = c.Now
	return &env{db: db, svc: user.New(db, o), clock: c}
}

func (e *env) create(t *testing.T, email, role string) *tether.User {
	t.Helper()
	u, err := e.svc.CreateUser(context.Background(), tether.DefaultTenantID, email, password, role)
	if err != nil {
		t.Fatalf("CreateUser %s: %v", email, err)
	}
	return u
}

func (e *env) login(t *testing.T, email, pw string) (*tether.Session, string) {
	t.Helper()
	_, s, cookie, err := e.svc.Login(context.Background(), email, pw)
	if err != nil {
		t.Fatalf("Login %s: %v", email, err)
	}
	return s, cookie
}

func principal(u *tether.User, s *tether.Session) *tether.Principal {
	p := &tether.Principal{TenantID: u.TenantID, Kind: tether.PrincipalUser, ID: u.ID, Name: u.Email, Role: u.Role}
	if s != nil {
		p.SessionID = s.ID
	}
	return p
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func TestPasswordHashes(t *testing.T) {
	h := user.HashPassword(password, user.DefaultParams())
	t.Run("a hash is a PHC argon2id string with the parameters", func(t *testing.T) {
		if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=1,p=2$") || strings.Count(h, "$") != 5 {
			t.Errorf("hash %s", h)
		}
		p, salt, key, err := user.ParseHash(h)
		if err != nil || p != user.DefaultParams() || len(salt) != 16 || len(key) != 32 {
			t.Errorf("ParseHash = %+v, %d, %d, %v", p, len(salt), len(key), err)
		}
	})
	t.Run("the right password verifies, a wrong one does not", func(t *testing.T) {
		for pw, want := range map[string]bool{password: true, password + " ": false, "": false, strings.ToUpper(password): false} {
			if ok, err := user.VerifyPassword(pw, h); err != nil || ok != want {
				t.Errorf("VerifyPassword(%q) = %v, %v; want %v", pw, ok, err, want)
			}
		}
	})
	t.Run("two hashes of one password differ by their salt", func(t *testing.T) {
		if h2 := user.HashPassword(password, user.DefaultParams()); h2 == h {
			t.Error("the same hash twice")
		}
	})
	t.Run("a hash with other parameters still verifies", func(t *testing.T) {
		old := user.HashPassword(password, user.Params{Memory: 1024, Time: 2, Threads: 1})
		if ok, err := user.VerifyPassword(password, old); err != nil || !ok {
			t.Errorf("VerifyPassword = %v, %v", ok, err)
		}
	})
	salt, key := "c2FsdHNhbHRzYWx0c2FsdA", "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
	bad := map[string]string{
		"not PHC":                "plain",
		"argon2i":                "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"version 16":             "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"no parameters":          "$argon2id$v=19$" + salt + "$" + key,
		"parameters in order":    "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key,
		"a leading zero":         "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key,
		"a sign":                 "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key,
		"no lanes":               "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"256 lanes":              "$argon2id$v=19$m=4096,t=1,p=256$" + salt + "$" + key,
		"no passes":              "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key,
		"100 passes":             "$argon2id$v=19$m=64,t=100,p=1$" + salt + "$" + key,
		"2 GiB":                  "$argon2id$v=19$m=2097152,t=1,p=1$" + salt + "$" + key,
		"less memory than lanes": "$argon2id$v=19$m=8,t=1,p=2$" + salt + "$" + key,
		"a short salt":           "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + key,
		"padded base64":          "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key,
		"a short hash":           "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$a2V5",
		"a trailing field":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key + "$",
	}
	for name, h := range bad {
		t.Run("a hash with "+name+" is refused", func(t *testing.T) {
			if _, _, _, err := user.ParseHash(h); err == nil {
				t.Errorf("ParseHash(%s) accepted it", h)
			}
			if ok, err := user.VerifyPassword(password, h); ok || err == nil {
				t.Errorf("VerifyPassword = %v, %v", ok, err)
			}
		})
	}
}

func TestPasswordRules(t *testing.T) {
	for _, c := range []struct {
		name, password string
		ok             bool
	}{
		{"11 characters are too few", "abcdefghijk", false},
		{"12 characters are enough", "abcdefghijkl", true},
		{"12 characters of several bytes each are enough", "ääääääääääää", true},
		{"256 bytes are allowed", strings.Repeat("x", 256), true},
		{"257 bytes are too many", strings.Repeat("x", 257), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := user.CheckPassword(c.password)
			if (err == nil) != c.ok {
				t.Errorf("CheckPassword = %v", err)
			}
			if err != nil {
				wantCode(t, err, tether.EINVALID)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, user.Options{})
	alice := e.create(t, "Alice@Example.com", tether.RoleOperator)

	t.Run("a user's address is stored in lower case", func(t *testing.T) {
		if alice.Email != "alice@example.com" || alice.PasswordHash == password || !strings.HasPrefix(alice.PasswordHash, "$argon2id$") {
			t.Errorf("user %+v", alice)
		}
	})
	t.Run("the right password starts a session whose cookie is stored only as a hash", func(t *testing.T) {
		u, s, cookie, err := e.svc.Login(ctx, " ALICE@example.com ", password)
		if err != nil {
			t.Fatal(err)
		}
		if u.ID != alice.ID || u.LastLoginAt == nil || !u.LastLoginAt.Equal(e.clock.Now()) {
			t.Errorf("user %+v", u)
		}
		id, sec, ok := strings.Cut(cookie, ".")
		if !ok || id != s.ID || len(sec) < 43 {
			t.Errorf("cookie %q for session %s", cookie, s.ID)
		}
		stored, _, err := e.db.SessionUser(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if string(stored.Hash) != string(secret.Hash(cookie)) || strings.Contains(string(stored.Hash), sec) {
			t.Error("the stored session is not the cookie's SHA-256")
		}
		if !s.ExpiresAt.Equal(e.clock.Now().Add(user.DefaultMaxAge)) {
			t.Errorf("ExpiresAt %v", s.ExpiresAt)
		}
	})
	t.Run("a wrong password and an unknown address get one answer", func(t *testing.T) {
		_, _, _, wrong := e.svc.Login(ctx, "alice@example.com", "not the password")
		_, _, _, unknown := e.svc.Login(ctx, "nobody@example.com", password)
		wantCode(t, wrong, tether.EUNAUTHORIZED)
		wantCode(t, unknown, tether.EUNAUTHORIZED)
		if wrong.Error() != unknown.Error() {
			t.Errorf("%v / %v", wrong, unknown)
		}
	})
	t.Run("missing credentials are invalid", func(t *testing.T) {
		_, _, _, err := e.svc.Login(ctx, "", password)
		wantCode(t, err, tether.EINVALID)
		_, _, _, err = e.svc.Login(ctx, "alice@example.com", "")
		wantCode(t, err, tether.EINVALID)
	})
	t.Run("each session has its own CSRF token of 256 random bits", func(t *testing.T) {
		s1, c1 := e.login(t, "alice@example.com", password)
		s2, _ := e.login(t, "alice@example.com", password)
		if len(s1.CSRFToken) < 43 || s1.CSRFToken == s2.CSRFToken {
			t.Errorf("tokens %q, %q", s1.CSRFToken, s2.CSRFToken)
		}
		_, got, err := e.svc.Authenticate(ctx, c1)
		if err != nil || got.CSRFToken != s1.CSRFToken {
			t.Errorf("Authenticate = %+v, %v", got, err)
		}
	})
}

// TestLoginTiming checks that an unknown address costs a password hash,
// as a wrong password does: without the dummy hash it would answer in a
// fraction of a millisecond instead of tens.
func TestLoginTiming(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, user.Options{Params: user.DefaultParams()})
	e.create(t, "alice@example.com", tether.RoleViewer)
	fastest := func(email string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			_, _, _, err := e.svc.Login(ctx, email, "a wrong password")
			wantCode(t, err, tether.EUNAUTHORIZED)
			best = min(best, time.Since(start))
		}
		return best
	}
	wrong, unknown := fastest("alice@example.com"), fastest("nobody@example.com")
	if unknown < wrong/3 {
		t.Errorf("an unknown address took %v, a wrong password %v", unknown, wrong)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, user.Options{})
	u := e.create(t, "alice@example.com", tether.RoleAdmin)
	s, cookie := e.login(t, "alice@example.com", password)

	t.Run("the cookie returns its user and session", func(t *testing.T) {
		gu, gs, err := e.svc.Authenticate(ctx, cookie)
		if err != nil || gu.ID != u.ID || gs.ID != s.ID || gu.Role != tether.RoleAdmin {
			t.Errorf("Authenticate = %+v, %+v, %v", gu, gs, err)
		}
	})
	for name, c := range map[string]string{
		"a wrong secret":      s.ID + ".x" + cookie[len(s.ID)+2:],
		"no secret":           s.ID,
		"an unknown session":  "nosuchsession123.abc",
		"an empty cookie":     "",
		"an invalid id":       "../etc.x",
		"the secret alone":    cookie[len(s.ID)+1:],
		"the cookie, doubled": cookie + cookie,
	} {
		t.Run(name+" is unauthorized", func(t *testing.T) {
			_, _, err := e.svc.Authenticate(ctx, c)
			wantCode(t, err, tether.EUNAUTHORIZED)
		})
	}
	t.Run("the last use is written at most once a minute", func(t *testing.T) {
		start := e.clock.Now()
		e.clock.Add(30 * time.Second)
		if _, _, err := e.svc.Authenticate(ctx, cookie); err != nil {
			t.Fatal(err)
		}
		stored, _, _ := e.db.SessionUser(ctx, s.ID)
		if !stored.LastSeen.Equal(start) {
			t.Errorf("after 30 s LastSeen = %v, want %v", stored.LastSeen, start)
		}
		e.clock.Add(31 * time.Second)
		if _, _, err := e.svc.Authenticate(ctx, cookie); err != nil {
			t.Fatal(err)
		}
		stored, _, _ = e.db.SessionUser(ctx, s.ID)
		if !stored.LastSeen.Equal(e.clock.Now()) {
			t.Errorf("after 61 s LastSeen = %v, want %v", stored.LastSeen, e.clock.Now())
		}
	})
	t.Run("signing out ends the session", func(t *testing.T) {
		if err := e.svc.Logout(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.svc.Authenticate(ctx, cookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
	})
}

func TestSessionExpiry(t *testing.T) {
	ctx := context.Background()
	t.Run("a session unused for 12 hours ends, and is deleted", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		e.create(t, "alice@example.com", tether.RoleViewer)
		s, cookie := e.login(t, "alice@example.com", password)
		e.clock.Add(12*time.Hour - time.Second)
		if _, _, err := e.svc.Authenticate(ctx, cookie); err != nil {
			t.Fatalf("just before the idle timeout: %v", err)
		}
		e.clock.Add(12 * time.Hour)
		_, _, err := e.svc.Authenticate(ctx, cookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
		if _, _, err := e.db.SessionUser(ctx, s.ID); tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("the ended session is still stored: %v", err)
		}
	})
	t.Run("a session in use ends 7 days after sign-in", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		e.create(t, "alice@example.com", tether.RoleViewer)
		_, cookie := e.login(t, "alice@example.com", password)
		for range 7*2 - 1 {
			e.clock.Add(12*time.Hour - time.Minute)
			if _, _, err := e.svc.Authenticate(ctx, cookie); err != nil {
				t.Fatalf("used every 12 hours, at %v: %v", e.clock.Now(), err)
			}
		}
		e.clock.Add(12 * time.Hour) // now past 7 days, though used within 12 hours
		_, _, err := e.svc.Authenticate(ctx, cookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
	})
	t.Run("other lifetimes can be set", func(t *testing.T) {
		e := newEnv(t, user.Options{IdleTimeout: time.Minute, MaxAge: time.Hour})
		e.create(t, "alice@example.com", tether.RoleViewer)
		_, cookie := e.login(t, "alice@example.com", password)
		e.clock.Add(2 * time.Minute)
		_, _, err := e.svc.Authenticate(ctx, cookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
	})
}

func TestLockout(t *testing.T) {
	ctx := context.Background()
	fail := func(t *testing.T, svc *user.Service, email string) error {
		t.Helper()
		_, _, _, err := svc.Login(ctx, email, "a wrong password")
		return err
	}
	locked := func(t *testing.T, err error) {
		t.Helper()
		wantCode(t, err, tether.ETOOMANY)
		var l *user.LockedError
		if !errors.As(err, &l) || l.RetryAfter() <= 0 || l.RetryAfter() > user.DefaultLockFor {
			t.Errorf("%v is not a lock with a retry time", err)
		}
	}

	for _, known := range []bool{true, false} {
		name := map[bool]string{true: "a user", false: "an unknown address"}[known]
		t.Run("five failures lock "+name+" for 15 minutes, even with the right password", func(t *testing.T) {
			e := newEnv(t, user.Options{})
			email := "nobody@example.com"
			if known {
				email = "alice@example.com"
				e.create(t, email, tether.RoleViewer)
			}
			for i := range user.DefaultMaxFailures {
				wantCode(t, fail(t, e.svc, email), tether.EUNAUTHORIZED)
				e.clock.Add(time.Second)
				_ = i
			}
			_, _, _, err := e.svc.Login(ctx, email, password)
			locked(t, err)
			var l *user.LockedError
			errors.As(err, &l)
			if l.RetryAfter() != user.DefaultLockFor-time.Second {
				t.Errorf("RetryAfter = %v", l.RetryAfter())
			}
			e.clock.Add(user.DefaultLockFor)
			_, _, _, err = e.svc.Login(ctx, email, password)
			if known && err != nil {
				t.Errorf("after the lock: %v", err)
			}
			if !known {
				wantCode(t, err, tether.EUNAUTHORIZED)
			}
		})
	}
	t.Run("a sign-in forgets the failures before it", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		e.create(t, "alice@example.com", tether.RoleViewer)
		for range 2 {
			for range user.DefaultMaxFailures - 1 {
				wantCode(t, fail(t, e.svc, "alice@example.com"), tether.EUNAUTHORIZED)
			}
			e.login(t, "alice@example.com", password)
		}
	})
	t.Run("failures a day apart do not add up", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		e.create(t, "alice@example.com", tether.RoleViewer)
		for range user.DefaultMaxFailures - 1 {
			fail(t, e.svc, "alice@example.com")
		}
		e.clock.Add(25 * time.Hour)
		wantCode(t, fail(t, e.svc, "alice@example.com"), tether.EUNAUTHORIZED)
		e.login(t, "alice@example.com", password)
	})
	t.Run("failures on two nodes add up, since the store counts them", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		e.create(t, "alice@example.com", tether.RoleViewer)
		other := user.New(e.db, user.Options{Params: cheap, Now: e.clock.Now})
		for i := range user.DefaultMaxFailures {
			svc := e.svc
			if i%2 == 1 {
				svc = other
			}
			fail(t, svc, "alice@example.com")
		}
		_, _, _, err := e.svc.Login(ctx, "alice@example.com", password)
		locked(t, err)
	})
	t.Run("concurrent failures all count", func(t *testing.T) {
		// A queue long enough that no attempt is refused for want of a
		// hash turn, which would not count.
		e := newEnv(t, user.Options{MaxFailures: 20, MaxHashQueue: 20})
		e.create(t, "alice@example.com", tether.RoleViewer)
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fail(t, e.svc, "alice@example.com")
			}()
		}
		wg.Wait()
		_, _, _, err := e.svc.Login(ctx, "alice@example.com", password)
		locked(t, err)
	})
	t.Run("an admin's new password lifts the lock", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		admin := e.create(t, "admin@example.com", tether.RoleAdmin)
		alice := e.create(t, "alice@example.com", tether.RoleViewer)
		for range user.DefaultMaxFailures {
			fail(t, e.svc, "alice@example.com")
		}
		pw := "a brand new password"
		if _, err := e.svc.UpdateUser(ctx, principal(admin, nil), alice.ID, nil, &pw); err != nil {
			t.Fatal(err)
		}
		e.login(t, "alice@example.com", pw)
	})
}

func TestHashTurns(t *testing.T) {
	// One hash at a time, each taking tens of milliseconds, and no
	// patience: of three sign-ins at once, at least one is refused.
	e := newEnv(t, user.Options{Params: user.DefaultParams(), MaxConcurrentHashes: 1, HashWait: time.Millisecond})
	e.create(t, "alice@example.com", tether.RoleViewer)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, 3)
	)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, _, _, errs[i] = e.svc.Login(context.Background(), "alice@example.com", password)
		}()
	}
	close(start)
	wg.Wait()
	refused := 0
	for _, err := range errs {
		if err != nil {
			wantCode(t, err, tether.ETOOMANY)
			if !strings.Contains(err.Error(), "too many sign-ins at once") {
				t.Errorf("%v", err)
			}
			refused++
		}
	}
	if refused == 0 || refused == len(errs) {
		t.Errorf("%d of %d refused: %v", refused, len(errs), errs)
	}
}

func TestChangePassword(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, user.Options{})
	u := e.create(t, "alice@example.com", tether.RoleOperator)
	this, thisCookie := e.login(t, "alice@example.com", password)
	_, otherCookie := e.login(t, "alice@example.com", password)
	next := "another good password"

	t.Run("a wrong current password is refused", func(t *testing.T) {
		wantCode(t, e.svc.ChangePassword(ctx, principal(u, this), "wrong current password", next), tether.EFORBIDDEN)
	})
	t.Run("a new password that breaks the rules is refused", func(t *testing.T) {
		wantCode(t, e.svc.ChangePassword(ctx, principal(u, this), password, "short"), tether.EINVALID)
	})
	t.Run("an API key has no password", func(t *testing.T) {
		p := &tether.Principal{TenantID: tether.DefaultTenantID, Kind: tether.PrincipalAPIKey, ID: "ak_x", Role: tether.RoleAdmin}
		wantCode(t, e.svc.ChangePassword(ctx, p, password, next), tether.EFORBIDDEN)
	})
	t.Run("the change ends the other sessions and keeps this one", func(t *testing.T) {
		if err := e.svc.ChangePassword(ctx, principal(u, this), password, next); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.svc.Authenticate(ctx, thisCookie); err != nil {
			t.Errorf("this session: %v", err)
		}
		_, _, err := e.svc.Authenticate(ctx, otherCookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
		_, _, _, err = e.svc.Login(ctx, "alice@example.com", password)
		wantCode(t, err, tether.EUNAUTHORIZED)
		e.login(t, "alice@example.com", next)
	})
	t.Run("wrong current passwords count toward the lock", func(t *testing.T) {
		for range user.DefaultMaxFailures {
			_ = e.svc.ChangePassword(ctx, principal(u, this), "wrong current password", "whatever whatever")
		}
		_, _, _, err := e.svc.Login(ctx, "alice@example.com", next)
		wantCode(t, err, tether.ETOOMANY)
	})
}

func TestUserManagement(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, user.Options{})
	admin := e.create(t, "admin@example.com", tether.RoleAdmin)
	adminSession, adminCookie := e.login(t, "admin@example.com", password)
	by := principal(admin, adminSession)

	t.Run("a user needs an e-mail address, a role and a good password", func(t *testing.T) {
		for _, c := range []struct{ email, password, role string }{
			{"not an address", password, tether.RoleViewer},
			{"Bob <bob@example.com>", password, tether.RoleViewer},
			{"bob@example.com", password, "root"},
			{"bob@example.com", "short", tether.RoleViewer},
			{strings.Repeat("b", 250) + "@example.com", password, tether.RoleViewer},
		} {
			_, err := e.svc.CreateUser(ctx, tether.DefaultTenantID, c.email, c.password, c.role)
			wantCode(t, err, tether.EINVALID)
		}
	})
	t.Run("an address is taken whatever its case", func(t *testing.T) {
		_, err := e.svc.CreateUser(ctx, tether.DefaultTenantID, "ADMIN@example.com", password, tether.RoleViewer)
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("the last admin can be neither demoted nor deleted", func(t *testing.T) {
		viewer := tether.RoleViewer
		_, err := e.svc.UpdateUser(ctx, by, admin.ID, &viewer, nil)
		wantCode(t, err, tether.ECONFLICT)
		wantCode(t, e.svc.DeleteUser(ctx, tether.DefaultTenantID, admin.ID), tether.ECONFLICT)
	})
	t.Run("a role change takes effect at once and ends the user's sessions", func(t *testing.T) {
		bob := e.create(t, "bob@example.com", tether.RoleOperator)
		_, bobCookie := e.login(t, "bob@example.com", password)
		viewer := tether.RoleViewer
		got, err := e.svc.UpdateUser(ctx, by, bob.ID, &viewer, nil)
		if err != nil || got.Role != viewer {
			t.Fatalf("UpdateUser = %+v, %v", got, err)
		}
		_, _, err = e.svc.Authenticate(ctx, bobCookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
		u, _, err := e.svc.Authenticate(ctx, e.loginCookie(t, "bob@example.com"))
		if err != nil || u.Role != viewer {
			t.Errorf("after signing in again: %+v, %v", u, err)
		}
		if _, err := e.svc.UpdateUser(ctx, by, bob.ID, ptr("root"), nil); tether.ErrorCode(err) != tether.EINVALID {
			t.Errorf("role root: %v", err)
		}
	})
	t.Run("an admin's own new password keeps its own session", func(t *testing.T) {
		pw := "the admin's new password"
		if _, err := e.svc.UpdateUser(ctx, by, admin.ID, nil, &pw); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.svc.Authenticate(ctx, adminCookie); err != nil {
			t.Errorf("own session: %v", err)
		}
	})
	t.Run("deleting a user ends its sessions", func(t *testing.T) {
		carol := e.create(t, "carol@example.com", tether.RoleAdmin)
		cookie := e.loginCookie(t, "carol@example.com")
		if err := e.svc.DeleteUser(ctx, tether.DefaultTenantID, carol.ID); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.svc.Authenticate(ctx, cookie)
		wantCode(t, err, tether.EUNAUTHORIZED)
		us, err := e.svc.Users(ctx, tether.DefaultTenantID)
		if err != nil || len(us) != 2 {
			t.Errorf("Users = %v, %v", us, err)
		}
	})
}

func (e *env) loginCookie(t *testing.T, email string) string {
	t.Helper()
	_, c := e.login(t, email, password)
	return c
}

func ptr(s string) *string { return &s }

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	t.Run("the first start creates an admin with a generated password, once", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		u, pw, err := e.svc.Bootstrap(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if u == nil || u.Email != user.DefaultAdminEmail || u.Role != tether.RoleAdmin || u.TenantID != tether.DefaultTenantID || len(pw) < 20 {
			t.Fatalf("Bootstrap = %+v, %q", u, pw)
		}
		e.login(t, user.DefaultAdminEmail, pw)
		u, pw, err = e.svc.Bootstrap(ctx, "", "")
		if u != nil || pw != "" || err != nil {
			t.Errorf("second Bootstrap = %+v, %q, %v", u, pw, err)
		}
	})
	t.Run("a supplied address and password are used and not returned", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		u, pw, err := e.svc.Bootstrap(ctx, "Ops@Example.com", "supplied password 123")
		if err != nil || u == nil || u.Email != "ops@example.com" || pw != "" {
			t.Fatalf("Bootstrap = %+v, %q, %v", u, pw, err)
		}
		e.login(t, "ops@example.com", "supplied password 123")
	})
	t.Run("a supplied password that breaks the rules is refused", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		_, _, err := e.svc.Bootstrap(ctx, "", "short")
		wantCode(t, err, tether.EINVALID)
	})
	t.Run("no admin is created while any user exists", func(t *testing.T) {
		e := newEnv(t, user.Options{})
		e.create(t, "viewer@example.com", tether.RoleViewer)
		if u, _, err := e.svc.Bootstrap(ctx, "", ""); u != nil || err != nil {
			t.Errorf("Bootstrap = %+v, %v", u, err)
		}
	})
}
