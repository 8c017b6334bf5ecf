package sqlite_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func createUser(t *testing.T, db *sqlite.DB, tenant, id, email, role string) *tether.User {
	t.Helper()
	u := &tether.User{TenantID: tenant, ID: id, Email: email, Role: role, PasswordHash: "$argon2id$hash-of-" + id, CreatedAt: t0}
	if err := db.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser %s: %v", id, err)
	}
	return u
}

func createSession(t *testing.T, db *sqlite.DB, u *tether.User, id string, at time.Time) *tether.Session {
	t.Helper()
	s := &tether.Session{ID: id, TenantID: u.TenantID, UserID: u.ID, Hash: []byte("hash-" + id), CSRFToken: "csrf-" + id,
		CreatedAt: at, ExpiresAt: at.Add(7 * 24 * time.Hour), LastSeen: at}
	if err := db.CreateSession(context.Background(), s, at.Add(-12*time.Hour), 50); err != nil {
		t.Fatalf("CreateSession %s: %v", id, err)
	}
	return s
}

// sessionAlive reports whether the store still has the session.
func sessionAlive(t *testing.T, db *sqlite.DB, id string) bool {
	t.Helper()
	_, _, err := db.SessionUser(context.Background(), id)
	if err != nil && tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Fatal(err)
	}
	return err == nil
}

