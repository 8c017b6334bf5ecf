package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/anomaly"
	"github.com/tether-iot/tether/internal/rules/lang"
	"github.com/tether-iot/tether/internal/rules/window"
)

// ProgramOptions bound a program's state.
type ProgramOptions struct {
	// MaxKeys caps the keys (devices, group values) a program keeps state
	// for: its windows' group keys (window.Options.MaxKeys) and the keys
	// of its stateful functions, each evicting the least recently used
	// beyond it. Default 100,000.
	MaxKeys int
	// MaxOpenPerKey caps the open windows of one key (hopping windows
	// overlap). Default 64.
	MaxOpenPerKey int
	// Now is the processing clock on which Flush measures silence
	// (window.Options.Now); default time.Now. Flush's now must come from
	// it.
	Now func() time.Time
}

func (o ProgramOptions) withDefaults() ProgramOptions {
	if o.MaxKeys <= 0 {
		o.MaxKeys = 100_000
	}
	if o.MaxOpenPerKey <= 0 {
		o.MaxOpenPerKey = 64
	}
	return o
}

// Program is one compiled rule version with its state: the open windows
// of every group key and the state of every anomaly or prediction call
// for every key. A Program is not safe for concurrent use; the Engine
// serialises the calls to each.
//
// Evaluation of one input, in order:
//  1. the input-stage stateful calls (anomaly and prediction functions in
//     WHERE or in a per-input rule's projections) are updated with the
//     input, keyed by its device (by topic for an MQTT publish without
//     one). They see every input of the rule's source, before WHERE, so
//     that WHERE can use them and so that a statistic describes the
//     device's whole series, not the part a filter lets through;
//  2. WHERE;
//  3. without a window: the projections in order (each may use the ones
//     before it by name), the result-stage calls, HAVING, one result;
//     with a window: the group key and the aggregate arguments go into
//     the window, and each window the input's event time closes is
//     evaluated like a per-input result (aggregate slots, result-stage
//     calls keyed by the group, projections, HAVING).
//
// A stateful call without a value (still warming up, or its argument is
// missing from the input) makes that input or window give no result,
// without error: "not enough data yet" never fires a rule.
type Program struct {
	rule tether.Rule
	q    *lang.Query
	o    ProgramOptions

	win   *window.Set // nil without a window
	wspec window.Spec
	waggs []window.AggSpec
	idle  time.Duration

	keys *keyCache
	// inputCalls and resultCalls index q.Stateful by stage; labels name
	// each call and aggregate for traces.
	inputCalls  []int
	resultCalls []int
	// beforeProj[i] are the result-stage calls projection i refers to and
	// no projection before it does; the rest run before HAVING.
	beforeProj  [][]int
	beforeHave  []int
	callLabel   []string
	noValue     []string // "<call> has no value yet", for traces
	aggLabel    []string
	star        bool
	byDevice    bool // GROUP BY has device (device.id): results carry it
	keyIsDevice bool // GROUP BY is device alone: the key is the device ID
	needDev     bool // a window's result reads `device`
	late        uint64
	argsScratch []any
	// trackMet makes the program remember per key whether its last
	// evaluation gave a result, and list in cleared the keys for which
	// it stopped doing so (for alert actions).
	trackMet bool
	cleared  []clearedKey
	// projRead[i]: a later projection, a result-stage call or HAVING may
	// read projection i by name, so it is put in the environment.
	projRead []bool
	sc       scratch
}

// scratch records what a program wrote into a shared environment, to
// undo it.
type scratch struct {
	keys []string
	old  []any
	had  []bool
}

func (s *scratch) set(e map[string]any, k string, v any) {
	old, had := e[k]
	s.keys, s.old, s.had = append(s.keys, k), append(s.old, old), append(s.had, had)
	e[k] = v
}

func (s *scratch) restore(e map[string]any) {
	for i := len(s.keys) - 1; i >= 0; i-- {
		if s.had[i] {
			e[s.keys[i]] = s.old[i]
		} else {
			delete(e, s.keys[i])
		}
	}
	clear(s.old)
	s.keys, s.old, s.had = s.keys[:0], s.old[:0], s.had[:0]
}

