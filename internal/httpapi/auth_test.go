package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

// authServer serves the API over fakes on a real socket.
func authServer(t *testing.T, sv httpapi.Services) string {
	t.Helper()
	srv, err := httpapi.New(fakeRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: sv,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + srv.Addr()
}

// browser is an HTTP client with a cookie jar, as a browser signs in.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newBrowser(t *testing.T, base string) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: base, c: &http.Client{Jar: jar}}
}

// reply is an answer: its status, headers and body.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) problem() httpapi.Problem {
	var p httpapi.Problem
	_ = json.Unmarshal(r.body, &p)
	return p
}

// do sends a request; headers are name, value pairs.
func (b *browser) do(method, path string, body any, headers ...string) reply {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, raw}
}

// login signs in and keeps the CSRF token.
func (b *browser) login(email, password string) reply {
	b.t.Helper()
	r := b.do("POST", "/api/v1/auth/login", map[string]string{"email": email, "password": password})
	var s struct {
		CSRFToken string `json:"csrf_token"`
	}
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &s); err != nil {
			b.t.Fatal(err)
		}
		b.csrf = s.CSRFToken
	}
	return r
}

// send makes an unsafe request with the session's CSRF token.
func (b *browser) send(method, path string, body any) reply {
	b.t.Helper()
	return b.do(method, path, body, httpapi.CSRFHeader, b.csrf)
}

func signedIn(t *testing.T, base, role string) *browser {
	t.Helper()
	b := newBrowser(t, base)
	if r := b.login(fakeUser(role), fakePassword); r.status != http.StatusOK {
		t.Fatalf("sign in as %s: %d %s", role, r.status, r.body)
	}
	return b
}

func TestAuthLogin(t *testing.T) {
	sv, _, _ := fakeServices()
	base := authServer(t, sv)

	t.Run("signing in sets a Secure, HttpOnly, SameSite=Strict session cookie and answers the user and a CSRF token", func(t *testing.T) {
		b := newBrowser(t, base)
		r := b.login(fakeUser(tether.RoleAdmin), fakePassword)
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		resp := http.Response{Header: r.header}
		cs := resp.Cookies()
		if len(cs) != 1 {
			t.Fatalf("cookies %v", r.header["Set-Cookie"])
		}
		c := cs[0]
		if c.Name != httpapi.SessionCookie || c.Path != "/" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode ||
			c.MaxAge < 6*24*3600 || c.Value == "" {
			t.Errorf("cookie %s", r.header.Get("Set-Cookie"))
		}
		var s struct {
			User struct {
				ID, Email, Role string
				TenantID        string `json:"tenant_id"`
			} `json:"user"`
			CSRFToken string    `json:"csrf_token"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(r.body, &s); err != nil {
			t.Fatal(err)
		}
		if s.User.Email != fakeUser(tether.RoleAdmin) || s.User.Role != tether.RoleAdmin || s.User.TenantID == "" || s.User.ID == "" ||
			s.CSRFToken == "" || s.ExpiresAt.IsZero() {
			t.Errorf("body %s", r.body)
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		if strings.Contains(string(r.body), "password") {
			t.Errorf("the answer shows a password: %s", r.body)
		}
	})

	t.Run("a wrong password and an unknown address get the same 401", func(t *testing.T) {
		wrong := newBrowser(t, base).login(fakeUser(tether.RoleAdmin), "not the password at all")
		unknown := newBrowser(t, base).login("nobody@example.com", fakePassword)
		if wrong.status != http.StatusUnauthorized || unknown.status != http.StatusUnauthorized {
			t.Fatalf("%d %s / %d %s", wrong.status, wrong.body, unknown.status, unknown.body)
		}
		if wrong.problem().Detail != unknown.problem().Detail || wrong.problem().Code != tether.EUNAUTHORIZED {
			t.Errorf("%s / %s", wrong.body, unknown.body)
		}
		if len(wrong.header["Set-Cookie"]) > 0 {
			t.Errorf("a failed sign-in set a cookie: %v", wrong.header["Set-Cookie"])
		}
	})

	t.Run("a locked sign-in is 429 with Retry-After", func(t *testing.T) {
		r := newBrowser(t, base).login(lockedEmail, fakePassword)
		if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "90" || r.problem().Code != tether.ETOOMANY {
			t.Errorf("%d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
		}
	})

	t.Run("a body that is not the credentials is 400", func(t *testing.T) {
		b := newBrowser(t, base)
		for _, body := range []any{map[string]string{"email": "a@b.c", "password": "x", "role": "admin"}, map[string]string{}} {
			if r := b.do("POST", "/api/v1/auth/login", body); r.status != http.StatusBadRequest {
				t.Errorf("%v: %d %s", body, r.status, r.body)
			}
		}
	})

	t.Run("signing in again ends the browser's previous session", func(t *testing.T) {
		b := signedIn(t, base, tether.RoleViewer)
		var old string
		for _, c := range b.c.Jar.Cookies(mustURL(t, base)) {
			old = c.Value
		}
		if r := b.login(fakeUser(tether.RoleViewer), fakePassword); r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if r := newBrowser(t, base).do("GET", "/api/v1/devices", nil, "Cookie", httpapi.SessionCookie+"="+old); r.status != http.StatusUnauthorized {
			t.Errorf("the replaced session: %d %s", r.status, r.body)
		}
		if r := b.do("GET", "/api/v1/devices", nil); r.status != http.StatusOK {
			t.Errorf("the new session: %d %s", r.status, r.body)
		}
	})
	t.Run("the session answers who is signed in, with the same CSRF token", func(t *testing.T) {
		b := signedIn(t, base, tether.RoleOperator)
		r := b.do("GET", "/api/v1/auth/session", nil)
		var s struct {
			User      tether.User `json:"user"`
			CSRFToken string      `json:"csrf_token"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &s) != nil || s.User.Role != tether.RoleOperator || s.CSRFToken != b.csrf {
			t.Errorf("%d %s", r.status, r.body)
		}
		if r := newBrowser(t, base).do("GET", "/api/v1/auth/session", nil); r.status != http.StatusNoContent {
			t.Errorf("without a cookie: %d %s", r.status, r.body)
		}
	})
}

