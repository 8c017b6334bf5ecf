package profile_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/testkit"
)

const tenant = tether.DefaultTenantID

var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

func newStore(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.EnsureTenant(context.Background(), tether.Tenant{ID: tenant, Name: "Default"}); err != nil {
		t.Fatal(err)
	}
	return db
}

func newService(t testing.TB) (*profile.Service, *sqlite.DB, *testkit.Clock) {
	t.Helper()
	db := newStore(t)
	c := testkit.NewClock(t0)
	return profile.New(db, profile.Options{Now: c.Now, CacheTTL: time.Minute}), db, c
}

func f(v float64) *float64 { return &v }

func boiler() tether.Profile {
	return tether.Profile{
		ID: "boiler", Name: "Boiler",
		Telemetry: map[string]tether.KeySchema{
			"temp": {Type: "number", Unit: "°C", Min: f(-20), Max: f(120), MaxRate: f(2)},
			"on":   {Type: "bool"},
		},
		ReportInterval: tether.Duration(time.Minute),
		Commands: map[string]tether.CommandDef{
			"set": {Params: json.RawMessage(`{"type":"object","properties":{"temp":{"type":"number","maximum":90}},"required":["temp"]}`),
				Roles: []string{"operator"}, RateLimit: &tether.Rate{Count: 1, Per: tether.Duration(time.Hour)}},
			"reboot": {Confirm: true},
		},
	}
}

func TestServiceCRUD(t *testing.T) {
	ctx := context.Background()
	s, _, clk := newService(t)

	created, err := s.Create(ctx, tenant, boiler())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("create returns the profile as stored", func(t *testing.T) {
		want := boiler()
		want.TenantID, want.CreatedAt, want.UpdatedAt = tenant, t0, t0
		if !reflect.DeepEqual(created, &want) {
			t.Errorf("Create =\n%+v\nwant\n%+v", created, &want)
		}
		got, err := s.Get(ctx, tenant, "boiler")
		if err != nil || !reflect.DeepEqual(got, &want) {
			t.Errorf("Get = %+v, %v\nwant %+v", got, err, &want)
		}
	})
	t.Run("create refuses an existing id", func(t *testing.T) {
		_, err := s.Create(ctx, tenant, boiler())
		if tether.ErrorCode(err) != tether.ECONFLICT {
			t.Errorf("second Create: %v, want conflict", err)
		}
	})
	t.Run("put replaces the profile, keeps its creation time and is compiled at once", func(t *testing.T) {
		clk.Add(time.Hour)
		p := boiler()
		p.ReportInterval = tether.Duration(5 * time.Minute)
		got, err := s.Put(ctx, tenant, p)
		if err != nil {
			t.Fatal(err)
		}
		if !got.CreatedAt.Equal(t0) || !got.UpdatedAt.Equal(t0.Add(time.Hour)) {
			t.Errorf("Put times %v / %v, want created %v and updated an hour later", got.CreatedAt, got.UpdatedAt, t0)
		}
		c, err := s.Compiled(ctx, tenant, "boiler")
		if err != nil || c.ReportInterval() != 5*time.Minute {
			t.Errorf("Compiled after Put: interval %v, %v; want 5m", c.ReportInterval(), err)
		}
	})
	t.Run("put creates a missing profile", func(t *testing.T) {
		p := boiler()
		p.ID = "boiler2"
		if _, err := s.Put(ctx, tenant, p); err != nil {
			t.Fatal(err)
		}
		ps, err := s.List(ctx, tenant)
		if err != nil || len(ps) != 2 || ps[0].ID != "boiler" || ps[1].ID != "boiler2" {
			t.Errorf("List = %v, %v; want boiler and boiler2", ps, err)
		}
	})
	t.Run("delete refuses while a device uses the profile", func(t *testing.T) {
		db := newStore(t)
		s := profile.New(db, profile.Options{})
		if _, err := s.Create(ctx, tenant, boiler()); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateDevice(ctx, &tether.Device{TenantID: tenant, ID: "b1", ProfileID: "boiler"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, tenant, "boiler"); tether.ErrorCode(err) != tether.ECONFLICT {
			t.Fatalf("Delete: %v, want conflict", err)
		}
		if err := db.DeleteDevice(ctx, tenant, "b1"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, tenant, "boiler"); err != nil {
			t.Fatalf("Delete once unused: %v", err)
		}
		if _, err := s.Compiled(ctx, tenant, "boiler"); tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("Compiled after Delete: %v, want not found", err)
		}
	})
}

