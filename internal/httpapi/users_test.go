package httpapi_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

// fakeUsers keeps users and sessions in maps, with plain passwords. It
// starts with one user of each role, all with the password fakePassword
// (see fakeUser); sign-in with lockedEmail is locked. The user service
// itself, with its hashing, lockout and expiry, is tested in
// internal/user.
type fakeUsers struct {
	mu        sync.Mutex
	users     map[string]*tether.User // by ID
	passwords map[string]string       // by user ID
	sessions  map[string]*tether.Session
	n         int
}

var _ httpapi.Users = (*fakeUsers)(nil)

const (
	fakePassword = "correct horse battery"
	lockedEmail  = "locked@example.com"
)

// fakeUser returns the e-mail address of the fake's user with role.
func fakeUser(role string) string { return role + "@example.com" }

func newFakeUsers() *fakeUsers {
	f := &fakeUsers{users: map[string]*tether.User{}, passwords: map[string]string{}, sessions: map[string]*tether.Session{}}
	for _, role := range []string{tether.RoleAdmin, tether.RoleOperator, tether.RoleViewer} {
		id := "u_" + role
		f.users[id] = &tether.User{TenantID: tether.DefaultTenantID, ID: id, Email: fakeUser(role), Role: role}
		f.passwords[id] = fakePassword
	}
	return f
}

// lockedErr is a sign-in lock as the user service reports it.
type lockedErr struct{ err *tether.Error }

func (e lockedErr) Error() string           { return e.err.Error() }
func (e lockedErr) Unwrap() error           { return e.err }
func (lockedErr) RetryAfter() time.Duration { return 90 * time.Second }

func (f *fakeUsers) Login(_ context.Context, email, password string) (*tether.User, *tether.Session, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if email == "" || password == "" {
		return nil, nil, "", tether.Errorf(tether.EINVALID, "send an e-mail address and a password")
	}
	if email == lockedEmail {
		return nil, nil, "", lockedErr{tether.Errorf(tether.ETOOMANY, "sign-in is locked")}
	}
	for id, u := range f.users {
		if u.Email == email && f.passwords[id] == password {
			f.n++
			now := time.Now().UTC()
			s := &tether.Session{ID: fmt.Sprintf("s%d", f.n), TenantID: u.TenantID, UserID: id,
				CSRFToken: fmt.Sprintf("csrf-%d", f.n), CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour), LastSeen: now}
			cookie := s.ID + ".secret"
			f.sessions[cookie] = s
			out := *u
			return &out, s, cookie, nil
		}
	}
	return nil, nil, "", tether.Errorf(tether.EUNAUTHORIZED, "wrong e-mail address or password")
}

func (f *fakeUsers) Authenticate(_ context.Context, cookie string) (*tether.User, *tether.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sessions[cookie]
	if s == nil || f.users[s.UserID] == nil {
		return nil, nil, tether.Errorf(tether.EUNAUTHORIZED, "not signed in")
	}
	u, sess := *f.users[s.UserID], *s
	return &u, &sess, nil
}

func (f *fakeUsers) Logout(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endSessions("", id, true)
	return nil
}

// endSessions deletes the sessions of user (or the session id, if only)
// but keep.
func (f *fakeUsers) endSessions(user, id string, only bool) {
	for c, s := range f.sessions {
		if (only && s.ID == id) || (!only && s.UserID == user && s.ID != id) {
			delete(f.sessions, c)
		}
	}
}

func (f *fakeUsers) ChangePassword(_ context.Context, p *tether.Principal, current, next string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p.Kind != tether.PrincipalUser {
		return tether.Errorf(tether.EFORBIDDEN, "an API key has no password")
	}
	if f.passwords[p.ID] != current {
		return tether.Errorf(tether.EFORBIDDEN, "the current password is wrong")
	}
	if len(next) < 12 {
		return tether.Errorf(tether.EINVALID, "too short")
	}
	f.passwords[p.ID] = next
	f.endSessions(p.ID, p.SessionID, false)
	return nil
}

