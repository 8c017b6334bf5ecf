package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/alert"
	"github.com/tether-iot/tether/internal/bus"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/rules"
	"github.com/tether-iot/tether/internal/rules/action"
	"github.com/tether-iot/tether/internal/rules/engine"
	"github.com/tether-iot/tether/internal/rules/lang"
	"github.com/tether-iot/tether/internal/telemetry"
)

// rulesConsumer is the durable bus consumer of the rules engine; nodes
// sharing a bus share its work.
const rulesConsumer = "rules"

// checkpointEvery and checkpointAt are when the engine's state is saved
// and the telemetry it has seen acknowledged: every second, or sooner once
// that many bus messages wait (well inside the bus's 30 s ack wait).
const (
	checkpointEvery = time.Second
	checkpointAt    = 500
)

// ruleRuntime runs the rules on the live stream: the engine evaluates
// each telemetry message of the bus, the action runner works the outbox
// of results. Telemetry is acknowledged to the bus only after a
// checkpoint has saved the engine's state and its results' actions, so a
// crash redelivers what the saved state has not seen.
type ruleRuntime struct {
	log     *slog.Logger
	engine  *engine.Engine
	devices *deviceCache

	mu      sync.Mutex // serialises Handle, Flush and Checkpoint with the acks
	pending []bus.Msg

	// mqtt carries devices' MQTT messages (other than telemetry) from the
	// gateway's packet loops to the engine; full, they are dropped and
	// counted, so a flood never slows the broker.
	mqtt        chan engine.Input
	mqttDropped atomic.Uint64
	mqttBytes   atomic.Int64
	// events carries device events and other nodes' rule changes from
	// the bus subscription to the engine, in the same way.
	events        chan busEvent
	eventsDropped atomic.Uint64

	consumption *bus.Consumption
	stop        context.CancelFunc
	wg          sync.WaitGroup
}

// startRules builds the alert and rules services, the action runner and
// the engine, and starts consuming telemetry.
func (m *Main) startRules(ctx context.Context) error {
	s, log := m.services, m.log
	rt := &ruleRuntime{log: log.With("component", "rules-engine"), devices: newDeviceCache(m.Registry, 5*time.Second),
		mqtt: make(chan engine.Input, 4096), events: make(chan busEvent, 4096)}
	s.Alerts = alert.New(m.DB, m.Bus, alert.Options{Logger: log.With("component", "alert")})
	s.Rules = rules.New(m.DB, ruleEvents{m.Bus, rt}, rules.Options{Logger: log.With("component", "rules")})
	s.Actions = action.New(m.DB, action.Sinks{
		Republish: func(ctx context.Context, tenant, topic string, payload []byte) error {
			return m.MQTT.PublishRuleResult(tenant, topic, payload)
		},
		NATS: func(ctx context.Context, subject string, payload []byte) error {
			return m.Bus.Publish(subject, payload)
		},
		Store:   m.storeDerived,
		Command: s.ruleCommand,
		Alert:   s.alertSignal,
	}, action.Options{Logger: log.With("component", "actions")})
	rt.engine = engine.New(s.Rules, m.Registry, s.Actions, m.DB, engine.Options{
		Logger: rt.log, Telemetry: m.DB, Alerts: alerter{s.Alerts},
	})
	if err := rt.engine.Reload(ctx); err != nil {
		return fmt.Errorf("rules engine: %w", err)
	}
	s.ruleRuntime = rt

	var runCtx context.Context
	runCtx, rt.stop = context.WithCancel(context.Background())
	for _, run := range []func(context.Context){s.Alerts.Run, s.Actions.Run, rt.tick, rt.mqttLoop, rt.eventLoop} {
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			run(runCtx)
		}()
	}
	c, err := m.Bus.ConsumeTelemetry(ctx, rulesConsumer, 4*checkpointAt, rt.handle)
	if err != nil {
		return err
	}
	rt.consumption = c
	return nil
}