type clearedKey struct {
	deviceID string
	t        time.Time
}

// noteMet records whether key's evaluation at t gave a result.
func (p *Program) noteMet(key, deviceID string, met bool, t time.Time) {
	if !p.trackMet {
		return
	}
	ks := p.keys.get(key)
	if ks.met && !met {
		p.cleared = append(p.cleared, clearedKey{deviceID, t})
	}
	ks.met = met
}

// Compile parses a rule's statement and prepares its program with empty
// state.
func Compile(r *tether.Rule, o ProgramOptions) (*Program, error) {
	q, err := lang.Parse(r.Statement)
	if err != nil {
		return nil, fmt.Errorf("rule %s version %d: %w", r.ID, r.Version, err)
	}
	p, err := newProgram(r, q, o)
	if err != nil {
		return nil, fmt.Errorf("rule %s version %d: %w", r.ID, r.Version, err)
	}
	if p.q.Window != nil {
		p.win = window.New(p.wspec, p.waggs, p.windowOptions())
	}
	return p, nil
}

func newProgram(r *tether.Rule, q *lang.Query, o ProgramOptions) (*Program, error) {
	p := &Program{rule: *r, q: q, o: o.withDefaults()}
	p.rule.Actions = nil // the engine holds the current rule; a program needs only its identity
	for i, c := range q.Stateful {
		// Fail at compile time on bad parameters rather than at the first
		// input.
		if _, err := anomaly.New(c.Func, c.Params); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Func, err)
		}
		if len(c.Args) == 0 {
			return nil, fmt.Errorf("%s needs a value argument", c.Func)
		}
		p.callLabel = append(p.callLabel, c.Func+"("+c.Args[0].Src+")")
		p.noValue = append(p.noValue, c.Func+"("+c.Args[0].Src+") has no value yet")
		if c.Stage == "result" {
			p.resultCalls = append(p.resultCalls, i)
		} else {
			p.inputCalls = append(p.inputCalls, i)
		}
	}
	for _, a := range q.Aggregates {
		arg := "*"
		if a.Arg != nil {
			arg = a.Arg.Src
		}
		p.aggLabel = append(p.aggLabel, a.Func+"("+arg+")")
		p.waggs = append(p.waggs, window.AggSpec{Func: a.Func, Param: a.Param})
	}
	for _, pr := range q.Projections {
		if pr.Name == "*" {
			p.star = true
		}
	}
	if q.Window == nil && len(q.Aggregates) > 0 {
		return nil, errors.New("aggregates need a window")
	}
	if q.Window != nil {
		if p.star {
			return nil, errors.New("SELECT * cannot be used with a window")
		}
		w := q.Window
		p.wspec = window.Spec{Kind: w.Kind, Size: w.Size, Slide: w.Slide, Gap: w.Gap, Lateness: w.Lateness}
		// A silent key's windows close after the longest they could still
		// take to receive an input: a window's length (a session's gap)
		// plus the allowed lateness, in processing time.
		if err := window.Validate(p.wspec, p.waggs, p.windowOptions()); err != nil {
			return nil, err
		}
		p.idle = max(w.Size, w.Gap) + w.Lateness
		for _, g := range q.GroupBy {
			if s := strings.TrimSpace(g.Src); s == "device" || s == "device.id" {
				p.byDevice = true
			}
		}
		p.keyIsDevice = p.byDevice && len(q.GroupBy) == 1
	}
	// A result-stage call runs just before the first projection that
	// refers to its slot, so that `SELECT avg(x) AS v, zscore(v) AS z`
	// and `HAVING zscore(v) > 3` both see what they need.
	p.beforeProj = make([][]int, len(q.Projections))
	for _, ci := range p.resultCalls {
		slot := q.Stateful[ci].Slot
		placed := false
		for pi, pr := range q.Projections {
			if pr.Expr != nil && refersTo(pr.Expr, slot) {
				p.beforeProj[pi] = append(p.beforeProj[pi], ci)
				placed = true
				break
			}
		}
		if !placed {
			p.beforeHave = append(p.beforeHave, ci)
		}
	}
	for _, pr := range q.Projections {
		if pr.Expr != nil && refersTo(pr.Expr, "device") {
			p.needDev = true
		}
	}
	for _, ci := range p.resultCalls {
		if refersTo(q.Stateful[ci].Args[0], "device") {
			p.needDev = true
		}
	}
	if q.Having != nil && refersTo(q.Having, "device") {
		p.needDev = true
	}
	p.projRead = make([]bool, len(q.Projections))
	for i, pr := range q.Projections {
		if pr.Expr == nil {
			continue
		}
		for j := i + 1; j < len(q.Projections) && !p.projRead[i]; j++ {
			if x := q.Projections[j].Expr; x != nil && refersTo(x, pr.Name) {
				p.projRead[i] = true
			}
		}
		for _, ci := range p.resultCalls {
			if refersTo(q.Stateful[ci].Args[0], pr.Name) {
				p.projRead[i] = true
			}
		}
		if q.Having != nil && refersTo(q.Having, pr.Name) {
			p.projRead[i] = true
		}
	}
	p.keys = newKeyCache(p.o.MaxKeys, len(q.Stateful))
	p.argsScratch = make([]any, len(q.Aggregates))
	return p, nil
}