func TestUsers(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	alice := createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleAdmin)
	createUser(t, db, tenantA, "u2", "bob@example.com", tether.RoleViewer)
	createUser(t, db, tenantB, "u3", "carol@example.com", tether.RoleAdmin)

	t.Run("a stored user comes back with all its fields, by ID and by e-mail address", func(t *testing.T) {
		for _, get := range []func() (*tether.User, error){
			func() (*tether.User, error) { return db.User(ctx, tenantA, "u1") },
			func() (*tether.User, error) { return db.UserByEmail(ctx, "alice@example.com") },
		} {
			u, err := get()
			if err != nil {
				t.Fatal(err)
			}
			if u.ID != "u1" || u.TenantID != tenantA || u.Email != alice.Email || u.Role != tether.RoleAdmin ||
				u.PasswordHash != alice.PasswordHash || !u.CreatedAt.Equal(t0) || u.LockedUntil != nil || u.LastLoginAt != nil {
				t.Errorf("got %+v", u)
			}
		}
	})
	t.Run("an e-mail address is unique across tenants", func(t *testing.T) {
		err := db.CreateUser(ctx, &tether.User{TenantID: tenantB, ID: "u9", Email: "alice@example.com", Role: "viewer", PasswordHash: "x"})
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("a user of a missing tenant is refused", func(t *testing.T) {
		err := db.CreateUser(ctx, &tether.User{TenantID: "nobody", ID: "u9", Email: "x@example.com", Role: "viewer", PasswordHash: "x"})
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("a user of another tenant is not found", func(t *testing.T) {
		_, err := db.User(ctx, tenantB, "u1")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.UserByEmail(ctx, "nobody@example.com")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("a tenant's users are listed by e-mail address", func(t *testing.T) {
		us, err := db.Users(ctx, tenantA)
		if err != nil || len(us) != 2 || us[0].Email != "alice@example.com" || us[1].Email != "bob@example.com" {
			t.Errorf("Users = %v, %v", us, err)
		}
		n, err := db.CountUsers(ctx)
		if err != nil || n != 3 {
			t.Errorf("CountUsers = %d, %v", n, err)
		}
	})
}

func TestUserLastAdmin(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	admin := createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleAdmin)
	createUser(t, db, tenantA, "u2", "bob@example.com", tether.RoleViewer)
	// The other tenant's admin does not count for this one.
	createUser(t, db, tenantB, "u3", "carol@example.com", tether.RoleAdmin)
	viewer := tether.RoleViewer

	t.Run("the last admin cannot be demoted", func(t *testing.T) {
		_, err := db.UpdateUser(ctx, tenantA, "u1", &viewer, nil, "")
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("the last admin cannot be deleted", func(t *testing.T) {
		wantCode(t, db.DeleteUser(ctx, tenantA, "u1"), tether.ECONFLICT)
	})
	t.Run("with a second admin, the first can go", func(t *testing.T) {
		s := createSession(t, db, admin, "s1", t0)
		admin := tether.RoleAdmin
		if _, err := db.UpdateUser(ctx, tenantA, "u2", &admin, nil, ""); err != nil {
			t.Fatal(err)
		}
		u, err := db.UpdateUser(ctx, tenantA, "u1", &viewer, nil, "")
		if err != nil || u.Role != viewer {
			t.Fatalf("UpdateUser = %+v, %v", u, err)
		}
		if sessionAlive(t, db, s.ID) {
			t.Error("the demoted user's session lives on")
		}
		if err := db.DeleteUser(ctx, tenantA, "u1"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, db.DeleteUser(ctx, tenantA, "u2"), tether.ECONFLICT)
	})
	t.Run("concurrent demotions of two admins leave one admin", func(t *testing.T) {
		db := newDB(t)
		createUser(t, db, tenantA, "a1", "a1@example.com", tether.RoleAdmin)
		createUser(t, db, tenantA, "a2", "a2@example.com", tether.RoleAdmin)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []string{"a1", "a2"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = db.UpdateUser(ctx, tenantA, id, &viewer, nil, "")
			}()
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Errorf("errors %v, %v; want exactly one refused", errs[0], errs[1])
		}
	})
}

func TestUserUpdateEndsSessions(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	u := createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleAdmin)
	createUser(t, db, tenantA, "u2", "bob@example.com", tether.RoleAdmin)

	t.Run("a new password ends every session but the one kept, and lifts a lock", func(t *testing.T) {
		createSession(t, db, u, "s1", t0)
		createSession(t, db, u, "s2", t0)
		lock := func(int, *time.Time) (int, *time.Time) { l := t0.Add(time.Hour); return 3, &l }
		if _, err := db.RecordLoginAttempt(ctx, "u1", t0, lock); err != nil {
			t.Fatal(err)
		}
		h := "$argon2id$new"
		got, err := db.UpdateUser(ctx, tenantA, "u1", nil, &h, "s1")
		if err != nil || got.PasswordHash != h || got.LockedUntil != nil || got.FailedLogins != 0 {
			t.Fatalf("UpdateUser = %+v, %v", got, err)
		}
		if !sessionAlive(t, db, "s1") || sessionAlive(t, db, "s2") {
			t.Errorf("s1 alive %v, s2 alive %v; want only s1", sessionAlive(t, db, "s1"), sessionAlive(t, db, "s2"))
		}
		stored, _ := db.User(ctx, tenantA, "u1")
		if stored.LockedUntil != nil || stored.FailedLogins != 0 || stored.PasswordHash != h {
			t.Errorf("stored %+v", stored)
		}
	})
	t.Run("the same role again changes nothing and ends no session", func(t *testing.T) {
		createSession(t, db, u, "s3", t0)
		admin := tether.RoleAdmin
		if _, err := db.UpdateUser(ctx, tenantA, "u1", &admin, nil, ""); err != nil {
			t.Fatal(err)
		}
		if !sessionAlive(t, db, "s3") {
			t.Error("s3 ended")
		}
	})
	t.Run("deleting a user deletes its sessions", func(t *testing.T) {
		if err := db.DeleteUser(ctx, tenantA, "u1"); err != nil {
			t.Fatal(err)
		}
		if sessionAlive(t, db, "s1") || sessionAlive(t, db, "s3") {
			t.Error("a session outlived its user")
		}
		wantCode(t, db.DeleteUser(ctx, tenantA, "u1"), tether.ENOTFOUND)
		_, err := db.UpdateUser(ctx, tenantA, "u1", nil, nil, "")
		wantCode(t, err, tether.ENOTFOUND)
	})
}

func TestLoginFailures(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleAdmin)
	// count locks at the third failure and remembers what it was given.
	type seen struct {
		n    int
		last *time.Time
	}
	var got []seen
	count := func(now time.Time) func(int, *time.Time) (int, *time.Time) {
		return func(n int, last *time.Time) (int, *time.Time) {
			got = append(got, seen{n, last})
			if n+1 >= 3 {
				l := now.Add(time.Hour)
				return 0, &l
			}
			return n + 1, nil
		}
	}

	t.Run("a user's failures are counted and the third locks", func(t *testing.T) {
		got = nil
		for i := range 3 {
			if _, err := db.RecordLoginAttempt(ctx, "u1", t0.Add(time.Duration(i)*time.Minute), count(t0.Add(time.Duration(i)*time.Minute))); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != 3 || got[0].n != 0 || got[0].last != nil || got[2].n != 2 || !got[2].last.Equal(t0.Add(time.Minute)) {
			t.Errorf("count saw %+v", got)
		}
		u, _ := db.User(ctx, tenantA, "u1")
		if u.LockedUntil == nil || !u.LockedUntil.Equal(t0.Add(2*time.Minute+time.Hour)) || u.FailedLogins != 0 {
			t.Errorf("user %+v", u)
		}
	})
	t.Run("a sign-in forgets the failures and lifts the lock", func(t *testing.T) {
		if err := db.RecordLogin(ctx, "u1", t0.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		u, _ := db.User(ctx, tenantA, "u1")
		if u.LockedUntil != nil || u.FailedLogins != 0 || u.LastLoginAt == nil || !u.LastLoginAt.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("user %+v", u)
		}
		got = nil
		if _, err := db.RecordLoginAttempt(ctx, "u1", t0.Add(3*time.Hour), count(t0)); err != nil || got[0].n != 0 || got[0].last != nil {
			t.Errorf("after sign-in count saw %+v, %v", got, err)
		}
	})
	t.Run("concurrent failures are all counted", func(t *testing.T) {
		db := newDB(t)
		createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleAdmin)
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = db.RecordLoginAttempt(ctx, "u1", t0, func(n int, _ *time.Time) (int, *time.Time) { return n + 1, nil })
			}()
		}
		wg.Wait()
		u, _ := db.User(ctx, tenantA, "u1")
		if u.FailedLogins != 20 {
			t.Errorf("FailedLogins = %d, want 20", u.FailedLogins)
		}
	})
	t.Run("a missing user is not found", func(t *testing.T) {
		_, err := db.RecordLoginAttempt(ctx, "nobody", t0, count(t0))
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, db.RecordLogin(ctx, "nobody", t0), tether.ENOTFOUND)
	})
	t.Run("failures with an unknown address are counted and locked the same way", func(t *testing.T) {
		got = nil
		for i := range 3 {
			at := t0.Add(time.Duration(i) * time.Minute)
			if _, err := db.RecordUnknownLoginAttempt(ctx, "nobody@example.com", at, 100, count(at)); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != 3 || got[0].n != 0 || got[0].last != nil || got[2].n != 2 || !got[2].last.Equal(t0.Add(time.Minute)) {
			t.Errorf("count saw %+v", got)
		}
		locked, err := db.UnknownLoginLock(ctx, "nobody@example.com")
		if err != nil || locked == nil || !locked.Equal(t0.Add(2*time.Minute+time.Hour)) {
			t.Errorf("UnknownLoginLock = %v, %v", locked, err)
		}
		if locked, err := db.UnknownLoginLock(ctx, "other@example.com"); err != nil || locked != nil {
			t.Errorf("an address never tried: %v, %v", locked, err)
		}
	})
	t.Run("an unknown address's count is deleted after a week without failures", func(t *testing.T) {
		later := t0.Add(8 * 24 * time.Hour)
		if _, err := db.RecordUnknownLoginAttempt(ctx, "someone@example.com", later, 100, count(later)); err != nil {
			t.Fatal(err)
		}
		if locked, err := db.UnknownLoginLock(ctx, "nobody@example.com"); err != nil || locked != nil {
			t.Errorf("UnknownLoginLock = %v, %v; want the row gone", locked, err)
		}
	})
}

func TestLoginAttemptsWhileLocked(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleViewer)
	lock := func(int, *time.Time) (int, *time.Time) { l := t0.Add(time.Hour); return 0, &l }
	called := false
	count := func(n int, _ *time.Time) (int, *time.Time) { called = true; return n + 1, nil }

	t.Run("an attempt while the user is locked is not counted and returns the lock", func(t *testing.T) {
		if l, err := db.RecordLoginAttempt(ctx, "u1", t0, lock); err != nil || l != nil {
			t.Fatalf("the attempt that locks: %v, %v", l, err)
		}
		l, err := db.RecordLoginAttempt(ctx, "u1", t0.Add(time.Minute), count)
		if err != nil || l == nil || !l.Equal(t0.Add(time.Hour)) || called {
			t.Errorf("RecordLoginAttempt = %v, %v; count called %v", l, err, called)
		}
		if u, _ := db.User(ctx, tenantA, "u1"); u.FailedLogins != 0 {
			t.Errorf("FailedLogins = %d", u.FailedLogins)
		}
	})
	t.Run("once the lock has ended, attempts count again", func(t *testing.T) {
		l, err := db.RecordLoginAttempt(ctx, "u1", t0.Add(time.Hour), count)
		if err != nil || l != nil || !called {
			t.Errorf("RecordLoginAttempt = %v, %v; count called %v", l, err, called)
		}
	})
	t.Run("so is an unknown address's", func(t *testing.T) {
		called = false
		if l, err := db.RecordUnknownLoginAttempt(ctx, "nobody@example.com", t0, 10, lock); err != nil || l != nil {
			t.Fatalf("the attempt that locks: %v, %v", l, err)
		}
		l, err := db.RecordUnknownLoginAttempt(ctx, "nobody@example.com", t0.Add(time.Minute), 10, count)
		if err != nil || l == nil || !l.Equal(t0.Add(time.Hour)) || called {
			t.Errorf("RecordUnknownLoginAttempt = %v, %v; count called %v", l, err, called)
		}
	})
}

