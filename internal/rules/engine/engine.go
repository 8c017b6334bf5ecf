// Package engine evaluates rules on the live stream. A rule version is
// compiled once into a [Program] (its parsed statement plus its state: the
// open windows of every group and the state of every anomaly or
// prediction call for every key); the [Engine] runs every enabled rule's
// program on the inputs the bus delivers, hands the results to the action
// runner, checkpoints the state so that windows survive a restart, and
// keeps per-rule metrics and a trace of the last inputs. Dry runs and
// backtests run the same Program, so what they show is what live
// evaluation does.
//
// Every cost is bounded: expressions have no loops (package lang), state
// has caps (packages window and anomaly, and ProgramOptions.MaxKeys), and a
// rule that errors or panics is marked failing and never stops the others.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tether-iot/tether"
)

// RuleSource is where the engine finds the enabled rules and records a
// rule's status.
type RuleSource interface {
	Enabled(ctx context.Context) ([]*tether.Rule, error)
	SetStatus(ctx context.Context, tenant, id string, version int, status, errText string) error
}

// Devices looks up a device (for backtests).
type Devices interface {
	Device(ctx context.Context, tenant, id string) (*tether.Device, error)
}

// Enqueuer takes a rule's results for its actions (durably, before it
// returns). It must not keep the slice after it returns; the engine
// reuses it.
type Enqueuer interface {
	Enqueue(ctx context.Context, rule *tether.Rule, results []tether.RuleResult) error
}

// StateStore persists program states, keyed tenant/rule/version. A nil
// value in SaveStates deletes the key.
type StateStore interface {
	SaveStates(ctx context.Context, states map[string][]byte) error
	LoadStates(ctx context.Context) (map[string][]byte, error)
}

// Telemetry reads stored telemetry (for backtests).
type Telemetry interface {
	Telemetry(ctx context.Context, q tether.TelemetryQuery) ([]tether.Series, error)
}

// Alerter receives the "condition no longer met" signals of rules with
// alert actions (the results themselves, met, go through the Enqueuer).
type Alerter interface {
	Signal(ctx context.Context, tenant, ruleID, deviceID string, a tether.RuleAction, met bool, t time.Time, values map[string]any) error
}

// Options configure an [Engine].
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Program bounds each program's state.
	Program ProgramOptions
	// Telemetry is read by Backtest; nil: Backtest fails.
	Telemetry Telemetry
	// Alerts, if set, gets met = false for a rule with alert actions when
	// a key (a device; a window's group) whose last evaluation gave a
	// result evaluates to none: an input of the device that WHERE or
	// HAVING turns down, a window closing without a result. The results
	// themselves (met = true) go through the Enqueuer to the runner.
	Alerts Alerter
	// TraceSize is how many inputs each rule's trace keeps (default 50).
	TraceSize int
	// LatencySamples is the size of each rule's latency ring (default 1024).
	LatencySamples int
	// MaxPending bounds the results kept for a rule while the Enqueuer
	// fails (default 100,000); beyond it the oldest are dropped and
	// counted as errors.
	MaxPending int
	// MaxBacktestPoints bounds the points a backtest reads (default
	// 1,000,000); MaxBacktestResults the results it returns (default
	// 10,000); MaxDryRunInputs a dry run's inputs (default 1,000).
	MaxBacktestPoints  int
	MaxBacktestResults int
	MaxDryRunInputs    int
}

// Engine runs every enabled rule on the live stream. Its methods are safe
// for concurrent use; Handle, Flush, Checkpoint and Reload take turns.
type Engine struct {
	rules   RuleSource
	devices Devices
	runner  Enqueuer
	st      StateStore
	o       Options
	log     *slog.Logger

	mu       sync.Mutex
	progs    map[string]*entry   // by stateKey
	byTenant map[string][]*entry // in rule ID order
	loaded   bool                // states loaded from st
	deleted  []string            // state keys to delete at the next checkpoint

	statsMu sync.Mutex
	stats   map[string]*ruleStats // by tenant/rule ID, across versions

	hook func(*tether.Rule, *Input) // tests: called before each evaluation

	// devEnvs caches the `device` variable by device (a device changed in
	// the registry is a new *tether.Device, so a new entry); it is
	// emptied when it reaches maxDevEnvs.
	devEnvs map[*tether.Device]map[string]any
}

const maxDevEnvs = 10_000

