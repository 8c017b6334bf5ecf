package graphql_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/graphql"
	"github.com/tether-iot/tether/internal/stream"
	"github.com/tether-iot/tether/internal/testkit"
)

// world is the state behind the fake services: the tests' node, small
// enough to read at a glance. Every fake reads and writes it under mu.
type world struct {
	mu       sync.Mutex
	devices  map[string]*tether.Device
	latest   map[string][]tether.Latest
	series   []tether.Series
	queries  []tether.TelemetryQuery
	shadows  map[string]*tether.Shadow
	presence map[string]*tether.Presence
	alerts   []*tether.Alert
	commands []*tether.Command
	rules    []*tether.Rule
	profiles map[string]*tether.Profile
	sent     []tether.CommandRequest

	// failLatest, when set, is Latest's error.
	failLatest error
	// reads counts Device, Latest and Presence calls by device.
	reads map[string]*atomic.Int64
}

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func newWorld() *world {
	w := &world{
		devices: map[string]*tether.Device{}, latest: map[string][]tether.Latest{}, shadows: map[string]*tether.Shadow{},
		presence: map[string]*tether.Presence{}, profiles: map[string]*tether.Profile{}, reads: map[string]*atomic.Int64{},
	}
	for _, id := range []string{"d1", "d2", "d3"} {
		w.devices[id] = &tether.Device{TenantID: tether.DefaultTenantID, ID: id, Name: "Device " + id,
			Labels: map[string]string{"site": "lab", "floor": "1"}, CreatedAt: t0, UpdatedAt: t0}
		w.reads[id] = &atomic.Int64{}
	}
	w.devices["d3"].Labels = map[string]string{"site": "hall"}
	w.devices["d1"].ProfileID = "thermo"
	w.latest["d1"] = []tether.Latest{{Key: "hum", Time: t0, Value: 40.0}, {Key: "temp", Time: t0, Value: 21.5}}
	w.presence["d1"] = &tether.Presence{TenantID: tether.DefaultTenantID, DeviceID: "d1", Status: tether.PresenceOnline, Reason: tether.ReasonConnected, Since: t0, Transport: "mqtt"}
	w.series = []tether.Series{{Key: "temp", Samples: []tether.Sample{{Time: t0, Value: 21.0}, {Time: t0.Add(time.Minute), Value: 22.0}}}}
	w.alerts = []*tether.Alert{
		{TenantID: tether.DefaultTenantID, ID: "a2", RuleID: "hot", DeviceID: "d1", Type: "hot", Severity: "warning", Status: tether.AlertActive, Count: 2, RaisedAt: t0, LastSeenAt: t0},
		{TenantID: tether.DefaultTenantID, ID: "a1", RuleID: "hot", DeviceID: "d1", Type: "hot", Severity: "warning", Status: tether.AlertCleared, Count: 1, RaisedAt: t0, LastSeenAt: t0},
		{TenantID: tether.DefaultTenantID, ID: "a0", RuleID: "cold", DeviceID: "gone", Type: "cold", Severity: "info", Status: tether.AlertActive, Count: 1, RaisedAt: t0, LastSeenAt: t0},
	}
	w.rules = []*tether.Rule{{TenantID: tether.DefaultTenantID, ID: "hot", Name: "Hot", Statement: "SELECT temp FROM telemetry WHERE temp > 25",
		Enabled: true, Version: 1, Status: tether.RuleOK, CreatedAt: t0, UpdatedAt: t0, Actions: []tether.RuleAction{
			{Type: tether.ActionWebhook, URL: "https://hooks.example/x", Secret: "s3cret-webhook-key"},
			{Type: tether.ActionAlert, AlertType: "hot", Severity: "warning", MinDuration: tether.Duration(time.Minute)},
		}}}
	min, max := -40.0, 85.0
	w.profiles["thermo"] = &tether.Profile{TenantID: tether.DefaultTenantID, ID: "thermo", Name: "Thermostat", ReportInterval: tether.Duration(30 * time.Second),
		Telemetry: map[string]tether.KeySchema{"temp": {Type: "number", Unit: "°C", Min: &min, Max: &max}, "hum": {Type: "number"}},
		Commands:  map[string]tether.CommandDef{"reboot": {Roles: []string{tether.RoleOperator}}, "set_mode": {Params: json.RawMessage(`{"type":"object"}`), Confirm: true}},
		CreatedAt: t0, UpdatedAt: t0}
	w.commands = []*tether.Command{{TenantID: tether.DefaultTenantID, DeviceID: "d1", ID: "c1", Name: "reboot", Seq: 1, Status: tether.CommandSucceeded,
		Source: "api:k", Result: json.RawMessage(`{"ok":true}`), Timeout: tether.Duration(30 * time.Second), CreatedAt: t0, UpdatedAt: t0, ExpiresAt: t0.Add(time.Hour),
		History: []tether.CommandTransition{{Status: tether.CommandQueued, At: t0}, {Status: tether.CommandSucceeded, At: t0}}}}
	return w
}