// TestUnknownLoginAddressesKept checks that sign-ins with ever new
// addresses cannot grow login_failures beyond keep rows: the oldest go,
// never the one just added.
func TestUnknownLoginAddressesKept(t *testing.T) {
	ctx := context.Background()
	lock := func(int, *time.Time) (int, *time.Time) { l := t0.Add(time.Hour); return 0, &l }
	kept := func(t *testing.T, db *sqlite.DB, email string) bool {
		t.Helper()
		l, err := db.UnknownLoginLock(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		return l != nil
	}
	for name, step := range map[string]time.Duration{"a minute apart": time.Minute, "at the same time": 0} {
		t.Run(name, func(t *testing.T) {
			db := newDB(t)
			const keep = 3
			var emails []string
			for i := range 8 {
				email := fmt.Sprintf("nobody%d@example.com", i)
				emails = append(emails, email)
				if _, err := db.RecordUnknownLoginAttempt(ctx, email, t0.Add(time.Duration(i)*step), keep, lock); err != nil {
					t.Fatal(err)
				}
				if !kept(t, db, email) {
					t.Fatalf("%s, just added, is gone", email)
				}
			}
			for i, email := range emails {
				if want := i >= len(emails)-keep; kept(t, db, email) != want {
					t.Errorf("%s kept %v, want %v", email, !want, want)
				}
			}
		})
	}
	t.Run("a locked address outlasts a flood of made-up ones", func(t *testing.T) {
		db := newDB(t)
		if _, err := db.RecordUnknownLoginAttempt(ctx, "locked@example.com", t0, 3, lock); err != nil {
			t.Fatal(err)
		}
		count := func(n int, _ *time.Time) (int, *time.Time) { return n + 1, nil }
		for i := range 10 {
			if _, err := db.RecordUnknownLoginAttempt(ctx, fmt.Sprintf("made-up%d@example.com", i), t0.Add(time.Duration(i+1)*time.Second), 3, count); err != nil {
				t.Fatal(err)
			}
		}
		if !kept(t, db, "locked@example.com") {
			t.Error("the lock was evicted by made-up addresses")
		}
	})
	t.Run("a long address (kept as its hash) is found again, and told from another", func(t *testing.T) {
		db := newDB(t)
		email := strings.Repeat("a", 100_000) + "@example.com"
		if _, err := db.RecordUnknownLoginAttempt(ctx, email, t0, 10, lock); err != nil {
			t.Fatal(err)
		}
		if !kept(t, db, email) || kept(t, db, email[1:]) {
			t.Error("the address is not told apart by its hash")
		}
	})
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	u := createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleOperator)
	s := createSession(t, db, u, "s1", t0)

	t.Run("a session comes back with its user", func(t *testing.T) {
		got, gu, err := db.SessionUser(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != "s1" || got.UserID != "u1" || got.TenantID != tenantA || string(got.Hash) != string(s.Hash) || got.CSRFToken != s.CSRFToken ||
			!got.CreatedAt.Equal(t0) || !got.ExpiresAt.Equal(s.ExpiresAt) || !got.LastSeen.Equal(t0) {
			t.Errorf("session %+v", got)
		}
		if gu.ID != "u1" || gu.Email != u.Email || gu.Role != tether.RoleOperator || gu.TenantID != tenantA {
			t.Errorf("user %+v", gu)
		}
	})
	t.Run("a touch moves the last use forward only", func(t *testing.T) {
		if err := db.TouchSession(ctx, "s1", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := db.TouchSession(ctx, "s1", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, _, _ := db.SessionUser(ctx, "s1")
		if !got.LastSeen.Equal(t0.Add(time.Hour)) {
			t.Errorf("LastSeen = %v", got.LastSeen)
		}
	})
	t.Run("creating a session deletes those that ended", func(t *testing.T) {
		createSession(t, db, u, "idle", t0)
		createSession(t, db, u, "old", t0.Add(-7*24*time.Hour))
		createSession(t, db, u, "s2", t0.Add(13*time.Hour))
		for id, alive := range map[string]bool{"s1": true, "idle": false, "old": false, "s2": true} {
			if sessionAlive(t, db, id) != alive {
				t.Errorf("%s alive = %v, want %v", id, !alive, alive)
			}
		}
	})
	t.Run("a user's oldest sessions beyond the limit end", func(t *testing.T) {
		db := newDB(t)
		createUser(t, db, tenantA, "u1", "alice@example.com", tether.RoleOperator)
		for i := range 4 {
			s := &tether.Session{ID: fmt.Sprintf("s%d", i), TenantID: tenantA, UserID: "u1", Hash: []byte{byte(i)}, CSRFToken: "c",
				CreatedAt: t0.Add(time.Duration(i) * time.Second), ExpiresAt: t0.Add(time.Hour), LastSeen: t0.Add(time.Duration(i) * time.Second)}
			if err := db.CreateSession(ctx, s, t0.Add(-time.Hour), 2); err != nil {
				t.Fatal(err)
			}
		}
		for i, alive := range []bool{false, false, true, true} {
			if sessionAlive(t, db, fmt.Sprintf("s%d", i)) != alive {
				t.Errorf("s%d alive = %v", i, !alive)
			}
		}
	})
	t.Run("a session of a missing user is refused", func(t *testing.T) {
		err := db.CreateSession(ctx, &tether.Session{ID: "x", TenantID: tenantA, UserID: "nobody", Hash: []byte{1}, CSRFToken: "c",
			CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}, t0, 50)
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("a deleted session is gone, and deleting it again is no error", func(t *testing.T) {
		if err := db.DeleteSession(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if sessionAlive(t, db, "s1") {
			t.Error("s1 alive")
		}
		if err := db.DeleteSession(ctx, "s1"); err != nil {
			t.Error(err)
		}
	})
}

func TestAPIKeyManagement(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	for i, k := range []*tether.APIKey{
		{TenantID: tenantA, ID: "k2", Name: "second", Role: tether.RoleViewer, Hash: []byte{2}, CreatedAt: t0.Add(time.Second)},
		{TenantID: tenantA, ID: "k1", Name: "first", Role: tether.RoleAdmin, Hash: []byte{1}, CreatedAt: t0},
		{TenantID: tenantB, ID: "k3", Name: "other", Role: tether.RoleAdmin, Hash: []byte{3}, CreatedAt: t0},
	} {
		if err := db.CreateAPIKey(ctx, k); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	t.Run("a tenant's keys are listed oldest first", func(t *testing.T) {
		ks, err := db.APIKeys(ctx, tenantA)
		if err != nil || len(ks) != 2 || ks[0].ID != "k1" || ks[1].ID != "k2" || ks[1].Name != "second" || ks[1].Role != tether.RoleViewer {
			t.Errorf("APIKeys = %v, %v", ks, err)
		}
	})
	t.Run("a key of another tenant cannot be deleted", func(t *testing.T) {
		wantCode(t, db.DeleteAPIKey(ctx, tenantA, "k3"), tether.ENOTFOUND)
	})
	t.Run("a deleted key is gone", func(t *testing.T) {
		if err := db.DeleteAPIKey(ctx, tenantA, "k1"); err != nil {
			t.Fatal(err)
		}
		_, err := db.APIKey(ctx, "k1")
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, db.DeleteAPIKey(ctx, tenantA, "k1"), tether.ENOTFOUND)
	})
}
