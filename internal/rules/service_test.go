package rules_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/rules"
	"github.com/tether-iot/tether/internal/rules/lang"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// The service is what the API needs, and its verdicts carry the position
// the API shows.
var (
	_ httpapi.Rules       = (*rules.Service)(nil)
	_ httpapi.RuleInvalid = (*rules.ValidationError)(nil)
)

// t0 is a fixed time on a whole hour; the service's clock starts there
// and moves a second per reading.
var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

const (
	tenantA = "acme"
	tenantB = "globex"
)

// Statements the language accepts.
const (
	windowed = "SELECT avg(vibration) AS v FROM telemetry GROUP BY device, TUMBLING(1m) HAVING v > 4.2"
	filter   = "SELECT temp FROM telemetry WHERE temp > 30"
)

func webhook(url, secret string) tether.RuleAction {
	return tether.RuleAction{Type: tether.ActionWebhook, URL: url, Secret: secret}
}

var alertAction = tether.RuleAction{Type: tether.ActionAlert, AlertType: "vibration", Severity: "warning", MinDuration: tether.Duration(time.Minute)}

// events records the change events the service publishes.
type events struct {
	mu  sync.Mutex
	got []string // tenant/device kind: change version
	raw [][]byte
}

func (e *events) PublishEvent(_ context.Context, tenant, kind, device string, data []byte) error {
	var ev rules.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, tenant+"/"+device+" "+kind+": "+ev.Change)
	e.raw = append(e.raw, data)
	return nil
}

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	got := e.got
	e.got = nil
	return got
}

// clock is a fake time source: each reading is a second after the last.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// newService returns a service over a new store with tenants A and B.
func newService(t *testing.T, o rules.Options) (*rules.Service, *events, *sqlite.DB) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, id := range []string{tenantA, tenantB} {
		if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	ev := &events{}
	if o.Now == nil {
		o.Now = (&clock{t: t0}).Now
	}
	return rules.New(db, ev, o), ev, db
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (err %v), want %q", got, err, code)
	}
}

func mustCreate(t *testing.T, s *rules.Service, tenant string, r tether.Rule) *tether.Rule {
	t.Helper()
	got, err := s.Create(context.Background(), tenant, r)
	if err != nil {
		t.Fatalf("Create %s: %v", r.ID, err)
	}
	return got
}