func (p *Program) windowOptions() window.Options {
	return window.Options{MaxKeys: p.o.MaxKeys, MaxOpenPerKey: p.o.MaxOpenPerKey, Now: p.o.Now}
}

// refersTo reports whether e's compiled code mentions the variable name
// (a slot such as _fn0). Slots are names the parser made up, so a match on
// a word boundary is exact enough.
func refersTo(e *lang.Expr, name string) bool {
	s := e.Code()
	for {
		i := strings.Index(s, name)
		if i < 0 {
			return false
		}
		end := i + len(name)
		if (i == 0 || !isIdent(s[i-1])) && (end == len(s) || !isIdent(s[end])) {
			return true
		}
		s = s[end:]
	}
}

func isIdent(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// Rule returns the rule the program was compiled from (without its
// actions).
func (p *Program) Rule() tether.Rule { return p.rule }

// Query returns the program's parsed statement.
func (p *Program) Query() *lang.Query { return p.q }

// matches reports whether the input is of the program's source.
func (p *Program) matches(in *Input) bool {
	if in.Kind != p.q.Source.Kind {
		return false
	}
	return in.Kind != KindMQTT || topicMatches(p.q.Source.Topic, in.Topic)
}

// Process evaluates one input: it returns the result of a per-input rule
// (none if WHERE or HAVING said no) or the results of the windows the
// input's event time closed. An input of another source gives nothing.
// After an error the results produced before it are still returned.
func (p *Program) Process(in Input) ([]tether.RuleResult, error) {
	if !p.matches(&in) {
		return nil, nil
	}
	return p.process(&in, env(&in, deviceEnv(in.Device)), nil)
}

// outcome counts what one input did, for the engine's metrics.
type outcome struct {
	matched bool
	late    bool
}

// process is Process with the environment built (env is shared with other
// programs and never written) and an optional trace to fill.
func (p *Program) process(in *Input, base map[string]any, tr *Trace) ([]tether.RuleResult, error) {
	res, _, err := p.processOutcome(in, base, tr)
	return res, err
}

func (p *Program) processOutcome(in *Input, base map[string]any, tr *Trace) ([]tether.RuleResult, outcome, error) {
	var out outcome
	// The environment is shared with the other rules evaluating this
	// input: what this program adds (slots, projection names) is undone
	// before it returns.
	e := base
	defer p.sc.restore(e)
	if len(p.inputCalls) > 0 {
		ks := p.keys.get(inputKey(in))
		ready := true
		for _, ci := range p.inputCalls {
			v, err := p.updateCall(ks, ci, e, in.Time)
			if err != nil {
				return nil, out, err
			}
			p.sc.set(e, p.q.Stateful[ci].Slot, v)
			if tr != nil {
				if tr.Stateful == nil {
					tr.Stateful = make(map[string]any, len(p.inputCalls))
				}
				tr.Stateful[p.callLabel[ci]] = v
			}
			if v == nil && ready {
				ready = false
				if tr != nil {
					tr.Skipped = p.noValue[ci]
				}
			}
		}
		if !ready {
			return nil, out, nil
		}
	}
	if p.q.Where != nil {
		ok, err := p.q.Where.Bool(e)
		if err != nil {
			return nil, out, fmt.Errorf("WHERE: %w", err)
		}
		if tr != nil {
			tr.Where = boolPtr(ok)
		}
		if !ok {
			if p.win == nil {
				p.noteMet(inputKey(in), in.deviceID(), false, in.Time)
			}
			return nil, out, nil
		}
	}
	out.matched = true
	if p.win == nil {
		key := inputKey(in)
		var st *steps
		if tr != nil {
			st = &steps{}
		}
		res, ok, err := p.evalResult(key, in.deviceID(), in.Time, nil, e, true, in, st)
		if st != nil {
			if len(st.stateful) > 0 {
				if tr.Stateful == nil {
					tr.Stateful = map[string]any{}
				}
				maps.Copy(tr.Stateful, st.stateful)
			}
			tr.Projections, tr.Having = st.projections, st.having
			if st.skipped != "" {
				tr.Skipped = st.skipped
			}
		}
		if err != nil {
			return nil, out, err
		}
		p.noteMet(key, in.deviceID(), ok, in.Time)
		if !ok {
			return nil, out, nil
		}
		return []tether.RuleResult{res}, out, nil
	}

	var key string
	var err error
	if p.keyIsDevice {
		key = in.deviceID() // what evaluating device.id gives, without reflection
	} else {
		key, err = p.groupKey(e)
	}
	if err != nil {
		return nil, out, err
	}
	vals := p.argsScratch
	for i, a := range p.q.Aggregates {
		if a.Arg == nil {
			vals[i] = 1.0 // count(*): any non-nil value counts
			continue
		}
		v, err := a.Arg.Eval(e)
		if err != nil {
			return nil, out, fmt.Errorf("%s: %w", p.aggLabel[i], err)
		}
		vals[i] = v
	}
	if p.needDev || !p.keyIsDevice {
		p.keys.get(key).setDevice(in.Device)
	}
	late := p.win.Add(key, in.Time, vals)
	clear(vals)
	if late {
		p.late++
		out.late = true
	}
	if tr != nil {
		tr.GroupKey, tr.Late = key, late
	}
	res, err := p.closeWindows(p.win.Advance(key, in.Time), tr)
	return res, out, err
}

// inputKey is the key of an input's per-device state: its device ID, or
// for an MQTT publish of no device its topic.
func inputKey(in *Input) string {
	if in.Device != nil {
		return in.Device.ID
	}
	return in.Topic
}

// groupKey returns the key of the input's group: "" without GROUP BY, the
// value itself for one string key (a device ID for GROUP BY device), the
// values joined by a unit separator otherwise.
func (p *Program) groupKey(e map[string]any) (string, error) {
	switch len(p.q.GroupBy) {
	case 0:
		return "", nil
	case 1:
		v, err := p.q.GroupBy[0].Eval(e)
		if err != nil {
			return "", fmt.Errorf("GROUP BY %s: %w", p.q.GroupBy[0].Src, err)
		}
		return keyString(v), nil
	}
	var b strings.Builder
	for i, g := range p.q.GroupBy {
		v, err := g.Eval(e)
		if err != nil {
			return "", fmt.Errorf("GROUP BY %s: %w", g.Src, err)
		}
		if i > 0 {
			b.WriteByte(0x1f)
		}
		b.WriteString(keyString(v))
	}
	return b.String(), nil
}

func keyString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case map[string]any: // `device` used as a key: its ID
		if id, ok := v["id"].(string); ok {
			return id
		}
	}
	return fmt.Sprint(v)
}