func TestServiceValidates(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t)
	long := strings.Repeat("x", 300)
	for _, c := range []struct {
		name   string
		change func(p *tether.Profile)
		want   string // a part of the message
	}{
		{"a bad id", func(p *tether.Profile) { p.ID = "a/b" }, "profile id"},
		{"an empty id", func(p *tether.Profile) { p.ID = "" }, "profile id"},
		{"a long name", func(p *tether.Profile) { p.Name = long }, "name is 300 bytes"},
		{"an unknown key type", func(p *tether.Profile) { p.Telemetry["x"] = tether.KeySchema{Type: "integer"} }, `key "x": type "integer"`},
		{"an empty key", func(p *tether.Profile) { p.Telemetry[""] = tether.KeySchema{} }, "telemetry key"},
		{"a long key", func(p *tether.Profile) { p.Telemetry[long] = tether.KeySchema{} }, "telemetry key"},
		{"min above max", func(p *tether.Profile) { p.Telemetry["x"] = tether.KeySchema{Min: f(5), Max: f(1)} }, "min 5 is above max 1"},
		{"a zero max_rate", func(p *tether.Profile) { p.Telemetry["x"] = tether.KeySchema{MaxRate: f(0)} }, "max_rate must be above 0"},
		{"a negative max_rate", func(p *tether.Profile) { p.Telemetry["x"] = tether.KeySchema{MaxRate: f(-1)} }, "max_rate must be above 0"},
		{"bounds on a string", func(p *tether.Profile) { p.Telemetry["x"] = tether.KeySchema{Type: "string", Max: f(1)} }, "max applies to numbers"},
		{"a negative report interval", func(p *tether.Profile) { p.ReportInterval = tether.Duration(-time.Second) }, "report_interval"},
		{"a bad command name", func(p *tether.Profile) { p.Commands["order pizza"] = tether.CommandDef{} }, `command name "order pizza"`},
		{"a bad role", func(p *tether.Profile) { p.Commands["x"] = tether.CommandDef{Roles: []string{""}} }, `command "x": role`},
		{"a zero rate count", func(p *tether.Profile) {
			p.Commands["x"] = tether.CommandDef{RateLimit: &tether.Rate{Count: 0, Per: tether.Duration(time.Hour)}}
		}, "rate_limit.count"},
		{"a zero rate period", func(p *tether.Profile) { p.Commands["x"] = tether.CommandDef{RateLimit: &tether.Rate{Count: 1}} }, "rate_limit.per"},
		{"a params schema that is not JSON", func(p *tether.Profile) { p.Commands["x"] = tether.CommandDef{Params: json.RawMessage(`{`)} }, `command "x"`},
		{"a params schema that is not a schema", func(p *tether.Profile) {
			p.Commands["x"] = tether.CommandDef{Params: json.RawMessage(`{"type":"nonsense"}`)}
		}, `command "x": params schema`},
	} {
		t.Run("refuses "+c.name, func(t *testing.T) {
			p := boiler()
			c.change(&p)
			for op, call := range map[string]func() (*tether.Profile, error){
				"Create": func() (*tether.Profile, error) { return s.Create(ctx, tenant, p) },
				"Put":    func() (*tether.Profile, error) { return s.Put(ctx, tenant, p) },
			} {
				_, err := call()
				if tether.ErrorCode(err) != tether.EINVALID || !strings.Contains(tether.ErrorMessage(err), c.want) {
					t.Errorf("%s: %v, want invalid with %q", op, err, c.want)
				}
			}
		})
	}
	t.Run("stores nothing it refused", func(t *testing.T) {
		ps, err := s.List(ctx, tenant)
		if err != nil || len(ps) != 0 {
			t.Errorf("List = %v, %v; want none", ps, err)
		}
	})
}

