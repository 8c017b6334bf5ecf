package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

// engineCall is one call the fake engine was given.
type engineCall struct {
	method, tenant, ruleID string
	rule                   tether.Rule
	inputs                 []httpapi.RuleInput
	from, to               time.Time
	devices                []string
	limit                  int
}

// fakeRuleEngine records its calls and answers from its arguments: a
// dry run gives one result per input, a backtest one per device. A
// statement with "divide" in it is refused by the compiler at line 1,
// column 8; device "ghost" does not exist; a statement with "quiet" in
// it, and rule "quiet", give nothing at all (nil slices).
type fakeRuleEngine struct {
	mu    sync.Mutex
	calls []engineCall
}

var _ httpapi.RuleEngine = (*fakeRuleEngine)(nil)

func (f *fakeRuleEngine) record(c engineCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

// last returns the last call, failing the test if there was none.
func (f *fakeRuleEngine) last(t *testing.T) engineCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		t.Fatal("the engine was not called")
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeRuleEngine) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func describe(r *tether.Rule, results []tether.RuleResult) []string {
	var out []string
	for _, res := range results {
		for _, a := range r.Actions {
			d := fmt.Sprintf("%s for %s", a.Type, res.DeviceID)
			if a.Secret != "" {
				d += " signed with " + a.Secret
			}
			out = append(out, d)
		}
	}
	return out
}

func (f *fakeRuleEngine) DryRun(_ context.Context, tenant string, r *tether.Rule, ins []httpapi.RuleInput) ([]tether.RuleResult, any, []string, error) {
	f.record(engineCall{method: "DryRun", tenant: tenant, ruleID: r.ID, rule: *r, inputs: ins})
	if strings.Contains(r.Statement, "divide") {
		return nil, nil, nil, &fakeRuleInvalid{msg: "statement: line 1, column 8: division by zero", line: 1, col: 8}
	}
	if strings.Contains(r.Statement, "quiet") {
		var trace []map[string]any
		return nil, trace, nil, nil
	}
	var results []tether.RuleResult
	var trace []map[string]any
	for _, in := range ins {
		if in.Device == "ghost" {
			return nil, nil, nil, tether.Errorf(tether.ENOTFOUND, "no device %q", in.Device)
		}
		results = append(results, tether.RuleResult{TenantID: tenant, RuleID: r.ID, RuleVersion: r.Version, DeviceID: in.Device, Time: in.Time, Values: in.Values})
		trace = append(trace, map[string]any{"input": map[string]any{"device_id": in.Device}, "results": 1})
	}
	return results, trace, describe(r, results), nil
}

func (f *fakeRuleEngine) Backtest(_ context.Context, tenant string, r *tether.Rule, from, to time.Time, devices []string) ([]tether.RuleResult, []string, error) {
	f.record(engineCall{method: "Backtest", tenant: tenant, ruleID: r.ID, rule: *r, from: from, to: to, devices: devices})
	var results []tether.RuleResult
	for _, d := range devices {
		if d == "ghost" {
			return nil, nil, tether.Errorf(tether.ENOTFOUND, "no device %q", d)
		}
		results = append(results, tether.RuleResult{TenantID: tenant, RuleID: r.ID, DeviceID: d, Time: from, Values: map[string]any{"v": 5.0}})
	}
	return results, describe(r, results), nil
}

func (f *fakeRuleEngine) Metrics(tenant, ruleID string) any {
	f.record(engineCall{method: "Metrics", tenant: tenant, ruleID: ruleID})
	return map[string]any{"evaluated": 7, "matched": 3}
}

func (f *fakeRuleEngine) Trace(tenant, ruleID string) any {
	f.record(engineCall{method: "Trace", tenant: tenant, ruleID: ruleID})
	if ruleID == "quiet" {
		var none []map[string]any
		return none
	}
	return []map[string]any{{"input": map[string]any{"device_id": "arm-1"}, "where": true, "results": 1}}
}

func (f *fakeRuleEngine) DeadLetters(_ context.Context, tenant, ruleID string, limit int) (any, error) {
	f.record(engineCall{method: "DeadLetters", tenant: tenant, ruleID: ruleID, limit: limit})
	if ruleID == "quiet" {
		return nil, nil
	}
	return []map[string]any{{"rule_id": ruleID, "error": "webhook: 500"}}, nil
}

