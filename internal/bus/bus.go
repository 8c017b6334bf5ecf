// Package bus is Tether's durable message bus: NATS with JetStream, either
// embedded in the process (the default, storing under the data dir and
// listening on no port) or an external server or cluster (nats_url).
//
// Subject scheme. Every subject starts with "tether", then the tenant, so
// that a tenant's traffic is one subject subtree and can later be mapped to
// a NATS account:
//
//	tether.<tenant>.devices.<device>.telemetry   one accepted telemetry message (stream TELEMETRY)
//	tether.<tenant>.telemetry                    a batch of accepted telemetry messages of the tenant's devices (stream TELEMETRY)
//	tether.<tenant>.devices.<device>.lifecycle   registry events for gateways: deleted, token_rotated (core NATS)
//
// Tenant and device IDs are single subject tokens (see [tether.ValidID]).
// Later issues add siblings under tether.<tenant>.devices.<device>
// (shadow, commands, presence) and tether.<tenant>.rules, .alerts.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TelemetryStream is the JetStream stream that holds accepted telemetry
// until every consumer (the storage writer, later the rules engine) has
// acknowledged it.
const TelemetryStream = "TELEMETRY"

// TelemetrySubject returns the subject of a device's telemetry.
func TelemetrySubject(tenant, device string) string {
	return "tether." + tenant + ".devices." + device + ".telemetry"
}

// LifecycleSubject returns the subject of a device's registry events.
func LifecycleSubject(tenant, device string) string {
	return "tether." + tenant + ".devices." + device + ".lifecycle"
}

// Options configure [Open].
type Options struct {
	// URL of an external NATS server with JetStream. Empty starts an
	// embedded server.
	URL string
	// StoreDir is where the embedded server keeps JetStream's files.
	StoreDir string
	// ListenAddr is the embedded server's client address; empty listens
	// on no port and connects in-process.
	ListenAddr string
	// MaxBytes caps the telemetry stream. When it is full new messages are
	// refused (and devices are told), never old ones silently dropped.
	MaxBytes int
	// Durables are the durable consumers of the telemetry stream, created
	// at Open, before anything is published: with interest retention a
	// message that no consumer is interested in is dropped at once, so
	// every consumer that must see all telemetry has to exist first.
	Durables []string
	Logger   *slog.Logger
}

// Bus is a connection to the bus and, when embedded, the server itself.
type Bus struct {
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *publisher
	log *slog.Logger
}