func TestAuthCookieAndCSRF(t *testing.T) {
	sv, _, _ := fakeServices()
	base := authServer(t, sv)
	admin := signedIn(t, base, tether.RoleAdmin)
	device := map[string]any{"name": "pump"}

	tests := []struct {
		name    string
		do      func() reply
		status  int
		problem string
	}{
		{"the cookie authenticates a read", func() reply { return admin.do("GET", "/api/v1/devices", nil) }, http.StatusOK, ""},
		{"an unsafe request with the cookie and no CSRF token is refused", func() reply {
			return admin.do("POST", "/api/v1/devices", device)
		}, http.StatusForbidden, "missing or wrong CSRF token"},
		{"an unsafe request with a wrong CSRF token is refused", func() reply {
			return admin.do("POST", "/api/v1/devices", device, httpapi.CSRFHeader, admin.csrf+"x")
		}, http.StatusForbidden, "missing or wrong CSRF token"},
		{"a DELETE without the token is refused too", func() reply {
			return admin.do("DELETE", "/api/v1/devices/pump-1", nil)
		}, http.StatusForbidden, "missing or wrong CSRF token"},
		{"an unsafe request with the CSRF token passes", func() reply { return admin.send("POST", "/api/v1/devices", device) }, http.StatusCreated, ""},
		{"a bearer API key needs no CSRF token", func() reply {
			return newBrowser(t, base).do("POST", "/api/v1/devices", device, "Authorization", "Bearer "+testKey)
		}, http.StatusCreated, ""},
		{"a request with a bearer key and the cookie is the key's", func() reply {
			return admin.do("GET", "/api/v1/devices", nil, "Authorization", "Bearer wrong.key")
		}, http.StatusUnauthorized, ""},
		{"neither a cookie nor a key is 401 naming both ways in", func() reply {
			return newBrowser(t, base).do("GET", "/api/v1/devices", nil)
		}, http.StatusUnauthorized, "sign in (POST /api/v1/auth/login) or send an API key"},
		{"a cookie of no session is 401", func() reply {
			return newBrowser(t, base).do("GET", "/api/v1/devices", nil, "Cookie", httpapi.SessionCookie+"=s99.secret")
		}, http.StatusUnauthorized, "not signed in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.do()
			if r.status != tt.status || !strings.Contains(r.problem().Detail, tt.problem) {
				t.Errorf("%d %s; want %d %q", r.status, r.body, tt.status, tt.problem)
			}
		})
	}
}

