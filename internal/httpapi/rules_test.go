package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

// fakeRules keeps rules by tenant and ID with just the behaviour of the
// rules service that the API shows: versions, a stale version refused,
// secrets kept (and returned, so that the API must leave them out), a
// limit of 3 rules per tenant, and a statement with "nowhere" in it
// refused at the position of that word.
type fakeRules struct {
	mu       sync.Mutex
	m        map[string][]*tether.Rule // tenant/id: its versions, oldest first
	enabled  map[string]bool
	lastSent tether.Rule // the last rule Create or Update was given
}

var _ httpapi.Rules = (*fakeRules)(nil)

func newFakeRules() *fakeRules {
	return &fakeRules{m: map[string][]*tether.Rule{}, enabled: map[string]bool{}}
}

// fakeRuleInvalid is the service's verdict on an invalid rule.
type fakeRuleInvalid struct {
	msg       string
	line, col int
}

func (e *fakeRuleInvalid) Error() string                { return e.msg }
func (e *fakeRuleInvalid) Position() (line, column int) { return e.line, e.col }
func (e *fakeRuleInvalid) Unwrap() error                { return tether.Errorf(tether.EINVALID, "%s", e.msg) }

func (f *fakeRules) Validate(stmt string, actions []tether.RuleAction) error {
	if i := strings.Index(stmt, "nowhere"); i >= 0 {
		line := strings.Count(stmt[:i], "\n") + 1
		col := i - strings.LastIndex(stmt[:i], "\n")
		return &fakeRuleInvalid{msg: fmt.Sprintf("statement: line %d, column %d: unknown source", line, col), line: line, col: col}
	}
	for i, a := range actions {
		if a.Type == "teleport" {
			return &fakeRuleInvalid{msg: fmt.Sprintf("actions[%d]: no such action type", i)}
		}
	}
	return nil
}

func (f *fakeRules) current(tenant, id string) (*tether.Rule, error) {
	vs := f.m[tenant+"/"+id]
	if len(vs) == 0 {
		return nil, tether.Errorf(tether.ENOTFOUND, "rule %q not found", id)
	}
	r := *vs[len(vs)-1]
	r.Enabled = f.enabled[tenant+"/"+id]
	r.Status = tether.RuleOK
	return &r, nil
}

func (f *fakeRules) Create(_ context.Context, tenant string, r tether.Rule) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastSent = r
	if err := f.Validate(r.Statement, r.Actions); err != nil {
		return nil, err
	}
	if r.ID == "" {
		r.ID = "generated"
	}
	if f.m[tenant+"/"+r.ID] != nil {
		return nil, tether.Errorf(tether.ECONFLICT, "rule %q already exists", r.ID)
	}
	n := 0
	for k := range f.m {
		if strings.HasPrefix(k, tenant+"/") {
			n++
		}
	}
	if n >= 3 {
		return nil, tether.Errorf(tether.ETOOMANY, "a tenant has at most 3 rules")
	}
	v := &tether.Rule{TenantID: tenant, ID: r.ID, Name: r.Name, Statement: r.Statement, Actions: r.Actions, Version: 1}
	f.m[tenant+"/"+r.ID] = []*tether.Rule{v}
	f.enabled[tenant+"/"+r.ID] = r.Enabled
	return f.current(tenant, r.ID)
}

func (f *fakeRules) Update(_ context.Context, tenant, id string, r tether.Rule) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastSent = r
	if err := f.Validate(r.Statement, r.Actions); err != nil {
		return nil, err
	}
	cur, err := f.current(tenant, id)
	if err != nil {
		return nil, err
	}
	if r.Version != 0 && r.Version != cur.Version {
		return nil, tether.Errorf(tether.ECONFLICT, "rule %q is at version %d", id, cur.Version)
	}
	actions := slices.Clone(r.Actions)
	for i, a := range actions {
		for _, o := range cur.Actions {
			if a.Type == tether.ActionWebhook && a.Secret == "" && o.URL == a.URL {
				actions[i].Secret = o.Secret
			}
		}
	}
	v := &tether.Rule{TenantID: tenant, ID: id, Name: r.Name, Statement: r.Statement, Actions: actions, Version: cur.Version + 1}
	f.m[tenant+"/"+id] = append(f.m[tenant+"/"+id], v)
	return f.current(tenant, id)
}