// handle evaluates one bus message (a message or a batch of them) and
// holds its acknowledgement for the next checkpoint.
func (rt *ruleRuntime) handle(msg bus.Msg) {
	m, err := telemetry.UnmarshalMessage(msg.Data())
	if err != nil {
		rt.log.Error("rules: unreadable telemetry on the bus; skipped", "err", err)
		_ = msg.Ack()
		return
	}
	ctx := context.Background()
	d, err := rt.devices.get(ctx, m.TenantID, m.DeviceID)
	if err != nil {
		// A device deleted since: its telemetry has no rules to meet.
		_ = msg.Ack()
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err := rt.engine.Handle(ctx, engine.InputsFromMessage(m, d)); err != nil {
		rt.log.Warn("rules: evaluation", "err", err)
	}
	rt.pending = append(rt.pending, msg)
	if len(rt.pending) >= checkpointAt {
		rt.checkpointLocked(ctx)
	}
}

// checkpointLocked saves the engine's state and acknowledges what it has
// seen; on failure the messages stay unacknowledged and are tried again
// at the next checkpoint (or redelivered after a crash).
func (rt *ruleRuntime) checkpointLocked(ctx context.Context) {
	if err := rt.engine.Checkpoint(ctx); err != nil {
		rt.log.Warn("rules: checkpoint", "err", err)
		return
	}
	for _, msg := range rt.pending {
		_ = msg.Ack()
	}
	rt.pending = rt.pending[:0]
}

// tick closes the windows of silent devices, checkpoints, and picks up
// rule changes, until ctx ends.
func (rt *ruleRuntime) tick(ctx context.Context) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			rt.mu.Lock()
			if err := rt.engine.Flush(ctx, now); err != nil {
				rt.log.Warn("rules: flush", "err", err)
			}
			rt.checkpointLocked(ctx)
			rt.mu.Unlock()
			if n%30 == 29 {
				rt.reload(ctx) // in case a change event was missed
			}
		}
	}
}

// close stops consuming, saves the state and acknowledges what was seen,
// then stops the loops.
func (rt *ruleRuntime) close(ctx context.Context) {
	if rt == nil {
		return
	}
	if rt.consumption != nil {
		rt.consumption.Stop()
	}
	rt.mu.Lock()
	rt.checkpointLocked(ctx)
	rt.mu.Unlock()
	if rt.stop != nil {
		rt.stop()
	}
	rt.wg.Wait()
}

// storeDerived stores a rule's result as telemetry of the device: each
// numeric, boolean or string value under its name. It is written straight
// to the store, not through the bus, so that rules do not read their own
// results back (a rule storing what it matches would feed itself for
// ever); the delivery's ID is the message ID, so a retried delivery is
// stored once.
func (m *Main) storeDerived(ctx context.Context, tenant, deviceID string, t time.Time, values map[string]any) error {
	if _, err := m.Registry.Device(ctx, tenant, deviceID); err != nil {
		return err
	}
	id, ok := action.DeliveryID(ctx)
	if !ok {
		return fmt.Errorf("derived values: no delivery id")
	}
	msg := tether.Message{ID: "rule-" + id, TenantID: tenant, DeviceID: deviceID, ReceivedAt: time.Now()}
	for k, v := range values {
		p := tether.Point{Key: k, Time: t}
		switch v := v.(type) {
		case float64:
			p.Kind, p.Num = tether.KindNumber, v
		case bool:
			p.Kind = tether.KindBool
			if v {
				p.Num = 1
			}
		case string:
			p.Kind, p.Str = tether.KindString, v
		default:
			continue
		}
		msg.Points = append(msg.Points, p)
	}
	if len(msg.Points) == 0 {
		return nil
	}
	_, err := m.DB.WriteMessages(ctx, []tether.Message{msg})
	return err
}

// ruleCommand sends a rule's command through the same guardrails as an
// API call, with the delivery's ID as the idempotency key, so a retried
// delivery sends the command once.
func (s *services) ruleCommand(ctx context.Context, tenant, deviceID, name string, params json.RawMessage, source string) error {
	key, _ := action.DeliveryID(ctx)
	_, _, err := s.Commands.Send(ctx, tenant, deviceID, tether.CommandRequest{
		Name: name, Params: params, Source: source, Role: tether.RoleAdmin, IdempotencyKey: key,
	})
	return err
}

func (s *services) alertSignal(ctx context.Context, tenant, ruleID, deviceID string, a tether.RuleAction, met bool, t time.Time, values map[string]any) error {
	_, err := s.Alerts.Signal(ctx, tenant, ruleID, deviceID, a, met, t, values)
	return err
}

// alerter adapts the alert service to the engine.
type alerter struct{ *alert.Service }

func (a alerter) Signal(ctx context.Context, tenant, ruleID, deviceID string, ra tether.RuleAction, met bool, t time.Time, values map[string]any) error {
	_, err := a.Service.Signal(ctx, tenant, ruleID, deviceID, ra, met, t, values)
	return err
}

// deviceCache keeps the devices the engine sees for a while: rules read
// their name, profile and labels for every message.
type deviceCache struct {
	reg interface {
		Device(ctx context.Context, tenant, id string) (*tether.Device, error)
	}
	ttl time.Duration

	mu sync.Mutex
	m  map[string]cachedDevice
}

