package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	main "github.com/tether-iot/tether/cmd/tether"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/testkit"
)

// webUser is a person at a browser: an HTTP client with a cookie jar
// that sends the session's CSRF token on unsafe requests, as the
// dashboard does.
type webUser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newWebUser(t *testing.T, n *node) *webUser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &webUser{t: t, base: "http://" + n.HTTP.Addr(), c: &http.Client{Jar: jar}}
}

// call sends a request, with the CSRF token unless noCSRF, and decodes a
// JSON answer into out (if not nil).
func (u *webUser) call(method, path string, body, out any, noCSRF bool) (int, http.Header, []byte) {
	u.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			u.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u.base+path, rd)
	if err != nil {
		u.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !noCSRF && u.csrf != "" {
		req.Header.Set("X-CSRF-Token", u.csrf)
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		u.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			u.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, resp.Header, raw
}

func (u *webUser) do(method, path string, body any) (int, []byte) {
	u.t.Helper()
	status, _, raw := u.call(method, path, body, nil, false)
	return status, raw
}

// login signs in; it returns the status and keeps the CSRF token.
func (u *webUser) login(email, password string) (int, http.Header) {
	u.t.Helper()
	var s struct {
		CSRFToken string `json:"csrf_token"`
	}
	status, h, _ := u.call("POST", "/api/v1/auth/login", map[string]string{"email": email, "password": password}, &s, true)
	if status == http.StatusOK {
		u.csrf = s.CSRFToken
	}
	return status, h
}

func signIn(t *testing.T, n *node, email, password string) *webUser {
	t.Helper()
	u := newWebUser(t, n)
	if status, _ := u.login(email, password); status != http.StatusOK {
		t.Fatalf("sign in as %s: %d", email, status)
	}
	return u
}

const userPassword = "a long enough password"

func TestAuthUsersRolesAndSessionsEndToEnd(t *testing.T) {
	n := startNode(t, nil)
	if n.AdminUser == nil || n.AdminUser.Email != "admin@tether.local" || len(n.AdminUser.Password) < 20 {
		t.Fatalf("first admin user %+v", n.AdminUser)
	}
	admin := signIn(t, n, n.AdminUser.Email, n.AdminUser.Password)
	var users = map[string]string{} // role → user ID
	for _, role := range []string{tether.RoleOperator, tether.RoleViewer} {
		var u tether.User
		status, _, raw := admin.call("POST", "/api/v1/users", map[string]string{"email": role + "@example.com", "password": userPassword, "role": role}, &u, false)
		if status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", role, status, raw)
		}
		users[role] = u.ID
	}
	// Commands without roles in the profile are for admins only; this
	// one lets operators send ping.
	profile := map[string]any{"id": "thermostat", "commands": map[string]any{"ping": map[string]any{"roles": []string{"operator"}}}}
	if status, _, raw := n.api("POST", "/api/v1/profiles", "", profile, nil); status != http.StatusCreated {
		t.Fatalf("create profile: %d %s", status, raw)
	}
	const id = "thermo-1"
	if status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]string{"id": id, "profile": "thermostat"}, nil); status != http.StatusCreated {
		t.Fatalf("create device: %d %s", status, raw)
	}

	t.Run("the generated admin password is never logged", func(t *testing.T) {
		if strings.Contains(n.logs.String(), n.AdminUser.Password) {
			t.Error("the log holds the admin password")
		}
	})
	t.Run("the admin reads with the cookie alone", func(t *testing.T) {
		if status, raw := admin.do("GET", "/api/v1/devices/"+id, nil); status != http.StatusOK {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("an unsafe call with the cookie but without the CSRF token is refused", func(t *testing.T) {
		status, _, raw := admin.call("POST", "/api/v1/devices", map[string]string{"id": "csrf-1"}, nil, true)
		if status != http.StatusForbidden || !strings.Contains(string(raw), "missing or wrong CSRF token") {
			t.Errorf("%d %s", status, raw)
		}
		if status, _, _ := n.api("GET", "/api/v1/devices/csrf-1", "", nil, nil); status != http.StatusNotFound {
			t.Errorf("the refused call created the device: %d", status)
		}
	})
	t.Run("with the CSRF token it passes", func(t *testing.T) {
		if status, raw := admin.do("POST", "/api/v1/devices", map[string]string{"id": "csrf-2"}); status != http.StatusCreated {
			t.Errorf("%d %s", status, raw)
		}
	})

	viewer := signIn(t, n, "viewer@example.com", userPassword)
	operator := signIn(t, n, "operator@example.com", userPassword)
	for _, tc := range []struct {
		name         string
		u            *webUser
		method, path string
		body         any
		want         int
	}{
		{"a viewer reads a device", viewer, "GET", "/api/v1/devices/" + id, nil, http.StatusOK},
		{"a viewer reads telemetry", viewer, "GET", "/api/v1/devices/" + id + "/latest", nil, http.StatusOK},
		{"a viewer may not create a device", viewer, "POST", "/api/v1/devices", map[string]string{"id": "v-1"}, http.StatusForbidden},
		{"a viewer may not list users", viewer, "GET", "/api/v1/users", nil, http.StatusForbidden},
		{"a viewer may not create an API key", viewer, "POST", "/api/v1/api-keys", map[string]string{"name": "x", "role": "admin"}, http.StatusForbidden},
		{"a viewer may not send a command", viewer, "POST", "/api/v1/devices/" + id + "/commands", map[string]any{"name": "ping"}, http.StatusForbidden},
		{"an operator may not create a device", operator, "POST", "/api/v1/devices", map[string]string{"id": "o-1"}, http.StatusForbidden},
		{"an operator may not delete a device", operator, "DELETE", "/api/v1/devices/" + id, nil, http.StatusForbidden},
		{"an operator may not make itself admin", operator, "PATCH", "/api/v1/users/" + users[tether.RoleOperator], map[string]string{"role": "admin"}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, raw := tc.u.do(tc.method, tc.path, tc.body); status != tc.want {
				t.Errorf("%d %s, want %d", status, raw, tc.want)
			}
		})
	}
	t.Run("an operator sends a command, recorded as sent by the user", func(t *testing.T) {
		var c tether.Command
		status, _, raw := operator.call("POST", "/api/v1/devices/"+id+"/commands", map[string]any{"name": "ping"}, &c, false)
		if status/100 != 2 || c.Source != "user:"+users[tether.RoleOperator] {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("an API key has the role it was created with", func(t *testing.T) {
		var created struct {
			Key string `json:"key"`
		}
		status, _, raw := admin.call("POST", "/api/v1/api-keys", map[string]string{"name": "dashboard wall", "role": "viewer"}, &created, false)
		if status != http.StatusCreated || created.Key == "" {
			t.Fatalf("%d %s", status, raw)
		}
		if status, _, raw := n.api("GET", "/api/v1/devices/"+id, created.Key, nil, nil); status != http.StatusOK {
			t.Errorf("read: %d %s", status, raw)
		}
		if status, _, raw := n.api("POST", "/api/v1/devices", created.Key, map[string]string{"id": "k-1"}, nil); status != http.StatusForbidden {
			t.Errorf("write: %d %s", status, raw)
		}
	})
	t.Run("the last admin user can be neither deleted nor demoted", func(t *testing.T) {
		var s struct{ User tether.User }
		admin.call("GET", "/api/v1/auth/session", nil, &s, false)
		if status, raw := admin.do("DELETE", "/api/v1/users/"+s.User.ID, nil); status != http.StatusConflict {
			t.Errorf("delete: %d %s", status, raw)
		}
		if status, raw := admin.do("PATCH", "/api/v1/users/"+s.User.ID, map[string]string{"role": "viewer"}); status != http.StatusConflict {
			t.Errorf("demote: %d %s", status, raw)
		}
	})
	t.Run("a password change ends the user's other sessions", func(t *testing.T) {
		other := signIn(t, n, "operator@example.com", userPassword)
		status, raw := operator.do("POST", "/api/v1/auth/password", map[string]string{"current_password": userPassword, "new_password": "an even longer password"})
		if status != http.StatusNoContent {
			t.Fatalf("%d %s", status, raw)
		}
		if status, _ := operator.do("GET", "/api/v1/devices/"+id, nil); status != http.StatusOK {
			t.Errorf("this session: %d", status)
		}
		if status, _ := other.do("GET", "/api/v1/devices/"+id, nil); status != http.StatusUnauthorized {
			t.Errorf("the other session: %d", status)
		}
	})
	t.Run("signing out ends the session, also for a copy of the cookie", func(t *testing.T) {
		cookies := viewer.c.Jar.Cookies(mustParseURL(t, viewer.base))
		if status, raw := viewer.do("POST", "/api/v1/auth/logout", nil); status != http.StatusNoContent {
			t.Fatalf("%d %s", status, raw)
		}
		if status, _ := viewer.do("GET", "/api/v1/devices/"+id, nil); status != http.StatusUnauthorized {
			t.Errorf("after sign-out: %d", status)
		}
		copyJar, _ := cookiejar.New(nil)
		copyJar.SetCookies(mustParseURL(t, viewer.base), cookies)
		thief := &webUser{t: t, base: viewer.base, c: &http.Client{Jar: copyJar}}
		if status, _ := thief.do("GET", "/api/v1/devices/"+id, nil); status != http.StatusUnauthorized {
			t.Errorf("the copied cookie: %d", status)
		}
	})
	t.Run("five wrong passwords lock sign-in, even with the right one", func(t *testing.T) {
		u := newWebUser(t, n)
		for i := range 5 {
			if status, _ := u.login("viewer@example.com", "not the password"); status != http.StatusUnauthorized {
				t.Fatalf("attempt %d: %d", i+1, status)
			}
		}
		status, h := u.login("viewer@example.com", userPassword)
		secs, _ := strconv.Atoi(h.Get("Retry-After"))
		if status != http.StatusTooManyRequests || secs < 800 || secs > 900 {
			t.Errorf("%d Retry-After %q", status, h.Get("Retry-After"))
		}
	})
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestAuthWithCurl signs in and calls the API with curl's cookie jar, as
// a script would.
func TestAuthWithCurl(t *testing.T) {
	n := startNode(t, nil)
	jar := filepath.Join(t.TempDir(), "cookies")
	base := "http://" + n.HTTP.Addr()
	status, body := curl(t, "-c", jar, "-H", "Content-Type: application/json",
		"-d", `{"email":"`+n.AdminUser.Email+`","password":"`+n.AdminUser.Password+`"}`, base+"/api/v1/auth/login")
	var s struct {
		CSRFToken string `json:"csrf_token"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || s.CSRFToken == "" {
		t.Fatalf("login: %d %s", status, body)
	}
	raw, err := os.ReadFile(jar)
	if err != nil || !strings.Contains(string(raw), "#HttpOnly_") || !strings.Contains(string(raw), "tether_session") {
		t.Errorf("cookie jar:\n%s", raw)
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"a read with the cookie", []string{base + "/api/v1/devices"}, http.StatusOK},
		{"a write without the CSRF token", []string{"-H", "Content-Type: application/json", "-d", `{"id":"c-1"}`, base + "/api/v1/devices"}, http.StatusForbidden},
		{"a write with it", []string{"-H", "Content-Type: application/json", "-H", "X-CSRF-Token: " + s.CSRFToken, "-d", `{"id":"c-2"}`, base + "/api/v1/devices"}, http.StatusCreated},
		{"signing out", []string{"-c", jar, "-X", "POST", "-H", "X-CSRF-Token: " + s.CSRFToken, base + "/api/v1/auth/logout"}, http.StatusNoContent},
		{"a read after signing out", []string{base + "/api/v1/devices"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, body := curl(t, append([]string{"-b", jar}, tc.args...)...); status != tc.want {
				t.Errorf("%d %s, want %d", status, body, tc.want)
			}
		})
	}
}

// TestAuthFirstAdminOnlyOnce restarts a node on its data: the first admin
// user is created at the first start only.
func TestAuthFirstAdminOnlyOnce(t *testing.T) {
	dir := t.TempDir()
	for i, want := range []bool{true, false} {
		cfg := config.Default()
		cfg.DataDir = dir
		cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
		m := main.NewMain(cfg, adminKey, &testkit.Buffer{})
		if err := m.Run(context.Background()); err != nil {
			m.Close()
			t.Fatal(err)
		}
		var out bytes.Buffer
		m.PrintWelcome(&out)
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if got := m.AdminUser != nil; got != want || strings.Contains(out.String(), "Admin user") != want {
			t.Errorf("start %d: admin user %+v, welcome:\n%s", i+1, m.AdminUser, out.String())
		}
		if want && !strings.Contains(out.String(), m.AdminUser.Password) {
			t.Errorf("the welcome text does not show the generated password:\n%s", out.String())
		}
	}
}

// TestAuthBootstrapAdminFromTheEnvironment runs the binary with the first
// admin's address and password in the environment, as an automated
// deployment does.
func TestAuthBootstrapAdminFromTheEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	const password = "from the environment 42"
	cmd := exec.Command(bin, "serve", "--data-dir", t.TempDir(), "--log-format", "json",
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--mqtt-ws-addr", "127.0.0.1:0",
		"--coap-addr", "127.0.0.1:0", "--coaps-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "TETHER_BOOTSTRAP_ADMIN_EMAIL=Ops@Example.com", "TETHER_BOOTSTRAP_ADMIN_PASSWORD="+password)
	var stdout testkit.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var logs testkit.Buffer
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "HTTP API listening" {
				addr <- rec.Addr
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("tether did not start in 30s:\n%s", logs.String())
	}
	waitFor(t, "the welcome text", func() bool { return strings.Contains(stdout.String(), "Admin user") })
	if !strings.Contains(stdout.String(), "Admin user ops@example.com created with the password from TETHER_BOOTSTRAP_ADMIN_PASSWORD") {
		t.Errorf("welcome:\n%s", stdout.String())
	}
	if strings.Contains(stdout.String()+logs.String(), password) {
		t.Error("the supplied password was printed or logged")
	}
	jar, _ := cookiejar.New(nil)
	u := &webUser{t: t, base: base, c: &http.Client{Jar: jar}}
	if status, _ := u.login("ops@example.com", password); status != http.StatusOK {
		t.Fatalf("sign in with the supplied password: %d", status)
	}
	var users struct{ Users []tether.User }
	if status, _, raw := u.call("GET", "/api/v1/users", nil, &users, false); status != http.StatusOK || len(users.Users) != 1 ||
		users.Users[0].Role != tether.RoleAdmin {
		t.Errorf("users: %d %s", status, raw)
	}
}
