package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

// stateAPI is a running server over the service fakes.
type stateAPI struct {
	url  string
	srv  *httpapi.Server
	cmds *fakeCommands
	pres *fakePresence
	reg  *recordingRegistry
}

// recordingRegistry is fakeRegistry that remembers the last device
// filter, device and update it was given.
type recordingRegistry struct {
	fakeRegistry
	mu      sync.Mutex
	filter  tether.DeviceFilter
	created tether.Device
	update  tether.DeviceUpdate
}

func (r *recordingRegistry) Devices(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error) {
	r.mu.Lock()
	r.filter = f
	r.mu.Unlock()
	return r.fakeRegistry.Devices(ctx, f)
}

func (r *recordingRegistry) CreateDevice(ctx context.Context, tenant string, d tether.Device) (*tether.Device, string, error) {
	r.mu.Lock()
	r.created = d
	r.mu.Unlock()
	dev, token, err := r.fakeRegistry.CreateDevice(ctx, tenant, d)
	if dev != nil {
		dev.ProfileID = d.ProfileID
	}
	return dev, token, err
}

func (r *recordingRegistry) UpdateDevice(ctx context.Context, tenant, id string, u tether.DeviceUpdate) (*tether.Device, error) {
	r.mu.Lock()
	r.update = u
	r.mu.Unlock()
	return r.fakeRegistry.UpdateDevice(ctx, tenant, id, u)
}

// Device "ghost" does not exist.
func (r *recordingRegistry) Device(ctx context.Context, tenant, id string) (*tether.Device, error) {
	if id == "ghost" {
		return nil, tether.Errorf(tether.ENOTFOUND, "no device %s", id)
	}
	return r.fakeRegistry.Device(ctx, tenant, id)
}

func newStateAPI(t *testing.T) *stateAPI {
	t.Helper()
	sv, cmds, pres := fakeServices()
	reg := &recordingRegistry{}
	srv, err := httpapi.New(reg, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: sv,
	})
	if err != nil {
		t.Fatal(err)
	}
	cmds.transport = srv
	return &stateAPI{url: serve(t, srv), srv: srv, cmds: cmds, pres: pres, reg: reg}
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

func (r response) problem(t *testing.T) httpapi.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json; body %s", ct, r.body)
	}
	var p httpapi.Problem
	r.decode(t, &p)
	return p
}

// do sends a request; headers are name, value pairs. A body of "" is
// none, and Content-Type is application/json unless a header says.
func (a *stateAPI) do(t *testing.T, method, path, auth, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// expect checks a status and returns the response.
func (a *stateAPI) expect(t *testing.T, status int, method, path, auth, body string, headers ...string) response {
	t.Helper()
	r := a.do(t, method, path, auth, body, headers...)
	if r.status != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, status, r.body)
	}
	return r
}

const devToken = "pump-1.devsecret"

func TestProfiles(t *testing.T) {
	a := newStateAPI(t)
	const fridge = `{"id":"fridge","name":"Fridge","report_interval":"5m","telemetry":{"temp":{"type":"number","min":-30,"max":15}},
		"commands":{"order_pizza":{"rate_limit":{"count":1,"per":"1h"},"confirm":true}}}`

	t.Run("a created profile is 201 with its location and reads back", func(t *testing.T) {
		r := a.expect(t, 201, "POST", "/api/v1/profiles", testKey, fridge)
		if loc := r.header.Get("Location"); loc != "/api/v1/profiles/fridge" {
			t.Errorf("Location %q", loc)
		}
		var p tether.Profile
		a.expect(t, 200, "GET", "/api/v1/profiles/fridge", testKey, "").decode(t, &p)
		if p.TenantID != tether.DefaultTenantID || p.ReportInterval != tether.Duration(5*time.Minute) || p.Commands["order_pizza"].RateLimit.Count != 1 {
			t.Errorf("profile %+v", p)
		}
	})
	t.Run("a profile that exists is 409", func(t *testing.T) {
		a.expect(t, 409, "POST", "/api/v1/profiles", testKey, fridge)
	})
	t.Run("an unknown field is 400", func(t *testing.T) {
		a.expect(t, 400, "POST", "/api/v1/profiles", testKey, `{"id":"x","colour":"red"}`)
	})
	t.Run("a profile read with GET can be sent back with PUT", func(t *testing.T) {
		r := a.expect(t, 200, "GET", "/api/v1/profiles/fridge", testKey, "")
		a.expect(t, 200, "PUT", "/api/v1/profiles/fridge", testKey, string(r.body))
	})
	t.Run("PUT with another id than the path's is 400", func(t *testing.T) {
		a.expect(t, 400, "PUT", "/api/v1/profiles/fridge", testKey, `{"id":"oven"}`)
	})
	t.Run("PUT creates a profile the body need not name", func(t *testing.T) {
		var p tether.Profile
		a.expect(t, 200, "PUT", "/api/v1/profiles/oven", testKey, `{"name":"Oven"}`).decode(t, &p)
		if p.ID != "oven" {
			t.Errorf("id %q", p.ID)
		}
	})
	t.Run("the list has both", func(t *testing.T) {
		var l struct{ Profiles []tether.Profile }
		a.expect(t, 200, "GET", "/api/v1/profiles", testKey, "").decode(t, &l)
		if len(l.Profiles) != 2 {
			t.Errorf("%d profiles", len(l.Profiles))
		}
	})
	t.Run("deleting is 204, and a profile in use is 409", func(t *testing.T) {
		a.expect(t, 204, "DELETE", "/api/v1/profiles/oven", testKey, "")
		a.expect(t, 404, "GET", "/api/v1/profiles/oven", testKey, "")
		a.expect(t, 409, "DELETE", "/api/v1/profiles/in-use", testKey, "")
	})
	t.Run("an operator may read profiles but not change them", func(t *testing.T) {
		a.expect(t, 200, "GET", "/api/v1/profiles", testOperatorKey, "")
		a.expect(t, 403, "DELETE", "/api/v1/profiles/in-use", testOperatorKey, "")
	})
}