func TestAuthRoles(t *testing.T) {
	sv, _, _ := fakeServices()
	base := authServer(t, sv)
	as := map[string]*browser{}
	for _, role := range []string{tether.RoleAdmin, tether.RoleOperator, tether.RoleViewer} {
		as[role] = signedIn(t, base, role)
	}
	tests := []struct {
		role, method, path string
		body               any
		want               int
	}{
		{tether.RoleViewer, "GET", "/api/v1/devices", nil, http.StatusOK},
		{tether.RoleViewer, "GET", "/api/v1/devices/pump-1/commands", nil, http.StatusOK},
		{tether.RoleViewer, "POST", "/api/v1/devices/pump-1/commands", map[string]any{"name": "ping"}, http.StatusForbidden},
		{tether.RoleViewer, "GET", "/api/v1/users", nil, http.StatusForbidden},
		{tether.RoleViewer, "GET", "/api/v1/api-keys", nil, http.StatusForbidden},
		{tether.RoleOperator, "POST", "/api/v1/devices/pump-1/commands", map[string]any{"name": "ping"}, http.StatusCreated},
		{tether.RoleOperator, "POST", "/api/v1/devices", map[string]any{"name": "x"}, http.StatusForbidden},
		{tether.RoleOperator, "POST", "/api/v1/users", map[string]any{"email": "x@example.com", "password": fakePassword, "role": "admin"}, http.StatusForbidden},
		{tether.RoleAdmin, "GET", "/api/v1/users", nil, http.StatusOK},
		{tether.RoleAdmin, "POST", "/api/v1/devices", map[string]any{"name": "x"}, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.role+" "+tt.method+" "+tt.path+" answers "+http.StatusText(tt.want), func(t *testing.T) {
			r := as[tt.role].send(tt.method, tt.path, tt.body)
			if r.status != tt.want {
				t.Errorf("%d %s", r.status, r.body)
			}
			if tt.want == http.StatusForbidden && !strings.Contains(r.problem().Detail, "has role "+tt.role) {
				t.Errorf("the refusal does not name the role: %s", r.body)
			}
		})
	}
}

func TestAuthLogoutAndPassword(t *testing.T) {
	sv, _, _ := fakeServices()
	base := authServer(t, sv)

	t.Run("signing out needs the CSRF token, ends the session and clears the cookie", func(t *testing.T) {
		b := signedIn(t, base, tether.RoleViewer)
		if r := b.do("POST", "/api/v1/auth/logout", nil); r.status != http.StatusForbidden {
			t.Errorf("without the token: %d %s", r.status, r.body)
		}
		jar := b.c.Jar
		// The cookie a browser keeps after sign-out, to show that the
		// session is gone on the server and not only in the jar.
		var old string
		for _, c := range jar.Cookies(mustURL(t, base)) {
			old = c.Value
		}
		r := b.send("POST", "/api/v1/auth/logout", nil)
		if r.status != http.StatusNoContent || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
			t.Fatalf("%d %s %v", r.status, r.body, r.header["Set-Cookie"])
		}
		if r := b.do("GET", "/api/v1/devices", nil); r.status != http.StatusUnauthorized {
			t.Errorf("after sign-out: %d %s", r.status, r.body)
		}
		if r := newBrowser(t, base).do("GET", "/api/v1/devices", nil, "Cookie", httpapi.SessionCookie+"="+old); r.status != http.StatusUnauthorized {
			t.Errorf("the old cookie still works: %d %s", r.status, r.body)
		}
		if r := b.do("POST", "/api/v1/auth/logout", nil); r.status != http.StatusNoContent {
			t.Errorf("signing out without a session: %d %s", r.status, r.body)
		}
	})

	t.Run("a password change ends the user's other sessions, not this one", func(t *testing.T) {
		this, other := signedIn(t, base, tether.RoleOperator), signedIn(t, base, tether.RoleOperator)
		r := this.send("POST", "/api/v1/auth/password", map[string]string{"current_password": fakePassword, "new_password": "a new password here"})
		if r.status != http.StatusNoContent {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if r := this.do("GET", "/api/v1/devices", nil); r.status != http.StatusOK {
			t.Errorf("this session: %d %s", r.status, r.body)
		}
		if r := other.do("GET", "/api/v1/devices", nil); r.status != http.StatusUnauthorized {
			t.Errorf("the other session: %d %s", r.status, r.body)
		}
	})

	t.Run("an API key has no password to change", func(t *testing.T) {
		r := newBrowser(t, base).do("POST", "/api/v1/auth/password", map[string]string{"current_password": "x", "new_password": "y"},
			"Authorization", "Bearer "+testKey)
		if r.status != http.StatusForbidden {
			t.Errorf("%d %s", r.status, r.body)
		}
	})
}

