package bus

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EventStream is the JetStream stream of device events (presence, shadow
// and command changes): kept for a while so that a consumer that starts
// later (the rules engine, an export) can read what happened.
const EventStream = "EVENTS"

// EventSubject is where events of one kind about one device go:
// tether.<tenant>.events.<kind>.<device>.
func EventSubject(tenant, kind, device string) string {
	return "tether." + tenant + ".events." + kind + "." + device
}

func createEventStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStream,
		Description: "Device events: presence, shadow and command changes",
		Subjects:    []string{"tether.*.events.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      7 * 24 * time.Hour,
		MaxBytes:    1 << 30,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", EventStream, err)
	}
	return nil
}

// PublishEvent puts an event on the bus and waits for JetStream to store
// it. Subscribers of [Bus.SubscribeEvents] on every node see it too.
func (b *Bus) PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.js.Publish(ctx, EventSubject(tenant, kind, device), data); err != nil {
		return fmt.Errorf("publish %s event: %w", kind, err)
	}
	return nil
}

// SubscribeEvents calls fn, on one goroutine in order, for every event of
// the given kind ("" for all) of every tenant published from now on,
// until the returned function is called.
func (b *Bus) SubscribeEvents(kind string, fn func(tenant, kind, device string, data []byte)) (unsubscribe func(), err error) {
	subject := "tether.*.events.>"
	if kind != "" {
		subject = "tether.*.events." + kind + ".*"
	}
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) {
		p := strings.Split(m.Subject, ".")
		if len(p) == 5 && p[0] == "tether" && p[2] == "events" {
			fn(p[1], p[3], p[4], m.Data)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe events: %w", err)
	}
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe events: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Publish publishes data on a core NATS subject (no stream keeps it): for
// rule actions that hand results to programs listening on the bus.
func (b *Bus) Publish(subject string, data []byte) error {
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}