// closeWindows evaluates closed windows into results. An error in one
// window does not stop the others; the first is returned.
func (p *Program) closeWindows(closed []window.Closed, tr *Trace) ([]tether.RuleResult, error) {
	var (
		results []tether.RuleResult
		first   error
	)
	for _, c := range closed {
		res, ok, err := p.closeWindow(c, tr)
		if err != nil && first == nil {
			first = err
		}
		if err == nil {
			p.noteMet(c.Key, res.DeviceID, ok, c.End)
		}
		if ok {
			results = append(results, res)
		}
	}
	return results, first
}

func (p *Program) closeWindow(c window.Closed, tr *Trace) (tether.RuleResult, bool, error) {
	ks := p.keys.peek(c.Key)
	e := make(map[string]any, len(c.Values)+len(p.q.Projections)+4)
	var dev map[string]any
	deviceID := ""
	if ks != nil {
		dev = ks.devEnv
		if p.byDevice && ks.dev != nil {
			deviceID = ks.dev.ID
		}
	}
	if deviceID == "" && p.keyIsDevice {
		// The key's device was evicted (more keys than MaxKeys) or not
		// kept (no result reads `device`); the group key is its ID.
		deviceID = c.Key
	}
	e["device"], e["window_start"], e["window_end"] = dev, c.Start, c.End
	var st *steps
	if tr != nil {
		st = &steps{}
	}
	aggs := map[string]any(nil)
	if st != nil {
		aggs = make(map[string]any, len(p.q.Aggregates))
	}
	for i, a := range p.q.Aggregates {
		var v any
		if i < len(c.Values) {
			v = c.Values[i]
		}
		e[a.Slot] = v
		if aggs != nil {
			aggs[p.aggLabel[i]] = v
		}
	}
	start := c.Start
	res, ok, err := p.evalResult(c.Key, deviceID, c.End, &start, e, false, nil, st)
	if tr != nil {
		wt := WindowTrace{Key: c.Key, Start: c.Start, End: c.End, Aggregates: aggs,
			Stateful: st.stateful, Projections: st.projections, Having: st.having, Skipped: st.skipped}
		if err != nil {
			wt.Error = err.Error()
		}
		tr.Windows = append(tr.Windows, wt)
	}
	return res, ok, err
}