func (w *world) read(id string) {
	if c := w.reads[id]; c != nil {
		c.Add(1)
	}
}

func notFound(what, id string) error {
	return tether.Errorf(tether.ENOTFOUND, "%s %q not found", what, id)
}

type fakeDevices struct{ *world }

func (f fakeDevices) Device(_ context.Context, tenant, id string) (*tether.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read(id)
	d, ok := f.devices[id]
	if !ok || d.TenantID != tenant {
		return nil, notFound("device", id)
	}
	c := *d
	return &c, nil
}

func (f fakeDevices) Devices(_ context.Context, flt tether.DeviceFilter) ([]*tether.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Device
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for id := range f.devices {
			if !yield(id) {
				return
			}
		}
	}) {
		d := f.devices[id]
		if d.TenantID != flt.TenantID || id <= flt.After || (flt.Profile != "" && d.ProfileID != flt.Profile) {
			continue
		}
		match := true
		for k, v := range flt.Labels {
			match = match && d.Labels[k] == v
		}
		if match && len(out) < flt.Limit {
			c := *d
			out = append(out, &c)
		}
	}
	return out, nil
}

func (f fakeDevices) CreateDevice(_ context.Context, tenant string, d tether.Device) (*tether.Device, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[d.ID]; ok {
		return nil, "", tether.Errorf(tether.ECONFLICT, "device %q exists", d.ID)
	}
	d.TenantID, d.CreatedAt, d.UpdatedAt = tenant, t0, t0
	f.devices[d.ID] = &d
	c := d
	return &c, d.ID + ".token", nil
}

func (f fakeDevices) UpdateDevice(_ context.Context, tenant, id string, u tether.DeviceUpdate) (*tether.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[id]
	if !ok {
		return nil, notFound("device", id)
	}
	if u.Name != nil {
		d.Name = *u.Name
	}
	if u.Labels != nil {
		d.Labels = u.Labels
	}
	if u.Metadata != nil {
		d.Metadata = u.Metadata
	}
	if u.Profile != nil {
		d.ProfileID = *u.Profile
	}
	c := *d
	return &c, nil
}

func (f fakeDevices) DeleteDevice(_ context.Context, tenant, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[id]; !ok {
		return notFound("device", id)
	}
	delete(f.devices, id)
	return nil
}

func (f fakeDevices) RotateToken(_ context.Context, tenant, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[id]; !ok {
		return "", notFound("device", id)
	}
	return id + ".new-token", nil
}

type fakeTelemetry struct{ *world }

func (f fakeTelemetry) Telemetry(_ context.Context, q tether.TelemetryQuery) ([]tether.Series, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return slices.Clone(f.series), nil
}

func (f fakeTelemetry) Latest(_ context.Context, tenant, id string) ([]tether.Latest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read(id)
	if f.failLatest != nil {
		return nil, f.failLatest
	}
	return slices.Clone(f.latest[id]), nil
}

type fakeShadows struct{ *world }

func (f fakeShadows) Get(_ context.Context, tenant, id, name string) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sh, ok := f.shadows[id+"/"+name]; ok {
		c := *sh
		return &c, nil
	}
	return &tether.Shadow{TenantID: tenant, DeviceID: id, Name: name, State: tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}}}, nil
}

func (f fakeShadows) Update(_ context.Context, tenant, id, name string, u tether.ShadowUpdate) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh, ok := f.shadows[id+"/"+name]
	if !ok {
		sh = &tether.Shadow{TenantID: tenant, DeviceID: id, Name: name, State: tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}}}
		f.shadows[id+"/"+name] = sh
	}
	if u.Version != 0 && u.Version != sh.Version {
		return nil, tether.Errorf(tether.ECONFLICT, "the shadow is at version %d, not %d", sh.Version, u.Version)
	}
	for k, v := range u.State.Desired {
		if v == nil {
			delete(sh.State.Desired, k)
		} else {
			sh.State.Desired[k] = v
		}
	}
	sh.Version++
	c := *sh
	return &c, nil
}

