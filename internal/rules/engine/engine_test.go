package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/engine"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

const tenant = "t1"

var (
	t0    = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	robot = &tether.Device{TenantID: tenant, ID: "d1", Name: "arm 1", ProfileID: "robot", Labels: map[string]string{"line": "A"}}
	other = &tether.Device{TenantID: tenant, ID: "d2", Name: "sensor 2", ProfileID: "sensor"}
	far   = time.Date(2250, 1, 1, 0, 0, 0, 0, time.UTC)
)

func newRule(id, stmt string, actions ...tether.RuleAction) *tether.Rule {
	return &tether.Rule{TenantID: tenant, ID: id, Name: id, Statement: stmt, Enabled: true, Version: 1,
		Status: tether.RuleOK, Actions: actions}
}

func in(d *tether.Device, at time.Duration, vals map[string]any) engine.Input {
	return engine.Input{Kind: engine.KindTelemetry, TenantID: tenant, Device: d, Time: t0.Add(at), Values: vals}
}

// fakeRules is a RuleSource that records the statuses set.
type fakeRules struct {
	mu       sync.Mutex
	rules    []*tether.Rule
	statuses []string // "rule version status: error"
}

func (f *fakeRules) Enabled(context.Context) ([]*tether.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rules), nil
}

func (f *fakeRules) SetStatus(_ context.Context, tenant, id string, version int, status, errText string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses = append(f.statuses, fmt.Sprintf("%s %d %s: %s", id, version, status, errText))
	return nil
}

func (f *fakeRules) Statuses() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.statuses)
}

// fakeRunner is an Enqueuer that keeps the results by rule.
type fakeRunner struct {
	mu  sync.Mutex
	got map[string][]tether.RuleResult
	err error
}

func (f *fakeRunner) Enqueue(_ context.Context, r *tether.Rule, res []tether.RuleResult) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.got == nil {
		f.got = map[string][]tether.RuleResult{}
	}
	f.got[r.ID] = append(f.got[r.ID], res...)
	return nil
}

func (f *fakeRunner) results(id string) []tether.RuleResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got[id])
}

// clock is a settable processing clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) SaveStates(_ context.Context, states map[string][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	for k, b := range states {
		if b == nil {
			delete(s.m, k)
		} else {
			s.m[k] = b
		}
	}
	return nil
}

func (s *memStore) LoadStates(context.Context) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for k, b := range s.m {
		out[k] = b
	}
	return out, nil
}

// setup returns an engine running rules, loaded.
func setup(t testing.TB, st engine.StateStore, rules ...*tether.Rule) (*engine.Engine, *fakeRules, *fakeRunner, *clock) {
	t.Helper()
	src := &fakeRules{rules: rules}
	run := &fakeRunner{}
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	if st == nil {
		st = &memStore{}
	}
	e := engine.New(src, nil, run, st, engine.Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e, src, run, clk
}

// simple reduces results to comparable text, exactly.
func simple(rs []tether.RuleResult) []string { return text(rs, false) }

// rounded is simple with floats to 10 significant digits, for values whose
// last bits depend on the order of float operations.
func rounded(rs []tether.RuleResult) []string { return text(rs, true) }

func text(rs []tether.RuleResult, round bool) []string {
	var out []string
	for _, r := range rs {
		s := fmt.Sprintf("%s@%s", r.DeviceID, r.Time.Sub(t0))
		if r.WindowStart != nil {
			s = fmt.Sprintf("%s[%s,%s)", r.DeviceID, r.WindowStart.Sub(t0), r.Time.Sub(t0))
		}
		keys := make([]string, 0, len(r.Values))
		for k := range r.Values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := r.Values[k]
			if f, ok := v.(float64); ok && round {
				v = strconv.FormatFloat(f, 'g', 10, 64)
			}
			s += fmt.Sprintf(" %s=%v", k, v)
		}
		out = append(out, s)
	}
	return out
}