// steps records the result-stage steps for a trace.
type steps struct {
	stateful    map[string]any
	projections map[string]any
	having      *bool
	skipped     string
}

// evalResult evaluates the result stage: result-stage stateful calls
// (keyed by key), projections in order, HAVING. If e is shared, what is
// written to it goes through p.sc (the caller restores it); only the
// names a later step reads are written. in is the input of a per-input
// rule (for SELECT *), nil for a window.
func (p *Program) evalResult(key, deviceID string, t time.Time, windowStart *time.Time, e map[string]any, shared bool, in *Input, st *steps) (tether.RuleResult, bool, error) {
	res := tether.RuleResult{TenantID: p.rule.TenantID, RuleID: p.rule.ID, RuleVersion: p.rule.Version,
		DeviceID: deviceID, Time: t, WindowStart: windowStart}
	set := func(k string, v any) {
		if shared {
			p.sc.set(e, k, v)
		} else {
			e[k] = v
		}
	}
	var ks *keyState
	runCalls := func(calls []int) (bool, error) {
		for _, ci := range calls {
			if ks == nil {
				ks = p.keys.get(key)
			}
			v, err := p.updateCall(ks, ci, e, t)
			if err != nil {
				return false, err
			}
			set(p.q.Stateful[ci].Slot, v)
			if st != nil {
				if st.stateful == nil {
					st.stateful = map[string]any{}
				}
				st.stateful[p.callLabel[ci]] = v
			}
			if v == nil {
				if st != nil {
					st.skipped = p.noValue[ci]
				}
				return false, nil
			}
		}
		return true, nil
	}
	values := make(map[string]any, len(p.q.Projections))
	res.Values = values
	if st != nil {
		st.projections = values
	}
	for i, pr := range p.q.Projections {
		if ok, err := runCalls(p.beforeProj[i]); err != nil || !ok {
			return res, false, err
		}
		if pr.Name == "*" {
			for k, v := range star(in) {
				values[k] = v
			}
			continue
		}
		v, err := pr.Expr.Eval(e)
		if err != nil {
			return res, false, fmt.Errorf("SELECT %s: %w", pr.Name, err)
		}
		values[pr.Name] = v
		if p.projRead[i] {
			set(pr.Name, v)
		}
	}
	if ok, err := runCalls(p.beforeHave); err != nil || !ok {
		return res, false, err
	}
	if p.q.Having != nil {
		ok, err := p.q.Having.Bool(e)
		if err != nil {
			return res, false, fmt.Errorf("HAVING: %w", err)
		}
		if st != nil {
			st.having = boolPtr(ok)
		}
		if !ok {
			return res, false, nil
		}
	}
	return res, true, nil
}