func (f fakeShadows) Names(context.Context, string, string) ([]string, error) { return nil, nil }

type fakePresence struct{ *world }

func (f fakePresence) Get(_ context.Context, tenant, id string) (*tether.Presence, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read(id)
	if p, ok := f.presence[id]; ok {
		c := *p
		return &c, nil
	}
	return &tether.Presence{TenantID: tenant, DeviceID: id, Status: tether.PresenceOffline, Reason: tether.ReasonNeverConnected}, nil
}

type fakeAlerts struct{ *world }

func (f fakeAlerts) Get(_ context.Context, tenant, id string) (*tether.Alert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.alerts {
		if a.ID == id {
			c := *a
			return &c, nil
		}
	}
	return nil, notFound("alert", id)
}

func (f fakeAlerts) List(_ context.Context, tenant string, flt tether.AlertFilter) ([]*tether.Alert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Alert
	after := flt.After == ""
	for _, a := range f.alerts {
		switch {
		case !after:
			after = a.ID == flt.After
			continue
		case flt.Status == "open" && a.Status == tether.AlertCleared,
			flt.Status != "" && flt.Status != "open" && a.Status != flt.Status,
			flt.DeviceID != "" && a.DeviceID != flt.DeviceID,
			flt.RuleID != "" && a.RuleID != flt.RuleID:
			continue
		}
		if len(out) < flt.Limit {
			c := *a
			out = append(out, &c)
		}
	}
	return out, nil
}

func (f fakeAlerts) set(id, by, status string) (*tether.Alert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.alerts {
		if a.ID == id {
			a.Status = status
			if status == tether.AlertAcknowledged {
				a.AcknowledgedBy = by
			} else {
				a.ClearedBy = by
			}
			c := *a
			return &c, nil
		}
	}
	return nil, notFound("alert", id)
}

func (f fakeAlerts) Acknowledge(_ context.Context, tenant, id, by string) (*tether.Alert, error) {
	return f.set(id, by, tether.AlertAcknowledged)
}

func (f fakeAlerts) Clear(_ context.Context, tenant, id, by string) (*tether.Alert, error) {
	return f.set(id, by, tether.AlertCleared)
}

type fakeCommands struct{ *world }

func (f fakeCommands) Send(_ context.Context, tenant, id string, r tether.CommandRequest) (*tether.Command, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, r)
	cmd := &tether.Command{TenantID: tenant, DeviceID: id, ID: fmt.Sprintf("c%d", len(f.commands)+1), Name: r.Name, Params: r.Params,
		Seq: int64(len(f.commands) + 1), Status: tether.CommandQueued, Source: r.Source, CreatedAt: t0, UpdatedAt: t0}
	if r.Name == "self_destruct" {
		cmd.Status, cmd.Reason = tether.CommandRejected, "not in the profile"
		return cmd, true, tether.Errorf(tether.EINVALID, "the profile has no command self_destruct")
	}
	f.commands = append(f.commands, cmd)
	return cmd, true, nil
}

func (f fakeCommands) Confirm(_ context.Context, tenant, device, id, by string) (*tether.Command, error) {
	return nil, notFound("command", id)
}

func (f fakeCommands) Get(_ context.Context, tenant, device, id string) (*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.commands {
		if c.DeviceID == device && c.ID == id {
			cc := *c
			return &cc, nil
		}
	}
	return nil, notFound("command", id)
}

func (f fakeCommands) List(_ context.Context, tenant, device string, flt tether.CommandFilter) ([]*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Command
	for _, c := range f.commands {
		if c.DeviceID == device && c.Seq > flt.After && (flt.Status == "" || c.Status == flt.Status) && len(out) < flt.Limit {
			cc := *c
			out = append(out, &cc)
		}
	}
	return out, nil
}

// Wait answers a command as done after a moment, as a device that
// replies would.
func (f fakeCommands) Wait(ctx context.Context, tenant, device, id string) (*tether.Command, error) {
	select {
	case <-time.After(10 * time.Millisecond):
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.commands {
		if c.ID == id {
			c.Status = tether.CommandSucceeded
			cc := *c
			return &cc, nil
		}
	}
	return nil, notFound("command", id)
}

type fakeRules struct{ *world }

func (f fakeRules) Get(_ context.Context, tenant, id string) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.ID == id {
			c := *r
			return &c, nil
		}
	}
	return nil, notFound("rule", id)
}

func (f fakeRules) List(_ context.Context, tenant string) ([]*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rules), nil
}