func (f *fakeRules) Get(_ context.Context, tenant, id string) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current(tenant, id)
}

func (f *fakeRules) List(_ context.Context, tenant string) ([]*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []*tether.Rule
	for _, k := range sortedKeys(f.m) {
		if t, id, _ := strings.Cut(k, "/"); t == tenant {
			r, _ := f.current(t, id)
			rs = append(rs, r)
		}
	}
	return rs, nil
}

func (f *fakeRules) Delete(_ context.Context, tenant, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.current(tenant, id); err != nil {
		return err
	}
	delete(f.m, tenant+"/"+id)
	return nil
}

func (f *fakeRules) Versions(_ context.Context, tenant, id string) ([]*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.current(tenant, id); err != nil {
		return nil, err
	}
	return slices.Clone(f.m[tenant+"/"+id]), nil
}

func (f *fakeRules) Rollback(_ context.Context, tenant, id string, version int) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, err := f.current(tenant, id)
	if err != nil {
		return nil, err
	}
	vs := f.m[tenant+"/"+id]
	if version > len(vs) {
		return nil, tether.Errorf(tether.ENOTFOUND, "rule %q has no version %d", id, version)
	}
	old := *vs[version-1]
	old.Version = cur.Version + 1
	f.m[tenant+"/"+id] = append(vs, &old)
	return f.current(tenant, id)
}

func (f *fakeRules) SetEnabled(_ context.Context, tenant, id string, on bool) (*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.current(tenant, id); err != nil {
		return nil, err
	}
	f.enabled[tenant+"/"+id] = on
	return f.current(tenant, id)
}

// otherRulesKey is an admin key of another tenant than testKey's.
const otherRulesKey = "ak_rules_other.secret"

// rulesRegistry is fakeRegistry with a second tenant's key.
type rulesRegistry struct{ fakeRegistry }

func (r rulesRegistry) AuthenticateAPIKey(ctx context.Context, key string) (*tether.APIKey, error) {
	if key == otherRulesKey {
		return &tether.APIKey{TenantID: "other", ID: "ak_rules_other", Role: tether.RoleAdmin}, nil
	}
	return r.fakeRegistry.AuthenticateAPIKey(ctx, key)
}

// newRulesAPI runs a server whose rules service is rs (none if nil).
func newRulesAPI(t *testing.T, rs httpapi.Rules) *stateAPI {
	t.Helper()
	srv, err := httpapi.New(rulesRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: httpapi.Services{Rules: rs},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &stateAPI{url: serve(t, srv), srv: srv}
}

// ruleProblem decodes a 422 answer.
func ruleProblem(t *testing.T, r response) httpapi.RuleProblem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p httpapi.RuleProblem
	r.decode(t, &p)
	return p
}

const (
	vibration = `SELECT avg(vibration) AS v FROM telemetry GROUP BY device, TUMBLING(1m) HAVING v > 4.2`
	hookURL   = "https://example.com/hook"
	// hookSecret must never appear in an answer.
	hookSecret = "do-not-show-me"
)

var vibrationRule = `{"id":"vib","name":"Vibration","statement":"` + vibration + `",
	"actions":[{"type":"webhook","url":"` + hookURL + `","secret":"` + hookSecret + `"},{"type":"alert","alert_type":"vibration","severity":"warning"}]}`

