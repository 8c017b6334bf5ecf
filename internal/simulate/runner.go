package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
)

// Device is a registered simulated device, ready to run.
type Device struct {
	ID, Token, Kind string
	// CoAP makes it talk CoAP instead of MQTT.
	CoAP bool
	// Incident makes its model's incident happen early.
	Incident bool
}

// Options tune a [Runner]. Zero values take the defaults.
type Options struct {
	// MQTTAddr and CoAPAddr are the node's listeners (host:port). Each
	// is needed only if a device uses it.
	MQTTAddr, CoAPAddr string
	// Interval is the time between two telemetry messages of a device
	// and the model's step; default 1 s.
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the wait before a reconnection,
	// which doubles after each failure; default 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// ShadowSync is how often an MQTT device reads its shadow again, to
	// catch up with a delta or a report lost on the way; default 10 s.
	ShadowSync time.Duration
	// ConnectPace spaces the devices' first connections, so that a large
	// fleet stays under the node's connect rate per address; default
	// 60 ms (16 a second).
	ConnectPace time.Duration
	Logger      *slog.Logger
}

// Stats count what a runner's devices did.
type Stats struct {
	Devices    int    `json:"devices"`
	Connected  int64  `json:"connected"`
	Sent       uint64 `json:"sent"`    // telemetry messages accepted by the node
	Refused    uint64 `json:"refused"` // telemetry messages the node refused
	Commands   uint64 `json:"commands"`
	Reconnects uint64 `json:"reconnects"`
}

// Runner runs simulated devices against a node.
type Runner struct {
	devices []Device
	o       Options
	log     *slog.Logger

	connected                   atomic.Int64
	sent, refused, commands, rc atomic.Uint64
}

// NewRunner checks the devices and returns a runner for them.
func NewRunner(devices []Device, o Options) (*Runner, error) {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.ShadowSync <= 0 {
		o.ShadowSync = shadowSync
	}
	if o.ConnectPace <= 0 {
		o.ConnectPace = 60 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range devices {
		if _, err := NewModel(d.Kind, NewRand(d.ID), false); err != nil {
			return nil, fmt.Errorf("device %s: %w", d.ID, err)
		}
		if d.CoAP && o.CoAPAddr == "" {
			return nil, fmt.Errorf("device %s talks CoAP, and there is no CoAP address", d.ID)
		}
		if !d.CoAP && o.MQTTAddr == "" {
			return nil, fmt.Errorf("device %s talks MQTT, and there is no MQTT address", d.ID)
		}
	}
	return &Runner{devices: devices, o: o, log: o.Logger.With("component", "simulator")}, nil
}

// Stats returns the counters so far.
func (r *Runner) Stats() Stats {
	return Stats{Devices: len(r.devices), Connected: r.connected.Load(), Sent: r.sent.Load(),
		Refused: r.refused.Load(), Commands: r.commands.Load(), Reconnects: r.rc.Load()}
}

// Run connects every device and keeps it running, reconnecting with
// backoff, until ctx ends; it returns once every device has disconnected.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, d := range r.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, d, time.Duration(i)*r.o.ConnectPace)
		}()
	}
	wg.Wait()
}

// errRenew ends a session that is fine, to start a fresh one at once.
var errRenew = errors.New("renewing the session")