func (f fakeRules) SetEnabled(_ context.Context, tenant, id string, on bool) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.ID == id {
			r.Enabled = on
			c := *r
			return &c, nil
		}
	}
	return nil, notFound("rule", id)
}

type fakeProfiles struct{ *world }

func (f fakeProfiles) Get(_ context.Context, tenant, id string) (*tether.Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.profiles[id]; ok {
		return p, nil
	}
	return nil, notFound("profile", id)
}

func (f fakeProfiles) List(context.Context, string) ([]*tether.Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Profile
	for _, p := range f.profiles {
		out = append(out, p)
	}
	return out, nil
}

// keys are the API keys the tests' Authenticate knows, by bearer token.
var keys = map[string]*tether.Principal{
	"admin-key":    {TenantID: tether.DefaultTenantID, Kind: tether.PrincipalAPIKey, ID: "ka", Name: "API key ka", Role: tether.RoleAdmin},
	"operator-key": {TenantID: tether.DefaultTenantID, Kind: tether.PrincipalAPIKey, ID: "ko", Name: "API key ko", Role: tether.RoleOperator},
	"viewer-key":   {TenantID: tether.DefaultTenantID, Kind: tether.PrincipalAPIKey, ID: "kv", Name: "API key kv", Role: tether.RoleViewer},
	"no-role-key":  {TenantID: tether.DefaultTenantID, Kind: tether.PrincipalAPIKey, ID: "kn", Name: "API key kn", Role: "janitor"},
	"other-tenant": {TenantID: "other", Kind: tether.PrincipalAPIKey, ID: "kx", Name: "API key kx", Role: tether.RoleAdmin},
}

// authenticate is the REST API's authentication in small: a bearer key.
func authenticate(r *http.Request) (*tether.Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "an API key is required")
	}
	p, ok := keys[strings.TrimPrefix(h, "Bearer ")]
	if !ok {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "the API key is wrong")
	}
	return p, nil
}

// server is the GraphQL handler over the fakes, served on 127.0.0.1:0.
type server struct {
	*world
	h    *graphql.Handler
	url  string
	logs *testkit.Buffer
}

func newServer(t testing.TB, edit func(*graphql.Options)) *server {
	t.Helper()
	w := newWorld()
	s := &server{world: w, logs: &testkit.Buffer{}}
	o := graphql.Options{
		Devices: fakeDevices{w}, Telemetry: fakeTelemetry{w}, Shadows: fakeShadows{w}, Presence: fakePresence{w},
		Alerts: fakeAlerts{w}, Commands: fakeCommands{w}, Rules: fakeRules{w}, Profiles: fakeProfiles{w},
		Authenticate: authenticate, Logger: slog.New(slog.NewTextHandler(s.logs, nil)),
	}
	if edit != nil {
		edit(&o)
	}
	h, err := graphql.New(o)
	if err != nil {
		t.Fatal(err)
	}
	s.h = h
	mux := http.NewServeMux()
	mux.Handle("/api/graphql", h)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
	})
	s.url = hs.URL + "/api/graphql"
	return s
}

// post sends a query with key ("" for none) and returns the status and
// the response (zero if it is not GraphQL's).
func (s *server) post(t *testing.T, key, query string, vars map[string]any) (int, testkit.GraphQLResult, []byte) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", s.url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, testkit.GraphQLResult, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var res testkit.GraphQLResult
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/graphql-response+json") {
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
	}
	return resp.StatusCode, res, raw
}

// fakeStream is a Subscriber whose subscriptions return the events put
// on feed; a negative dropped count is a lag report with no event.
type fakeStream struct {
	mu      sync.Mutex
	filters []stream.Filter
	feed    chan fakeEvent
	closed  chan struct{}
}

type fakeEvent struct {
	ev      stream.Event
	dropped uint64
}

func newFakeStream() *fakeStream {
	return &fakeStream{feed: make(chan fakeEvent, 16), closed: make(chan struct{}, 16)}
}

func (f *fakeStream) Subscribe(_ context.Context, tenant string, flt stream.Filter) (stream.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, flt)
	return fakeSub{f}, nil
}

type fakeSub struct{ f *fakeStream }

func (s fakeSub) Next(ctx context.Context) (stream.Event, uint64, error) {
	select {
	case e := <-s.f.feed:
		return e.ev, e.dropped, nil
	case <-ctx.Done():
		return stream.Event{}, 0, ctx.Err()
	}
}

func (s fakeSub) Close() { s.f.closed <- struct{}{} }