// entry is one enabled rule version.
type entry struct {
	key     string
	rule    *tether.Rule
	prog    *Program
	alerts  []tether.RuleAction // the rule's alert actions
	failing bool                // marked failing (status set)
	broken  bool                // panicked: not evaluated again until a new version
	dirty   bool                // state changed since the last checkpoint
	pending []tether.RuleResult // results not yet enqueued
	stats   *ruleStats
}

// New returns an engine with no rules; Reload loads them (and the saved
// state) from rules and st.
func New(rules RuleSource, devices Devices, runner Enqueuer, st StateStore, o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Program.Now == nil {
		o.Program.Now = o.Now
	}
	if o.TraceSize <= 0 {
		o.TraceSize = 50
	}
	if o.LatencySamples <= 0 {
		o.LatencySamples = 1024
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 100_000
	}
	if o.MaxBacktestPoints <= 0 {
		o.MaxBacktestPoints = 1_000_000
	}
	if o.MaxBacktestResults <= 0 {
		o.MaxBacktestResults = 10_000
	}
	if o.MaxDryRunInputs <= 0 {
		o.MaxDryRunInputs = 1000
	}
	return &Engine{rules: rules, devices: devices, runner: runner, st: st, o: o, log: o.Logger,
		progs: map[string]*entry{}, byTenant: map[string][]*entry{}, stats: map[string]*ruleStats{},
		devEnvs: map[*tether.Device]map[string]any{}}
}

// StateKey is the key of a rule version's state in the StateStore.
func StateKey(tenant, ruleID string, version int) string {
	return fmt.Sprintf("%s/%s/%d", tenant, ruleID, version)
}

func (e *Engine) statsOf(tenant, id string) *ruleStats {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	k := tenant + "/" + id
	s := e.stats[k]
	if s == nil {
		s = newRuleStats(e.o.TraceSize, e.o.LatencySamples)
		e.stats[k] = s
	}
	return s
}

// statusChange is a SetStatus call to make once the lock is released.
type statusChange struct {
	rule   *tether.Rule
	status string
	err    string
}

func (e *Engine) setStatuses(ctx context.Context, cs []statusChange) {
	for _, c := range cs {
		if err := e.rules.SetStatus(ctx, c.rule.TenantID, c.rule.ID, c.rule.Version, c.status, c.err); err != nil {
			e.log.Warn("rules engine: set rule status", "tenant", c.rule.TenantID, "rule", c.rule.ID, "version", c.rule.Version, "err", err)
		}
	}
}

// Reload picks up rule changes: a rule version new to the engine gets a
// program (with its saved state on the first Reload after start, fresh
// otherwise), a version no longer enabled is dropped and its saved state
// deleted at the next checkpoint. A rule whose statement does not compile
// is marked failing.
func (e *Engine) Reload(ctx context.Context) error {
	rules, err := e.rules.Enabled(ctx)
	if err != nil {
		return fmt.Errorf("reload rules: %w", err)
	}
	var changes []statusChange
	defer func() { e.setStatuses(ctx, changes) }()
	e.mu.Lock()
	defer e.mu.Unlock()
	var saved map[string][]byte
	if !e.loaded && e.st != nil {
		if saved, err = e.st.LoadStates(ctx); err != nil {
			return fmt.Errorf("reload rules: load state: %w", err)
		}
	}
	progs := make(map[string]*entry, len(rules))
	for _, r := range rules {
		r := *r
		k := StateKey(r.TenantID, r.ID, r.Version)
		if en := e.progs[k]; en != nil {
			en.rule, en.alerts = &r, alertActions(&r)
			en.prog.trackMet = len(en.alerts) > 0 && e.o.Alerts != nil
			progs[k] = en
			continue
		}
		var p *Program
		if b, ok := saved[k]; ok {
			if p, err = RestoreProgram(&r, b, e.o.Program); err != nil {
				e.log.Warn("rules engine: saved state not restored, starting fresh", "rule", r.ID, "version", r.Version, "err", err)
			}
		}
		if p == nil {
			if p, err = Compile(&r, e.o.Program); err != nil {
				if r.Status != tether.RuleFailing || r.Error != err.Error() {
					changes = append(changes, statusChange{&r, tether.RuleFailing, errorText(err)})
				}
				continue
			}
		}
		en := &entry{key: k, rule: &r, prog: p, alerts: alertActions(&r),
			failing: r.Status == tether.RuleFailing, stats: e.statsOf(r.TenantID, r.ID)}
		p.trackMet = len(en.alerts) > 0 && e.o.Alerts != nil
		progs[k] = en
	}
	for k := range e.progs {
		if progs[k] == nil {
			e.deleted = append(e.deleted, k)
		}
	}
	for k := range saved {
		if progs[k] == nil {
			e.deleted = append(e.deleted, k)
		}
	}
	// The metrics and traces of rules deleted or disabled go with them, so
	// that creating and deleting rules does not grow them for ever.
	live := make(map[string]bool, len(progs))
	for _, en := range progs {
		live[en.rule.TenantID+"/"+en.rule.ID] = true
	}
	e.statsMu.Lock()
	for k := range e.stats {
		if !live[k] {
			delete(e.stats, k)
		}
	}
	e.statsMu.Unlock()
	e.loaded = true
	e.progs = progs
	e.byTenant = map[string][]*entry{}
	for _, en := range progs {
		e.byTenant[en.rule.TenantID] = append(e.byTenant[en.rule.TenantID], en)
	}
	for _, ens := range e.byTenant {
		slices.SortFunc(ens, func(a, b *entry) int { return cmp.Compare(a.rule.ID, b.rule.ID) })
	}
	return nil
}