// Open starts or connects to NATS and makes sure the streams exist.
func Open(ctx context.Context, o Options) (*Bus, error) {
	b := &Bus{log: o.Logger}
	if b.log == nil {
		b.log = slog.Default()
	}
	var copts []nats.Option
	copts = append(copts,
		nats.Name("tether"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("bus disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { b.log.Info("bus reconnected", "url", c.ConnectedUrl()) }),
	)
	url := o.URL
	if url == "" {
		ns, err := startEmbedded(o)
		if err != nil {
			return nil, err
		}
		b.ns = ns
		copts = append(copts, nats.InProcessServer(ns))
	}
	nc, err := nats.Connect(url, copts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	maxBytes := int64(o.MaxBytes)
	if maxBytes <= 0 {
		maxBytes = -1
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        TelemetryStream,
		Description: "Accepted device telemetry, kept until every consumer has acknowledged it",
		Subjects:    []string{"tether.*.devices.*.telemetry", "tether.*.telemetry"},
		// Interest retention removes a message once all consumers have
		// it, so the stream is a buffer, not a second copy of storage.
		Retention:  jetstream.InterestPolicy,
		Storage:    jetstream.FileStorage,
		Discard:    jetstream.DiscardNew,
		MaxBytes:   maxBytes,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("create stream %s: %w", TelemetryStream, err)
	}
	if err := createEventStream(ctx, js); err != nil {
		b.Close()
		return nil, err
	}
	for _, d := range o.Durables {
		if _, err := js.CreateOrUpdateConsumer(ctx, TelemetryStream, consumerConfig(d, 0)); err != nil {
			b.Close()
			return nil, fmt.Errorf("create consumer %s: %w", d, err)
		}
	}
	b.pub = newPublisher(js, nc.MaxPayload())
	return b, nil
}

func startEmbedded(o Options) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "tether",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		DontListen: o.ListenAddr == "",
		// JetStream's own defaults reserve most of the disk; a node that
		// shares it with SQLite must not, so the stream's MaxBytes is the
		// real bound and this is a backstop.
		JetStreamMaxMemory: 64 << 20,
	}
	if o.ListenAddr != "" {
		host, port, err := splitHostPort(o.ListenAddr)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
		if port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return ns, nil
}

// ClientURL returns the address other NATS clients can reach the embedded
// server on, or "" when it listens on no port or the bus is external.
func (b *Bus) ClientURL() string {
	if b.ns == nil || b.ns.Addr() == nil {
		return ""
	}
	return b.ns.ClientURL()
}

// PublishTelemetry puts one encoded telemetry message on the bus and
// returns only once JetStream has stored it, or with ctx's error. Messages
// published at about the same time are stored together in one JetStream
// message (see publish.go); the message ID is the JetStream message ID of
// a message stored alone, and a batch has an ID of its own, so that
// JetStream drops a retried publish of either. data is copied before
// PublishTelemetry waits: the caller may reuse it once it returns.
func (b *Bus) PublishTelemetry(ctx context.Context, tenant, device, msgID string, data []byte) error {
	bt, err := b.pub.add(tenant, device, msgID, data)
	if err != nil {
		return fmt.Errorf("publish telemetry: %w", err)
	}
	select {
	case <-bt.done:
		if bt.err != nil {
			return fmt.Errorf("publish telemetry: %w", bt.err)
		}
		return nil
	case <-ctx.Done():
		// The message may still be stored; it was not acknowledged, so
		// the device sends it again.
		return fmt.Errorf("publish telemetry: %w", ctx.Err())
	}
}

// Msg is a telemetry message delivered by a durable consumer. Ack it once
// it is durable downstream, or Nak it, but only one of them, once: the
// messages of a batch share one JetStream message, acknowledged when each
// of them has been. A message not acknowledged within the ack wait is
// delivered again, and so are the other messages of its batch.
type Msg struct {
	data  []byte
	m     jetstream.Msg
	batch *batchAck // nil for a message stored alone
}

// Data returns the encoded telemetry message.
func (m Msg) Data() []byte { return m.data }

// Ack acknowledges the message. The JetStream message that carries a batch
// is acknowledged when every message in it is.
func (m Msg) Ack() error {
	if m.batch != nil {
		return m.batch.ack()
	}
	return m.m.Ack()
}

// Nak asks for the message to be delivered again after delay, and with it
// the rest of its batch.
func (m Msg) Nak(delay time.Duration) error {
	if m.batch != nil {
		return m.batch.nak(delay)
	}
	return m.m.NakWithDelay(delay)
}

// Consumption is a running durable consumer.
type Consumption struct {
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext
}

// WaitCaughtUp returns once the consumer has no message left to deliver and
// none delivered but unacknowledged, or with ctx's error. A graceful
// shutdown calls it after the gateways have stopped, so that what they
// accepted is written before the process exits. With other nodes still
// publishing it may not return before ctx ends.
func (c *Consumption) WaitCaughtUp(ctx context.Context) error {
	for {
		info, err := c.cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer info: %w", err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d messages not yet delivered, %d not yet acknowledged: %w", info.NumPending, info.NumAckPending, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop stops delivering messages. Unacknowledged ones are delivered again
// later, to this or another node.
func (c *Consumption) Stop() {
	c.cc.Stop()
	<-c.cc.Closed()
}

// ConsumeTelemetry delivers telemetry to handle, one message at a time,
// through the durable consumer named durable, creating it if needed, so a
// restart resumes where the last run stopped. Several nodes using the same
// name share the work. handle is called from one goroutine; at most
// maxPending JetStream messages (single messages or batches) are
// unacknowledged at once.
func (b *Bus) ConsumeTelemetry(ctx context.Context, durable string, maxPending int, handle func(Msg)) (*Consumption, error) {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, TelemetryStream, consumerConfig(durable, maxPending))
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", durable, err)
	}
	// A batch may be as large as the server's max_payload, so the client
	// buffers by bytes rather than by messages. The bound must exceed the
	// largest message, or the consumer stalls; four times max_payload
	// keeps each pull request above it.
	buffer := max(16<<20, 4*int(b.nc.MaxPayload()))
	cc, err := cons.Consume(func(m jetstream.Msg) { deliver(m, handle) },
		jetstream.PullMaxBytes(buffer),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			b.log.Warn("bus consumer", "consumer", durable, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", durable, err)
	}
	return &Consumption{cons: cons, cc: cc}, nil
}

func consumerConfig(durable string, maxPending int) jetstream.ConsumerConfig {
	if maxPending <= 0 {
		maxPending = 1000
	}
	return jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: maxPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// PublishLifecycle announces a registry event of a device (for example
// "deleted") to every node's gateways. It is fire-and-forget: a gateway
// that misses it still refuses the device on its next connect or publish.
func (b *Bus) PublishLifecycle(tenant, device, event string) error {
	if err := b.nc.Publish(LifecycleSubject(tenant, device), []byte(event)); err != nil {
		return fmt.Errorf("publish lifecycle: %w", err)
	}
	return b.nc.Flush()
}

// SubscribeLifecycle calls fn for every device registry event of every
// tenant until the returned function is called.
func (b *Bus) SubscribeLifecycle(fn func(tenant, device, event string)) (unsubscribe func(), err error) {
	sub, err := b.nc.Subscribe("tether.*.devices.*.lifecycle", func(m *nats.Msg) {
		tenant, device, ok := parseDeviceSubject(m.Subject)
		if ok {
			fn(tenant, device, string(m.Data))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe lifecycle: %w", err)
	}
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe lifecycle: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Close publishes the telemetry waiting to be published, drains the
// connection (delivering what is in flight) and stops an embedded server.
func (b *Bus) Close() error {
	var err error
	if b.pub != nil {
		b.pub.close()
	}
	if b.nc != nil {
		done := make(chan struct{})
		b.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if derr := b.nc.Drain(); derr != nil {
			b.nc.Close()
		} else {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				b.nc.Close()
				err = errors.New("bus: drain timed out")
			}
		}
	}
	b.shutdownServer()
	return err
}

func (b *Bus) shutdownServer() {
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
	}
}