func TestServicesNotConfigured(t *testing.T) {
	url := serve(t, ingestServer(t, nil)) // no services
	a := &stateAPI{url: url}
	for _, r := range []struct{ method, path, auth string }{
		{"GET", "/api/v1/profiles", testKey},
		{"GET", "/api/v1/devices/pump-1/shadow", testKey},
		{"POST", "/api/v1/devices/pump-1/commands", testKey},
		{"GET", "/api/v1/devices/pump-1/presence", testKey},
		{"GET", "/api/v1/devices/pump-1/quarantine", testKey},
		{"GET", "/api/v1/provisioning-keys", testKey},
		{"GET", "/api/v1/device/commands", devToken},
		{"POST", "/api/v1/provision", testProvisioningKey},
	} {
		t.Run(r.method+" "+r.path+" is 503 naming the missing service", func(t *testing.T) {
			p := a.expect(t, 503, r.method, r.path, r.auth, `{}`).problem(t)
			if !strings.Contains(p.Detail, "does not run") {
				t.Errorf("detail %q", p.Detail)
			}
		})
	}
	t.Run("the API key is checked first", func(t *testing.T) {
		a.expect(t, 401, "GET", "/api/v1/profiles", "", "")
	})
}

func TestDevicesProfileAndPresenceFilters(t *testing.T) {
	a := newStateAPI(t)
	t.Run("a device is created with a profile and shows it", func(t *testing.T) {
		var out struct {
			Device map[string]any
		}
		a.expect(t, 201, "POST", "/api/v1/devices", testKey, `{"id":"f1","profile":"fridge"}`).decode(t, &out)
		if a.reg.created.ProfileID != "fridge" || out.Device["profile"] != "fridge" {
			t.Errorf("created %+v, shown %v", a.reg.created, out.Device)
		}
	})
	t.Run("a device without a profile shows profile empty", func(t *testing.T) {
		var d map[string]any
		a.expect(t, 200, "GET", "/api/v1/devices/f2", testKey, "").decode(t, &d)
		if v, ok := d["profile"]; !ok || v != "" {
			t.Errorf("profile %v (present %t)", v, ok)
		}
	})
	t.Run("an update sets or removes the profile", func(t *testing.T) {
		a.expect(t, 200, "PATCH", "/api/v1/devices/f1", testKey, `{"profile":""}`)
		if a.reg.update.Profile == nil || *a.reg.update.Profile != "" {
			t.Errorf("update %+v", a.reg.update)
		}
		a.expect(t, 200, "PATCH", "/api/v1/devices/f1", testKey, `{"name":"x"}`)
		if a.reg.update.Profile != nil {
			t.Errorf("an update without profile changes it: %+v", a.reg.update)
		}
	})
	t.Run("the list filters by presence status and profile", func(t *testing.T) {
		a.expect(t, 200, "GET", "/api/v1/devices?status=offline&profile=fridge", testKey, "")
		if f := a.reg.filter; f.Status != "offline" || f.Profile != "fridge" {
			t.Errorf("filter %+v", f)
		}
	})
	t.Run("an unknown status is 400", func(t *testing.T) {
		a.expect(t, 400, "GET", "/api/v1/devices?status=asleep", testKey, "")
	})
	t.Run("a device's presence reads, and an unknown device's is 404", func(t *testing.T) {
		var p tether.Presence
		a.expect(t, 200, "GET", "/api/v1/devices/f1/presence", testKey, "").decode(t, &p)
		if p.Status != tether.PresenceOffline || p.Reason != tether.ReasonNeverConnected {
			t.Errorf("presence %+v", p)
		}
		a.expect(t, 404, "GET", "/api/v1/devices/ghost/presence", testKey, "")
	})
	t.Run("every device request counts as the device being seen over http", func(t *testing.T) {
		a.expect(t, 202, "POST", "/api/v1/ingest", devToken, `{"a":1}`)
		a.expect(t, 200, "GET", "/api/v1/device/shadow", devToken, "")
		a.expect(t, 200, "GET", "/api/v1/device/commands", devToken, "")
		a.expect(t, 401, "GET", "/api/v1/device/commands", "pump-1.wrong", "")
		if got := a.pres.seenBy(); !slices.Equal(got, []string{"pump-1/http", "pump-1/http", "pump-1/http"}) {
			t.Errorf("seen %v", got)
		}
	})
}