// run is one device's life: connect, run a session, wait, again.
func (r *Runner) run(ctx context.Context, d Device, delay time.Duration) {
	rng := NewRand(d.ID)
	m, _ := NewModel(d.Kind, rng, d.Incident) // checked by NewRunner
	log := r.log.With("device", d.ID)
	if !sleep(ctx, delay) {
		return
	}
	for failures := 0; ; {
		started := time.Now()
		l, err := r.dial(ctx, d, log)
		if err == nil {
			r.connected.Add(1)
			log.Debug("simulated device connected", "coap", d.CoAP)
			err = r.session(ctx, m, rng, l, log)
			r.connected.Add(-1)
			l.close()
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRenew) {
			continue
		}
		if time.Since(started) > time.Minute {
			failures = 0 // it ran for a while: start the backoff over
		}
		wait := backoff(failures, r.o.MinBackoff, r.o.MaxBackoff)
		level := slog.LevelDebug
		if failures == 0 {
			level = slog.LevelWarn // once per outage; the retries are debug
		}
		log.Log(ctx, level, "simulated device lost its connection; reconnecting", "err", err, "in", wait)
		failures++
		r.rc.Add(1)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// backoff is the wait after n failures in a row: min doubled n times, at
// most max, with up to a quarter of jitter so that a fleet does not come
// back in one burst.
func backoff(n int, minD, maxD time.Duration) time.Duration {
	d := minD
	for range n {
		if d *= 2; d >= maxD {
			d = maxD
			break
		}
	}
	return d - time.Duration(rand.Int64N(int64(d)/4+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// link is a device's connection to the node, over MQTT or CoAP.
type link interface {
	// telemetry sends a telemetry payload; refused is the node's reason
	// when it refused it (the connection is fine), err a failure of the
	// connection.
	telemetry(ctx context.Context, payload []byte) (refused string, err error)
	report(ctx context.Context, reported map[string]any) error
	reply(ctx context.Context, id string, r tether.CommandReply) error
	// sync asks for the device's shadow, which comes as an incoming with
	// its desired and reported states (or, for a link that is told of
	// every change anyway, does nothing).
	sync(ctx context.Context) error
	// incoming carries the commands and desired states the node sends.
	incoming() <-chan incoming
	// done is closed when the connection is lost (or, for CoAP, due for
	// renewal).
	done() <-chan struct{}
	err() error
	close()
}

// incoming is a command or a desired state.
type incoming struct {
	command *command
	desired map[string]any
	// delta is set for a shadow delta: the node holds a reported state
	// that differs from the desired one.
	delta bool
	// reported is the reported state the node holds, when the message
	// is a whole shadow.
	reported map[string]any
}

// shadowSync is how often an MQTT device reads its shadow again besides
// the deltas, at most: the node sends a delta once, when the desired
// state changes (and not at all if the shadow event is lost, which it
// only logs), and acknowledges a report it then rejects (the answer goes
// to shadow/update/rejected, which the device does not read), so a lost
// delta or report would otherwise leave the shadow's reported state
// behind until the device reconnects.
const shadowSync = 10 * time.Second

// requestTimeout bounds one publish or request.
const requestTimeout = 10 * time.Second

func (r *Runner) dial(ctx context.Context, d Device, log *slog.Logger) (link, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if d.CoAP {
		return dialCoAP(ctx, r.o.CoAPAddr, d, log)
	}
	return dialMQTT(ctx, r.o.MQTTAddr, d, log)
}

// session runs a connected device: it reports its state, sends a step's
// telemetry every interval and answers what the node sends, until the
// connection fails or ctx ends.
func (r *Runner) session(ctx context.Context, m Model, rng *rand.Rand, l link, log *slog.Logger) error {
	if err := r.report(ctx, l, m.Reported()); err != nil {
		return err
	}
	send := func() error {
		v := m.Step(r.o.Interval, rng)
		if v == nil {
			return nil
		}
		v["ts"] = time.Now().UnixMilli()
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		refused, err := l.telemetry(rctx, b)
		switch {
		case err != nil:
			return err
		case refused != "":
			r.refused.Add(1)
			log.Debug("simulated telemetry refused", "reason", refused)
		default:
			r.sent.Add(1)
		}
		return nil
	}
	if err := send(); err != nil {
		return err
	}
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	// Jittered, so that a fleet's reads spread out.
	resync := time.NewTicker(r.o.ShadowSync - time.Duration(rand.Int64N(int64(r.o.ShadowSync)/4+1)))
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.done():
			return l.err()
		case in := <-l.incoming():
			if err := r.handle(ctx, m, l, in, log); err != nil {
				return err
			}
		case <-tick.C:
			if err := send(); err != nil {
				return err
			}
		case <-resync.C:
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			err := l.sync(rctx)
			cancel()
			if err != nil {
				return err
			}
		}
	}
}

// handle runs a command (and replies) or applies a desired state, and
// reports the device's state if it changed.
func (r *Runner) handle(ctx context.Context, m Model, l link, in incoming, log *slog.Logger) error {
	before := m.Reported()
	if c := in.command; c != nil {
		r.commands.Add(1)
		result, err := m.Command(c.Name, c.Params)
		log.Debug("simulated device ran a command", "command", c.Name, "id", c.ID, "ok", err == nil)
		if !c.OneWay {
			rep := tether.CommandReply{Status: tether.CommandSucceeded}
			if err != nil {
				rep.Status, rep.Error = tether.CommandFailed, err.Error()
			} else if rep.Result, err = json.Marshal(result); err != nil {
				return err
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			err := l.reply(rctx, c.ID, rep)
			cancel()
			if err != nil {
				return err
			}
		}
	}
	if len(in.desired) > 0 {
		m.Desire(in.desired)
	}
	// Report a change; and, even with none, what the node holds if it is
	// behind: a delta means that the node's reported state differs from
	// the desired one (the device may have followed it already, its
	// report lost), and a whole shadow shows the node's reported state.
	after := m.Reported()
	if !sameJSON(before, after) || in.delta || (in.reported != nil && !holds(in.reported, after)) {
		return r.report(ctx, l, after)
	}
	return nil
}

// holds reports whether the node's reported state has every field of the
// device's.
func holds(node, device map[string]any) bool {
	for k, v := range device {
		nv, ok := node[k]
		if !ok || !sameJSON(nv, v) {
			return false
		}
	}
	return true
}

func (r *Runner) report(ctx context.Context, l link, reported map[string]any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return l.report(ctx, reported)
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