// viewerKey is a key of a role that may not use the development loop.
const viewerKey = "ak_viewer.secret"

// ruleDevRegistry is rulesRegistry with a viewer's key.
type ruleDevRegistry struct{ rulesRegistry }

func (r ruleDevRegistry) AuthenticateAPIKey(ctx context.Context, key string) (*tether.APIKey, error) {
	if key == viewerKey {
		return &tether.APIKey{TenantID: tether.DefaultTenantID, ID: "ak_viewer", Role: "viewer"}, nil
	}
	return r.rulesRegistry.AuthenticateAPIKey(ctx, key)
}

// newRuleDevAPI runs a server with rules service rs and rule engine e,
// either of which may be nil.
func newRuleDevAPI(t *testing.T, rs httpapi.Rules, e httpapi.RuleEngine) *stateAPI {
	t.Helper()
	sv := httpapi.Services{}
	// A nil *fakeRules or *fakeRuleEngine in the interface would not be
	// a nil service.
	if rs != nil {
		sv.Rules = rs
	}
	if e != nil {
		sv.RuleEngine = e
	}
	srv, err := httpapi.New(ruleDevRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: sv,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &stateAPI{url: serve(t, srv), srv: srv}
}

// storedRules returns the fake rules service with rule "vib" (with a
// webhook) and rule "quiet" in the default tenant, and rule "theirs" in
// tenant "other".
func storedRules(t *testing.T) *fakeRules {
	t.Helper()
	rs := newFakeRules()
	ctx := context.Background()
	for _, r := range []struct {
		tenant string
		rule   tether.Rule
	}{
		{tether.DefaultTenantID, tether.Rule{ID: "vib", Statement: vibration, Enabled: true, Actions: []tether.RuleAction{
			{Type: tether.ActionWebhook, URL: hookURL, Secret: hookSecret}, {Type: tether.ActionAlert, AlertType: "vibration"}}}},
		{tether.DefaultTenantID, tether.Rule{ID: "quiet", Statement: "SELECT * FROM telemetry"}},
		{"other", tether.Rule{ID: "theirs", Statement: vibration, Enabled: true}},
	} {
		if _, err := rs.Create(ctx, r.tenant, r.rule); err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

// documentedStatuses returns the documented responses by "METHOD path".
func documentedStatuses(t *testing.T) map[string]map[string]json.RawMessage {
	t.Helper()
	_, _, _, routes := loadOpenAPI(t)
	documented := map[string]map[string]json.RawMessage{}
	for _, r := range routes {
		documented[r.String()] = r.op.Responses
	}
	return documented
}

// inputsJSON returns n inputs of device arm-1 as a JSON array.
func inputsJSON(n int) string {
	in := make([]string, n)
	for i := range in {
		in[i] = `{"device":"arm-1","ts":"2025-01-01T10:00:00Z","values":{"vibration":4.5}}`
	}
	return "[" + strings.Join(in, ",") + "]"
}

// devicesJSON returns n distinct device IDs as a JSON array.
func devicesJSON(n int) string {
	ds := make([]string, n)
	for i := range ds {
		ds[i] = strconv.Quote(fmt.Sprintf("d%d", i))
	}
	return "[" + strings.Join(ds, ",") + "]"
}

func TestRuleDevAPI(t *testing.T) {
	engine := &fakeRuleEngine{}
	a := newRuleDevAPI(t, storedRules(t), engine)
	documented := documentedStatuses(t)

	const week = `"from":"2025-01-01T00:00:00Z","to":"2025-01-08T00:00:00Z"`
	dryRun := func(stmt, inputs string) string {
		return `{"statement":` + strconv.Quote(stmt) + `,"actions":[{"type":"alert","alert_type":"vibration"}],"inputs":` + inputs + `}`
	}
	// Every answer of the development loop, and that its status is
	// documented for its route.
	for _, tc := range []struct {
		name                     string
		method, route, path, key string
		body                     string
		status                   int
		detail                   string // in the problem's detail, if not ""
	}{
		{"a dry run of a statement answers its results", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, inputsJSON(2)), 200, ""},
		{"an operator may dry-run", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testOperatorKey, dryRun(vibration, inputsJSON(1)), 200, ""},
		{"a viewer may not dry-run", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", viewerKey, dryRun(vibration, inputsJSON(1)), 403, "viewer"},
		{"no key is 401", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", "", dryRun(vibration, inputsJSON(1)), 401, ""},
		{"a dry run of 1000 inputs is taken", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, inputsJSON(1000)), 200, ""},
		{"a dry run of 1001 inputs is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, inputsJSON(1001)), 400, "at most 1000"},
		{"a dry run of no inputs is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[]`), 400, "inputs is empty"},
		{"an input of no device and no topic is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"values":{"v":1}}]`), 400, "inputs[0]"},
		{"an input of a bad device ID is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"device":"a/b"}]`), 400, "not a valid device ID"},
		{"an input with an object value is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"device":"a","values":{"v":{"x":1}}}]`), 400, `value "v"`},
		{"an input with a time that is not RFC 3339 is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"device":"a","ts":"yesterday"}]`), 400, "not valid JSON"},
		{"an MQTT input needs no device", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun("SELECT * FROM 'plant/#'", `[{"topic":"plant/1","payload":{"t":1}}]`), 200, ""},
		{"an input of a device the tenant lacks is 404", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"device":"ghost"}]`), 404, "ghost"},
		{"an unknown field is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, `{"statement":"SELECT 1 FROM telemetry","inputs":[{"device":"a"}],"colour":1}`, 400, "unknown field"},
		{"malformed JSON is refused", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, `{"statement":`, 400, ""},
		{"a body of 2 MiB is taken", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"device":"a","values":{"note":"`+strings.Repeat("x", 2<<20)+`"}}]`), 200, ""},
		{"a body over 4 MiB is 413", "POST", "/api/v1/rules/dry-run", "/api/v1/rules/dry-run", testKey, dryRun(vibration, `[{"device":"a","values":{"note":"`+strings.Repeat("x", 4<<20)+`"}}]`), 413, "4194304"},

		{"a stored rule's dry run answers its results", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/vib/dry-run", testKey, `{"inputs":` + inputsJSON(3) + `}`, 200, ""},
		{"an operator may dry-run a stored rule", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/vib/dry-run", testOperatorKey, `{"inputs":` + inputsJSON(1) + `}`, 200, ""},
		{"a dry run of an unknown rule is 404", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/nope/dry-run", testKey, `{"inputs":` + inputsJSON(1) + `}`, 404, "nope"},
		{"a dry run of another tenant's rule is 404", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/theirs/dry-run", testKey, `{"inputs":` + inputsJSON(1) + `}`, 404, "theirs"},
		{"a stored rule's dry run checks the inputs before looking the rule up", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/nope/dry-run", testKey, `{"inputs":[]}`, 400, "inputs is empty"},
		{"a stored rule's dry run needs inputs", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/vib/dry-run", testKey, ``, 400, "empty"},
		{"a stored rule's dry run takes no statement", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/vib/dry-run", testKey, `{"statement":"x","inputs":[{"device":"a"}]}`, 400, "unknown field"},

		{"a backtest answers its results and their count", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":["arm-1","arm-2"]}`, 200, ""},
		{"an operator may backtest", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testOperatorKey, `{` + week + `,"devices":["arm-1"]}`, 200, ""},
		{"a viewer may not backtest", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", viewerKey, `{` + week + `,"devices":["arm-1"]}`, 403, ""},
		{"a backtest of exactly 31 days is taken", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{"from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:00Z","devices":["a"]}`, 200, ""},
		{"a backtest of over 31 days is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{"from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:01Z","devices":["a"]}`, 400, "31 days"},
		{"a backtest that ends before it starts is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{"from":"2025-01-08T00:00:00Z","to":"2025-01-01T00:00:00Z","devices":["a"]}`, 400, "must be after"},
		{"a backtest that ends as it starts is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{"from":"2025-01-01T00:00:00Z","to":"2025-01-01T00:00:00Z","devices":["a"]}`, 400, "must be after"},
		{"a backtest without to is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{"from":"2025-01-01T00:00:00Z","devices":["a"]}`, 400, "required"},
		{"a backtest with a time that is not RFC 3339 is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{"from":"2025-01-01","to":"2025-01-02","devices":["a"]}`, 400, "not valid JSON"},
		{"a backtest of no devices is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":[]}`, 400, "devices is empty"},
		{"a backtest of 1000 devices is taken", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":` + devicesJSON(1000) + `}`, 200, ""},
		{"a backtest of 1001 devices is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":` + devicesJSON(1001) + `}`, 400, "at most 1000"},
		{"a backtest naming a device twice is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":["a","b","a"]}`, 400, `devices[2]: "a" is named twice`},
		{"a backtest of a bad device ID is refused", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":["a b"]}`, 400, "not a valid device ID"},
		{"a backtest of a device the tenant lacks is 404", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/vib/backtest", testKey, `{` + week + `,"devices":["ghost"]}`, 404, "ghost"},
		{"a backtest of an unknown rule is 404", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/nope/backtest", testKey, `{` + week + `,"devices":["a"]}`, 404, ""},
		{"a backtest of another tenant's rule is 404", "POST", "/api/v1/rules/{id}/backtest", "/api/v1/rules/theirs/backtest", testKey, `{` + week + `,"devices":["a"]}`, 404, ""},

		{"metrics are answered", "GET", "/api/v1/rules/{id}/metrics", "/api/v1/rules/vib/metrics", testKey, "", 200, ""},
		{"an operator may read metrics", "GET", "/api/v1/rules/{id}/metrics", "/api/v1/rules/vib/metrics", testOperatorKey, "", 200, ""},
		{"a viewer may read metrics", "GET", "/api/v1/rules/{id}/metrics", "/api/v1/rules/vib/metrics", viewerKey, "", 200, ""},
		{"a viewer may not dry-run a rule", "POST", "/api/v1/rules/{id}/dry-run", "/api/v1/rules/vib/dry-run", viewerKey, `{"inputs":[]}`, 403, "needs operator"},
		{"metrics of an unknown rule are 404, not zeros", "GET", "/api/v1/rules/{id}/metrics", "/api/v1/rules/nope/metrics", testKey, "", 404, ""},
		{"metrics of another tenant's rule are 404", "GET", "/api/v1/rules/{id}/metrics", "/api/v1/rules/theirs/metrics", testKey, "", 404, ""},
		{"the trace is answered", "GET", "/api/v1/rules/{id}/trace", "/api/v1/rules/vib/trace", testKey, "", 200, ""},
		{"the trace of an unknown rule is 404", "GET", "/api/v1/rules/{id}/trace", "/api/v1/rules/nope/trace", testKey, "", 404, ""},
		{"dead letters are answered", "GET", "/api/v1/rules/{id}/dead-letters", "/api/v1/rules/vib/dead-letters", testKey, "", 200, ""},
		{"dead letters take a limit up to 1000", "GET", "/api/v1/rules/{id}/dead-letters", "/api/v1/rules/vib/dead-letters?limit=1000", testOperatorKey, "", 200, ""},
		{"a limit over 1000 is refused", "GET", "/api/v1/rules/{id}/dead-letters", "/api/v1/rules/vib/dead-letters?limit=1001", testKey, "", 400, "limit"},
		{"a limit of 0 is refused", "GET", "/api/v1/rules/{id}/dead-letters", "/api/v1/rules/vib/dead-letters?limit=0", testKey, "", 400, "limit"},
		{"a limit that is not a number is refused", "GET", "/api/v1/rules/{id}/dead-letters", "/api/v1/rules/vib/dead-letters?limit=ten", testKey, "", 400, "limit"},
		{"dead letters of an unknown rule are 404", "GET", "/api/v1/rules/{id}/dead-letters", "/api/v1/rules/nope/dead-letters", testKey, "", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.expect(t, tc.status, tc.method, tc.path, tc.key, tc.body)
			if tc.status >= 400 {
				if p := r.problem(t); !strings.Contains(p.Detail, tc.detail) {
					t.Errorf("detail %q does not say %q", p.Detail, tc.detail)
				}
			}
			responses, ok := documented[tc.method+" "+tc.route]
			if !ok {
				t.Fatalf("%s %s is not in the document", tc.method, tc.route)
			}
			if _, ok := responses[strconv.Itoa(tc.status)]; !ok {
				t.Errorf("status %d is not among the responses of %s %s", tc.status, tc.method, tc.route)
			}
		})
	}

	t.Run("a dry run passes the statement, the actions and the inputs to the engine, with the key's tenant", func(t *testing.T) {
		before := time.Now()
		var got httpapi.DryRunResult
		a.expect(t, 200, "POST", "/api/v1/rules/dry-run", testKey, dryRun(vibration,
			`[{"device":"arm-1","ts":"2025-01-01T10:00:00Z","values":{"vibration":4.5,"on":true,"mode":"run"}},{"device":"arm-2"}]`)).decode(t, &got)
		c := engine.last(t)
		if c.method != "DryRun" || c.tenant != tether.DefaultTenantID || c.rule.TenantID != tether.DefaultTenantID || c.rule.Statement != vibration ||
			len(c.rule.Actions) != 1 || c.rule.Actions[0].AlertType != "vibration" {
			t.Errorf("the engine got %+v", c)
		}
		if len(c.inputs) != 2 || c.inputs[0].Device != "arm-1" || !c.inputs[0].Time.Equal(time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC)) ||
			c.inputs[0].Values["vibration"] != 4.5 || c.inputs[0].Values["on"] != true || c.inputs[0].Values["mode"] != "run" {
			t.Errorf("the engine got inputs %+v", c.inputs)
		}
		if ts := c.inputs[1].Time; ts.Before(before) || ts.After(time.Now()) {
			t.Errorf("an input without a time has %v, want now", ts)
		}
		if len(got.Results) != 2 || got.Results[0].DeviceID != "arm-1" || len(got.Actions) != 2 || got.Actions[0] != "alert for arm-1" {
			t.Errorf("answered %+v", got)
		}
		if trace, ok := got.Trace.([]any); !ok || len(trace) != 2 {
			t.Errorf("trace %#v, want the engine's two entries", got.Trace)
		}
	})
	t.Run("a dry run that gives nothing answers empty lists, not null", func(t *testing.T) {
		r := a.expect(t, 200, "POST", "/api/v1/rules/dry-run", testKey, dryRun("SELECT * FROM telemetry WHERE quiet", inputsJSON(1)))
		if want := `{"results":[],"trace":[],"actions":[]}`; strings.TrimSpace(string(r.body)) != want {
			t.Errorf("body %s, want %s", r.body, want)
		}
	})
	t.Run("a statement the parser refuses is 422 with its position, and the engine is not asked", func(t *testing.T) {
		n := engine.count()
		p := ruleProblem(t, a.expect(t, 422, "POST", "/api/v1/rules/dry-run", testKey, dryRun("SELECT x\nFROM nowhere", inputsJSON(1))))
		if p.Position == nil || p.Position.Line != 2 || p.Position.Column != 6 || p.Code != tether.EINVALID {
			t.Errorf("problem %+v, position %+v", p, p.Position)
		}
		if engine.count() != n {
			t.Error("the engine was called")
		}
		if _, ok := documented["POST /api/v1/rules/dry-run"]["422"]; !ok {
			t.Error("422 is not documented")
		}
	})
	t.Run("an invalid action is 422 without a position", func(t *testing.T) {
		body := `{"statement":"SELECT 1 FROM telemetry","actions":[{"type":"teleport"}],"inputs":[{"device":"a"}]}`
		if p := ruleProblem(t, a.expect(t, 422, "POST", "/api/v1/rules/dry-run", testKey, body)); p.Position != nil {
			t.Errorf("position %+v", p.Position)
		}
	})
	t.Run("a statement the engine refuses is 422 with its position", func(t *testing.T) {
		p := ruleProblem(t, a.expect(t, 422, "POST", "/api/v1/rules/dry-run", testKey, dryRun("SELECT divide FROM telemetry", inputsJSON(1))))
		if p.Position == nil || p.Position.Line != 1 || p.Position.Column != 8 || !strings.Contains(p.Detail, "division") {
			t.Errorf("problem %+v, position %+v", p, p.Position)
		}
	})

	t.Run("a stored rule's dry run runs the stored rule", func(t *testing.T) {
		var got httpapi.DryRunResult
		a.expect(t, 200, "POST", "/api/v1/rules/vib/dry-run", testKey, `{"inputs":`+inputsJSON(1)+`}`).decode(t, &got)
		c := engine.last(t)
		if c.method != "DryRun" || c.tenant != tether.DefaultTenantID || c.rule.ID != "vib" || c.rule.Statement != vibration || len(c.rule.Actions) != 2 {
			t.Errorf("the engine got %+v", c)
		}
		if len(got.Results) != 1 || got.Results[0].RuleID != "vib" || len(got.Actions) != 2 {
			t.Errorf("answered %+v", got)
		}
	})
	t.Run("the engine is not given the webhook secret, so no answer can show it", func(t *testing.T) {
		for _, req := range [][2]string{
			{"/api/v1/rules/vib/dry-run", `{"inputs":` + inputsJSON(1) + `}`},
			{"/api/v1/rules/vib/backtest", `{` + week + `,"devices":["a"]}`},
		} {
			r := a.expect(t, 200, "POST", req[0], testKey, req[1])
			if c := engine.last(t); c.rule.Actions[0].URL != hookURL || c.rule.Actions[0].Secret != "" {
				t.Errorf("%s: the engine got action %+v", req[0], c.rule.Actions[0])
			}
			if strings.Contains(string(r.body), hookSecret) {
				t.Errorf("%s: body %s", req[0], r.body)
			}
		}
	})

	t.Run("a backtest passes the range and the devices to the engine, with the key's tenant", func(t *testing.T) {
		var got httpapi.BacktestResult
		a.expect(t, 200, "POST", "/api/v1/rules/vib/backtest", testKey,
			`{"from":"2025-01-01T00:00:00+01:00","to":"2025-01-08T00:00:00Z","devices":["arm-1","arm-2"]}`).decode(t, &got)
		c := engine.last(t)
		if c.method != "Backtest" || c.tenant != tether.DefaultTenantID || c.rule.ID != "vib" ||
			!c.from.Equal(time.Date(2024, 12, 31, 23, 0, 0, 0, time.UTC)) || !c.to.Equal(time.Date(2025, 1, 8, 0, 0, 0, 0, time.UTC)) ||
			strings.Join(c.devices, ",") != "arm-1,arm-2" {
			t.Errorf("the engine got %+v", c)
		}
		if got.Count != 2 || len(got.Results) != 2 || got.Results[1].DeviceID != "arm-2" || len(got.Actions) != 4 {
			t.Errorf("answered %+v", got)
		}
	})

	t.Run("metrics are the engine's for the rule and tenant", func(t *testing.T) {
		var m map[string]any
		a.expect(t, 200, "GET", "/api/v1/rules/vib/metrics", testKey, "").decode(t, &m)
		if c := engine.last(t); c.method != "Metrics" || c.tenant != tether.DefaultTenantID || c.ruleID != "vib" {
			t.Errorf("the engine got %+v", c)
		}
		if m["evaluated"] != 7.0 || m["matched"] != 3.0 {
			t.Errorf("metrics %v", m)
		}
	})
	t.Run("the trace is the engine's for the rule and tenant, in an object", func(t *testing.T) {
		var tr struct{ Trace []map[string]any }
		a.expect(t, 200, "GET", "/api/v1/rules/vib/trace", testKey, "").decode(t, &tr)
		if c := engine.last(t); c.method != "Trace" || c.tenant != tether.DefaultTenantID || c.ruleID != "vib" {
			t.Errorf("the engine got %+v", c)
		}
		if len(tr.Trace) != 1 || tr.Trace[0]["where"] != true {
			t.Errorf("trace %v", tr)
		}
	})
	t.Run("dead letters are the engine's, with the limit, default 100", func(t *testing.T) {
		var dl struct {
			DeadLetters []map[string]any `json:"dead_letters"`
		}
		a.expect(t, 200, "GET", "/api/v1/rules/vib/dead-letters", testKey, "").decode(t, &dl)
		if c := engine.last(t); c.method != "DeadLetters" || c.tenant != tether.DefaultTenantID || c.ruleID != "vib" || c.limit != 100 {
			t.Errorf("the engine got %+v", c)
		}
		if len(dl.DeadLetters) != 1 || dl.DeadLetters[0]["rule_id"] != "vib" {
			t.Errorf("dead letters %v", dl)
		}
		a.expect(t, 200, "GET", "/api/v1/rules/vib/dead-letters?limit=7", testKey, "")
		if c := engine.last(t); c.limit != 7 {
			t.Errorf("limit %d, want 7", c.limit)
		}
	})
	t.Run("an empty trace and no dead letters are empty lists, not null", func(t *testing.T) {
		if r := a.expect(t, 200, "GET", "/api/v1/rules/quiet/trace", testKey, ""); strings.TrimSpace(string(r.body)) != `{"trace":[]}` {
			t.Errorf("trace body %s", r.body)
		}
		if r := a.expect(t, 200, "GET", "/api/v1/rules/quiet/dead-letters", testKey, ""); strings.TrimSpace(string(r.body)) != `{"dead_letters":[]}` {
			t.Errorf("dead letters body %s", r.body)
		}
	})

	t.Run("another tenant's key works on its own rules, and the engine is told its tenant", func(t *testing.T) {
		for _, req := range [][3]string{
			{"POST", "/api/v1/rules/dry-run", dryRun(vibration, inputsJSON(1))},
			{"POST", "/api/v1/rules/theirs/dry-run", `{"inputs":` + inputsJSON(1) + `}`},
			{"POST", "/api/v1/rules/theirs/backtest", `{` + week + `,"devices":["a"]}`},
			{"GET", "/api/v1/rules/theirs/metrics", ""},
			{"GET", "/api/v1/rules/theirs/trace", ""},
			{"GET", "/api/v1/rules/theirs/dead-letters", ""},
		} {
			a.expect(t, 200, req[0], req[1], otherRulesKey, req[2])
			if c := engine.last(t); c.tenant != "other" || (c.method == "DryRun" && c.rule.TenantID != "other") {
				t.Errorf("%s %s: the engine got tenant %q, rule tenant %q", req[0], req[1], c.tenant, c.rule.TenantID)
			}
		}
		a.expect(t, 404, "GET", "/api/v1/rules/vib/metrics", otherRulesKey, "")
	})
}

func TestRuleDevAPIWithoutTheServices(t *testing.T) {
	routes := [][3]string{
		{"POST", "/api/v1/rules/dry-run", `{"statement":"SELECT 1 FROM telemetry","inputs":[{"device":"a"}]}`},
		{"POST", "/api/v1/rules/vib/dry-run", `{"inputs":[{"device":"a"}]}`},
		{"POST", "/api/v1/rules/vib/backtest", `{"from":"2025-01-01T00:00:00Z","to":"2025-01-02T00:00:00Z","devices":["a"]}`},
		{"GET", "/api/v1/rules/vib/metrics", ""},
		{"GET", "/api/v1/rules/vib/trace", ""},
		{"GET", "/api/v1/rules/vib/dead-letters", ""},
	}
	t.Run("without the engine every route answers 503 naming it", func(t *testing.T) {
		a := newRuleDevAPI(t, storedRules(t), nil)
		for _, req := range routes {
			p := a.expect(t, 503, req[0], req[1], testKey, req[2]).problem(t)
			if p.Code != tether.EUNAVAILABLE || !strings.Contains(p.Detail, "rule engine") {
				t.Errorf("%s %s: problem %+v", req[0], req[1], p)
			}
		}
	})
	t.Run("without the engine a key is still checked first", func(t *testing.T) {
		a := newRuleDevAPI(t, storedRules(t), nil)
		a.expect(t, 401, "POST", "/api/v1/rules/dry-run", "", routes[0][2])
		a.expect(t, 403, "POST", "/api/v1/rules/dry-run", viewerKey, routes[0][2])
	})
	t.Run("without the rules service a statement can still be dry-run, but stored rules are 503", func(t *testing.T) {
		engine := &fakeRuleEngine{}
		a := newRuleDevAPI(t, nil, engine)
		a.expect(t, 200, "POST", routes[0][1], testKey, routes[0][2])
		if c := engine.last(t); c.rule.Statement != "SELECT 1 FROM telemetry" {
			t.Errorf("the engine got %+v", c)
		}
		for _, req := range routes[1:] {
			p := a.expect(t, 503, req[0], req[1], testKey, req[2]).problem(t)
			if !strings.Contains(p.Detail, "rules service") {
				t.Errorf("%s %s: problem %+v", req[0], req[1], p)
			}
		}
	})
}