func TestAuthUserAndKeyManagement(t *testing.T) {
	sv, _, _ := fakeServices()
	base := authServer(t, sv)
	admin := signedIn(t, base, tether.RoleAdmin)

	t.Run("an admin creates, lists, changes and deletes a user", func(t *testing.T) {
		r := admin.send("POST", "/api/v1/users", map[string]string{"email": "new@example.com", "password": fakePassword, "role": "viewer"})
		var u tether.User
		if r.status != http.StatusCreated || json.Unmarshal(r.body, &u) != nil || u.Email != "new@example.com" || u.Role != "viewer" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var list struct{ Users []tether.User }
		if r := admin.do("GET", "/api/v1/users", nil); r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil || len(list.Users) != 4 {
			t.Errorf("list: %d %s", r.status, r.body)
		}
		if r := admin.send("PATCH", "/api/v1/users/"+u.ID, map[string]string{"role": "operator"}); r.status != http.StatusOK ||
			!strings.Contains(string(r.body), `"role":"operator"`) {
			t.Errorf("patch: %d %s", r.status, r.body)
		}
		if r := admin.send("DELETE", "/api/v1/users/"+u.ID, nil); r.status != http.StatusNoContent {
			t.Errorf("delete: %d %s", r.status, r.body)
		}
		if r := admin.send("DELETE", "/api/v1/users/"+u.ID, nil); r.status != http.StatusNotFound {
			t.Errorf("delete again: %d %s", r.status, r.body)
		}
	})

	t.Run("the last admin can be neither demoted nor deleted", func(t *testing.T) {
		if r := admin.send("PATCH", "/api/v1/users/u_admin", map[string]string{"role": "viewer"}); r.status != http.StatusConflict {
			t.Errorf("demote: %d %s", r.status, r.body)
		}
		if r := admin.send("DELETE", "/api/v1/users/u_admin", nil); r.status != http.StatusConflict {
			t.Errorf("delete: %d %s", r.status, r.body)
		}
	})

	t.Run("an admin creates an API key with a role, lists it without its secret and revokes it", func(t *testing.T) {
		r := admin.send("POST", "/api/v1/api-keys", map[string]string{"name": "grafana", "role": "viewer"})
		var created struct {
			APIKey tether.APIKey `json:"api_key"`
			Key    string        `json:"key"`
		}
		if r.status != http.StatusCreated || json.Unmarshal(r.body, &created) != nil || created.Key == "" || created.APIKey.Role != "viewer" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		r = admin.do("GET", "/api/v1/api-keys", nil)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"name":"grafana"`) || strings.Contains(string(r.body), created.Key) {
			t.Errorf("list: %d %s", r.status, r.body)
		}
		if r := admin.send("DELETE", "/api/v1/api-keys/"+created.APIKey.ID, nil); r.status != http.StatusNoContent {
			t.Errorf("delete: %d %s", r.status, r.body)
		}
		if r := admin.send("DELETE", "/api/v1/api-keys/"+created.APIKey.ID, nil); r.status != http.StatusNotFound {
			t.Errorf("delete again: %d %s", r.status, r.body)
		}
	})
}

func TestAuthWithoutUserService(t *testing.T) {
	sv, _, _ := fakeServices()
	sv.Users, sv.APIKeys = nil, nil
	base := authServer(t, sv)
	b := newBrowser(t, base)
	if r := b.login(fakeUser(tether.RoleAdmin), fakePassword); r.status != http.StatusServiceUnavailable {
		t.Errorf("sign-in: %d %s", r.status, r.body)
	}
	if r := b.do("GET", "/api/v1/devices", nil, "Authorization", "Bearer "+testKey); r.status != http.StatusOK {
		t.Errorf("API key: %d %s", r.status, r.body)
	}
	if r := b.do("GET", "/api/v1/devices", nil); r.status != http.StatusUnauthorized || !strings.Contains(r.problem().Detail, "API key") {
		t.Errorf("nothing: %d %s", r.status, r.body)
	}
}

// countingUsers counts the sign-ins that reach the user service.
type countingUsers struct {
	userService
	logins atomic.Int64
}

// userService names the embedded service so that the field is not
// called Users, the name of one of its methods.
type userService = httpapi.Users

func (c *countingUsers) Login(ctx context.Context, email, password string) (*tether.User, *tether.Session, string, error) {
	c.logins.Add(1)
	return c.userService.Login(ctx, email, password)
}

// TestAuthPasswordChecksRationed checks that a client over its ration of
// sign-ins gets 429 with Retry-After before the user service is asked,
// that another client's ration is its own, and that a sign-in body is
// small: each such sign-in would cost a slow password hash.
func TestAuthPasswordChecksRationed(t *testing.T) {
	sv, _, _ := fakeServices()
	users := &countingUsers{userService: sv.Users}
	sv.Users = users
	srv, err := httpapi.New(fakeRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: sv,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	h := srv.Handler()
	login := func(from, email, password string) *httptest.ResponseRecorder {
		body, _ := json.Marshal(map[string]string{"email": email, "password": password})
		req := httptest.NewRequest("POST", "/api/v1/auth/login", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = from
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}

	t.Run("a client's sign-ins beyond its burst are 429 with Retry-After, unseen by the user service", func(t *testing.T) {
		checked, refused := 0, 0
		for range 60 {
			w := login("192.0.2.1:40000", fakeUser(tether.RoleViewer), "a wrong password")
			switch w.Code {
			case http.StatusUnauthorized:
				checked++
			case http.StatusTooManyRequests:
				refused++
				var p httpapi.Problem
				_ = json.Unmarshal(w.Body.Bytes(), &p)
				if secs, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || secs < 1 || p.Code != tether.ETOOMANY {
					t.Fatalf("Retry-After %q, %s", w.Header().Get("Retry-After"), w.Body)
				}
			default:
				t.Fatalf("%d %s", w.Code, w.Body)
			}
		}
		// The burst, and what refilled while the loop ran.
		if checked < 20 || checked > 25 || refused != 60-checked {
			t.Errorf("%d checked, %d refused", checked, refused)
		}
		if n := users.logins.Load(); n != int64(checked) {
			t.Errorf("the user service was asked %d times, for %d answers", n, checked)
		}
	})
	t.Run("another client, on another port or address, has its own ration", func(t *testing.T) {
		if w := login("192.0.2.1:40001", fakeUser(tether.RoleViewer), fakePassword); w.Code != http.StatusTooManyRequests {
			t.Errorf("the same address from another port: %d %s", w.Code, w.Body)
		}
		if w := login("[2001:db8::1]:40000", fakeUser(tether.RoleViewer), fakePassword); w.Code != http.StatusOK {
			t.Errorf("another address: %d %s", w.Code, w.Body)
		}
	})
	t.Run("the addresses of one IPv6 /64 share a ration", func(t *testing.T) {
		refused := 0
		for i := range 40 {
			if w := login(fmt.Sprintf("[2001:db8:0:7::%x]:40000", i+1), fakeUser(tether.RoleViewer), "a wrong password"); w.Code == http.StatusTooManyRequests {
				refused++
			}
		}
		if refused < 10 {
			t.Errorf("40 sign-ins from 40 addresses of one /64: %d refused", refused)
		}
		if w := login("[2001:db8:0:8::1]:40000", fakeUser(tether.RoleViewer), fakePassword); w.Code != http.StatusOK {
			t.Errorf("the next /64: %d %s", w.Code, w.Body)
		}
	})
	t.Run("a sign-in body over 8 KiB is 413, unseen by the user service", func(t *testing.T) {
		before := users.logins.Load()
		if w := login("192.0.2.2:40000", strings.Repeat("a", 100_000)+"@example.com", fakePassword); w.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("%d %s", w.Code, w.Body)
		}
		if users.logins.Load() != before {
			t.Error("the user service was asked")
		}
	})
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