func TestCompiled(t *testing.T) {
	ctx := context.Background()

	t.Run("no profile is permissive", func(t *testing.T) {
		s, _, _ := newService(t)
		c, err := s.Compiled(ctx, tenant, "")
		if err != nil {
			t.Fatal(err)
		}
		if def, ok := c.Command("anything"); !ok || !reflect.DeepEqual(def, tether.CommandDef{}) {
			t.Errorf("Command = %+v, %v; want a zero definition, allowed", def, ok)
		}
		if err := c.CheckParams("anything", json.RawMessage(`{"x":1}`)); err != nil {
			t.Errorf("CheckParams: %v", err)
		}
		if c.ReportInterval() != 0 {
			t.Errorf("ReportInterval = %v, want 0", c.ReportInterval())
		}
	})

	t.Run("checks commands and parameters against the profile", func(t *testing.T) {
		s, _, _ := newService(t)
		if _, err := s.Create(ctx, tenant, boiler()); err != nil {
			t.Fatal(err)
		}
		c, err := s.Compiled(ctx, tenant, "boiler")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Command("order_pizza"); ok {
			t.Error("a command the profile does not define is allowed")
		}
		if def, ok := c.Command("set"); !ok || def.RateLimit == nil || def.RateLimit.Count != 1 {
			t.Errorf("Command(set) = %+v, %v", def, ok)
		}
		for _, tc := range []struct {
			params string
			ok     bool
		}{
			{`{"temp":50}`, true}, {`{"temp":95}`, false}, {`{}`, false}, {`{"temp":"hot"}`, false}, {`nope`, false},
		} {
			err := c.CheckParams("set", json.RawMessage(tc.params))
			if (err == nil) != tc.ok || (err != nil && tether.ErrorCode(err) != tether.EINVALID) {
				t.Errorf("CheckParams(set, %s) = %v, want ok %v", tc.params, err, tc.ok)
			}
		}
		if err := c.CheckParams("order_pizza", nil); tether.ErrorCode(err) != tether.EINVALID {
			t.Errorf("CheckParams of an unknown command: %v, want invalid", err)
		}
	})

	t.Run("an unknown profile is not found", func(t *testing.T) {
		s, _, _ := newService(t)
		_, err := s.Compiled(ctx, tenant, "nope")
		if tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("Compiled: %v, want not found", err)
		}
	})

	t.Run("another node's change is seen after the cache TTL", func(t *testing.T) {
		db := newStore(t)
		clk := testkit.NewClock(t0)
		here := profile.New(db, profile.Options{Now: clk.Now, CacheTTL: time.Minute})
		there := profile.New(db, profile.Options{Now: clk.Now, CacheTTL: time.Minute})
		if _, err := here.Create(ctx, tenant, boiler()); err != nil {
			t.Fatal(err)
		}
		if c, err := there.Compiled(ctx, tenant, "boiler"); err != nil || c.ReportInterval() != time.Minute {
			t.Fatalf("Compiled on the other node = %v, %v", c, err)
		}
		p := boiler()
		p.ReportInterval = tether.Duration(time.Hour)
		if _, err := here.Put(ctx, tenant, p); err != nil {
			t.Fatal(err)
		}
		if c, _ := there.Compiled(ctx, tenant, "boiler"); c.ReportInterval() != time.Minute {
			t.Errorf("within the TTL the other node has %v, want the cached 1m", c.ReportInterval())
		}
		clk.Add(time.Minute)
		if c, _ := there.Compiled(ctx, tenant, "boiler"); c.ReportInterval() != time.Hour {
			t.Errorf("after the TTL the other node has %v, want 1h", c.ReportInterval())
		}
	})
}
