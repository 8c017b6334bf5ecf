package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/limit"
)

// Users is what the API needs of the user service: sign-in, sessions and
// the management of users.
type Users interface {
	// Login checks the credentials and starts a session; it returns the
	// user, the session and the value of its cookie. A lock after
	// repeated failures is ETOOMANY with a RetryAfter method.
	Login(ctx context.Context, email, password string) (*tether.User, *tether.Session, string, error)
	// Authenticate returns the user and live session of a cookie value,
	// or EUNAUTHORIZED.
	Authenticate(ctx context.Context, cookie string) (*tether.User, *tether.Session, error)
	Logout(ctx context.Context, sessionID string) error
	// ChangePassword sets a signed-in user's own password and ends the
	// user's other sessions.
	ChangePassword(ctx context.Context, p *tether.Principal, current, next string) error

	Users(ctx context.Context, tenant string) ([]*tether.User, error)
	CreateUser(ctx context.Context, tenant, email, password, role string) (*tether.User, error)
	// UpdateUser changes the role or password (each if not nil) of a
	// user of by's tenant; demoting the last admin is ECONFLICT.
	UpdateUser(ctx context.Context, by *tether.Principal, id string, role, password *string) (*tether.User, error)
	// DeleteUser refuses to delete the last admin with ECONFLICT.
	DeleteUser(ctx context.Context, tenant, id string) error
}

// APIKeys is what the API needs to manage the API keys of programs.
type APIKeys interface {
	// CreateAPIKey returns the key and its secret, shown this once.
	CreateAPIKey(ctx context.Context, tenant, name, role string) (*tether.APIKey, string, error)
	APIKeys(ctx context.Context, tenant string) ([]*tether.APIKey, error)
	DeleteAPIKey(ctx context.Context, tenant, id string) error
}

const (
	// SessionCookie is the name of the cookie that carries a signed-in
	// user's session.
	SessionCookie = "tether_session"
	// CSRFHeader must carry the session's CSRF token on every unsafe
	// request (not GET, HEAD or OPTIONS) authenticated by the cookie.
	CSRFHeader = "X-CSRF-Token"
)

// errNotSignedIn answers a request with neither an API key nor a session.
var errNotSignedIn = tether.Errorf(tether.EUNAUTHORIZED,
	"sign in (POST /api/v1/auth/login) or send an API key as Authorization: Bearer <key>")

// sessionPrincipal authenticates a request by its session cookie. An
// unsafe request must also carry the session's CSRF token: a page on
// another site can make the browser send the cookie, but cannot read
// the token. (SameSite=Strict keeps modern browsers from sending the
// cookie from another site at all; the token covers the others.)
func (s *Server) sessionPrincipal(r *http.Request, cookie string) (*tether.Principal, error) {
	u, sess, err := s.sv.Users.Authenticate(r.Context(), cookie)
	if err != nil {
		return nil, err
	}
	if err := checkCSRF(r, sess); err != nil {
		return nil, err
	}
	return &tether.Principal{TenantID: u.TenantID, Kind: tether.PrincipalUser, ID: u.ID, Name: u.Email, Role: u.Role, SessionID: sess.ID}, nil
}

// checkCSRF refuses an unsafe request whose CSRF header is not the
// session's token, comparing in constant time.
func checkCSRF(r *http.Request, sess *tether.Session) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRFToken)) != 1 {
		return tether.Errorf(tether.EFORBIDDEN, "missing or wrong CSRF token; send the session's csrf_token in the %s header", CSRFHeader)
	}
	return nil
}

// Password checks, each a slow hash, are rationed per client address
// before the user service sees them: a person signs in a few times at
// most, a script guessing passwords or flooding the hash queue many
// times a second. The user service's lockout bounds the guesses per
// e-mail address; this bounds the work per client, so that one client
// cannot keep everyone else's sign-ins waiting.
const (
	passwordChecksPerSecond = 2
	passwordCheckBurst      = 20
	// maxLoginBody bounds a sign-in's body: an address of 254 bytes
	// and a password of 256, escaped, fit many times over.
	maxLoginBody = 8 << 10
)

// clientAddr is the key of a request's client for rationing: the IP
// address of the connection's other end, and for IPv6 its /64, which one
// client usually holds whole. Behind a reverse proxy that is the proxy's,
// shared by every client; such a deployment needs the proxy's
// X-Forwarded-For, trusted only from the proxy, which this does not read
// yet.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.Unmap().String()
}

// rationed refuses a request over its client's ration of password
// checks with ETOOMANY and a Retry-After header.
func rationed(w http.ResponseWriter, r *http.Request, l *limit.Keyed) error {
	key := clientAddr(r)
	if l.Allow(key) {
		return nil
	}
	return retryAfter(w, &retryError{
		tether.Errorf(tether.ETOOMANY, "too many password checks from your address; try again in a moment"),
		max(l.RetryAfter(key), time.Second)})
}

// retryError is an error with a time to try again.
type retryError struct {
	err   *tether.Error
	after time.Duration
}

func (e *retryError) Error() string             { return e.err.Error() }
func (e *retryError) Unwrap() error             { return e.err }
func (e *retryError) RetryAfter() time.Duration { return e.after }