func TestPerInputRule(t *testing.T) {
	p, err := engine.Compile(newRule("r", `SELECT temp * 2 AS double, device.labels.line AS line, fan.rpm AS rpm FROM telemetry
		WHERE temp > 20 AND device.profile = 'robot'`), engine.ProgramOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   engine.Input
		want []string
	}{
		{"a robot over the threshold gives one result with every projection", in(robot, time.Second, map[string]any{"temp": 25.0, "fan.rpm": 900.0}),
			[]string{"d1@1s double=50 line=A rpm=900"}},
		{"a robot under the threshold gives nothing", in(robot, 2*time.Second, map[string]any{"temp": 10.0}), nil},
		{"a device of another profile gives nothing", in(other, 3*time.Second, map[string]any{"temp": 30.0}), nil},
		{"an input without the value gives nothing and no error", in(robot, 4*time.Second, map[string]any{"hum": 30.0}), nil},
		{"an input of another source gives nothing", engine.Input{Kind: engine.KindPresence, TenantID: tenant, Device: robot, Time: t0}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := p.Process(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := simple(res); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
			for _, r := range res {
				if r.TenantID != tenant || r.RuleID != "r" || r.RuleVersion != 1 || r.WindowStart != nil {
					t.Errorf("result identity %+v", r)
				}
			}
		})
	}
}

func TestWindowsEndToEnd(t *testing.T) {
	v := func(d *tether.Device, at time.Duration, x float64) engine.Input {
		return in(d, at, map[string]any{"v": x})
	}
	for _, c := range []struct {
		name string
		stmt string
		ins  []engine.Input
		late uint64
		want []string
	}{
		{
			name: "tumbling windows take out-of-order inputs within the lateness and drop later ones",
			stmt: `SELECT avg(v) AS a, count(*) AS n, max(v) AS mx FROM telemetry GROUP BY device, TUMBLING(1m) ALLOWED LATENESS 10s`,
			ins: []engine.Input{v(robot, 0, 1), v(robot, 30*time.Second, 3), v(robot, 20*time.Second, 2),
				v(robot, 65*time.Second, 10), v(robot, 55*time.Second, 4), // out of order, within the lateness
				v(other, 200*time.Second, 7),                                 // another key's time closes nothing of d1
				v(robot, 75*time.Second, 20), v(robot, 50*time.Second, 100)}, // 75s closes [0,60); 50s is then late
			late: 1,
			want: []string{"d1[0s,1m0s) a=2.5 mx=4 n=4", "d1[1m0s,2m0s) a=15 mx=20 n=2", "d2[3m0s,4m0s) a=7 mx=7 n=1"},
		},
		{
			name: "hopping windows put each input in every window it falls in",
			stmt: `SELECT sum(v) AS s FROM telemetry GROUP BY device, HOPPING(1m, 30s)`,
			ins: []engine.Input{v(robot, 10*time.Second, 1), v(robot, 5*time.Second, 4), v(robot, 40*time.Second, 2),
				v(robot, 70*time.Second, 8), v(robot, 20*time.Second, 100)}, // 20s: both its windows closed
			late: 1,
			want: []string{"d1[-30s,30s) s=5", "d1[0s,1m0s) s=7", "d1[30s,1m30s) s=10", "d1[1m0s,2m0s) s=8"},
		},
		{
			name: "session windows grow with out-of-order inputs and close after the gap",
			stmt: `SELECT count(*) AS n, first(v) AS f, last(v) AS l FROM telemetry GROUP BY device, SESSION(30s)`,
			ins: []engine.Input{v(robot, 0, 1), v(robot, 20*time.Second, 2), v(robot, 10*time.Second, 3),
				v(robot, 100*time.Second, 4), v(robot, 5*time.Second, 9)},
			late: 1,
			want: []string{"d1[0s,50s) f=1 l=2 n=3", "d1[1m40s,2m10s) f=4 l=4 n=1"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			e, _, run, _ := setup(t, nil, newRule("w", c.stmt))
			for _, x := range c.ins {
				// One Handle per input, as single bus messages arrive.
				if err := e.Handle(ctx, []engine.Input{x}); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Flush(ctx, far); err != nil {
				t.Fatal(err)
			}
			if got := simple(run.results("w")); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
			if m := e.Metrics(tenant, "w"); m.Late != c.late || m.Evaluated != uint64(len(c.ins)) || m.Errors != 0 {
				t.Errorf("metrics %+v, want late %d", m, c.late)
			}
		})
	}
}

func TestWindowResultsCarryTheDevice(t *testing.T) {
	ctx := context.Background()
	e, _, run, _ := setup(t, nil, newRule("w", `SELECT avg(v) AS a, device.labels.line AS line, device.name AS name FROM telemetry
		GROUP BY device, TUMBLING(1m) HAVING a > 1`))
	if err := e.Handle(ctx, []engine.Input{in(robot, 0, map[string]any{"v": 2.0}), in(robot, time.Minute, map[string]any{"v": 0.0})}); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx, far); err != nil {
		t.Fatal(err)
	}
	got := run.results("w")
	if want := []string{"d1[0s,1m0s) a=2 line=A name=arm 1"}; !reflect.DeepEqual(simple(got), want) {
		t.Fatalf("got %q, want %q (the second window fails HAVING)", simple(got), want)
	}
}