func TestQuarantine(t *testing.T) {
	a := newStateAPI(t)
	t.Run("the points of the range and the count of all", func(t *testing.T) {
		var q struct {
			From   time.Time
			Count  int64
			Points []tether.QuarantinedPoint
		}
		a.expect(t, 200, "GET", "/api/v1/devices/f1/quarantine?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z", testKey, "").decode(t, &q)
		if q.Count != 7 || len(q.Points) != 2 || q.Points[0].Reason != tether.QuarantineAboveMax || !q.From.Equal(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("%+v", q)
		}
	})
	t.Run("limit bounds the points", func(t *testing.T) {
		var q struct{ Points []tether.QuarantinedPoint }
		a.expect(t, 200, "GET", "/api/v1/devices/f1/quarantine?limit=1", testKey, "").decode(t, &q)
		if len(q.Points) != 1 {
			t.Errorf("%d points", len(q.Points))
		}
	})
	for _, bad := range []string{"limit=0", "from=yesterday", "from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z"} {
		t.Run(bad+" is 400", func(t *testing.T) {
			a.expect(t, 400, "GET", "/api/v1/devices/f1/quarantine?"+bad, testKey, "")
		})
	}
	t.Run("an unknown device is 404", func(t *testing.T) {
		a.expect(t, 404, "GET", "/api/v1/devices/ghost/quarantine", testKey, "")
	})
}

