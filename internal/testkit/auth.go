package testkit

import (
	"net/http"
	"strings"
	"sync"

	"github.com/tether-iot/tether"
)

// Revocable wraps a test's authentication so that a bearer key can be
// revoked (the key deleted, the user signed out) or given another role
// while a connection is open, as the tests of long-lived sockets need. It
// counts its calls.
type Revocable struct {
	inner   func(*http.Request) (*tether.Principal, error)
	mu      sync.Mutex
	revoked map[string]bool
	roles   map[string]string
	calls   int
}

// NewRevocable returns a Revocable over inner.
func NewRevocable(inner func(*http.Request) (*tether.Principal, error)) *Revocable {
	return &Revocable{inner: inner, revoked: map[string]bool{}, roles: map[string]string{}}
}

// Authenticate authenticates r as inner does, unless its bearer key was
// revoked, with the role the key was given last.
func (a *Revocable) Authenticate(r *http.Request) (*tether.Principal, error) {
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.revoked[key] {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "the API key is wrong")
	}
	p, err := a.inner(r)
	if err != nil {
		return nil, err
	}
	if role, ok := a.roles[key]; ok {
		q := *p
		q.Role = role
		p = &q
	}
	return p, nil
}

// Revoke makes key fail from now on.
func (a *Revocable) Revoke(key string) {
	a.mu.Lock()
	a.revoked[key] = true
	a.mu.Unlock()
}

// Demote gives key role from now on.
func (a *Revocable) Demote(key, role string) {
	a.mu.Lock()
	a.roles[key] = role
	a.mu.Unlock()
}

// Calls is how many times Authenticate ran.
func (a *Revocable) Calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}