func TestAnomalyFunctionInARule(t *testing.T) {
	ctx := context.Background()
	e, _, run, _ := setup(t, nil, newRule("z", `SELECT temp AS t FROM telemetry WHERE zscore(temp, 5) > 3`))
	var ins []engine.Input
	for i, x := range []float64{10, 11, 9, 10, 11, 10, 50, 10} {
		ins = append(ins, in(robot, time.Duration(i)*time.Second, map[string]any{"temp": x}))
		// d2 sends the spike early: its own state has not enough data.
		y := 10.0
		if i == 2 {
			y = 80
		}
		ins = append(ins, in(other, time.Duration(i)*time.Second, map[string]any{"temp": y}))
	}
	if err := e.Handle(ctx, ins); err != nil {
		t.Fatal(err)
	}
	if got, want := simple(run.results("z")), []string{"d1@6s t=50"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	tr := e.Trace(tenant, "z")
	if len(tr) != len(ins) {
		t.Fatalf("%d traces, want %d", len(tr), len(ins))
	}
	if tr[0].Skipped == "" || tr[0].Where != nil {
		t.Errorf("a warming-up input's trace should say so and not run WHERE: %+v", tr[0])
	}
	if z, ok := tr[12].Stateful["zscore(temp)"].(float64); !ok || z < 3 {
		t.Errorf("the spike's trace has zscore %v: %+v", tr[12].Stateful, tr[12])
	}
}

func TestFailingRuleLeavesTheOthersRunning(t *testing.T) {
	ctx := context.Background()
	good := newRule("good", `SELECT temp AS t FROM telemetry`)
	bad := newRule("bad", `SELECT temp AS t FROM telemetry WHERE temp > 'high'`)
	boom := newRule("boom", `SELECT temp AS t FROM telemetry`)
	e, src, run, _ := setup(t, nil, bad, boom, good)
	engine.SetProcessHook(e, func(r *tether.Rule, in *engine.Input) {
		if r.ID == "boom" && in.Values["temp"] == 2.0 {
			panic("the fake blew up")
		}
	})
	for i := range 4 {
		if err := e.Handle(ctx, []engine.Input{in(robot, time.Duration(i)*time.Second, map[string]any{"temp": float64(i)})}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(run.results("good")); n != 4 {
		t.Errorf("the good rule produced %d results, want 4", n)
	}
	if n := len(run.results("boom")); n != 2 {
		t.Errorf("the panicking rule produced %d results before it panicked, want 2", n)
	}
	st := src.Statuses()
	if len(st) != 2 {
		t.Fatalf("statuses %q, want one per failing rule", st)
	}
	slices.Sort(st)
	if !strings.HasPrefix(st[0], "bad 1 failing: ") || !strings.HasPrefix(st[1], "boom 1 failing: panic: the fake blew up") {
		t.Errorf("statuses %q", st)
	}
	if m := e.Metrics(tenant, "bad"); m.Errors != 4 || m.Evaluated != 4 || m.LastError == "" {
		t.Errorf("bad rule metrics %+v", m)
	}
	if m := e.Metrics(tenant, "boom"); m.Evaluated != 2 || m.Errors != 1 {
		t.Errorf("a panicked rule is not evaluated again: %+v", m)
	}
	if tr := e.Trace(tenant, "boom"); len(tr) != 3 || !strings.Contains(tr[2].Error, "panic") {
		t.Errorf("the panic is in the trace: %+v", tr)
	}
	// A new version gets a fresh start.
	boom2 := *boom
	boom2.Version = 2
	src.mu.Lock()
	src.rules = []*tether.Rule{bad, &boom2, good}
	src.mu.Unlock()
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Handle(ctx, []engine.Input{in(robot, 9*time.Second, map[string]any{"temp": 9.0})}); err != nil {
		t.Fatal(err)
	}
	if n := len(run.results("boom")); n != 3 {
		t.Errorf("the new version runs: %d results", n)
	}
}

func TestRunnerFailureKeepsResultsPending(t *testing.T) {
	ctx := context.Background()
	e, _, run, _ := setup(t, nil, newRule("r", `SELECT temp AS t FROM telemetry`))
	run.err = errors.New("outbox full")
	if err := e.Handle(ctx, []engine.Input{in(robot, 0, map[string]any{"temp": 1.0})}); err == nil {
		t.Fatal("Handle hid the runner's error")
	}
	if err := e.Checkpoint(ctx); err == nil {
		t.Fatal("Checkpoint succeeded with results not enqueued")
	}
	run.mu.Lock()
	run.err = nil
	run.mu.Unlock()
	if err := e.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(run.results("r")); n != 1 {
		t.Errorf("%d results after the runner recovered, want 1", n)
	}
}

// series returns inputs of two devices over a few minutes, in time order.
func series() []engine.Input {
	var ins []engine.Input
	for i := range 240 {
		at := time.Duration(i) * 2 * time.Second
		x := float64(i%17) + float64(i%5)/10
		if i == 150 {
			x = 90
		}
		ins = append(ins, in(robot, at, map[string]any{"temp": x}))
		ins = append(ins, in(other, at+time.Second, map[string]any{"temp": x * 2}))
	}
	return ins
}

var stateRules = []*tether.Rule{
	newRule("tumble", `SELECT avg(temp) AS a, stddev(temp) AS s, percentile(temp, 90) AS p90 FROM telemetry GROUP BY device, TUMBLING(1m) ALLOWED LATENESS 5s`),
	newRule("hop", `SELECT max(temp) AS m, count(*) AS n FROM telemetry GROUP BY device, HOPPING(2m, 30s)`),
	newRule("spike", `SELECT temp AS t FROM telemetry WHERE zscore(temp, 10) > 2`),
}

func TestStateSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	ins := series()

	whole, _, wholeRun, _ := setup(t, nil, stateRules...)
	for i := 0; i < len(ins); i += 10 {
		if err := whole.Handle(ctx, ins[i:i+10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := whole.Flush(ctx, far); err != nil {
		t.Fatal(err)
	}

	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	half := len(ins) / 2
	first, _, firstRun, _ := setup(t, db, stateRules...)
	for i := 0; i < half; i += 10 {
		if err := first.Handle(ctx, ins[i:i+10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// The process ends; a new engine starts on the same store.
	second, _, secondRun, _ := setup(t, db, stateRules...)
	for i := half; i < len(ins); i += 10 {
		if err := second.Handle(ctx, ins[i:i+10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := second.Flush(ctx, far); err != nil {
		t.Fatal(err)
	}
	for _, r := range stateRules {
		want := simple(wholeRun.results(r.ID))
		got := simple(append(firstRun.results(r.ID), secondRun.results(r.ID)...))
		if len(want) == 0 {
			t.Fatalf("rule %s produced nothing", r.ID)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("rule %s across a restart:\n%q\nuninterrupted:\n%q", r.ID, got, want)
		}
	}
}

func TestCheckpointDeletesDroppedVersions(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	r := newRule("tumble", `SELECT avg(temp) AS a FROM telemetry GROUP BY device, TUMBLING(1m)`)
	e, src, _, _ := setup(t, st, r)
	if err := e.Handle(ctx, []engine.Input{in(robot, 0, map[string]any{"temp": 1.0})}); err != nil {
		t.Fatal(err)
	}
	if err := e.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.m["t1/tumble/1"]; !ok {
		t.Fatalf("state not saved: %v", st.m)
	}
	src.mu.Lock()
	src.rules = nil
	src.mu.Unlock()
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if len(st.m) != 0 {
		t.Errorf("state of a disabled rule kept: %v", st.m)
	}
}

func TestBacktestEqualsLive(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tenant, Name: tenant, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*tether.Device{robot, other} {
		dd := *d
		dd.CreatedAt, dd.UpdatedAt = t0, t0
		dd.ProfileID = "" // no profile stored; the rules here do not read it
		if err := db.CreateDevice(ctx, &dd); err != nil {
			t.Fatal(err)
		}
	}
	// The same data as messages, with a quarantined point now and then.
	var msgs []tether.Message
	for i, x := range series() {
		m := tether.Message{ID: fmt.Sprintf("m%05d", i), TenantID: tenant, DeviceID: x.Device.ID, ReceivedAt: x.Time}
		m.Points = append(m.Points, tether.Point{Key: "temp", Time: x.Time, Kind: tether.KindNumber, Num: x.Values["temp"].(float64)})
		if i%7 == 0 {
			m.Points = append(m.Points, tether.Point{Key: "hum", Time: x.Time, Kind: tether.KindNumber, Num: 1e6, Quarantine: tether.QuarantineAboveMax})
		}
		msgs = append(msgs, m)
	}
	if _, err := db.WriteMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	rules := append(slices.Clone(stateRules),
		newRule("filter", `SELECT temp AS t, hum AS h, device.name AS name FROM telemetry WHERE temp > 15 OR hum > 0`),
		newRule("sess", `SELECT count(*) AS n, last(temp) AS l FROM telemetry GROUP BY device, SESSION(10s)`))

	live, _, run, _ := setup(t, nil, rules...)
	devs := map[string]*tether.Device{robot.ID: robot, other.ID: other}
	for _, m := range msgs {
		if err := live.Handle(ctx, engine.InputsFromMessage(m, devs[m.DeviceID])); err != nil {
			t.Fatal(err)
		}
	}
	if err := live.Flush(ctx, far); err != nil {
		t.Fatal(err)
	}

	bt := engine.New(&fakeRules{}, db, &fakeRunner{}, &memStore{}, engine.Options{Telemetry: db})
	for _, r := range rules {
		t.Run("rule "+r.ID+" gives the same results in a backtest", func(t *testing.T) {
			got, err := bt.Backtest(ctx, r, tenant, t0.Add(-time.Hour), t0.Add(time.Hour), []string{"d1", "d2"})
			if err != nil {
				t.Fatal(err)
			}
			want := run.results(r.ID)
			if len(want) == 0 {
				t.Fatal("no live results")
			}
			g, w := simple(got), simple(want)
			slices.Sort(g)
			slices.Sort(w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("backtest\n%q\nlive\n%q", g, w)
			}
		})
	}
}

func TestQuarantinedPointsAreNotSeen(t *testing.T) {
	m := tether.Message{ID: "m1", TenantID: tenant, DeviceID: "d1", Points: []tether.Point{
		{Key: "temp", Time: t0, Kind: tether.KindNumber, Num: 1e9, Quarantine: tether.QuarantineAboveMax},
		{Key: "hum", Time: t0, Kind: tether.KindNumber, Num: 40},
		{Key: "temp", Time: t0.Add(time.Second), Kind: tether.KindNumber, Num: 21},
		{Key: "door", Time: t0.Add(2 * time.Second), Kind: tether.KindBool, Num: 1, Quarantine: tether.QuarantineType},
	}}
	ins := engine.InputsFromMessage(m, robot)
	if len(ins) != 2 {
		t.Fatalf("%d inputs, want 2 (one per time with an accepted point): %+v", len(ins), ins)
	}
	if !reflect.DeepEqual(ins[0].Values, map[string]any{"hum": 40.0}) || !reflect.DeepEqual(ins[1].Values, map[string]any{"temp": 21.0}) {
		t.Errorf("inputs %+v %+v", ins[0].Values, ins[1].Values)
	}
	ctx := context.Background()
	e, _, run, _ := setup(t, nil, newRule("all", `SELECT * FROM telemetry`))
	if err := e.Handle(ctx, ins); err != nil {
		t.Fatal(err)
	}
	if got, want := simple(run.results("all")), []string{"d1@0s hum=40", "d1@1s temp=21"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDryRunTrace(t *testing.T) {
	e, _, _, _ := setup(t, nil)
	r := newRule("dry", `SELECT temp * 2 AS d FROM telemetry WHERE temp > 20 HAVING d < 100`)
	res, traces, err := e.DryRun(r, []engine.Input{
		{Device: robot, Time: t0, Values: map[string]any{"temp": 10.0}},
		{Device: robot, Time: t0.Add(time.Second), Values: map[string]any{"temp": 30.0}},
		{Device: robot, Time: t0.Add(2 * time.Second), Values: map[string]any{"temp": 60.0}},
		{Device: robot, Time: t0.Add(3 * time.Second), Values: map[string]any{"temp": "hot"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := simple(res), []string{"d1@1s d=60"}; !reflect.DeepEqual(got, want) {
		t.Errorf("results %q, want %q", got, want)
	}
	if len(traces) != 4 {
		t.Fatalf("%d traces", len(traces))
	}
	for i, c := range []struct {
		name         string
		where, have  *bool
		projections  map[string]any
		results      int
		errSubstring string
	}{
		{"WHERE turns the first input down", ptr(false), nil, nil, 0, ""},
		{"the second passes WHERE and HAVING", ptr(true), ptr(true), map[string]any{"d": 60.0}, 1, ""},
		{"the third fails HAVING", ptr(true), ptr(false), map[string]any{"d": 120.0}, 0, ""},
		{"the fourth errors on a string", nil, nil, nil, 0, "WHERE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := traces[i]
			if !reflect.DeepEqual(tr.Where, c.where) || !reflect.DeepEqual(tr.Having, c.have) || tr.Results != c.results {
				t.Errorf("trace %+v", tr)
			}
			if c.projections != nil && !reflect.DeepEqual(tr.Projections, c.projections) {
				t.Errorf("projections %v, want %v", tr.Projections, c.projections)
			}
			if (c.errSubstring == "") != (tr.Error == "") || !strings.Contains(tr.Error, c.errSubstring) {
				t.Errorf("error %q, want one with %q", tr.Error, c.errSubstring)
			}
			if tr.Input.DeviceID != "d1" || tr.Input.Kind != engine.KindTelemetry {
				t.Errorf("input %+v", tr.Input)
			}
		})
	}

	t.Run("a windowed dry run closes its windows at the end and shows the aggregates", func(t *testing.T) {
		r := newRule("dryw", `SELECT avg(temp) AS a FROM telemetry GROUP BY device, TUMBLING(1m) HAVING a > 1`)
		res, traces, err := e.DryRun(r, []engine.Input{
			{Device: robot, Time: t0, Values: map[string]any{"temp": 1.0}},
			{Device: robot, Time: t0.Add(time.Second), Values: map[string]any{"temp": 3.0}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := simple(res), []string{"d1[0s,1m0s) a=2"}; !reflect.DeepEqual(got, want) {
			t.Errorf("results %q, want %q", got, want)
		}
		last := traces[len(traces)-1]
		if last.Input.Kind != "end" || len(last.Windows) != 1 || last.Windows[0].Aggregates["avg(temp)"] != 2.0 ||
			!reflect.DeepEqual(last.Windows[0].Having, ptr(true)) || traces[0].GroupKey != "d1" {
			t.Errorf("traces %+v", traces)
		}
	})

	t.Run("a statement that does not compile is an error", func(t *testing.T) {
		if _, _, err := e.DryRun(newRule("x", `SELECT FROM`), nil); err == nil {
			t.Error("no error")
		}
	})
}

func ptr(b bool) *bool { return &b }

func TestMetricsAndTraceBounds(t *testing.T) {
	ctx := context.Background()
	e, _, _, _ := setup(t, nil, newRule("m", `SELECT temp AS t FROM telemetry WHERE temp > 10 HAVING t < 50`))
	var ins []engine.Input
	for i := range 60 {
		ins = append(ins, in(robot, time.Duration(i)*time.Second, map[string]any{"temp": float64(i)}))
	}
	ins = append(ins, in(robot, time.Hour, map[string]any{"temp": "hot"}))
	if err := e.Handle(ctx, ins); err != nil {
		t.Fatal(err)
	}
	m := e.Metrics(tenant, "m")
	// 61 evaluated; temp 11..59 match (49); results 11..49 (39); one error.
	if m.Evaluated != 61 || m.Matched != 49 || m.Results != 39 || m.Errors != 1 {
		t.Errorf("metrics %+v", m)
	}
	if m.LatencyP50 <= 0 || m.LatencyP99 < m.LatencyP50 {
		t.Errorf("latency p50 %s p99 %s", m.LatencyP50, m.LatencyP99)
	}
	tr := e.Trace(tenant, "m")
	if len(tr) != 50 || tr[0].Input.Values["temp"] != 11.0 || tr[49].Error == "" {
		t.Errorf("trace keeps the last 50: %d, first %v, last %+v", len(tr), tr[0].Input.Values, tr[49])
	}
	if got := e.Metrics(tenant, "nope"); got != (engine.Metrics{}) {
		t.Errorf("unknown rule metrics %+v", got)
	}
}

func TestSourcesAndTopics(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"factory/+/temp", "factory/a/temp", true},
		{"factory/+/temp", "factory/a/hum", false},
		{"factory/#", "factory", true},
		{"factory/#", "factory/a/b", true},
		{"factory/+", "factory/a/b", false},
		{"#", "x/y", true},
		{"a/b", "a/b", true},
		{"a/b", "a", false},
	} {
		if got := engine.TopicMatches(c.filter, c.topic); got != c.want {
			t.Errorf("%s matches %s: %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
	ctx := context.Background()
	e, _, run, _ := setup(t, nil,
		newRule("mq", `SELECT payload.temp AS t, topic AS topic FROM 'factory/+/temp' WHERE payload.temp > 1`),
		newRule("pres", `SELECT event.status AS s FROM presence WHERE event.status = 'offline'`))
	ev, err := engine.InputFromEvent(tenant, engine.KindPresence, robot, t0, []byte(`{"status":"offline","reason":"lost"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Handle(ctx, []engine.Input{
		{Kind: engine.KindMQTT, TenantID: tenant, Topic: "factory/a/temp", Time: t0, Payload: []byte(`{"temp":5}`)},
		{Kind: engine.KindMQTT, TenantID: tenant, Topic: "factory/a/hum", Time: t0, Payload: []byte(`{"temp":5}`)},
		ev,
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := simple(run.results("mq")), []string{"@0s t=5 topic=factory/a/temp"}; !reflect.DeepEqual(got, want) {
		t.Errorf("mqtt: got %q, want %q", got, want)
	}
	if got, want := simple(run.results("pres")), []string{"d1@0s s=offline"}; !reflect.DeepEqual(got, want) {
		t.Errorf("presence: got %q, want %q", got, want)
	}
}

func TestEnvironmentNestsDottedKeys(t *testing.T) {
	e := engine.Env(in(robot, 0, map[string]any{"fan.rpm": 900.0, "fan.speed.max": 3.0, "temp": 1.0, "device": "x", "a": 1.0, "a.b": 2.0}))
	if fan, ok := e["fan"].(map[string]any); !ok || fan["rpm"] != 900.0 || fan["speed"].(map[string]any)["max"] != 3.0 {
		t.Errorf("fan %v", e["fan"])
	}
	if e["a"] != 1.0 {
		t.Errorf("a plain value wins over a nested one: %v", e["a"])
	}
	if d, ok := e["device"].(map[string]any); !ok || d["id"] != "d1" {
		t.Errorf("a value named device does not hide the device: %v", e["device"])
	}
	if e["values"].(map[string]any)["device"] != "x" {
		t.Error("the value stays reachable through values")
	}
}

// alertRecorder records met = false signals.
type alertRecorder struct {
	mu  sync.Mutex
	got []string
}

func (a *alertRecorder) Signal(_ context.Context, tenant, ruleID, deviceID string, act tether.RuleAction, met bool, at time.Time, _ map[string]any) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, fmt.Sprintf("%s %s %s %v %s", ruleID, deviceID, act.AlertType, met, at.Sub(t0)))
	return nil
}

func TestAlertConditionEnds(t *testing.T) {
	ctx := context.Background()
	rec := &alertRecorder{}
	src := &fakeRules{rules: []*tether.Rule{newRule("hot", `SELECT temp AS t FROM telemetry WHERE temp > 30`,
		tether.RuleAction{Type: tether.ActionAlert, AlertType: "overheat", Severity: "warning"})}}
	run := &fakeRunner{}
	e := engine.New(src, nil, run, &memStore{}, engine.Options{Alerts: rec})
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	var ins []engine.Input
	for i, x := range []float64{20, 35, 36, 25, 24, 40} {
		ins = append(ins, in(robot, time.Duration(i)*time.Second, map[string]any{"temp": x}))
	}
	if err := e.Handle(ctx, ins); err != nil {
		t.Fatal(err)
	}
	if n := len(run.results("hot")); n != 3 {
		t.Errorf("%d results (met), want 3", n)
	}
	if want := []string{"hot d1 overheat false 3s"}; !reflect.DeepEqual(rec.got, want) {
		t.Errorf("signals %q, want %q: once, when the condition stopped", rec.got, want)
	}
}

func TestStatefulCallOnWindowResults(t *testing.T) {
	for _, c := range []struct {
		name, stmt string
		want       []string
	}{
		{"rate over window averages skips the first window, which has no previous one",
			`SELECT avg(v) AS a, rate(avg(v)) AS r FROM telemetry GROUP BY device, TUMBLING(1m)`,
			[]string{"d1[1m0s,2m0s) a=2 r=0.01666666667", "d1[2m0s,3m0s) a=4 r=0.03333333333"}},
		{"a call in HAVING may read a projection by name",
			`SELECT avg(v) AS a FROM telemetry GROUP BY device, TUMBLING(1m) HAVING rate(a) > 0.02`,
			[]string{"d1[2m0s,3m0s) a=4"}},
		{"a trend toward a threshold gives the time left",
			`SELECT avg(v) AS a, time_to_threshold(avg(v), 6, 3600) AS ttt FROM telemetry GROUP BY device, TUMBLING(1m) HAVING time_to_threshold(avg(v), 6, 3600) < 200`,
			// Least squares through (60s, 1), (120s, 2), (180s, 4): slope
			// 0.025/s, 3.8333 at 180s, so 6 is 86.67s away; at 120s it
			// was 240s away, and at 60s one point makes no line.
			[]string{"d1[2m0s,3m0s) a=4 ttt=86.66666667"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			e, _, run, _ := setup(t, nil, newRule("s", c.stmt))
			var ins []engine.Input
			for i, x := range []float64{1, 2, 4} {
				ins = append(ins, in(robot, time.Duration(i)*time.Minute, map[string]any{"v": x}))
			}
			if err := e.Handle(ctx, ins); err != nil {
				t.Fatal(err)
			}
			if err := e.Flush(ctx, far); err != nil {
				t.Fatal(err)
			}
			got := rounded(run.results("s"))
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
			if m := e.Metrics(tenant, "s"); m.Errors != 0 {
				t.Errorf("errors: %+v", m)
			}
		})
	}
}
