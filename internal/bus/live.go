package bus

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// Live telemetry. Live streams want every node's telemetry as it is
// published, not as it is stored, and must never hold up a publisher. A
// core NATS subscription to the telemetry subjects gives both: it sees
// every message published to the stream's subjects, from any node, and
// the client library drops messages for a subscriber whose pending queue
// is full instead of slowing the connection (a "slow consumer").
//
// What it sees is what was published, not what JetStream stored: a
// publish that JetStream refused (the stream full) or dropped as a
// duplicate (a device's retry) is seen too. For a live view that is the
// right trade; storage and rules read the durable consumers.

// liveQueue bounds the bus messages (single telemetry messages or
// batches, each at most maxBatchBytes) waiting for the live subscriber;
// beyond it messages are dropped and counted, never queued without bound.
const liveQueue = 128

// LiveTelemetry is a running live telemetry subscription.
type LiveTelemetry struct {
	subs      [2]*nats.Subscription
	done      chan struct{}
	stopped   chan struct{}
	stopOnce  sync.Once
	malformed atomic.Uint64
}

// Dropped returns how many bus messages (single telemetry messages or
// batches) were dropped because the subscriber fell behind.
func (l *LiveTelemetry) Dropped() uint64 {
	var total uint64
	for _, s := range l.subs {
		if n, err := s.Dropped(); err == nil && n > 0 {
			total += uint64(n)
		}
	}
	return total
}

// Malformed returns how many batches were not in Tether's batch format
// and were skipped.
func (l *LiveTelemetry) Malformed() uint64 { return l.malformed.Load() }

// Stop ends the subscription and waits for a call of fn in progress.
func (l *LiveTelemetry) Stop() {
	l.stopOnce.Do(func() {
		for _, s := range l.subs {
			_ = s.Unsubscribe()
		}
		close(l.done)
	})
	<-l.stopped
}

// SubscribeTelemetryLive calls fn with every telemetry message published
// on the bus from now on, by any node, batches split into their messages:
// the tenant (from the subject) and one encoded message (as
// telemetry.MarshalMessage writes it; it names its device). fn is called
// from one goroutine, in the order the messages reached this node, and
// should return quickly: while it runs, messages wait, and beyond a
// bound they are dropped (see [LiveTelemetry.Dropped]). data is valid
// only during the call.
func (b *Bus) SubscribeTelemetryLive(fn func(tenant string, data []byte)) (*LiveTelemetry, error) {
	l := &LiveTelemetry{done: make(chan struct{}), stopped: make(chan struct{})}
	// Both subject forms feed one channel, which the connection's reader
	// fills without ever waiting, so a device's single messages and
	// batches keep their order.
	ch := make(chan *nats.Msg, liveQueue)
	for i, subject := range []string{"tether.*.devices.*.telemetry", "tether.*.telemetry"} {
		sub, err := b.nc.ChanSubscribe(subject, ch)
		if err != nil {
			for _, s := range l.subs[:i] {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("subscribe live telemetry: %w", err)
		}
		l.subs[i] = sub
	}
	if err := b.nc.Flush(); err != nil {
		for _, s := range l.subs {
			_ = s.Unsubscribe()
		}
		return nil, fmt.Errorf("subscribe live telemetry: %w", err)
	}
	go func() {
		defer close(l.stopped)
		for {
			select {
			case m := <-ch:
				l.handle(m, fn)
			case <-l.done:
				return
			}
		}
	}()
	return l, nil
}

// handle splits a batch and hands each message to fn.
func (l *LiveTelemetry) handle(m *nats.Msg, fn func(tenant string, data []byte)) {
	if !isBatchSubject(m.Subject) {
		if tenant, _, ok := parseDeviceSubject(m.Subject); ok {
			fn(tenant, m.Data)
		}
		return
	}
	tenant := m.Subject[len("tether.") : len(m.Subject)-len(".telemetry")]
	body := m.Data
	if frames(body) < 0 {
		l.malformed.Add(1)
		return
	}
	for len(body) > 0 {
		size, k := binary.Uvarint(body)
		end := k + int(size)
		fn(tenant, body[k:end:end])
		body = body[end:]
	}
}