func TestCreate(t *testing.T) {
	ctx := context.Background()
	s, ev, _ := newService(t, rules.Options{})
	in := tether.Rule{ID: "vib", Name: "Vibration", Statement: windowed, Enabled: true,
		Actions: []tether.RuleAction{webhook("https://example.com/hook", "s3cret"), alertAction},
		// The service sets these; what the caller sends is ignored.
		TenantID: "other", Version: 7, Status: tether.RuleFailing, Error: "x", CreatedAt: t0.Add(-time.Hour)}
	got := mustCreate(t, s, tenantA, in)

	t.Run("stores version 1 with status ok, for the tenant, at the service's time", func(t *testing.T) {
		want := &tether.Rule{TenantID: tenantA, ID: "vib", Name: "Vibration", Statement: windowed, Actions: in.Actions,
			Enabled: true, Version: 1, Status: tether.RuleOK, CreatedAt: t0.Add(time.Second), UpdatedAt: t0.Add(time.Second)}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Create =\n%+v\nwant\n%+v", got, want)
		}
		stored, err := s.Get(ctx, tenantA, "vib")
		if err != nil || !reflect.DeepEqual(stored, want) {
			t.Errorf("Get = %+v, %v", stored, err)
		}
	})
	t.Run("announces the change without the definition", func(t *testing.T) {
		if got := ev.take(); !slices.Equal(got, []string{"acme/vib rule: created"}) {
			t.Errorf("events = %v", got)
		}
		if strings.Contains(string(ev.raw[0]), "s3cret") {
			t.Errorf("the event carries the secret: %s", ev.raw[0])
		}
	})
	t.Run("gives a rule without an id a random one", func(t *testing.T) {
		r := mustCreate(t, s, tenantA, tether.Rule{Statement: filter})
		if !tether.ValidID(r.ID) || r.Enabled {
			t.Errorf("rule id %q, enabled %t", r.ID, r.Enabled)
		}
	})
	t.Run("refuses a second rule with the same id", func(t *testing.T) {
		_, err := s.Create(ctx, tenantA, tether.Rule{ID: "vib", Statement: filter})
		wantCode(t, err, tether.ECONFLICT)
	})
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	s, ev, _ := newService(t, rules.Options{})
	for _, tc := range []struct {
		name         string
		r            tether.Rule
		field        string
		line, column int
	}{
		{"a statement the parser refuses points at the position", tether.Rule{ID: "r", Statement: "SELECT avg(x) AS v\nFROM nowhere"}, "statement", 2, 6},
		{"an empty statement is refused", tether.Rule{ID: "r"}, "statement", 1, 1},
		{"a statement over 4 KiB is refused before it is parsed", tether.Rule{ID: "r", Statement: "SELECT " + strings.Repeat("x", 4096) + " FROM telemetry"}, "statement", 0, 0},
		{"an invalid action names its index", tether.Rule{ID: "r", Statement: filter,
			Actions: []tether.RuleAction{alertAction, {Type: "teleport"}}}, "actions[1]", 0, 0},
		{"a webhook that is not HTTPS is refused", tether.Rule{ID: "r", Statement: filter,
			Actions: []tether.RuleAction{webhook("ftp://example.com/hook", "s")}}, "actions[0]", 0, 0},
		{"more than 16 actions are refused", tether.Rule{ID: "r", Statement: filter,
			Actions: slices.Repeat([]tether.RuleAction{alertAction}, 17)}, "actions", 0, 0},
		{"an invalid id is refused", tether.Rule{ID: "no spaces", Statement: filter}, "id", 0, 0},
		{"a name over 256 bytes is refused", tether.Rule{ID: "r", Name: strings.Repeat("n", 257), Statement: filter}, "name", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Create(ctx, tenantA, tc.r)
			wantCode(t, err, tether.EINVALID)
			var ve *rules.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *rules.ValidationError", err)
			}
			if ve.Field != tc.field {
				t.Errorf("field %q, want %q", ve.Field, tc.field)
			}
			if line, col := ve.Position(); tc.line != 0 && (line != tc.line || col != tc.column) {
				t.Errorf("position line %d, column %d; want %d, %d (%v)", line, col, tc.line, tc.column, err)
			} else if tc.field != "statement" && line != 0 {
				t.Errorf("position line %d for a %s error", line, tc.field)
			}
			if msg := tether.ErrorMessage(err); !strings.HasPrefix(msg, tc.field+": ") {
				t.Errorf("message %q does not start with the field", msg)
			}
			if got := tether.ErrorMessage(s.Validate(tc.r.Statement, tc.r.Actions)); tc.field != "id" && tc.field != "name" && got != tether.ErrorMessage(err) {
				t.Errorf("Validate says %q, Create %q", got, tether.ErrorMessage(err))
			}
		})
	}
	t.Run("the parser's error is kept in the chain", func(t *testing.T) {
		err := s.Validate("SELECT * FROM nowhere", nil)
		var le *lang.Error
		if !errors.As(err, &le) || le.Line != 1 || le.Col != 15 {
			t.Errorf("errors.As(%v, *lang.Error) = %v", err, le)
		}
		var ve *rules.ValidationError
		if errors.As(err, &ve); ve.Offset != 14 {
			t.Errorf("offset %d, want 14", ve.Offset)
		}
	})
	t.Run("a good statement with good actions is valid", func(t *testing.T) {
		if err := s.Validate(windowed, []tether.RuleAction{webhook("https://example.com/h", "k"), alertAction}); err != nil {
			t.Error(err)
		}
	})
	t.Run("nothing invalid is stored or announced", func(t *testing.T) {
		if rs, err := s.List(ctx, tenantA); err != nil || len(rs) != 0 {
			t.Errorf("List = %v, %v", rs, err)
		}
		if got := ev.take(); len(got) != 0 {
			t.Errorf("events %v", got)
		}
	})
}