func alertActions(r *tether.Rule) []tether.RuleAction {
	var as []tether.RuleAction
	for _, a := range r.Actions {
		if a.Type == tether.ActionAlert {
			as = append(as, a)
		}
	}
	return as
}

// Handle evaluates inputs, in order, against their tenant's enabled rules
// and enqueues each rule's results. A rule that errors on an input is
// marked failing (once) and goes on with the next input; a rule that
// panics is marked failing and not evaluated again until it changes. The
// returned error is only the Enqueuer's: those results stay pending and
// are enqueued again by the next Handle, Flush or Checkpoint.
func (e *Engine) Handle(ctx context.Context, in []Input) error {
	if len(in) == 0 {
		return nil
	}
	var changes []statusChange
	defer func() { e.setStatuses(ctx, changes) }()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.o.Now()
	// Each input's environment is built once, for the first rule that
	// wants it, and shared (read only) by the others.
	envs := make([]map[string]any, len(in))
	envOf := func(i int) map[string]any {
		if envs[i] == nil {
			d := in[i].Device
			de, ok := e.devEnvs[d]
			if !ok {
				de = deviceEnv(d)
				if len(e.devEnvs) >= maxDevEnvs {
					clear(e.devEnvs)
				}
				e.devEnvs[d] = de
			}
			envs[i] = env(&in[i], de)
		}
		return envs[i]
	}
	dropEnv := func(i int) { envs[i] = nil }
	tenants := map[string][]int{}
	var order []string
	for i := range in {
		t := in[i].TenantID
		if _, ok := tenants[t]; !ok {
			order = append(order, t)
		}
		tenants[t] = append(tenants[t], i)
	}
	var touched []*entry
	for _, t := range order {
		for _, en := range e.byTenant[t] {
			if en.broken {
				continue
			}
			if c, ok := e.runRule(ctx, en, in, tenants[t], envOf, dropEnv, now); ok {
				changes = append(changes, c)
			}
			touched = append(touched, en)
		}
	}
	return e.enqueue(ctx, touched)
}

// runRule runs one rule over the tenant's inputs (idx into in), rule by
// rule rather than input by input, so that a panic is recovered once per
// rule and the rule's metrics are locked once per batch.
func (e *Engine) runRule(ctx context.Context, en *entry, in []Input, idx []int, envOf func(int) map[string]any, dropEnv func(int), now time.Time) (change statusChange, changed bool) {
	st := en.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	cur := -1 // the input being evaluated, for the trace of a panic
	defer func() {
		if v := recover(); v != nil {
			en.broken = true
			msg := fmt.Sprintf("panic: %v", v)
			e.log.Error("rules engine: rule panicked; it stays off until it changes", "tenant", en.rule.TenantID,
				"rule", en.rule.ID, "version", en.rule.Version, "panic", v, "stack", string(debug.Stack()))
			st.errors++
			st.lastError = msg
			if cur >= 0 {
				st.traces.add(Trace{At: now, Input: traceInput(&in[cur]), Error: msg})
				// The input's environment may hold what the rule wrote
				// into it before it panicked: rebuild it for the others.
				dropEnv(cur)
			}
			change, changed = statusChange{en.rule, tether.RuleFailing, msg}, true
			en.failing = true
		}
	}()
	p := en.prog
	for _, i := range idx {
		inp := &in[i]
		if !p.matches(inp) {
			continue
		}
		en.dirty = true
		tr := Trace{At: now, Input: traceInput(inp)}
		cur = i
		if e.hook != nil {
			e.hook(en.rule, inp)
		}
		var t0 time.Time
		timed := st.evaluated%latencyEvery == 0
		if timed {
			t0 = time.Now()
		}
		res, out, err := p.processOutcome(inp, envOf(i), &tr)
		if timed {
			st.latency(time.Since(t0))
		}
		st.evaluated++
		if out.matched {
			st.matched++
		}
		if out.late {
			st.late++
		}
		st.results += uint64(len(res))
		tr.Results = len(res)
		if err != nil {
			st.errors++
			st.lastError = err.Error()
			tr.Error = err.Error()
			if !en.failing {
				en.failing = true
				change, changed = statusChange{en.rule, tether.RuleFailing, errorText(err)}, true
			}
		}
		st.traces.add(tr)
		cur = -1
		e.collect(ctx, en, res)
	}
	return change, changed
}