// star returns what SELECT * gives for an input: a telemetry input's
// values, an event's fields, an MQTT publish's topic and payload.
func star(in *Input) map[string]any {
	if in == nil {
		return nil
	}
	switch in.Kind {
	case KindTelemetry:
		return in.Values
	case KindMQTT:
		e := env(in, nil)
		return map[string]any{"topic": e["topic"], "payload": e["payload"]}
	default:
		return in.Event
	}
}

// updateCall feeds call ci's value argument, evaluated in e, to key's
// state of the call (created on first use) and returns the call's value,
// or nil if it has none (warming up, or the argument is missing).
func (p *Program) updateCall(ks *keyState, ci int, e map[string]any, t time.Time) (any, error) {
	c := p.q.Stateful[ci]
	arg, err := c.Args[0].Eval(e)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.callLabel[ci], err)
	}
	x, ok, err := number(arg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.callLabel[ci], err)
	}
	if !ok {
		return nil, nil
	}
	s := ks.fns[ci]
	if s == nil {
		if s, err = anomaly.New(c.Func, c.Params); err != nil {
			return nil, fmt.Errorf("%s: %w", p.callLabel[ci], err)
		}
		ks.fns[ci] = s
	}
	y, ok := s.Update(t, x)
	if !ok {
		return nil, nil
	}
	return y, nil
}

// number converts an argument of a stateful call: ok false for a missing
// value (nil or NaN), an error for one that is not a number.
func number(v any) (float64, bool, error) {
	var x float64
	switch v := v.(type) {
	case nil:
		return 0, false, nil
	case float64:
		x = v
	case float32:
		x = float64(v)
	case int:
		x = float64(v)
	case int64:
		x = float64(v)
	case int32:
		x = float64(v)
	case uint64:
		x = float64(v)
	case bool:
		if v {
			x = 1
		}
	default:
		return 0, false, fmt.Errorf("the value is %T, not a number", v)
	}
	if math.IsNaN(x) {
		return 0, false, nil
	}
	return x, true, nil
}

// Flush closes the windows of keys that have had no input for a window's
// length plus the allowed lateness (processing time, before now) and
// returns their results, so that a device that went silent still gets its
// last window. It returns nothing for a rule without a window. Errors of
// single windows are returned with the results that did evaluate.
func (p *Program) Flush(now time.Time) ([]tether.RuleResult, error) {
	if p.win == nil {
		return nil, nil
	}
	return p.closeWindows(p.win.Flush(now, p.idle), nil)
}

// flushAll closes every open window (the end of a dry run or backtest:
// the stream is over).
func (p *Program) flushAll(tr *Trace) ([]tether.RuleResult, error) {
	if p.win == nil {
		return nil, nil
	}
	return p.closeWindows(p.win.Flush(farFuture, 0), tr)
}

// farFuture is a processing time after every key's last input (and within
// the range of UnixNano).
var farFuture = time.Date(2250, 1, 1, 0, 0, 0, 0, time.UTC)

// Late returns how many inputs came too late for their window.
func (p *Program) Late() uint64 { return p.late }