type cachedDevice struct {
	d  *tether.Device
	at time.Time
}

func newDeviceCache(reg interface {
	Device(ctx context.Context, tenant, id string) (*tether.Device, error)
}, ttl time.Duration) *deviceCache {
	return &deviceCache{reg: reg, ttl: ttl, m: map[string]cachedDevice{}}
}

// maxCachedDevices bounds the cache; past it, it starts again empty.
const maxCachedDevices = 100_000

func (c *deviceCache) get(ctx context.Context, tenant, id string) (*tether.Device, error) {
	key := tenant + "/" + id
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl {
		return e.d, nil
	}
	d, err := c.reg.Device(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= maxCachedDevices {
		c.m = map[string]cachedDevice{}
	}
	c.m[key] = cachedDevice{d: d, at: now}
	c.mu.Unlock()
	return d, nil
}

// deviceMessage queues a device's MQTT message for the rules that read
// MQTT topics, without blocking the gateway.
func (rt *ruleRuntime) deviceMessage(d *tether.Device, topic string, payload []byte) {
	if rt.mqttBytes.Load()+int64(len(payload)) > maxQueuedMQTTBytes {
		rt.dropMQTT()
		return
	}
	in := engine.Input{Kind: engine.KindMQTT, TenantID: d.TenantID, Device: d, Time: time.Now(),
		Topic: topic, Payload: bytes.Clone(payload)}
	rt.mqttBytes.Add(int64(len(payload)))
	select {
	case rt.mqtt <- in:
	default:
		rt.mqttBytes.Add(-int64(len(payload)))
		rt.dropMQTT()
	}
}

// maxQueuedMQTTBytes bounds the payloads waiting for the engine.
const maxQueuedMQTTBytes = 16 << 20

func (rt *ruleRuntime) dropMQTT() {
	if rt.mqttDropped.Add(1)%1000 == 1 {
		rt.log.Warn("rules: MQTT messages dropped, the engine is behind", "dropped", rt.mqttDropped.Load())
	}
}

// mqttLoop evaluates the queued MQTT messages until ctx ends.
func (rt *ruleRuntime) mqttLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-rt.mqtt:
			rt.mqttBytes.Add(-int64(len(in.Payload)))
			rt.mu.Lock()
			if err := rt.engine.Handle(ctx, []engine.Input{in}); err != nil {
				rt.log.Warn("rules: evaluation", "err", err)
			}
			rt.mu.Unlock()
		}
	}
}

// reload picks up the rules as they are now.
func (rt *ruleRuntime) reload(ctx context.Context) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.engine == nil {
		return
	}
	if err := rt.engine.Reload(ctx); err != nil {
		rt.log.Warn("rules: reload", "err", err)
	}
}

// ruleEvents announces rule changes on the bus (other nodes reload on the
// event) and reloads this node's engine before the change is answered,
// so that a rule saved over the API applies to the next message.
type ruleEvents struct {
	bus *bus.Bus
	rt  *ruleRuntime
}

func (e ruleEvents) PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error {
	err := e.bus.PublishEvent(ctx, tenant, kind, device, data)
	if !statusChange(data) {
		e.rt.reload(ctx)
	}
	return err
}

// statusChange reports whether a rule event is the engine's own report of
// a rule's status, which needs no reload: the engine made it, while
// holding the runtime's lock, and a reload then would wait for that lock
// forever.
func statusChange(data []byte) bool {
	var ev rules.Event
	return json.Unmarshal(data, &ev) == nil && ev.Change == rules.ChangeStatus
}

// event queues a device event from the bus (presence, shadow, command,
// alert) for the rules that read that source, or a rule change made on
// another node for a reload. It never blocks: it runs on the node's one
// event subscription, which also carries shadow deltas and app events.
func (rt *ruleRuntime) event(tenant, kind, device string, data []byte) {
	switch kind {
	case engine.KindPresence, engine.KindShadow, engine.KindCommand, engine.KindAlert:
	case rules.EventKind:
		if statusChange(data) {
			return
		}
	default:
		return
	}
	select {
	case rt.events <- busEvent{tenant, kind, device, data}:
	default:
		if rt.eventsDropped.Add(1)%1000 == 1 {
			rt.log.Warn("rules: device events dropped, the engine is behind", "dropped", rt.eventsDropped.Load())
		}
	}
}

type busEvent struct {
	tenant, kind, device string
	data                 []byte
}