// latencyEvery: one evaluation in latencyEvery is timed, which keeps the
// clock reads off the hot path.
const latencyEvery = 16

// collect keeps a rule's results for enqueueing and, for a rule with
// alert actions, signals met = false for a key that gave a result last
// time and none now.
func (e *Engine) collect(ctx context.Context, en *entry, res []tether.RuleResult) {
	en.pending = append(en.pending, res...)
	if over := len(en.pending) - e.o.MaxPending; over > 0 {
		en.stats.errors += uint64(over)
		en.stats.lastError = fmt.Sprintf("%d results dropped: the action runner is failing", over)
		en.pending = slices.Delete(en.pending, 0, over)
	}
	p := en.prog
	if len(p.cleared) == 0 {
		return
	}
	for _, c := range p.cleared {
		for _, a := range en.alerts {
			if err := e.o.Alerts.Signal(ctx, en.rule.TenantID, en.rule.ID, c.deviceID, a, false, c.t, nil); err != nil {
				e.log.Warn("rules engine: signal alert condition ended", "rule", en.rule.ID, "device", c.deviceID, "err", err)
			}
		}
	}
	p.cleared = p.cleared[:0]
}

// enqueue hands the pending results of each entry to the runner.
func (e *Engine) enqueue(ctx context.Context, ens []*entry) error {
	var errs []error
	for _, en := range ens {
		if len(en.pending) == 0 {
			continue
		}
		if err := e.enqueueRule(ctx, en); err != nil {
			errs = append(errs, fmt.Errorf("enqueue results of rule %s: %w", en.rule.ID, err))
			continue
		}
		// The runner has the results durably and keeps no reference to
		// the slice (see Enqueuer): reuse it.
		clear(en.pending)
		en.pending = en.pending[:0]
	}
	return errors.Join(errs...)
}