// userRoutes registers sign-in, sessions, users and API keys. Signing in
// and out and reading the session are public: they work with the cookie
// (or nothing) rather than with an authorized caller.
func (s *Server) userRoutes(mux *http.ServeMux, add addRoute) {
	checks := limit.New(passwordChecksPerSecond, passwordCheckBurst)
	mux.Handle("POST /api/v1/auth/login", s.public(s.login(checks)))
	mux.Handle("POST /api/v1/auth/logout", s.public(s.logout))
	mux.Handle("GET /api/v1/auth/session", s.public(s.session))
	users := s.sv.Users != nil
	add(tether.RoleViewer, "POST /api/v1/auth/password", needs(users, "user", s.changePassword(checks)))

	add(tether.RoleAdmin, "GET /api/v1/users", needs(users, "user", s.listUsers))
	add(tether.RoleAdmin, "POST /api/v1/users", needs(users, "user", s.createUser))
	add(tether.RoleAdmin, "PATCH /api/v1/users/{id}", needs(users, "user", s.updateUser))
	add(tether.RoleAdmin, "DELETE /api/v1/users/{id}", needs(users, "user", s.deleteUser))

	keys := s.sv.APIKeys != nil
	add(tether.RoleAdmin, "GET /api/v1/api-keys", needs(keys, "API key", s.listAPIKeys))
	add(tether.RoleAdmin, "POST /api/v1/api-keys", needs(keys, "API key", s.createAPIKey))
	add(tether.RoleAdmin, "DELETE /api/v1/api-keys/{id}", needs(keys, "API key", s.deleteAPIKey))
}

// public runs a handler that authenticates nobody, answering an error as
// a problem; without a user service it answers 503.
func (s *Server) public(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error = tether.Errorf(tether.EUNAVAILABLE, "this node does not run the user service")
		if s.sv.Users != nil {
			err = h(w, r)
		}
		if err != nil {
			s.problem(w, r, retryAfter(w, err))
		}
	})
}

// retryAfter sets the Retry-After header if err says when to try again
// (a sign-in lock), and returns err.
func retryAfter(w http.ResponseWriter, err error) error {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		secs := int((ra.RetryAfter() + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	return err
}

// sessionView is what signing in and reading the session answer: who is
// signed in, and the token that unsafe requests must send back.
type sessionView struct {
	User      *tether.User `json:"user"`
	CSRFToken string       `json:"csrf_token"`
	ExpiresAt time.Time    `json:"expires_at"`
}

func writeSession(w http.ResponseWriter, u *tether.User, sess *tether.Session) error {
	// The answer carries the CSRF token: no cache may keep it.
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, sessionView{u, sess.CSRFToken, sess.ExpiresAt})
}

// login signs in, within the client's ration of password checks.
func (s *Server) login(checks *limit.Keyed) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := rationed(w, r, checks); err != nil {
			return err
		}
		return s.signIn(w, r)
	}
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeBodyLimit(r, &in, maxLoginBody); err != nil {
		return err
	}
	u, sess, cookie, err := s.sv.Users.Login(r.Context(), in.Email, in.Password)
	if err != nil {
		return err
	}
	// The new cookie replaces the browser's old one, whose session
	// would otherwise live on unused until it expires.
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		if _, old, err := s.sv.Users.Authenticate(r.Context(), c.Value); err == nil {
			if err := s.sv.Users.Logout(r.Context(), old.ID); err != nil {
				s.log.Warn("end the replaced session", "err", err)
			}
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: cookie, Path: "/",
		MaxAge:   int(sess.ExpiresAt.Sub(sess.CreatedAt) / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	return writeSession(w, u, sess)
}

// logout ends the cookie's session, if it has a live one (which must
// then come with its CSRF token), and clears the cookie either way.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		_, sess, err := s.sv.Users.Authenticate(r.Context(), c.Value)
		switch {
		case err == nil:
			if err := checkCSRF(r, sess); err != nil {
				return err
			}
			if err := s.sv.Users.Logout(r.Context(), sess.ID); err != nil {
				return err
			}
		case tether.ErrorCode(err) != tether.EUNAUTHORIZED:
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// session answers who is signed in with the cookie, and the session's
// CSRF token, which a page reloaded after sign-in needs again. Nobody
// signed in is 204, not 401: asking is how the dashboard finds out, and a
// browser logs every 401 as an error.
func (s *Server) session(w http.ResponseWriter, r *http.Request) error {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	u, sess, err := s.sv.Users.Authenticate(r.Context(), c.Value)
	if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return err
	}
	return writeSession(w, u, sess)
}

// changePassword sets the caller's password, within the client's ration
// of password checks.
func (s *Server) changePassword(checks *limit.Keyed) handler {
	return func(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
		if err := rationed(w, r, checks); err != nil {
			return err
		}
		var in struct {
			Current string `json:"current_password"`
			New     string `json:"new_password"`
		}
		if err := decodeBodyLimit(r, &in, maxLoginBody); err != nil {
			return err
		}
		if err := s.sv.Users.ChangePassword(r.Context(), p, in.Current, in.New); err != nil {
			return retryAfter(w, err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}