func TestRulesAPI(t *testing.T) {
	fake := newFakeRules()
	a := newRulesAPI(t, fake)

	var created tether.Rule
	t.Run("create answers 201 with the rule's URL, enabled by default", func(t *testing.T) {
		r := a.expect(t, 201, "POST", "/api/v1/rules", testKey, vibrationRule)
		if loc := r.header.Get("Location"); loc != "/api/v1/rules/vib" {
			t.Errorf("Location %q", loc)
		}
		r.decode(t, &created)
		if created.ID != "vib" || created.Version != 1 || !created.Enabled || created.TenantID != tether.DefaultTenantID || len(created.Actions) != 2 {
			t.Errorf("created %+v", created)
		}
	})
	t.Run("create passes the secret on to the service", func(t *testing.T) {
		if got := fake.lastSent.Actions[0].Secret; got != hookSecret {
			t.Errorf("the service got secret %q", got)
		}
	})
	t.Run("create takes enabled false as given", func(t *testing.T) {
		var r tether.Rule
		a.expect(t, 201, "POST", "/api/v1/rules", testKey, `{"id":"off","statement":"SELECT * FROM telemetry","enabled":false}`).decode(t, &r)
		if r.Enabled {
			t.Error("the rule is enabled")
		}
	})

	t.Run("a rule read with GET can be sent back changed with PUT as it is, and keeps its secret", func(t *testing.T) {
		var r map[string]any
		a.expect(t, 200, "GET", "/api/v1/rules/vib", testKey, "").decode(t, &r)
		r["name"] = "Vibration, renamed"
		b, _ := json.Marshal(r)
		var put tether.Rule
		a.expect(t, 200, "PUT", "/api/v1/rules/vib", testKey, string(b)).decode(t, &put)
		if put.Version != 2 || put.Name != "Vibration, renamed" {
			t.Errorf("PUT answered %+v", put)
		}
		if fake.lastSent.Version != 1 {
			t.Errorf("the service got version %d, want the read one, 1, as the precondition", fake.lastSent.Version)
		}
		stored, _ := fake.Get(context.Background(), tether.DefaultTenantID, "vib")
		if stored.Actions[0].Secret != hookSecret {
			t.Errorf("the secret after the round trip is %q", stored.Actions[0].Secret)
		}
	})
	t.Run("a PUT from a stale read is a conflict", func(t *testing.T) {
		a.expect(t, 409, "PUT", "/api/v1/rules/vib", testKey, `{"version":1,"statement":"SELECT * FROM telemetry"}`)
	})
	t.Run("a PUT whose body names another id is refused", func(t *testing.T) {
		p := a.expect(t, 400, "PUT", "/api/v1/rules/vib", testKey, `{"id":"other","statement":"SELECT * FROM telemetry"}`).problem(t)
		if p.Code != tether.EINVALID || !strings.Contains(p.Detail, "cannot change") {
			t.Errorf("problem %+v", p)
		}
	})

	for _, tc := range []struct {
		name, method, path, body string
		line, column             int
	}{
		{"create", "POST", "/api/v1/rules", `{"id":"bad","statement":"SELECT x\nFROM nowhere"}`, 2, 6},
		{"put", "PUT", "/api/v1/rules/vib", `{"statement":"SELECT x FROM nowhere"}`, 1, 15},
		{"validate", "POST", "/api/v1/rules/validate", `{"statement":"SELECT x\n  FROM nowhere"}`, 2, 8},
	} {
		t.Run(tc.name+" answers a statement the parser refused with 422 and its position", func(t *testing.T) {
			p := ruleProblem(t, a.expect(t, 422, tc.method, tc.path, testKey, tc.body))
			if p.Code != tether.EINVALID || p.Status != 422 || p.Title != "Unprocessable Entity" || !strings.Contains(p.Detail, "unknown source") {
				t.Errorf("problem %+v", p)
			}
			if p.Position == nil || p.Position.Line != tc.line || p.Position.Column != tc.column {
				t.Errorf("position %+v, want line %d, column %d", p.Position, tc.line, tc.column)
			}
		})
	}
	t.Run("an invalid action is 422 without a position", func(t *testing.T) {
		r := a.expect(t, 422, "POST", "/api/v1/rules", testKey, `{"id":"bad","statement":"SELECT 1 FROM telemetry","actions":[{"type":"teleport"}]}`)
		if p := ruleProblem(t, r); p.Position != nil || p.Detail != "actions[0]: no such action type" {
			t.Errorf("problem %+v", p)
		}
		if strings.Contains(string(r.body), "position") {
			t.Errorf("body %s has a position", r.body)
		}
	})
	t.Run("validate answers a valid statement with 200", func(t *testing.T) {
		var v struct{ Valid bool }
		a.expect(t, 200, "POST", "/api/v1/rules/validate", testKey, `{"statement":"`+vibration+`","actions":[{"type":"alert"}]}`).decode(t, &v)
		if !v.Valid {
			t.Error("valid is false")
		}
	})
	for _, tc := range []struct{ name, body string }{
		{"malformed JSON", `{"id":`},
		{"an unknown field", `{"id":"x","statement":"SELECT 1 FROM telemetry","colour":"red"}`},
		{"another tenant's tenant_id", `{"id":"x","tenant_id":"globex","statement":"SELECT 1 FROM telemetry"}`},
	} {
		t.Run("a body with "+tc.name+" is 400, not 422", func(t *testing.T) {
			a.expect(t, 400, "POST", "/api/v1/rules", testKey, tc.body)
		})
	}

	t.Run("disable and enable answer the rule", func(t *testing.T) {
		var r tether.Rule
		a.expect(t, 200, "POST", "/api/v1/rules/vib/disable", testKey, "").decode(t, &r)
		if r.Enabled {
			t.Error("enabled after disable")
		}
		a.expect(t, 200, "POST", "/api/v1/rules/vib/enable", testKey, "").decode(t, &r)
		if !r.Enabled {
			t.Error("disabled after enable")
		}
	})
	t.Run("versions are listed, and a rollback makes a new version", func(t *testing.T) {
		var vs struct{ Versions []tether.Rule }
		a.expect(t, 200, "GET", "/api/v1/rules/vib/versions", testKey, "").decode(t, &vs)
		if len(vs.Versions) != 2 || vs.Versions[0].Name != "Vibration" {
			t.Fatalf("versions %+v", vs)
		}
		var r tether.Rule
		a.expect(t, 200, "POST", "/api/v1/rules/vib/rollback", testKey, `{"version":1}`).decode(t, &r)
		if r.Version != 3 || r.Name != "Vibration" {
			t.Errorf("rolled back to %+v", r)
		}
	})
	t.Run("a rollback needs a version of 1 or more", func(t *testing.T) {
		a.expect(t, 400, "POST", "/api/v1/rules/vib/rollback", testKey, `{}`)
		a.expect(t, 400, "POST", "/api/v1/rules/vib/rollback", testKey, `{"version":-1}`)
		a.expect(t, 404, "POST", "/api/v1/rules/vib/rollback", testKey, `{"version":99}`)
	})

	t.Run("the webhook secret is in no answer", func(t *testing.T) {
		for _, req := range [][3]string{
			{"GET", "/api/v1/rules", ""},
			{"GET", "/api/v1/rules/vib", ""},
			{"GET", "/api/v1/rules/vib/versions", ""},
			{"POST", "/api/v1/rules/vib/enable", ""},
			{"POST", "/api/v1/rules/vib/disable", ""},
			{"POST", "/api/v1/rules/vib/rollback", `{"version":1}`},
			{"PUT", "/api/v1/rules/vib", `{"statement":"SELECT 1 FROM telemetry","actions":[{"type":"webhook","url":"` + hookURL + `"}]}`},
			{"POST", "/api/v1/rules", strings.Replace(vibrationRule, `"vib"`, `"vib2"`, 1)},
		} {
			r := a.do(t, req[0], req[1], testKey, req[2])
			if r.status/100 != 2 {
				t.Fatalf("%s %s: %d %s", req[0], req[1], r.status, r.body)
			}
			if strings.Contains(string(r.body), hookSecret) || strings.Contains(string(r.body), `"secret"`) {
				t.Errorf("%s %s answered the secret: %s", req[0], req[1], r.body)
			}
		}
		stored, _ := fake.Get(context.Background(), tether.DefaultTenantID, "vib")
		if stored.Actions[0].Secret != hookSecret {
			t.Errorf("the service's copy lost its secret: %q", stored.Actions[0].Secret)
		}
	})

	t.Run("another tenant sees none of the rules", func(t *testing.T) {
		var list struct{ Rules []tether.Rule }
		a.expect(t, 200, "GET", "/api/v1/rules", otherRulesKey, "").decode(t, &list)
		if list.Rules == nil || len(list.Rules) != 0 {
			t.Errorf("rules %+v; want an empty list", list.Rules)
		}
		a.expect(t, 404, "GET", "/api/v1/rules/vib", otherRulesKey, "")
		a.expect(t, 404, "PUT", "/api/v1/rules/vib", otherRulesKey, `{"statement":"SELECT 1 FROM telemetry"}`)
		a.expect(t, 404, "POST", "/api/v1/rules/vib/disable", otherRulesKey, "")
		a.expect(t, 404, "GET", "/api/v1/rules/vib/versions", otherRulesKey, "")
		a.expect(t, 404, "DELETE", "/api/v1/rules/vib", otherRulesKey, "")
		// The same id is free in the other tenant.
		a.expect(t, 201, "POST", "/api/v1/rules", otherRulesKey, vibrationRule)
	})
	t.Run("over the tenant's limit is 429", func(t *testing.T) {
		p := a.expect(t, 429, "POST", "/api/v1/rules", testKey, `{"id":"fourth","statement":"SELECT 1 FROM telemetry"}`).problem(t)
		if p.Code != tether.ETOOMANY {
			t.Errorf("problem %+v", p)
		}
	})
	t.Run("delete answers 204, and then the rule is gone", func(t *testing.T) {
		a.expect(t, 204, "DELETE", "/api/v1/rules/vib", testKey, "")
		a.expect(t, 404, "GET", "/api/v1/rules/vib", testKey, "")
		a.expect(t, 200, "GET", "/api/v1/rules/vib", otherRulesKey, "")
	})
	t.Run("an operator key may read rules but not change them", func(t *testing.T) {
		a.expect(t, 200, "GET", "/api/v1/rules", testOperatorKey, "")
		a.expect(t, 403, "DELETE", "/api/v1/rules/off", testOperatorKey, "")
	})
}

