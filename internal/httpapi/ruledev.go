package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/tether-iot/tether"
)

// RuleEngine is what the API needs of the rule engine for the rule
// development loop: trying a rule out without side effects, and looking
// at how a running rule is doing. The engine resolves an input's device
// itself (ENOTFOUND for one the tenant does not have).
type RuleEngine interface {
	// DryRun evaluates r on the given inputs without side effects and
	// returns the results, the trace of each input (JSON-able), and a
	// description of what each action would have done.
	DryRun(ctx context.Context, tenant string, r *tether.Rule, inputs []RuleInput) (results []tether.RuleResult, trace any, actions []string, err error)
	// Backtest runs r over stored telemetry of the devices in [from, to).
	Backtest(ctx context.Context, tenant string, r *tether.Rule, from, to time.Time, devices []string) (results []tether.RuleResult, actions []string, err error)
	Metrics(tenant, ruleID string) any // JSON-able
	Trace(tenant, ruleID string) any   // JSON-able, last inputs through the rule
	DeadLetters(ctx context.Context, tenant, ruleID string, limit int) (any, error)
}

// RuleInput is one sample input of a dry run: a device's telemetry
// values at one time, or an MQTT publish.
type RuleInput struct {
	Device  string          `json:"device"`            // device id (must exist)
	Time    time.Time       `json:"ts"`                // zero → now
	Values  map[string]any  `json:"values,omitempty"`  // telemetry values
	Topic   string          `json:"topic,omitempty"`   // mqtt sources
	Payload json.RawMessage `json:"payload,omitempty"` // mqtt sources
}

// Limits of the development loop. A dry run's body is larger than the
// management API's 1 MiB because it carries up to maxDryRunInputs sample
// messages.
const (
	maxRuleDevBody     = 4 << 20
	maxDryRunInputs    = 1000
	maxBacktestDevices = 1000
	maxBacktestSpan    = 31 * 24 * time.Hour
	maxDeadLetters     = 1000
	defaultDeadLetters = 100
)

// ruleDevRoutes registers the development-loop routes with add: an
// operator may try rules out and watch them, though not change them.
func (s *Server) ruleDevRoutes(add addRoute) {
	engine, rules := s.sv.RuleEngine != nil, s.sv.Rules != nil
	// A route of a stored rule needs the rules service to find it, as
	// well as the engine.
	stored := func(h handler) handler {
		return needs(engine, "rule engine", needs(rules, "rules", h))
	}
	add(tether.RoleOperator, "POST /api/v1/rules/dry-run", needs(engine, "rule engine", s.dryRunStatement))
	add(tether.RoleOperator, "POST /api/v1/rules/{id}/dry-run", stored(s.dryRunRule))
	add(tether.RoleOperator, "POST /api/v1/rules/{id}/backtest", stored(s.backtestRule))
	add(tether.RoleViewer, "GET /api/v1/rules/{id}/metrics", stored(s.ruleMetrics))
	add(tether.RoleViewer, "GET /api/v1/rules/{id}/trace", stored(s.ruleTrace))
	add(tether.RoleOperator, "GET /api/v1/rules/{id}/dead-letters", stored(s.ruleDeadLetters))
}

// DryRunResult is the answer of a dry run.
type DryRunResult struct {
	Results []tether.RuleResult `json:"results"`
	// Trace is the engine's trace of each input, with the value of every
	// step.
	Trace any `json:"trace"`
	// Actions describe what each action would have done.
	Actions []string `json:"actions"`
}

// BacktestResult is the answer of a backtest.
type BacktestResult struct {
	Results []tether.RuleResult `json:"results"`
	Actions []string            `json:"actions"`
	// Count is the number of results.
	Count int `json:"count"`
}

// dryRunStatement dry-runs a rule that is not stored.
func (s *Server) dryRunStatement(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var b struct {
		Statement string              `json:"statement"`
		Actions   []tether.RuleAction `json:"actions"`
		Inputs    []RuleInput         `json:"inputs"`
	}
	if err := decodeBodyLimit(r, &b, maxRuleDevBody); err != nil {
		return err
	}
	if err := s.checkInputs(b.Inputs); err != nil {
		return err
	}
	// The rules service, where there is one, checks the rule as saving it
	// would, so that a bad statement is refused with its position just as
	// on create, whatever the engine's own errors carry.
	if s.sv.Rules != nil {
		if err := s.sv.Rules.Validate(b.Statement, b.Actions); err != nil {
			return s.ruleError(w, err)
		}
	}
	rule := &tether.Rule{TenantID: k.TenantID, Statement: b.Statement, Actions: b.Actions, Enabled: true}
	return s.dryRun(w, r, k, rule, b.Inputs)
}

// dryRunRule dry-runs the current version of a stored rule.
func (s *Server) dryRunRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var b struct {
		Inputs []RuleInput `json:"inputs"`
	}
	if err := decodeBodyLimit(r, &b, maxRuleDevBody); err != nil {
		return err
	}
	if err := s.checkInputs(b.Inputs); err != nil {
		return err
	}
	rule, err := s.sv.Rules.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return s.dryRun(w, r, k, rule, b.Inputs)
}

