package engine

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/tether-iot/tether"
)

// DryRun runs a rule (saved or not) on sample inputs with a fresh
// program, in the order given, and returns its results and one trace per
// input of the rule's source. An input without a Kind is taken to be of
// the rule's source, without a TenantID of the rule's tenant. At the end
// every open window is closed, as if the stream ended, and the results of
// those windows are in one last trace whose input kind is "end". A
// statement that does not compile is an error (a *lang.Error inside, with
// the position); an evaluation error is in the input's trace, not
// returned. Nothing is enqueued, no state is kept, no metric counted.
func (e *Engine) DryRun(r *tether.Rule, ins []Input) (results []tether.RuleResult, traces []Trace, err error) {
	if len(ins) > e.o.MaxDryRunInputs {
		return nil, nil, tether.Errorf(tether.EINVALID, "a dry run takes at most %d inputs, not %d", e.o.MaxDryRunInputs, len(ins))
	}
	p, err := Compile(r, e.o.Program)
	if err != nil {
		return nil, nil, err
	}
	now := e.o.Now()
	defer func() {
		if v := recover(); v != nil {
			e.log.Error("rules engine: dry run panicked", "rule", r.ID, "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("dry run of rule %s: panic: %v", r.ID, v)
		}
	}()
	for _, in := range ins {
		if in.Kind == "" {
			in.Kind = p.q.Source.Kind
		}
		if in.TenantID == "" {
			in.TenantID = r.TenantID
		}
		if !p.matches(&in) {
			continue
		}
		tr := Trace{At: now, Input: traceInput(&in)}
		res, err := p.process(&in, env(&in, deviceEnv(in.Device)), &tr)
		if err != nil {
			tr.Error = err.Error()
		}
		tr.Results = len(res)
		results = append(results, res...)
		traces = append(traces, tr)
	}
	if p.win != nil {
		tr := Trace{At: now, Input: TraceInput{Kind: "end"}}
		res, err := p.flushAll(&tr)
		if err != nil {
			tr.Error = err.Error()
		}
		tr.Results = len(res)
		results = append(results, res...)
		traces = append(traces, tr)
	}
	return results, traces, nil
}

// maxBacktestDevices bounds the devices one backtest reads.
const maxBacktestDevices = 1000

// backtestPage is how many points of one key a backtest reads per query.
const backtestPage = 10_000

// Backtest runs a telemetry rule over the stored telemetry of devices of
// tenant from from to to (half-open) and returns the results it would
// have produced. The inputs are rebuilt as live evaluation sees them —
// one per device and point time, with the values of that time — and run,
// in time order (devices in the order given for equal times), through a
// fresh Program: the same code as live evaluation, so a backtest gives
// what the live stream gave on the same data. Open windows are closed at
// the end. What it cannot rebuild: the message ID (message_id is empty),
// inputs of one message time that arrived as two messages (they are one
// input here), and the device as it was then (its current name, profile
// and labels are used). Quarantined points are not stored as telemetry,
// so rules never see them here either.
func (e *Engine) Backtest(ctx context.Context, r *tether.Rule, tenant string, from, to time.Time, devices []string) (results []tether.RuleResult, err error) {
	switch {
	case e.o.Telemetry == nil:
		return nil, tether.Errorf(tether.EUNAVAILABLE, "backtest: no telemetry store")
	case len(devices) == 0:
		return nil, tether.Errorf(tether.EINVALID, "backtest: name at least one device")
	case len(devices) > maxBacktestDevices:
		return nil, tether.Errorf(tether.EINVALID, "backtest: at most %d devices, not %d", maxBacktestDevices, len(devices))
	case from.IsZero() || to.IsZero() || !from.Before(to):
		return nil, tether.Errorf(tether.EINVALID, "backtest: the time range must have a start before its end")
	}
	rr := *r
	rr.TenantID = tenant
	p, err := Compile(&rr, e.o.Program)
	if err != nil {
		return nil, err
	}
	if p.q.Source.Kind != KindTelemetry {
		return nil, tether.Errorf(tether.EINVALID, "backtest: only telemetry rules can be backtested, this one reads %s", p.q.Source.Kind)
	}
	var ins []Input
	points := 0
	for _, id := range devices {
		d, err := e.devices.Device(ctx, tenant, id)
		if err != nil {
			return nil, fmt.Errorf("backtest: %w", err)
		}
		dins, n, err := e.deviceInputs(ctx, d, from, to, e.o.MaxBacktestPoints-points)
		if err != nil {
			return nil, err
		}
		points += n
		ins = append(ins, dins...)
	}
	// Stable: for one time, devices keep the order given.
	slices.SortStableFunc(ins, func(a, b Input) int { return a.Time.Compare(b.Time) })

	defer func() {
		if v := recover(); v != nil {
			e.log.Error("rules engine: backtest panicked", "rule", r.ID, "panic", v, "stack", string(debug.Stack()))
			results, err = nil, fmt.Errorf("backtest of rule %s: panic: %v", r.ID, v)
		}
	}()
	add := func(res []tether.RuleResult) error {
		if len(results)+len(res) > e.o.MaxBacktestResults {
			return tether.Errorf(tether.EINVALID, "backtest: more than %d results; narrow the range or the devices", e.o.MaxBacktestResults)
		}
		results = append(results, res...)
		return nil
	}
	devEnvs := map[*tether.Device]map[string]any{}
	for i := range ins {
		in := &ins[i]
		de, ok := devEnvs[in.Device]
		if !ok {
			de = deviceEnv(in.Device)
			devEnvs[in.Device] = de
		}
		res, err := p.process(in, env(in, de), nil)
		if err != nil {
			return nil, fmt.Errorf("backtest: input of device %s at %s: %w", in.deviceID(), in.Time.Format(time.RFC3339Nano), err)
		}
		if err := add(res); err != nil {
			return nil, err
		}
	}
	res, err := p.flushAll(nil)
	if err != nil {
		return nil, fmt.Errorf("backtest: closing the last windows: %w", err)
	}
	if err := add(res); err != nil {
		return nil, err
	}
	return results, nil
}

// deviceInputs reads a device's raw points in [from, to), at most limit of
// them, and returns them as one input per point time, and the number of
// points read.
func (e *Engine) deviceInputs(ctx context.Context, d *tether.Device, from, to time.Time, limit int) ([]Input, int, error) {
	byTime := map[int64]*Input{}
	points := 0
	q := tether.TelemetryQuery{TenantID: d.TenantID, DeviceID: d.ID, From: from, To: to, Limit: backtestPage}
	for {
		series, err := e.o.Telemetry.Telemetry(ctx, q)
		if err != nil {
			return nil, 0, fmt.Errorf("backtest: %w", err)
		}
		// Keys that filled a page have more: read them again from after
		// their last point.
		var more []string
		var next time.Time
		for _, s := range series {
			for _, smp := range s.Samples {
				points++
				if points > limit {
					return nil, 0, tether.Errorf(tether.EINVALID, "backtest: more points than the limit (%d); narrow the range or the devices", e.o.MaxBacktestPoints)
				}
				in := byTime[smp.Time.UnixNano()]
				if in == nil {
					in = &Input{Kind: KindTelemetry, TenantID: d.TenantID, Device: d, Time: smp.Time, Values: map[string]any{}}
					byTime[smp.Time.UnixNano()] = in
				}
				in.Values[s.Key] = smp.Value
			}
			if len(s.Samples) == q.Limit {
				more = append(more, s.Key)
				last := s.Samples[len(s.Samples)-1].Time.Add(time.Nanosecond)
				if next.IsZero() || last.Before(next) {
					next = last
				}
			}
		}
		if len(more) == 0 {
			break
		}
		// Re-reading from the earliest continuation point may return
		// points of other keys in more already read; the map by time
		// merges them to the same values.
		q.Keys, q.From = more, next
		points -= countFrom(series, more, next)
	}
	ins := make([]Input, 0, len(byTime))
	for _, in := range byTime {
		ins = append(ins, *in)
	}
	slices.SortFunc(ins, func(a, b Input) int { return a.Time.Compare(b.Time) })
	return ins, points, nil
}

// countFrom counts the points of keys at or after t, which the next page
// reads again.
func countFrom(series []tether.Series, keys []string, t time.Time) int {
	n := 0
	for _, s := range series {
		if !slices.Contains(keys, s.Key) {
			continue
		}
		for _, smp := range s.Samples {
			if !smp.Time.Before(t) {
				n++
			}
		}
	}
	return n
}