// eventLoop evaluates the queued events until ctx ends. Events come over
// core NATS from every node: best effort, unlike telemetry.
func (rt *ruleRuntime) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-rt.events:
			if ev.kind == rules.EventKind {
				rt.reload(ctx) // a change made on another node
				continue
			}
			d, err := rt.devices.get(ctx, ev.tenant, ev.device)
			if err != nil {
				continue
			}
			in, err := engine.InputFromEvent(ev.tenant, ev.kind, d, time.Now(), ev.data)
			if err != nil {
				rt.log.Debug("rules: unreadable event", "kind", ev.kind, "device", ev.device, "err", err)
				continue
			}
			rt.mu.Lock()
			if err := rt.engine.Handle(ctx, []engine.Input{in}); err != nil {
				rt.log.Warn("rules: evaluation", "err", err)
			}
			rt.mu.Unlock()
		}
	}
}

// ruleEngineAPI gives the HTTP API the engine's development loop: dry
// runs, backtests, metrics, traces and dead letters.
type ruleEngineAPI struct{ m *Main }

func (a ruleEngineAPI) inputs(ctx context.Context, tenant string, in []httpapi.RuleInput) ([]engine.Input, error) {
	out := make([]engine.Input, 0, len(in))
	for _, i := range in {
		e := engine.Input{TenantID: tenant, Time: i.Time, Values: i.Values, Topic: i.Topic, Payload: i.Payload}
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		if i.Device != "" {
			d, err := a.m.Registry.Device(ctx, tenant, i.Device)
			if err != nil {
				return nil, err
			}
			e.Device = d
		}
		if i.Topic != "" {
			e.Kind = engine.KindMQTT
		}
		out = append(out, e)
	}
	return out, nil
}

// describe says what each action of r would do with each result.
func (a ruleEngineAPI) describe(r *tether.Rule, results []tether.RuleResult) []string {
	var out []string
	for _, res := range results {
		for _, act := range r.Actions {
			d, err := a.m.services.Actions.Describe(r, act, res)
			if err != nil {
				d = act.Type + ": " + err.Error()
			}
			out = append(out, d)
		}
	}
	return out
}

func (a ruleEngineAPI) DryRun(ctx context.Context, tenant string, r *tether.Rule, in []httpapi.RuleInput) ([]tether.RuleResult, any, []string, error) {
	ins, err := a.inputs(ctx, tenant, in)
	if err != nil {
		return nil, nil, nil, err
	}
	r.TenantID = tenant
	results, traces, err := a.m.services.ruleRuntime.engine.DryRun(r, ins)
	if err != nil {
		return nil, nil, nil, positioned(err)
	}
	return results, traces, a.describe(r, results), nil
}

func (a ruleEngineAPI) Backtest(ctx context.Context, tenant string, r *tether.Rule, from, to time.Time, devices []string) ([]tether.RuleResult, []string, error) {
	r.TenantID = tenant
	results, err := a.m.services.ruleRuntime.engine.Backtest(ctx, r, tenant, from, to, devices)
	if err != nil {
		return nil, nil, positioned(err)
	}
	return results, a.describe(r, results), nil
}

func (a ruleEngineAPI) Metrics(tenant, ruleID string) any {
	ok, failed := a.m.services.Actions.Stats(tenant, ruleID)
	return struct {
		engine.Metrics
		ActionsOK     uint64 `json:"actions_ok"`
		ActionsFailed uint64 `json:"actions_failed"`
	}{a.m.services.ruleRuntime.engine.Metrics(tenant, ruleID), ok, failed}
}

func (a ruleEngineAPI) Trace(tenant, ruleID string) any {
	return a.m.services.ruleRuntime.engine.Trace(tenant, ruleID)
}

func (a ruleEngineAPI) DeadLetters(ctx context.Context, tenant, ruleID string, limit int) (any, error) {
	return a.m.services.Actions.DeadLetters(ctx, tenant, ruleID, limit)
}

// positioned gives a statement's compile error its position for the API
// (a 422 naming line and column); other errors pass as they are.
func positioned(err error) error {
	var le *lang.Error
	if errors.As(err, &le) {
		return statementError{le}
	}
	return err
}

// statementError is a compile error of a rule's statement, with its
// position in the statement.
type statementError struct{ err *lang.Error }

func (e statementError) Error() string                { return e.err.Error() }
func (e statementError) Position() (line, column int) { return e.err.Line, e.err.Col }
func (e statementError) Unwrap() []error {
	return []error{e.err, tether.Errorf(tether.EINVALID, "%s", e.err.Error())}
}