func TestRulesAPIWithoutTheService(t *testing.T) {
	a := newRulesAPI(t, nil)
	t.Run("every rules route answers 503 naming the service", func(t *testing.T) {
		p := a.expect(t, 503, "GET", "/api/v1/rules", testKey, "").problem(t)
		if p.Code != tether.EUNAVAILABLE || !strings.Contains(p.Detail, "rules") {
			t.Errorf("problem %+v", p)
		}
		a.expect(t, 503, "POST", "/api/v1/rules/validate", testKey, `{"statement":"SELECT 1 FROM telemetry"}`)
	})
}

// TestRulesAPIDocumented checks that the rules routes, over a working
// service, answer only statuses the document lists (TestOpenAPI runs
// them without the service, where they all answer 503).
func TestRulesAPIDocumented(t *testing.T) {
	_, _, _, routes := loadOpenAPI(t)
	documented := map[string]map[string]json.RawMessage{}
	for _, r := range routes {
		documented[r.String()] = r.op.Responses
	}
	a := newRulesAPI(t, newFakeRules())
	for _, tc := range []struct {
		method, route, path, body string
		status                    int
	}{
		{"POST", "/api/v1/rules", "/api/v1/rules", vibrationRule, 201},
		{"POST", "/api/v1/rules", "/api/v1/rules", vibrationRule, 409},
		{"POST", "/api/v1/rules", "/api/v1/rules", `{"statement":"FROM nowhere"}`, 422},
		{"POST", "/api/v1/rules", "/api/v1/rules", `{`, 400},
		{"POST", "/api/v1/rules", "/api/v1/rules", `{"id":"b","statement":"SELECT 1 FROM telemetry"}`, 201},
		{"POST", "/api/v1/rules", "/api/v1/rules", `{"id":"c","statement":"SELECT 1 FROM telemetry"}`, 201},
		{"POST", "/api/v1/rules", "/api/v1/rules", `{"id":"d","statement":"SELECT 1 FROM telemetry"}`, 429},
		{"POST", "/api/v1/rules", "/api/v1/rules", `{"id":"d","statement":"` + strings.Repeat("x", 1<<20) + `"}`, 413},
		{"GET", "/api/v1/rules", "/api/v1/rules", "", 200},
		{"POST", "/api/v1/rules/validate", "/api/v1/rules/validate", `{"statement":"SELECT 1 FROM telemetry"}`, 200},
		{"POST", "/api/v1/rules/validate", "/api/v1/rules/validate", `{"statement":"FROM nowhere"}`, 422},
		{"POST", "/api/v1/rules/validate", "/api/v1/rules/validate", `[]`, 400},
		{"GET", "/api/v1/rules/{id}", "/api/v1/rules/vib", "", 200},
		{"GET", "/api/v1/rules/{id}", "/api/v1/rules/nope", "", 404},
		{"PUT", "/api/v1/rules/{id}", "/api/v1/rules/vib", `{"statement":"SELECT 1 FROM telemetry"}`, 200},
		{"PUT", "/api/v1/rules/{id}", "/api/v1/rules/vib", `{"version":1,"statement":"SELECT 1 FROM telemetry"}`, 409},
		{"PUT", "/api/v1/rules/{id}", "/api/v1/rules/vib", `{"statement":"FROM nowhere"}`, 422},
		{"PUT", "/api/v1/rules/{id}", "/api/v1/rules/nope", `{"statement":"SELECT 1 FROM telemetry"}`, 404},
		{"PUT", "/api/v1/rules/{id}", "/api/v1/rules/vib", `{"id":"x"}`, 400},
		{"POST", "/api/v1/rules/{id}/enable", "/api/v1/rules/vib/enable", "", 200},
		{"POST", "/api/v1/rules/{id}/enable", "/api/v1/rules/nope/enable", "", 404},
		{"POST", "/api/v1/rules/{id}/disable", "/api/v1/rules/vib/disable", "", 200},
		{"POST", "/api/v1/rules/{id}/disable", "/api/v1/rules/nope/disable", "", 404},
		{"GET", "/api/v1/rules/{id}/versions", "/api/v1/rules/vib/versions", "", 200},
		{"GET", "/api/v1/rules/{id}/versions", "/api/v1/rules/nope/versions", "", 404},
		{"POST", "/api/v1/rules/{id}/rollback", "/api/v1/rules/vib/rollback", `{"version":1}`, 200},
		{"POST", "/api/v1/rules/{id}/rollback", "/api/v1/rules/vib/rollback", `{"version":0}`, 400},
		{"POST", "/api/v1/rules/{id}/rollback", "/api/v1/rules/vib/rollback", `{"version":9}`, 404},
		{"DELETE", "/api/v1/rules/{id}", "/api/v1/rules/vib", "", 204},
		{"DELETE", "/api/v1/rules/{id}", "/api/v1/rules/vib", "", 404},
	} {
		t.Run(fmt.Sprintf("%s %s answering %d is documented", tc.method, tc.path, tc.status), func(t *testing.T) {
			a.expect(t, tc.status, tc.method, tc.path, testKey, tc.body)
			responses, ok := documented[tc.method+" "+tc.route]
			if !ok {
				t.Fatalf("%s %s is not in the document", tc.method, tc.route)
			}
			if _, ok := responses[strconv.Itoa(tc.status)]; !ok {
				t.Errorf("status %d is not among its responses", tc.status)
			}
		})
	}
	t.Run("the 422 problem documents its position", func(t *testing.T) {
		raw, _, _, _ := loadOpenAPI(t)
		var doc struct {
			Components struct {
				Schemas struct {
					RuleProblem struct {
						AllOf []struct {
							Properties struct {
								Position struct {
									Properties map[string]any `json:"properties"`
								} `json:"position"`
							} `json:"properties"`
						} `json:"allOf"`
					}
				} `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		allOf := doc.Components.Schemas.RuleProblem.AllOf
		if len(allOf) != 2 || allOf[1].Properties.Position.Properties["line"] == nil || allOf[1].Properties.Position.Properties["column"] == nil {
			t.Errorf("RuleProblem is %+v; want the Problem and a position with line and column", allOf)
		}
	})
}