func TestVersions(t *testing.T) {
	ctx := context.Background()
	s, ev, _ := newService(t, rules.Options{})
	v1 := mustCreate(t, s, tenantA, tether.Rule{ID: "vib", Name: "one", Statement: windowed, Enabled: true,
		Actions: []tether.RuleAction{webhook("https://example.com/a", "secret-a")}})
	if err := s.SetStatus(ctx, tenantA, "vib", 1, tether.RuleFailing, "boom"); err != nil {
		t.Fatal(err)
	}

	v2, err := s.Update(ctx, tenantA, "vib", tether.Rule{Name: "two", Statement: filter, Enabled: false,
		Actions: []tether.RuleAction{webhook("https://example.com/a", "secret-b"), alertAction}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("an update makes the next version with status ok and the enabled flag unchanged", func(t *testing.T) {
		if v2.Version != 2 || v2.Status != tether.RuleOK || v2.Error != "" || !v2.Enabled || v2.Name != "two" ||
			v2.Statement != filter || !v2.CreatedAt.Equal(v1.CreatedAt) || !v2.UpdatedAt.After(v1.UpdatedAt) {
			t.Errorf("Update = %+v", v2)
		}
		if got, _ := s.Get(ctx, tenantA, "vib"); !reflect.DeepEqual(got, v2) {
			t.Errorf("Get = %+v\nwant %+v", got, v2)
		}
	})
	t.Run("an update naming an old version is a conflict", func(t *testing.T) {
		_, err := s.Update(ctx, tenantA, "vib", tether.Rule{Version: 1, Statement: filter})
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("an invalid update changes nothing", func(t *testing.T) {
		_, err := s.Update(ctx, tenantA, "vib", tether.Rule{Statement: "SELECT x FROM nowhere"})
		wantCode(t, err, tether.EINVALID)
		if got, _ := s.Get(ctx, tenantA, "vib"); got.Version != 2 {
			t.Errorf("version %d after a refused update", got.Version)
		}
	})
	t.Run("an update of a rule that does not exist is not found", func(t *testing.T) {
		_, err := s.Update(ctx, tenantA, "nope", tether.Rule{Statement: filter})
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("a webhook sent back without its secret keeps the current one for its URL", func(t *testing.T) {
		v3, err := s.Update(ctx, tenantA, "vib", tether.Rule{Version: 2, Name: "three", Statement: filter,
			Actions: []tether.RuleAction{alertAction, webhook("https://example.com/a", "")}})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, tenantA, "vib"); got.Version != 3 || got.Actions[1].Secret != "secret-b" || v3.Actions[1].Secret != "secret-b" {
			t.Errorf("actions after the update: %+v", got.Actions)
		}
	})
	t.Run("a rollback makes a new version equal to the old one, secrets included", func(t *testing.T) {
		v4, err := s.Rollback(ctx, tenantA, "vib", 1)
		if err != nil {
			t.Fatal(err)
		}
		if v4.Version != 4 || v4.Name != v1.Name || v4.Statement != v1.Statement || !reflect.DeepEqual(v4.Actions, v1.Actions) ||
			v4.Status != tether.RuleOK || !v4.Enabled {
			t.Errorf("Rollback = %+v\nwant the definition of %+v", v4, v1)
		}
		if got, _ := s.Get(ctx, tenantA, "vib"); !reflect.DeepEqual(got, v4) {
			t.Errorf("Get = %+v\nwant %+v", got, v4)
		}
	})
	t.Run("the versions are listed oldest first, each with its definition and time", func(t *testing.T) {
		vs, err := s.Versions(ctx, tenantA, "vib")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vs {
			got = append(got, v.Name+"@"+v.UpdatedAt.Format("15:04:05"))
		}
		// The clock moves a second per create, update and rollback.
		if want := []string{"one@05:00:01", "two@05:00:02", "three@05:00:03", "one@05:00:04"}; !slices.Equal(got, want) {
			t.Errorf("versions %v, want %v", got, want)
		}
	})
	t.Run("a rollback to a version that does not exist is not found", func(t *testing.T) {
		_, err := s.Rollback(ctx, tenantA, "vib", 9)
		wantCode(t, err, tether.ENOTFOUND)
		_, err = s.Rollback(ctx, tenantA, "nope", 1)
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("a rollback to version 0 is invalid", func(t *testing.T) {
		_, err := s.Rollback(ctx, tenantA, "vib", 0)
		wantCode(t, err, tether.EINVALID)
	})
	t.Run("each new version is announced", func(t *testing.T) {
		want := []string{"acme/vib rule: created", "acme/vib rule: status", "acme/vib rule: updated", "acme/vib rule: updated", "acme/vib rule: rolled_back"}
		if got := ev.take(); !slices.Equal(got, want) {
			t.Errorf("events %v\nwant %v", got, want)
		}
	})
	t.Run("a webhook to a new URL without a secret gets none", func(t *testing.T) {
		_, err := s.Update(ctx, tenantA, "vib", tether.Rule{Statement: filter,
			Actions: []tether.RuleAction{webhook("https://example.com/other", "")}})
		// Whether a webhook needs a secret is the action package's call;
		// either way, the old URL's secret is not moved over.
		if err != nil {
			wantCode(t, err, tether.EINVALID)
			return
		}
		if got, _ := s.Get(ctx, tenantA, "vib"); got.Actions[0].Secret != "" {
			t.Errorf("secret %q moved to another URL", got.Actions[0].Secret)
		}
	})
}

func TestRollbackRevalidates(t *testing.T) {
	ctx := context.Background()
	s, _, db := newService(t, rules.Options{})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r", Statement: filter})
	// A version the language no longer takes, stored behind the
	// service's back as if by an older release.
	old := &tether.Rule{TenantID: tenantA, ID: "r", Statement: "SELECT x FROM nowhere"}
	if err := db.UpdateRule(ctx, old, 1, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, tenantA, "r", tether.Rule{Statement: windowed}); err != nil {
		t.Fatal(err)
	}
	t.Run("rolling back to a version that no longer validates is refused with the position", func(t *testing.T) {
		_, err := s.Rollback(ctx, tenantA, "r", 2)
		wantCode(t, err, tether.EINVALID)
		var ve *rules.ValidationError
		if !errors.As(err, &ve) || ve.Line != 1 || ve.Column != 15 || !strings.Contains(ve.Message, "version 2 no longer validates") {
			t.Errorf("error %v", err)
		}
		if r, _ := s.Get(ctx, tenantA, "r"); r.Version != 3 || r.Statement != windowed {
			t.Errorf("rule after the refused rollback: %+v", r)
		}
	})
}

func TestVersionsKept(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t, rules.Options{MaxVersions: 3})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r", Name: "v1", Statement: filter})
	for _, name := range []string{"v2", "v3", "v4", "v5"} {
		if _, err := s.Update(ctx, tenantA, "r", tether.Rule{Name: name, Statement: filter}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("only the newest MaxVersions versions are kept", func(t *testing.T) {
		vs, err := s.Versions(ctx, tenantA, "r")
		if err != nil || len(vs) != 3 || vs[0].Version != 3 || vs[2].Version != 5 {
			t.Fatalf("Versions = %v, %v", vs, err)
		}
	})
	t.Run("a version no longer kept cannot be rolled back to", func(t *testing.T) {
		_, err := s.Rollback(ctx, tenantA, "r", 2)
		wantCode(t, err, tether.ENOTFOUND)
	})
}

func TestConcurrentUpdates(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t, rules.Options{})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r", Statement: filter})
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Update(ctx, tenantA, "r", tether.Rule{Statement: filter})
			if c := tether.ErrorCode(err); c != "" && c != tether.ECONFLICT {
				t.Errorf("Update: %v", err)
			}
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Run("updates that race get in one after another, each a version of its own", func(t *testing.T) {
		r, _ := s.Get(ctx, tenantA, "r")
		vs, _ := s.Versions(ctx, tenantA, "r")
		if ok == 0 || r.Version != 1+ok || len(vs) != r.Version {
			t.Errorf("%d updates succeeded; rule at version %d with %d versions", ok, r.Version, len(vs))
		}
	})
}

func TestLimit(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t, rules.Options{MaxRules: 2})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r1", Statement: filter})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r2", Statement: filter})
	t.Run("a tenant at its limit cannot create another rule", func(t *testing.T) {
		_, err := s.Create(ctx, tenantA, tether.Rule{ID: "r3", Statement: filter})
		wantCode(t, err, tether.ETOOMANY)
	})
	t.Run("updates and rollbacks are not new rules", func(t *testing.T) {
		if _, err := s.Update(ctx, tenantA, "r1", tether.Rule{Statement: windowed}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Rollback(ctx, tenantA, "r1", 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another tenant has a limit of its own", func(t *testing.T) {
		mustCreate(t, s, tenantB, tether.Rule{ID: "r3", Statement: filter})
	})
	t.Run("deleting a rule makes room", func(t *testing.T) {
		if err := s.Delete(ctx, tenantA, "r2"); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, tenantA, tether.Rule{ID: "r3", Statement: filter})
	})
	t.Run("the default limit is 1000", func(t *testing.T) {
		if rules.DefaultMaxRules != 1000 {
			t.Errorf("DefaultMaxRules = %d", rules.DefaultMaxRules)
		}
	})
}

func TestEnableAndStatus(t *testing.T) {
	ctx := context.Background()
	s, ev, _ := newService(t, rules.Options{})
	mustCreate(t, s, tenantA, tether.Rule{ID: "on", Statement: filter, Enabled: true})
	mustCreate(t, s, tenantA, tether.Rule{ID: "off", Statement: filter})
	mustCreate(t, s, tenantB, tether.Rule{ID: "b", Statement: filter, Enabled: true})
	ev.take()

	enabled := func(t *testing.T) []string {
		t.Helper()
		rs, err := s.Enabled(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.TenantID+"/"+r.ID)
		}
		return ids
	}
	t.Run("the engine gets the enabled rules of every tenant", func(t *testing.T) {
		if got := enabled(t); !slices.Equal(got, []string{"acme/on", "globex/b"}) {
			t.Errorf("Enabled = %v", got)
		}
	})
	t.Run("enable and disable switch a rule without a new version", func(t *testing.T) {
		r, err := s.SetEnabled(ctx, tenantA, "off", true)
		if err != nil || !r.Enabled || r.Version != 1 {
			t.Fatalf("SetEnabled(true) = %+v, %v", r, err)
		}
		if r, err = s.SetEnabled(ctx, tenantA, "on", false); err != nil || r.Enabled {
			t.Fatalf("SetEnabled(false) = %+v, %v", r, err)
		}
		if got := enabled(t); !slices.Equal(got, []string{"acme/off", "globex/b"}) {
			t.Errorf("Enabled = %v", got)
		}
		if got := ev.take(); !slices.Equal(got, []string{"acme/off rule: enabled", "acme/on rule: disabled"}) {
			t.Errorf("events %v", got)
		}
	})
	t.Run("the engine marks a rule failing with its error, once", func(t *testing.T) {
		for range 3 {
			if err := s.SetStatus(ctx, tenantA, "off", 1, tether.RuleFailing, "division by zero"); err != nil {
				t.Fatal(err)
			}
		}
		r, _ := s.Get(ctx, tenantA, "off")
		if r.Status != tether.RuleFailing || r.Error != "division by zero" {
			t.Errorf("status %q, error %q", r.Status, r.Error)
		}
		if got := ev.take(); !slices.Equal(got, []string{"acme/off rule: status"}) {
			t.Errorf("events %v; want one status change", got)
		}
	})
	t.Run("a long error is cut and still counts as unchanged when repeated", func(t *testing.T) {
		long := strings.Repeat("e", 5000)
		for range 2 {
			if err := s.SetStatus(ctx, tenantA, "off", 1, tether.RuleFailing, long); err != nil {
				t.Fatal(err)
			}
		}
		if got := ev.take(); len(got) != 1 {
			t.Errorf("events %v; want one status change", got)
		}
	})
	t.Run("ok clears the error", func(t *testing.T) {
		if err := s.SetStatus(ctx, tenantA, "off", 1, tether.RuleOK, "ignored"); err != nil {
			t.Fatal(err)
		}
		if r, _ := s.Get(ctx, tenantA, "off"); r.Status != tether.RuleOK || r.Error != "" {
			t.Errorf("status %q, error %q", r.Status, r.Error)
		}
	})
	t.Run("a verdict on an old version is dropped", func(t *testing.T) {
		if _, err := s.Update(ctx, tenantA, "off", tether.Rule{Statement: windowed}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetStatus(ctx, tenantA, "off", 1, tether.RuleFailing, "old"); err != nil {
			t.Fatal(err)
		}
		if r, _ := s.Get(ctx, tenantA, "off"); r.Status != tether.RuleOK {
			t.Errorf("status %q after a verdict on version 1", r.Status)
		}
	})
	t.Run("enabling a failing rule resets it to ok", func(t *testing.T) {
		if err := s.SetStatus(ctx, tenantA, "on", 1, tether.RuleFailing, "boom"); err != nil {
			t.Fatal(err)
		}
		r, err := s.SetEnabled(ctx, tenantA, "on", true)
		if err != nil || r.Status != tether.RuleOK || r.Error != "" {
			t.Errorf("SetEnabled = %+v, %v", r, err)
		}
	})
	t.Run("an unknown status is invalid and an unknown rule not found", func(t *testing.T) {
		wantCode(t, s.SetStatus(ctx, tenantA, "on", 1, "meh", ""), tether.EINVALID)
		wantCode(t, s.SetStatus(ctx, tenantA, "gone", 1, tether.RuleOK, ""), tether.ENOTFOUND)
	})
}

func TestTenantIsolation(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t, rules.Options{})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r", Name: "A's", Statement: filter, Enabled: true})

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := s.Get(ctx, tenantB, "r"); return err }},
		{"update", func() error { _, err := s.Update(ctx, tenantB, "r", tether.Rule{Statement: filter}); return err }},
		{"versions", func() error { _, err := s.Versions(ctx, tenantB, "r"); return err }},
		{"rollback", func() error { _, err := s.Rollback(ctx, tenantB, "r", 1); return err }},
		{"enable", func() error { _, err := s.SetEnabled(ctx, tenantB, "r", false); return err }},
		{"status", func() error { return s.SetStatus(ctx, tenantB, "r", 1, tether.RuleFailing, "x") }},
		{"delete", func() error { return s.Delete(ctx, tenantB, "r") }},
	} {
		t.Run("another tenant cannot "+tc.name+" the rule: not found", func(t *testing.T) {
			wantCode(t, tc.call(), tether.ENOTFOUND)
		})
	}
	t.Run("another tenant lists none of it, and may use the same id", func(t *testing.T) {
		if rs, err := s.List(ctx, tenantB); err != nil || len(rs) != 0 {
			t.Errorf("List(%s) = %v, %v", tenantB, rs, err)
		}
		mustCreate(t, s, tenantB, tether.Rule{ID: "r", Name: "B's", Statement: windowed})
	})
	t.Run("the first tenant's rule is untouched", func(t *testing.T) {
		r, err := s.Get(ctx, tenantA, "r")
		if err != nil || r.Name != "A's" || r.Version != 1 || !r.Enabled || r.Status != tether.RuleOK {
			t.Errorf("Get = %+v, %v", r, err)
		}
	})
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	s, ev, _ := newService(t, rules.Options{})
	mustCreate(t, s, tenantA, tether.Rule{ID: "r", Statement: filter})
	ev.take()
	if err := s.Delete(ctx, tenantA, "r"); err != nil {
		t.Fatal(err)
	}
	t.Run("a deleted rule and its versions are gone", func(t *testing.T) {
		_, err := s.Get(ctx, tenantA, "r")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = s.Versions(ctx, tenantA, "r")
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, s.Delete(ctx, tenantA, "r"), tether.ENOTFOUND)
	})
	t.Run("the deletion is announced", func(t *testing.T) {
		if got := ev.take(); !slices.Equal(got, []string{"acme/r rule: deleted"}) {
			t.Errorf("events %v", got)
		}
	})
}

// failingEvents refuses every event.
type failingEvents struct{}

func (failingEvents) PublishEvent(context.Context, string, string, string, []byte) error {
	return errors.New("bus down")
}

func TestEventsAreBestEffort(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tenantA}); err != nil {
		t.Fatal(err)
	}
	t.Run("a change is stored even when the bus refuses its event", func(t *testing.T) {
		s := rules.New(db, failingEvents{}, rules.Options{})
		if _, err := s.Create(ctx, tenantA, tether.Rule{ID: "r", Statement: filter}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, tenantA, "r"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a service without a bus works", func(t *testing.T) {
		s := rules.New(db, nil, rules.Options{})
		if _, err := s.SetEnabled(ctx, tenantA, "r", true); err != nil {
			t.Fatal(err)
		}
	})
}
