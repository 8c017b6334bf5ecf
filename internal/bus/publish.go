package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Telemetry goes on the bus in batches: every message that arrives while
// earlier batches are on their way to JetStream waits for the next one,
// which then carries all of them as a single JetStream message. Nothing
// waits for a batch to fill: an idle bus publishes a message at once, and
// under load the batches grow by themselves. Each JetStream message costs
// the server a parse, a stored record, a reply, a delivery to every
// consumer and an acknowledgement from each, about 25 µs of CPU on the
// machine in docs/benchmarks.md; a batch pays that once for all its
// messages.
//
// A batch holds the messages of one tenant, so that each tenant's traffic
// stays in its own subject subtree, on the subject
// tether.<tenant>.telemetry ([TelemetryBatchSubject]). Its body is the
// messages one after the other, each preceded by its length as an unsigned
// varint (encoding/binary's AppendUvarint). A batch of one message is
// published as the message itself on its device's subject, as it always
// was, with the message ID as its JetStream message ID.
//
// One round of batches is on its way at a time: the publisher sends every
// batch queued (one per tenant, usually one), waits for JetStream to
// acknowledge them all, then sends the next round. Letting later rounds go
// before the first is acknowledged made batches smaller and cost more CPU
// per message (BenchmarkPublishTelemetry, 16 publishers: 6.0 µs with one
// round, 7.9 with two, 10.4 with four) without a measurable gain end to
// end. JetStream stores what one connection sends in order, and a gateway
// publishes a connection's next message only after the last one returned,
// so each device's messages keep their order.

// maxBatchBytes bounds a batch body. A bigger body stores no faster per
// message, and the server refuses bodies over its max_payload (1 MiB by
// default), so the connection's limit bounds it too.
const maxBatchBytes = 512 << 10

// publishTimeout bounds the wait for JetStream's acknowledgement of a
// round, so that every PublishTelemetry returns even when the bus stops
// answering and the caller's context has no deadline: a message waits for
// the round on its way and then for its own, each for at most this long.
const publishTimeout = 10 * time.Second

// TelemetryBatchSubject returns the subject of a batch of telemetry
// messages of a tenant's devices.
func TelemetryBatchSubject(tenant string) string {
	return "tether." + tenant + ".telemetry"
}

// isBatchSubject reports whether subject is a TelemetryBatchSubject.
func isBatchSubject(subject string) bool {
	return strings.Count(subject, ".") == 2 && strings.HasSuffix(subject, ".telemetry")
}

// errClosed is returned for telemetry published after Close.
var errClosed = errors.New("the bus is closed")

// batch is telemetry of one tenant waiting to be published together.
type batch struct {
	tenant string
	n      int    // messages in body
	body   []byte // each message preceded by its length as a uvarint
	// subject and msgID of the first message, which a batch of one is
	// published with.
	subject, msgID string

	// done is closed once err tells how publishing went.
	done chan struct{}
	err  error
}

// message returns the NATS message that carries the batch.
func (bt *batch) message() *nats.Msg {
	if bt.n == 1 {
		_, k := binary.Uvarint(bt.body)
		return &nats.Msg{Subject: bt.subject, Data: bt.body[k:], Header: nats.Header{jetstream.MsgIDHeader: {bt.msgID}}}
	}
	// A batch that is published again (nats.go does so by itself after
	// "no responders") keeps this ID, so JetStream stores it once.
	return &nats.Msg{Subject: TelemetryBatchSubject(bt.tenant), Data: bt.body, Header: nats.Header{jetstream.MsgIDHeader: {nuid.Next()}}}
}

// publisher batches telemetry; one goroutine (run) publishes.
type publisher struct {
	js       jetstream.JetStream
	maxBytes int

	mu     sync.Mutex
	queue  []*batch          // not yet published, in the order they were opened
	open   map[string]*batch // by tenant: the queued batch that takes more
	spare  [][]byte          // bodies of published batches, for new ones
	closed bool

	wake chan struct{} // capacity 1: something was queued, or closed
	done chan struct{} // closed when run returns
}