func TestShadows(t *testing.T) {
	a := newStateAPI(t)
	t.Run("a shadow never written is version 0 with ETag \"0\"", func(t *testing.T) {
		var sh tether.Shadow
		r := a.expect(t, 200, "GET", "/api/v1/devices/pump-1/shadow", testKey, "")
		r.decode(t, &sh)
		if sh.Version != 0 || r.header.Get("ETag") != `"0"` {
			t.Errorf("version %d, ETag %q", sh.Version, r.header.Get("ETag"))
		}
	})
	t.Run("an update returns the new shadow and its ETag", func(t *testing.T) {
		var sh tether.Shadow
		r := a.expect(t, 200, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{"desired":{"speed":3}}}`)
		r.decode(t, &sh)
		if sh.Version != 1 || sh.State.Desired["speed"] != 3.0 || r.header.Get("ETag") != `"1"` {
			t.Errorf("%+v, ETag %q", sh, r.header.Get("ETag"))
		}
	})
	t.Run("If-Match with the current version applies", func(t *testing.T) {
		a.expect(t, 200, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{"desired":{"speed":4}}}`, "If-Match", `"1"`)
	})
	t.Run("a stale If-Match is 409 naming the current version", func(t *testing.T) {
		r := a.expect(t, 409, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{"desired":{"speed":5}}}`, "If-Match", `"1"`)
		p := r.problem(t)
		if p.Code != tether.ECONFLICT || p.CurrentVersion == nil || *p.CurrentVersion != 2 || !strings.Contains(p.Detail, "2") {
			t.Errorf("problem %+v", p)
		}
		if r.header.Get("ETag") != `"2"` {
			t.Errorf("ETag %q", r.header.Get("ETag"))
		}
	})
	t.Run("a stale version in the body is 409 too", func(t *testing.T) {
		a.expect(t, 409, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{"desired":{"speed":5}},"version":1}`)
	})
	t.Run("If-Match and a body version that differ are 400", func(t *testing.T) {
		a.expect(t, 400, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{},"version":2}`, "If-Match", `"1"`)
	})
	t.Run("If-Match that is not a version is 400, and * matches any", func(t *testing.T) {
		a.expect(t, 400, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{}}`, "If-Match", `"abc"`)
		a.expect(t, 200, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{}}`, "If-Match", `*`)
	})
	t.Run("a merge-patch content type is read", func(t *testing.T) {
		a.expect(t, 200, "PATCH", "/api/v1/devices/pump-1/shadow", testKey, `{"state":{}}`, "Content-Type", "application/merge-patch+json")
	})
	t.Run("named shadows are written, listed, read and deleted", func(t *testing.T) {
		a.expect(t, 200, "PATCH", "/api/v1/devices/pump-1/shadows/valve", testKey, `{"state":{"desired":{"open":true}}}`)
		var names struct{ Names []string }
		a.expect(t, 200, "GET", "/api/v1/devices/pump-1/shadows", testKey, "").decode(t, &names)
		if !slices.Equal(names.Names, []string{"valve"}) {
			t.Errorf("names %v", names.Names)
		}
		var sh tether.Shadow
		a.expect(t, 200, "GET", "/api/v1/devices/pump-1/shadows/valve", testKey, "").decode(t, &sh)
		if sh.Name != "valve" || sh.State.Desired["open"] != true {
			t.Errorf("%+v", sh)
		}
		a.expect(t, 204, "DELETE", "/api/v1/devices/pump-1/shadows/valve", testKey, "")
		a.expect(t, 404, "DELETE", "/api/v1/devices/pump-1/shadows/valve", testKey, "")
	})
	t.Run("an unknown device's shadow is 404", func(t *testing.T) {
		a.expect(t, 404, "GET", "/api/v1/devices/ghost/shadow", testKey, "")
	})
	t.Run("a device reports its state and reads its shadow", func(t *testing.T) {
		var sh tether.Shadow
		a.expect(t, 200, "POST", "/api/v1/device/shadow", devToken, `{"state":{"reported":{"speed":4}}}`).decode(t, &sh)
		if sh.State.Reported["speed"] != 4.0 || sh.State.Desired["speed"] != 4.0 {
			t.Errorf("%+v", sh.State)
		}
		a.expect(t, 200, "POST", "/api/v1/device/shadow?name=valve", devToken, `{"state":{"reported":{"open":false}}}`)
		a.expect(t, 200, "GET", "/api/v1/device/shadow?name=valve", devToken, "").decode(t, &sh)
		if sh.Name != "valve" || sh.State.Reported["open"] != false {
			t.Errorf("%+v", sh)
		}
	})
	t.Run("a device writing desired is 403", func(t *testing.T) {
		p := a.expect(t, 403, "POST", "/api/v1/device/shadow", devToken, `{"state":{"desired":{"speed":9}}}`).problem(t)
		if !strings.Contains(p.Detail, "reported") {
			t.Errorf("detail %q", p.Detail)
		}
	})
	t.Run("a device's stale version is 409", func(t *testing.T) {
		a.expect(t, 409, "POST", "/api/v1/device/shadow", devToken, `{"state":{"reported":{"speed":1}},"version":1}`)
	})
	t.Run("an API key on a device endpoint is 403, no credential 401", func(t *testing.T) {
		a.expect(t, 403, "GET", "/api/v1/device/shadow", testKey, "")
		r := a.expect(t, 401, "GET", "/api/v1/device/shadow", "", "")
		if r.header.Get("WWW-Authenticate") == "" {
			t.Error("no WWW-Authenticate")
		}
	})
}

func TestCommands(t *testing.T) {
	a := newStateAPI(t)
	t.Run("a command is 201 with its location, from the API key", func(t *testing.T) {
		var c tether.Command
		r := a.expect(t, 201, "POST", "/api/v1/devices/pump-1/commands", testKey, `{"name":"open","params":{"pct":50},"timeout":"5s","ttl":"1h"}`)
		r.decode(t, &c)
		if c.Name != "open" || c.Source != "api:ak_test" || c.Status != tether.CommandQueued || c.Timeout != tether.Duration(5*time.Second) {
			t.Errorf("%+v", c)
		}
		if loc := r.header.Get("Location"); loc != "/api/v1/devices/pump-1/commands/"+c.ID {
			t.Errorf("Location %q", loc)
		}
	})
	t.Run("a repeated idempotency key is 200 with the first command", func(t *testing.T) {
		var first, again tether.Command
		a.expect(t, 201, "POST", "/api/v1/devices/pump-1/commands", testKey, `{"name":"open"}`, "Idempotency-Key", "k1").decode(t, &first)
		a.expect(t, 200, "POST", "/api/v1/devices/pump-1/commands", testKey, `{"name":"open","idempotency_key":"k1"}`).decode(t, &again)
		if first.ID != again.ID || again.IdempotencyKey != "k1" {
			t.Errorf("first %s, again %s", first.ID, again.ID)
		}
	})
	t.Run("an Idempotency-Key header that differs from the body's is 400", func(t *testing.T) {
		a.expect(t, 400, "POST", "/api/v1/devices/pump-1/commands", testKey, `{"name":"open","idempotency_key":"a"}`, "Idempotency-Key", "b")
	})
	t.Run("a rate-limited command is 429 with Retry-After and the rejected command", func(t *testing.T) {
		a.expect(t, 201, "POST", "/api/v1/devices/pump-1/commands", testKey, `{"name":"order_pizza"}`)
		r := a.expect(t, 429, "POST", "/api/v1/devices/pump-1/commands", testKey, `{"name":"order_pizza"}`)
		p := r.problem(t)
		if p.Code != tether.ETOOMANY || p.Command == nil || p.Command.Status != tether.CommandRejected || p.Command.Reason == "" || p.Command.ID == "" {
			t.Errorf("problem %+v, command %+v", p, p.Command)
		}
		if ra := r.header.Get("Retry-After"); ra != "5400" {
			t.Errorf("Retry-After %q, want 5400", ra)
		}
		var got tether.Command
		a.expect(t, 200, "GET", "/api/v1/devices/pump-1/commands/"+p.Command.ID, testKey, "").decode(t, &got)
		if got.Status != tether.CommandRejected {
			t.Errorf("the refused command reads back as %s", got.Status)
		}
	})
	for _, tt := range []struct {
		name, device, body, key string
		status                  int
		code                    string
	}{
		{"parameters the profile refuses are 422 with the rejected command", "pump-1", `{"name":"open","params":{"bad":1}}`, testKey, 422, tether.EINVALID},
		{"a role the command does not allow is 403 with the rejected command", "pump-1", `{"name":"reboot"}`, testOperatorKey, 403, tether.EFORBIDDEN},
		{"an open circuit is 503 with the rejected command", "broken", `{"name":"open"}`, testKey, 503, tether.EUNAVAILABLE},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := a.expect(t, tt.status, "POST", "/api/v1/devices/"+tt.device+"/commands", tt.key, tt.body).problem(t)
			if p.Code != tt.code || p.Command == nil || p.Command.Status != tether.CommandRejected {
				t.Errorf("problem %+v", p)
			}
		})
	}
	t.Run("a key of another role may send a command its definition allows", func(t *testing.T) {
		var c tether.Command
		a.expect(t, 201, "POST", "/api/v1/devices/pump-1/commands", testOperatorKey, `{"name":"open"}`).decode(t, &c)
		if c.Source != "api:ak_op" {
			t.Errorf("source %q", c.Source)
		}
	})
	t.Run("an unknown device is 404 without a command", func(t *testing.T) {
		p := a.expect(t, 404, "POST", "/api/v1/devices/ghost/commands", testKey, `{"name":"open"}`).problem(t)
		if p.Command != nil {
			t.Errorf("command %+v", p.Command)
		}
	})
	for _, bad := range []string{`{"name":"open","timeout":"soon"}`, `{"name":"open","ttl":"-1s"}`, `{"name":"open","colour":1}`} {
		t.Run("a bad body "+bad+" is 400", func(t *testing.T) {
			a.expect(t, 400, "POST", "/api/v1/devices/pump-1/commands", testKey, bad)
		})
	}
	for _, w := range []string{"61s", "soon", "-1s"} {
		t.Run("wait="+w+" is 400", func(t *testing.T) {
			a.expect(t, 400, "POST", "/api/v1/devices/pump-1/commands?wait="+w, testKey, `{"name":"open"}`)
		})
	}
	t.Run("the list filters by status and pages by seq", func(t *testing.T) {
		var l struct {
			Commands  []tether.Command
			NextAfter int64 `json:"next_after"`
		}
		a.expect(t, 200, "GET", "/api/v1/devices/pump-1/commands?status=rejected", testKey, "").decode(t, &l)
		if len(l.Commands) != 3 {
			t.Errorf("%d rejected commands, want 3", len(l.Commands))
		}
		a.expect(t, 200, "GET", "/api/v1/devices/pump-1/commands?limit=2", testKey, "").decode(t, &l)
		if len(l.Commands) != 2 || l.NextAfter != l.Commands[1].Seq {
			t.Fatalf("%+v", l)
		}
		after := l.NextAfter
		a.expect(t, 200, "GET", "/api/v1/devices/pump-1/commands?limit=2&after="+strconv.FormatInt(after, 10), testKey, "").decode(t, &l)
		if len(l.Commands) == 0 || l.Commands[0].Seq <= after {
			t.Errorf("the next page %+v", l)
		}
		a.expect(t, 400, "GET", "/api/v1/devices/pump-1/commands?status=lost", testKey, "")
		a.expect(t, 400, "GET", "/api/v1/devices/pump-1/commands?limit=0", testKey, "")
		a.expect(t, 404, "GET", "/api/v1/devices/ghost/commands", testKey, "")
	})
	t.Run("an unknown command is 404", func(t *testing.T) {
		a.expect(t, 404, "GET", "/api/v1/devices/pump-1/commands/nope", testKey, "")
	})
	t.Run("a command awaiting confirmation is confirmed by a second call", func(t *testing.T) {
		a.cmds.add(tether.Command{TenantID: tether.DefaultTenantID, DeviceID: "valve-1", ID: "cc", Name: "flood", Status: tether.CommandAwaitingConfirmation})
		var c tether.Command
		a.expect(t, 200, "POST", "/api/v1/devices/valve-1/commands/cc/confirm", testKey, "").decode(t, &c)
		if c.Status != tether.CommandQueued || c.ConfirmedBy != "api:ak_test" {
			t.Errorf("%+v", c)
		}
		a.expect(t, 409, "POST", "/api/v1/devices/valve-1/commands/cc/confirm", testKey, "")
		a.expect(t, 403, "POST", "/api/v1/devices/valve-1/commands/cc/confirm", testViewerKey, "")
	})
}

// poll is one device long poll, run in the background.
func (a *stateAPI) poll(t *testing.T, device, wait string) <-chan response {
	t.Helper()
	out := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("GET", a.url+"/api/v1/device/commands?wait="+wait, nil)
		req.Header.Set("Authorization", "Bearer "+device+".devsecret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- response{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- response{resp.StatusCode, resp.Header, b}
	}()
	return out
}

// waitPolling waits until the server holds a long poll of the device,
// which it shows by taking a command handed to it.
func waitPolling(t *testing.T, a *stateAPI, device string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if a.srv.Polling(tether.DefaultTenantID, device) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no long poll of %s arrived", device)
}

func TestDeviceCommands(t *testing.T) {
	t.Run("a waiting long poll receives a command handed over by Deliver and marks it delivered", func(t *testing.T) {
		a := newStateAPI(t)
		got := a.poll(t, "lp-1", "10s")
		waitPolling(t, a, "lp-1")
		var c tether.Command
		a.expect(t, 201, "POST", "/api/v1/devices/lp-1/commands", testKey, `{"name":"open","params":{"pct":10}}`).decode(t, &c)
		if c.Status != tether.CommandSent {
			t.Errorf("status %s after a poll took it, want sent", c.Status)
		}
		r := <-got
		var cmds []tether.Command
		r.decode(t, &cmds)
		if r.status != 200 || len(cmds) != 1 || cmds[0].ID != c.ID || string(cmds[0].Params) != `{"pct":10}` {
			t.Fatalf("status %d, %s", r.status, r.body)
		}
		waitFor(t, func() bool { return slices.Contains(a.cmds.deliveredIDs(), c.ID) })
	})
	t.Run("queued commands are answered at once, in order, and not again once delivered", func(t *testing.T) {
		a := newStateAPI(t)
		var ids []string
		for _, n := range []string{"one", "two", "three"} {
			var c tether.Command
			a.expect(t, 201, "POST", "/api/v1/devices/lp-2/commands", testKey, `{"name":"`+n+`"}`).decode(t, &c)
			ids = append(ids, c.ID)
		}
		start := time.Now()
		var cmds []tether.Command
		a.expect(t, 200, "GET", "/api/v1/device/commands?wait=10s", "lp-2.devsecret", "").decode(t, &cmds)
		if time.Since(start) > 5*time.Second {
			t.Error("the poll waited although commands were queued")
		}
		var got []string
		for _, c := range cmds {
			got = append(got, c.ID)
		}
		if !slices.Equal(got, ids) {
			t.Errorf("commands %v, want %v in order", got, ids)
		}
		if d := a.cmds.deliveredIDs(); !slices.Equal(d, ids) {
			t.Errorf("delivered %v", d)
		}
		a.expect(t, 200, "GET", "/api/v1/device/commands", "lp-2.devsecret", "").decode(t, &cmds)
		if len(cmds) != 0 {
			t.Errorf("delivered commands came again: %+v", cmds)
		}
	})
	t.Run("a long poll with nothing to deliver answers [] after its wait", func(t *testing.T) {
		a := newStateAPI(t)
		start := time.Now()
		r := a.expect(t, 200, "GET", "/api/v1/device/commands?wait=200ms", "lp-3.devsecret", "")
		if string(bytes.TrimSpace(r.body)) != "[]" || time.Since(start) < 200*time.Millisecond {
			t.Errorf("%s after %s", r.body, time.Since(start))
		}
	})
	t.Run("a shutdown ends a waiting long poll at once", func(t *testing.T) {
		a := newStateAPI(t)
		got := a.poll(t, "lp-4", "60s")
		waitPolling(t, a, "lp-4")
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if r := <-got; r.status != 200 || time.Since(start) > 3*time.Second {
			t.Errorf("status %d after %s", r.status, time.Since(start))
		}
	})
	t.Run("?wait returns the device's reply", func(t *testing.T) {
		a := newStateAPI(t)
		device := func() {
			var cmds []tether.Command
			r := <-a.poll(t, "lp-5", "10s")
			if err := json.Unmarshal(r.body, &cmds); err != nil || len(cmds) != 1 {
				t.Errorf("the device got %d %s", r.status, r.body)
				return
			}
			a.expect(t, 200, "POST", "/api/v1/device/commands/"+cmds[0].ID+"/reply", "lp-5.devsecret", `{"status":"succeeded","result":{"eta":"30m"}}`)
		}
		done := make(chan struct{})
		go func() { defer close(done); device() }()
		waitPolling(t, a, "lp-5")
		var c tether.Command
		a.expect(t, 201, "POST", "/api/v1/devices/lp-5/commands?wait=10s", testKey, `{"name":"order_pizza","params":{"size":"l"}}`).decode(t, &c)
		<-done
		if c.Status != tether.CommandSucceeded || string(c.Result) != `{"eta":"30m"}` {
			t.Errorf("%+v", c)
		}
	})
	t.Run("?wait that ends before the reply returns the command as it is", func(t *testing.T) {
		a := newStateAPI(t)
		var c tether.Command
		start := time.Now()
		a.expect(t, 201, "POST", "/api/v1/devices/lp-6/commands?wait=100ms", testKey, `{"name":"open"}`).decode(t, &c)
		if c.Status != tether.CommandQueued || time.Since(start) < 100*time.Millisecond {
			t.Errorf("%s after %s", c.Status, time.Since(start))
		}
		a.expect(t, 200, "GET", "/api/v1/devices/lp-6/commands/"+c.ID+"?wait=50ms", testKey, "").decode(t, &c)
		if c.Status != tether.CommandQueued {
			t.Errorf("%s", c.Status)
		}
	})
	t.Run("a failure reply, a reply to a done command and a bad reply", func(t *testing.T) {
		a := newStateAPI(t)
		var c tether.Command
		a.expect(t, 201, "POST", "/api/v1/devices/lp-7/commands", testKey, `{"name":"open"}`).decode(t, &c)
		path := "/api/v1/device/commands/" + c.ID + "/reply"
		a.expect(t, 400, "POST", path, "lp-7.devsecret", `{"status":"maybe"}`)
		a.expect(t, 200, "POST", path, "lp-7.devsecret", `{"status":"failed","error":"stuck"}`).decode(t, &c)
		if c.Status != tether.CommandFailed || c.Reason != "stuck" {
			t.Errorf("%+v", c)
		}
		p := a.expect(t, 409, "POST", path, "lp-7.devsecret", `{}`).problem(t)
		if p.Command == nil || p.Command.Status != tether.CommandFailed {
			t.Errorf("problem %+v", p)
		}
		a.expect(t, 404, "POST", "/api/v1/device/commands/nope/reply", "lp-7.devsecret", `{}`)
	})
	t.Run("Deliver takes nothing when no poll of the device waits", func(t *testing.T) {
		a := newStateAPI(t)
		if a.srv.Deliver(&tether.Command{TenantID: tether.DefaultTenantID, DeviceID: "nobody", ID: "c"}) {
			t.Error("Deliver took a command with no poll waiting")
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestImport(t *testing.T) {
	a := newStateAPI(t)
	t.Run("a CSV file is 201 with every device's token", func(t *testing.T) {
		var out struct {
			Created int
			Devices []httpapi.ImportedDevice
		}
		a.expect(t, 201, "POST", "/api/v1/devices/import", testKey, "id,name,profile\nf1,Kitchen,fridge\nf2,Cellar,fridge\n", "Content-Type", "text/csv").decode(t, &out)
		if out.Created != 2 || len(out.Devices) != 2 || out.Devices[1] != (httpapi.ImportedDevice{Row: 2, ID: "f2", Token: "f2.secret"}) {
			t.Errorf("%+v", out)
		}
	})
	t.Run("a JSON array is 201", func(t *testing.T) {
		a.expect(t, 201, "POST", "/api/v1/devices/import", testKey, `[{"id":"j1","labels":{"site":"b"}}]`)
	})
	t.Run("a bad row is 422 naming each bad row", func(t *testing.T) {
		p := a.expect(t, 422, "POST", "/api/v1/devices/import", testKey, "id,name,profile\nok,A,\nbad id,B,\nalso bad!,C,\n", "Content-Type", "text/csv").problem(t)
		want := []tether.RowError{{Row: 2, ID: "bad id", Error: "bad id"}, {Row: 3, ID: "also bad!", Error: "bad id"}}
		if p.Code != tether.EINVALID || !slices.Equal(p.Rows, want) || !strings.Contains(p.Detail, "row 2") {
			t.Errorf("problem %+v", p)
		}
	})
	t.Run("a row the parser refuses is 422 naming it", func(t *testing.T) {
		p := a.expect(t, 422, "POST", "/api/v1/devices/import", testKey, "id,name,profile\nshort\n", "Content-Type", "text/csv").problem(t)
		if len(p.Rows) != 1 || p.Rows[0].Row != 1 {
			t.Errorf("problem %+v", p)
		}
	})
	t.Run("another content type is 415", func(t *testing.T) {
		a.expect(t, 415, "POST", "/api/v1/devices/import", testKey, "f1", "Content-Type", "text/plain")
	})
	t.Run("a body over 16 MiB is 413", func(t *testing.T) {
		big := "id,name,profile\n" + strings.Repeat("d,n,p\n", 17<<20/6)
		a.expect(t, 413, "POST", "/api/v1/devices/import", testKey, big, "Content-Type", "text/csv")
	})
}

func TestProvisioning(t *testing.T) {
	a := newStateAPI(t)
	t.Run("a key is created with its secret, shown once", func(t *testing.T) {
		var k struct {
			tether.ProvisioningKey
			Secret string
		}
		r := a.expect(t, 201, "POST", "/api/v1/provisioning-keys", testKey, `{"profile":"fridge","max_uses":10,"expires_at":"2030-01-01T00:00:00Z"}`)
		r.decode(t, &k)
		if k.ID != "k1" || k.ProfileID != "fridge" || k.MaxUses != 10 || k.ExpiresAt == nil || k.Secret != "pk_k1.s1" {
			t.Errorf("%+v", k)
		}
		if r.header.Get("Location") != "/api/v1/provisioning-keys/k1" {
			t.Errorf("Location %q", r.header.Get("Location"))
		}
		var l map[string][]map[string]any
		a.expect(t, 200, "GET", "/api/v1/provisioning-keys", testKey, "").decode(t, &l)
		if len(l["keys"]) != 1 || l["keys"][0]["secret"] != nil {
			t.Errorf("list %v", l)
		}
	})
	t.Run("a bad key request is 400", func(t *testing.T) {
		a.expect(t, 400, "POST", "/api/v1/provisioning-keys", testKey, `{"profile":"fridge","max_uses":-1}`)
		a.expect(t, 400, "POST", "/api/v1/provisioning-keys", testKey, `{}`)
	})
	t.Run("rotating answers the new secret; revoking is 204", func(t *testing.T) {
		var k struct{ Secret string }
		a.expect(t, 200, "POST", "/api/v1/provisioning-keys/k1/rotate", testKey, "").decode(t, &k)
		if k.Secret != "pk_k1.rotated" {
			t.Errorf("secret %q", k.Secret)
		}
		a.expect(t, 204, "DELETE", "/api/v1/provisioning-keys/k1", testKey, "")
		a.expect(t, 404, "DELETE", "/api/v1/provisioning-keys/nope", testKey, "")
		a.expect(t, 404, "POST", "/api/v1/provisioning-keys/nope/rotate", testKey, "")
	})
	t.Run("a device with the provisioning key registers itself", func(t *testing.T) {
		var out struct {
			Device map[string]any
			Token  string
		}
		r := a.expect(t, 201, "POST", "/api/v1/provision", testProvisioningKey, `{"id":"fridge-9","name":"Kitchen","labels":{"site":"b"}}`)
		r.decode(t, &out)
		if out.Device["id"] != "fridge-9" || out.Device["profile"] != "fridge" || out.Token != "fridge-9.devsecret" {
			t.Errorf("%+v", out)
		}
		if r.header.Get("Location") != "/api/v1/devices/fridge-9" {
			t.Errorf("Location %q", r.header.Get("Location"))
		}
	})
	for _, tt := range []struct {
		name, key string
	}{
		{"a wrong provisioning key is 401", "pk_test.wrong"},
		{"an API key is not a provisioning key: 401", testKey},
		{"no key is 401", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := a.expect(t, 401, "POST", "/api/v1/provision", tt.key, `{"id":"fridge-10"}`)
			if p := r.problem(t); p.Code != tether.EUNAUTHORIZED {
				t.Errorf("problem %+v", p)
			}
			if r.header.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		})
	}
	t.Run("a taken ID is 409 and an unknown field 400", func(t *testing.T) {
		a.expect(t, 409, "POST", "/api/v1/provision", testProvisioningKey, `{"id":"taken"}`)
		a.expect(t, 400, "POST", "/api/v1/provision", testProvisioningKey, `{"id":"x","token":"mine"}`)
	})
}