// snapshot is a program's persisted state.
type snapshot struct {
	Format    int           `json:"format"`
	Statement string        `json:"statement"`
	Window    []byte        `json:"window,omitempty"`
	Keys      []keySnapshot `json:"keys,omitempty"` // least recently used first
	Late      uint64        `json:"late,omitempty"`
}

type keySnapshot struct {
	Key    string         `json:"k"`
	Device *deviceRef     `json:"d,omitempty"`
	Fns    map[int][]byte `json:"f,omitempty"` // by index in Query.Stateful
	Met    bool           `json:"m,omitempty"`
}

type deviceRef struct {
	ID      string            `json:"id"`
	Name    string            `json:"name,omitempty"`
	Profile string            `json:"profile,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

const snapshotFormat = 1

// Snapshot returns the program's state (open windows, stateful function
// state per key, the devices of window keys) for [RestoreProgram].
func (p *Program) Snapshot() ([]byte, error) {
	s := snapshot{Format: snapshotFormat, Statement: p.rule.Statement, Late: p.late}
	if p.win != nil {
		b, err := p.win.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("snapshot rule %s: %w", p.rule.ID, err)
		}
		s.Window = b
	}
	for _, ks := range p.keys.oldestFirst() {
		k := keySnapshot{Key: ks.key, Met: ks.met}
		if d := ks.dev; d != nil {
			k.Device = &deviceRef{ID: d.ID, Name: d.Name, Profile: d.ProfileID, Labels: d.Labels}
		}
		for i, f := range ks.fns {
			if f == nil {
				continue
			}
			b, err := anomaly.Snapshot(f)
			if err != nil {
				return nil, fmt.Errorf("snapshot rule %s: %s: %w", p.rule.ID, p.callLabel[i], err)
			}
			if k.Fns == nil {
				k.Fns = map[int][]byte{}
			}
			k.Fns[i] = b
		}
		s.Keys = append(s.Keys, k)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("snapshot rule %s: %w", p.rule.ID, err)
	}
	return b, nil
}

// RestoreProgram compiles the rule and gives it the state a Snapshot of
// the same rule version returned.
func RestoreProgram(r *tether.Rule, b []byte, o ProgramOptions) (*Program, error) {
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("restore rule %s: %w", r.ID, err)
	}
	if s.Format != snapshotFormat {
		return nil, fmt.Errorf("restore rule %s: snapshot format %d, want %d", r.ID, s.Format, snapshotFormat)
	}
	if s.Statement != r.Statement {
		return nil, fmt.Errorf("restore rule %s: the snapshot is of another statement", r.ID)
	}
	q, err := lang.Parse(r.Statement)
	if err != nil {
		return nil, fmt.Errorf("restore rule %s version %d: %w", r.ID, r.Version, err)
	}
	p, err := newProgram(r, q, o)
	if err != nil {
		return nil, fmt.Errorf("restore rule %s version %d: %w", r.ID, r.Version, err)
	}
	p.late = s.Late
	if q.Window != nil {
		wo := p.windowOptions()
		if s.Window == nil {
			p.win = window.New(p.wspec, p.waggs, wo)
		} else if p.win, err = window.Restore(p.wspec, p.waggs, wo, s.Window); err != nil {
			return nil, fmt.Errorf("restore rule %s: %w", r.ID, err)
		}
	}
	for _, k := range s.Keys {
		ks := p.keys.get(k.Key)
		ks.met = k.Met
		if d := k.Device; d != nil {
			ks.setDevice(&tether.Device{TenantID: r.TenantID, ID: d.ID, Name: d.Name, ProfileID: d.Profile, Labels: d.Labels})
		}
		for i, b := range k.Fns {
			if i < 0 || i >= len(q.Stateful) {
				return nil, fmt.Errorf("restore rule %s: state of call %d, which the rule does not have", r.ID, i)
			}
			c := q.Stateful[i]
			if ks.fns[i], err = anomaly.Restore(c.Func, c.Params, b); err != nil {
				return nil, fmt.Errorf("restore rule %s: %s: %w", r.ID, p.callLabel[i], err)
			}
		}
	}
	return p, nil
}