func (f *fakeUsers) Users(_ context.Context, tenant string) ([]*tether.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []*tether.User{}
	for _, u := range f.users {
		if u.TenantID == tenant {
			c := *u
			out = append(out, &c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Email < out[j].Email })
	return out, nil
}

func (f *fakeUsers) CreateUser(_ context.Context, tenant, email, password, role string) (*tether.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if email == "" || !tether.ValidRole(role) || len(password) < 12 {
		return nil, tether.Errorf(tether.EINVALID, "bad user")
	}
	for _, u := range f.users {
		if u.Email == email {
			return nil, tether.Errorf(tether.ECONFLICT, "%s exists", email)
		}
	}
	f.n++
	u := &tether.User{TenantID: tenant, ID: fmt.Sprintf("u_%d", f.n), Email: email, Role: role, CreatedAt: time.Now().UTC()}
	f.users[u.ID], f.passwords[u.ID] = u, password
	c := *u
	return &c, nil
}

// admins counts the admins of u's tenant other than u.
func (f *fakeUsers) otherAdmins(u *tether.User) int {
	n := 0
	for _, o := range f.users {
		if o.TenantID == u.TenantID && o.Role == tether.RoleAdmin && o.ID != u.ID {
			n++
		}
	}
	return n
}

func (f *fakeUsers) UpdateUser(_ context.Context, by *tether.Principal, id string, role, password *string) (*tether.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.users[id]
	if u == nil || u.TenantID != by.TenantID {
		return nil, tether.Errorf(tether.ENOTFOUND, "no user %s", id)
	}
	if role != nil && !tether.ValidRole(*role) {
		return nil, tether.Errorf(tether.EINVALID, "bad role")
	}
	if role != nil && *role != tether.RoleAdmin && u.Role == tether.RoleAdmin && f.otherAdmins(u) == 0 {
		return nil, tether.Errorf(tether.ECONFLICT, "last admin")
	}
	if role != nil {
		u.Role = *role
	}
	if password != nil {
		f.passwords[id] = *password
	}
	keep := ""
	if by.ID == id {
		keep = by.SessionID
	}
	f.endSessions(id, keep, false)
	c := *u
	return &c, nil
}

func (f *fakeUsers) DeleteUser(_ context.Context, tenant, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.users[id]
	if u == nil || u.TenantID != tenant {
		return tether.Errorf(tether.ENOTFOUND, "no user %s", id)
	}
	if u.Role == tether.RoleAdmin && f.otherAdmins(u) == 0 {
		return tether.Errorf(tether.ECONFLICT, "last admin")
	}
	delete(f.users, id)
	f.endSessions(id, "", false)
	return nil
}

// fakeAPIKeys keeps API keys in a map.
type fakeAPIKeys struct {
	mu   sync.Mutex
	keys map[string]*tether.APIKey
	n    int
}

var _ httpapi.APIKeys = (*fakeAPIKeys)(nil)

func newFakeAPIKeys() *fakeAPIKeys { return &fakeAPIKeys{keys: map[string]*tether.APIKey{}} }

func (f *fakeAPIKeys) CreateAPIKey(_ context.Context, tenant, name, role string) (*tether.APIKey, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "" || !tether.ValidRole(role) {
		return nil, "", tether.Errorf(tether.EINVALID, "bad key")
	}
	f.n++
	k := &tether.APIKey{TenantID: tenant, ID: fmt.Sprintf("ak_%d", f.n), Name: name, Role: role, CreatedAt: time.Now().UTC()}
	f.keys[k.ID] = k
	return k, k.ID + ".secret", nil
}

func (f *fakeAPIKeys) APIKeys(_ context.Context, tenant string) ([]*tether.APIKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []*tether.APIKey{}
	for _, id := range sortedKeys(f.keys) {
		if f.keys[id].TenantID == tenant {
			out = append(out, f.keys[id])
		}
	}
	return out, nil
}

func (f *fakeAPIKeys) DeleteAPIKey(_ context.Context, tenant, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k := f.keys[id]; k == nil || k.TenantID != tenant {
		return tether.Errorf(tether.ENOTFOUND, "no API key %s", id)
	}
	delete(f.keys, id)
	return nil
}
