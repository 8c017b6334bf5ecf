package graphql

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
)

// maxDevices bounds the devices one subscription may name.
const maxDevices = 1000

// subscribe checks a subscription's filter and subscribes the caller's
// tenant with it.
func (s subscriptionResolver) subscribe(ctx context.Context, kinds, devices []string, labels []*LabelInput, profile *string) (stream.Subscription, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if s.o.Stream == nil {
		return nil, unavailable("live stream")
	}
	if len(devices) > maxDevices {
		return nil, tether.Errorf(tether.EINVALID, "deviceIds names %d devices; at most %d", len(devices), maxDevices)
	}
	sel, err := labelMap(labels)
	if err != nil {
		return nil, err
	}
	return s.o.Stream.Subscribe(ctx, p.TenantID, stream.Filter{Kinds: kinds, Devices: devices, Labels: sel, Profile: deref(profile, "")})
}

// pump sends what next makes of each event until ctx ends or the
// subscription does, then closes ch. A lag comes first, as its own
// message; an event next makes nothing of (no key asked for) is skipped.
func pump[T any](ctx context.Context, sub stream.Subscription, ch chan<- *T, lag func(dropped int) *T, next func(stream.Event) *T) {
	defer close(ch)
	defer sub.Close()
	send := func(v *T) bool {
		select {
		case ch <- v:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		ev, dropped, err := sub.Next(ctx)
		if dropped > 0 && !send(lag(int(min(dropped, math.MaxInt32)))) {
			return
		}
		if err != nil {
			return
		}
		if v := next(ev); v != nil && !send(v) {
			return
		}
	}
}

func (s subscriptionResolver) Telemetry(ctx context.Context, deviceIds []string, keys []string, labels []*LabelInput, profile *string) (<-chan *TelemetryUpdate, error) {
	if len(keys) > maxKeys {
		return nil, tether.Errorf(tether.EINVALID, "keys names %d keys; at most %d", len(keys), maxKeys)
	}
	sub, err := s.subscribe(ctx, []string{stream.KindTelemetry}, deviceIds, labels, profile)
	if err != nil {
		return nil, err
	}
	ch := make(chan *TelemetryUpdate)
	go pump(ctx, sub, ch,
		func(n int) *TelemetryUpdate {
			return &TelemetryUpdate{Points: []*TelemetryPoint{}, Lagging: true, Dropped: n}
		},
		func(ev stream.Event) *TelemetryUpdate { return telemetryUpdate(ev, keys, s.log) })
	return ch, nil
}

// streamPoints is a telemetry event's body.
type streamPoints struct {
	Points []struct {
		Key   string    `json:"key"`
		TS    time.Time `json:"ts"`
		Value any       `json:"value"`
	} `json:"points"`
}

// telemetryUpdate is a telemetry event's points of keys (all if none),
// or nil if it has none of them.
func telemetryUpdate(ev stream.Event, keys []string, log interface{ Warn(string, ...any) }) *TelemetryUpdate {
	var body streamPoints
	if err := json.Unmarshal(ev.Data, &body); err != nil {
		log.Warn("graphql: a telemetry event that is not points", "device", ev.DeviceID, "err", err)
		return nil
	}
	u := &TelemetryUpdate{DeviceID: &ev.DeviceID, Time: &ev.Time, Points: make([]*TelemetryPoint, 0, len(body.Points))}
	for _, p := range body.Points {
		if len(keys) == 0 || slices.Contains(keys, p.Key) {
			u.Points = append(u.Points, &TelemetryPoint{Key: p.Key, Ts: p.TS, Value: p.Value})
		}
	}
	if len(u.Points) == 0 {
		return nil
	}
	return u
}

func (s subscriptionResolver) Events(ctx context.Context, kinds []EventKind, deviceIds []string, labels []*LabelInput, profile *string) (<-chan *Event, error) {
	var ks []string
	for _, k := range kinds {
		ks = append(ks, strings.ToLower(string(k)))
	}
	sub, err := s.subscribe(ctx, ks, deviceIds, labels, profile)
	if err != nil {
		return nil, err
	}
	ch := make(chan *Event)
	go pump(ctx, sub, ch,
		func(n int) *Event { return &Event{Lagging: true, Dropped: n} },
		func(ev stream.Event) *Event {
			kind := EventKind(strings.ToUpper(ev.Kind))
			if !kind.IsValid() {
				return nil
			}
			e := &Event{Kind: &kind, DeviceID: &ev.DeviceID, Time: &ev.Time}
			if len(ev.Data) > 0 {
				e.Data = ev.Data
			}
			return e
		})
	return ch, nil
}