// enqueueRule calls the runner, turning a panic into an error: the
// runner's bug must not take the pipeline down either. The results stay
// pending.
func (e *Engine) enqueueRule(ctx context.Context, en *entry) (err error) {
	defer func() {
		if v := recover(); v != nil {
			e.log.Error("rules engine: action runner panicked", "rule", en.rule.ID, "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return e.runner.Enqueue(ctx, en.rule, en.pending)
}

// Flush closes the windows of keys silent for a window's length plus its
// allowed lateness (processing time, up to now) and enqueues their
// results. Call it periodically (every second, say) so that a device
// that stopped sending still gets its last window's result.
func (e *Engine) Flush(ctx context.Context, now time.Time) error {
	var changes []statusChange
	defer func() { e.setStatuses(ctx, changes) }()
	e.mu.Lock()
	defer e.mu.Unlock()
	var touched []*entry
	for _, ens := range e.byTenant {
		for _, en := range ens {
			if en.broken || en.prog.win == nil {
				continue
			}
			if c, ok := e.flushRule(ctx, en, now); ok {
				changes = append(changes, c)
			}
			touched = append(touched, en)
		}
	}
	return e.enqueue(ctx, touched)
}

func (e *Engine) flushRule(ctx context.Context, en *entry, now time.Time) (change statusChange, changed bool) {
	st := en.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	defer func() {
		if v := recover(); v != nil {
			en.broken, en.failing = true, true
			msg := fmt.Sprintf("panic: %v", v)
			e.log.Error("rules engine: rule panicked in flush", "rule", en.rule.ID, "panic", v, "stack", string(debug.Stack()))
			st.errors++
			st.lastError = msg
			change, changed = statusChange{en.rule, tether.RuleFailing, msg}, true
		}
	}()
	res, err := en.prog.Flush(now)
	if len(res) > 0 {
		en.dirty = true
	}
	st.results += uint64(len(res))
	if err != nil {
		st.errors++
		st.lastError = err.Error()
		if !en.failing {
			en.failing = true
			change, changed = statusChange{en.rule, tether.RuleFailing, errorText(err)}, true
		}
	}
	e.collect(ctx, en, res)
	return change, changed
}

// Checkpoint enqueues any pending results and then persists the state of
// every program that changed since the last checkpoint (and deletes the
// state of dropped rule versions), in one StateStore call. Only after it
// returns nil may the bus messages of the inputs handled so far be
// acknowledged: a crash before that redelivers them to a state that has
// not seen them.
func (e *Engine) Checkpoint(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	all := make([]*entry, 0, len(e.progs))
	for _, en := range e.progs {
		all = append(all, en)
	}
	if err := e.enqueue(ctx, all); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	states := map[string][]byte{}
	for _, k := range e.deleted {
		states[k] = nil
	}
	var dirty []*entry
	for _, en := range all {
		if !en.dirty {
			continue
		}
		b, err := en.prog.Snapshot()
		if err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		states[en.key] = b
		dirty = append(dirty, en)
	}
	if len(states) == 0 {
		return nil
	}
	if e.st == nil {
		return errors.New("checkpoint: no state store")
	}
	if err := e.st.SaveStates(ctx, states); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	for _, en := range dirty {
		en.dirty = false
	}
	e.deleted = nil
	return nil
}

// Rules returns the state keys of the programs the engine runs, sorted
// (for tests and diagnostics).
func (e *Engine) Rules() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := make([]string, 0, len(e.progs))
	for k := range e.progs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Metrics are a rule's counters since the engine started (across its
// versions).
type Metrics struct {
	// Evaluated counts inputs of the rule's source evaluated; Matched
	// those WHERE let through; Results the results produced; Errors the
	// evaluation errors (and results dropped); Late the inputs too late
	// for their window.
	Evaluated uint64 `json:"evaluated"`
	Matched   uint64 `json:"matched"`
	Results   uint64 `json:"results"`
	Errors    uint64 `json:"errors"`
	Late      uint64 `json:"late"`
	// LastError is the last evaluation error.
	LastError string `json:"last_error,omitempty"`
	// LatencyP50 and LatencyP99 are of one input's evaluation by the
	// rule, over the last LatencySamples timed evaluations (one in 16 is
	// timed).
	LatencyP50 time.Duration `json:"latency_p50_ns"`
	LatencyP99 time.Duration `json:"latency_p99_ns"`
}

// Metrics returns a rule's metrics (zero for a rule the engine has not
// run).
func (e *Engine) Metrics(tenant, ruleID string) Metrics {
	e.statsMu.Lock()
	s := e.stats[tenant+"/"+ruleID]
	e.statsMu.Unlock()
	if s == nil {
		return Metrics{}
	}
	return s.metrics()
}

// Trace returns the last inputs of a rule's source through the rule,
// oldest first, with the value of each step.
func (e *Engine) Trace(tenant, ruleID string) []Trace {
	e.statsMu.Lock()
	s := e.stats[tenant+"/"+ruleID]
	e.statsMu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.traces.list()
}

// ruleStats are one rule's metrics and trace.
type ruleStats struct {
	mu                                        sync.Mutex
	evaluated, matched, results, errors, late uint64
	lastError                                 string
	lat                                       []time.Duration
	latN                                      int
	traces                                    *traceRing
}

func newRuleStats(traces, samples int) *ruleStats {
	return &ruleStats{traces: newTraceRing(traces), lat: make([]time.Duration, samples)}
}

func (s *ruleStats) latency(d time.Duration) {
	s.lat[s.latN%len(s.lat)] = d
	s.latN++
}

func (s *ruleStats) metrics() Metrics {
	s.mu.Lock()
	m := Metrics{Evaluated: s.evaluated, Matched: s.matched, Results: s.results, Errors: s.errors, Late: s.late, LastError: s.lastError}
	lat := slices.Clone(s.lat[:min(s.latN, len(s.lat))])
	s.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		m.LatencyP50 = lat[(len(lat)-1)*50/100]
		m.LatencyP99 = lat[(len(lat)-1)*99/100]
	}
	return m
}

// errorText trims an error for a status.
func errorText(err error) string {
	s := err.Error()
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return strings.TrimSpace(s)
}