func newPublisher(js jetstream.JetStream, maxPayload int64) *publisher {
	p := &publisher{
		js:       js,
		maxBytes: maxBatchBytes,
		open:     make(map[string]*batch),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	// Leave room for the subject and headers within max_payload.
	if limit := int(maxPayload) - 4<<10; limit > 0 && limit < p.maxBytes {
		p.maxBytes = limit
	}
	go p.run()
	return p
}

// add queues data and returns the batch that carries it. data is copied.
func (p *publisher) add(tenant, device, msgID string, data []byte) (*batch, error) {
	size := binary.MaxVarintLen64 + len(data)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	bt := p.open[tenant]
	if bt == nil || len(bt.body)+size > p.maxBytes {
		// A message too big to share a batch travels alone, as it
		// always did; the server refuses it if it is over max_payload.
		bt = &batch{tenant: tenant, done: make(chan struct{})}
		if n := len(p.spare); n > 0 {
			bt.body, p.spare = p.spare[n-1], p.spare[:n-1]
		}
		p.queue = append(p.queue, bt)
		p.open[tenant] = bt
	}
	if bt.n == 0 {
		bt.subject, bt.msgID = TelemetrySubject(tenant, device), msgID
	}
	bt.n++
	bt.body = binary.AppendUvarint(bt.body, uint64(len(data)))
	bt.body = append(bt.body, data...)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return bt, nil
}

// run publishes one round after another until the publisher is closed and
// nothing is left.
func (p *publisher) run() {
	defer close(p.done)
	for {
		round := p.take()
		if round == nil {
			return
		}
		p.publish(round)
		p.recycle(round)
	}
}

// take takes every queued batch, waiting for one; it returns nil once the
// publisher is closed and nothing is queued.
func (p *publisher) take() []*batch {
	for {
		p.mu.Lock()
		if round := p.queue; len(round) > 0 {
			p.queue = nil
			clear(p.open)
			p.mu.Unlock()
			return round
		}
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return nil
		}
		<-p.wake
	}
}

// publish sends a round's batches, in order, and tells each one's waiters
// once JetStream has acknowledged or refused it.
func (p *publisher) publish(round []*batch) {
	futures := make([]jetstream.PubAckFuture, len(round))
	for i, bt := range round {
		futures[i], bt.err = p.js.PublishMsgAsync(bt.message())
	}
	timeout := time.NewTimer(publishTimeout)
	defer timeout.Stop()
	for i, bt := range round {
		if f := futures[i]; f != nil {
			select {
			case <-f.Ok():
			case bt.err = <-f.Err():
			case <-timeout.C:
				bt.err = fmt.Errorf("no acknowledgement from JetStream within %s", publishTimeout)
			}
		}
		close(bt.done)
	}
}

// maxSpare is how many batch bodies the publisher keeps for reuse: a round
// usually has one batch, one per tenant otherwise.
const maxSpare = 4

// recycle keeps the bodies of a round's batches for new batches. A batch
// that failed may still be in the NATS client (which publishes again after
// "no responders"), so its body is left alone.
func (p *publisher) recycle(round []*batch) {
	p.mu.Lock()
	for _, bt := range round {
		if bt.err == nil && len(p.spare) < maxSpare {
			p.spare = append(p.spare, bt.body[:0])
		}
	}
	p.mu.Unlock()
}

// close publishes what is queued, waits for the acknowledgements and stops
// the publisher.
func (p *publisher) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
}

// batchAck acknowledges a batch's JetStream message once every message in
// it is acknowledged, and asks for it again as soon as one is not.
type batchAck struct {
	m      jetstream.Msg
	left   atomic.Int64
	nakked atomic.Bool
}

func (a *batchAck) ack() error {
	if a.left.Add(-1) == 0 && !a.nakked.Load() {
		return a.m.Ack()
	}
	return nil
}

func (a *batchAck) nak(delay time.Duration) error {
	if a.nakked.CompareAndSwap(false, true) {
		return a.m.NakWithDelay(delay)
	}
	return nil
}

// deliver hands the telemetry messages m carries to handle, one by one.
func deliver(m jetstream.Msg, handle func(Msg)) {
	if !isBatchSubject(m.Subject()) {
		handle(Msg{data: m.Data(), m: m})
		return
	}
	body := m.Data()
	n := frames(body)
	if n <= 0 {
		// Not a batch Tether wrote: the consumer sees the body as it
		// is, and its decoder refuses it.
		handle(Msg{data: body, m: m})
		return
	}
	a := &batchAck{m: m}
	a.left.Store(int64(n))
	for len(body) > 0 {
		size, k := binary.Uvarint(body)
		end := k + int(size)
		handle(Msg{data: body[k:end:end], m: m, batch: a})
		body = body[end:]
	}
}

// frames returns the number of messages in a batch body, or -1 if it is
// malformed.
func frames(body []byte) int {
	n := 0
	for len(body) > 0 {
		size, k := binary.Uvarint(body)
		if k <= 0 || size > uint64(len(body)-k) {
			return -1
		}
		body = body[k+int(size):]
		n++
	}
	return n
}