func (s *Server) dryRun(w http.ResponseWriter, r *http.Request, k *tether.Principal, rule *tether.Rule, inputs []RuleInput) error {
	// A dry run sends nothing, so the engine needs no webhook secret, and
	// without one none can find its way into a trace or a description.
	results, trace, actions, err := s.sv.RuleEngine.DryRun(r.Context(), k.TenantID, publicRule(rule), inputs)
	if err != nil {
		return s.ruleError(w, err)
	}
	return writeJSON(w, http.StatusOK, DryRunResult{Results: nonNil(results), Trace: listOrEmpty(trace), Actions: nonNil(actions)})
}

// checkInputs checks a dry run's inputs and gives those without a time
// the present one.
func (s *Server) checkInputs(ins []RuleInput) error {
	switch {
	case len(ins) == 0:
		return tether.Errorf(tether.EINVALID, "inputs is empty; give 1 to %d sample inputs", maxDryRunInputs)
	case len(ins) > maxDryRunInputs:
		return tether.Errorf(tether.EINVALID, "a dry run takes at most %d inputs, not %d", maxDryRunInputs, len(ins))
	}
	now := s.now()
	for i := range ins {
		in := &ins[i]
		switch {
		case in.Device == "" && in.Topic == "":
			return tether.Errorf(tether.EINVALID, "inputs[%d] names neither a device nor a topic", i)
		case in.Device != "" && !tether.ValidID(in.Device):
			return tether.Errorf(tether.EINVALID, "inputs[%d]: device %q is not a valid device ID", i, in.Device)
		}
		// The engine keeps a number, a boolean or a string per key, as
		// telemetry has them.
		for key, v := range in.Values {
			switch v.(type) {
			case float64, bool, string:
			default:
				return tether.Errorf(tether.EINVALID, "inputs[%d]: value %q must be a number, a boolean or a string", i, key)
			}
		}
		if in.Time.IsZero() {
			in.Time = now
		}
	}
	return nil
}

func (s *Server) backtestRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var b struct {
		From    time.Time `json:"from"`
		To      time.Time `json:"to"`
		Devices []string  `json:"devices"`
	}
	if err := decodeBodyLimit(r, &b, maxRuleDevBody); err != nil {
		return err
	}
	switch {
	case b.From.IsZero() || b.To.IsZero():
		return tether.Errorf(tether.EINVALID, "from and to are required, as RFC 3339 times")
	case !b.From.Before(b.To):
		return tether.Errorf(tether.EINVALID, "to (%s) must be after from (%s)", b.To.Format(time.RFC3339), b.From.Format(time.RFC3339))
	case b.To.Sub(b.From) > maxBacktestSpan:
		return tether.Errorf(tether.EINVALID, "a backtest covers at most 31 days, not %s", b.To.Sub(b.From))
	case len(b.Devices) == 0:
		return tether.Errorf(tether.EINVALID, "devices is empty; name 1 to %d devices", maxBacktestDevices)
	case len(b.Devices) > maxBacktestDevices:
		return tether.Errorf(tether.EINVALID, "a backtest reads at most %d devices, not %d", maxBacktestDevices, len(b.Devices))
	}
	seen := make(map[string]bool, len(b.Devices))
	for i, d := range b.Devices {
		if !tether.ValidID(d) {
			return tether.Errorf(tether.EINVALID, "devices[%d]: %q is not a valid device ID", i, d)
		}
		if seen[d] {
			return tether.Errorf(tether.EINVALID, "devices[%d]: %q is named twice", i, d)
		}
		seen[d] = true
	}
	rule, err := s.sv.Rules.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	results, actions, err := s.sv.RuleEngine.Backtest(r.Context(), k.TenantID, publicRule(rule), b.From, b.To, b.Devices)
	if err != nil {
		return s.ruleError(w, err)
	}
	return writeJSON(w, http.StatusOK, BacktestResult{Results: nonNil(results), Actions: nonNil(actions), Count: len(results)})
}

// ruleMetrics answers the engine's counters of a stored rule. The
// engine keeps them by ID whether or not the rule exists, so the rule is
// looked up first: an unknown one is 404, not zeros.
func (s *Server) ruleMetrics(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	rule, err := s.sv.Rules.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.sv.RuleEngine.Metrics(k.TenantID, rule.ID))
}

func (s *Server) ruleTrace(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	rule, err := s.sv.Rules.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Trace any `json:"trace"`
	}{listOrEmpty(s.sv.RuleEngine.Trace(k.TenantID, rule.ID))})
}

func (s *Server) ruleDeadLetters(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	limit := defaultDeadLetters
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDeadLetters {
			return tether.Errorf(tether.EINVALID, "limit %q must be a number from 1 to %d", v, maxDeadLetters)
		}
		limit = n
	}
	rule, err := s.sv.Rules.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	dls, err := s.sv.RuleEngine.DeadLetters(r.Context(), k.TenantID, rule.ID, limit)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		DeadLetters any `json:"dead_letters"`
	}{listOrEmpty(dls)})
}

// nonNil returns s, or an empty slice for nil, so that JSON has [] rather
// than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// listOrEmpty returns v, or an empty list if v is nil or a nil slice of
// any type, so that JSON has [] rather than null.
func listOrEmpty(v any) any {
	if v == nil {
		return []any{}
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		return []any{}
	}
	return v
}
