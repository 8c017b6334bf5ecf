package bus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-iot/tether/internal/bus"
)

// wait bounds every wait for a delivery. Deliveries take milliseconds; the
// bound is only there so a broken bus fails the test instead of hanging it.
const wait = 10 * time.Second

// open opens a bus and closes it when the test ends.
func open(t testing.TB, o bus.Options) *bus.Bus {
	t.Helper()
	b, err := bus.Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open(%+v): %v", o, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// runExternalServer starts a NATS server with JetStream in the process on
// a random port, as an operator's external server would be, and stops it
// when the test ends.
func runExternalServer(t testing.TB) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		t.Fatal("external nats server not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// consume runs a durable consumer that hands every message to the returned
// channel without acknowledging it; the test decides what to ack. The
// consumption stops when the test ends.
func consume(t testing.TB, b *bus.Bus, durable string, maxPending int) (<-chan bus.Msg, *bus.Consumption) {
	t.Helper()
	// The channel is larger than any test's message count, so the handler
	// never blocks and Stop never waits on it.
	ch := make(chan bus.Msg, 1024)
	c, err := b.ConsumeTelemetry(t.Context(), durable, maxPending, func(m bus.Msg) { ch <- m })
	if err != nil {
		t.Fatalf("ConsumeTelemetry(%q): %v", durable, err)
	}
	t.Cleanup(c.Stop)
	return ch, c
}

// next returns the next delivered message or fails the test.
func next(t testing.TB, ch <-chan bus.Msg) bus.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatalf("no message delivered within %s", wait)
		return bus.Msg{}
	}
}

func publish(t testing.TB, b *bus.Bus, msgID string, data []byte) {
	t.Helper()
	if err := b.PublishTelemetry(t.Context(), "acme", "dev-1", msgID, data); err != nil {
		t.Fatalf("PublishTelemetry(%q): %v", msgID, err)
	}
}

// roundTrip checks a durable consumer delivers a published message
// unchanged. The consumer is created first: the stream has interest
// retention, so a message published while no consumer exists is not kept.
func roundTrip(t *testing.T, b *bus.Bus) {
	t.Helper()
	data := []byte(`{"temp":21.5}`)
	ch, _ := consume(t, b, "storage", 10)
	publish(t, b, "msg-1", data)
	m := next(t, ch)
	if !bytes.Equal(m.Data(), data) {
		t.Errorf("delivered %q, published %q", m.Data(), data)
	}
	if err := m.Ack(); err != nil {
		t.Errorf("Ack: %v", err)
	}
}

func TestTelemetryRoundTrip(t *testing.T) {
	t.Run("an embedded bus delivers a published message to a durable consumer", func(t *testing.T) {
		roundTrip(t, open(t, bus.Options{StoreDir: t.TempDir()}))
	})
	t.Run("a bus on an external server delivers a published message to a durable consumer", func(t *testing.T) {
		ns := runExternalServer(t)
		b := open(t, bus.Options{URL: ns.ClientURL()})
		if got := b.ClientURL(); got != "" {
			t.Errorf("ClientURL of an external bus = %q, want empty", got)
		}
		roundTrip(t, b)
	})
}

func TestClientURL(t *testing.T) {
	tests := []struct {
		name       string
		listenAddr string
		wantURL    bool
	}{
		{"an embedded bus with no listen address has no client URL", "", false},
		{"an embedded bus listening on 127.0.0.1:0 has a client URL other clients can connect to", "127.0.0.1:0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := open(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: tt.listenAddr})
			u := b.ClientURL()
			if !tt.wantURL {
				if u != "" {
					t.Fatalf("ClientURL() = %q, want empty", u)
				}
				return
			}
			if u == "" || strings.HasSuffix(u, ":0") {
				t.Fatalf("ClientURL() = %q, want a URL with the port picked", u)
			}
			nc, err := nats.Connect(u)
			if err != nil {
				t.Fatalf("connect to %s: %v", u, err)
			}
			nc.Close()
		})
	}
}

func TestOpenRefusesABadListenAddress(t *testing.T) {
	_, err := bus.Open(t.Context(), bus.Options{StoreDir: t.TempDir(), ListenAddr: "localhost"})
	if err == nil || !strings.Contains(err.Error(), "localhost") {
		t.Fatalf("Open with listen address %q: err = %v, want one naming the address", "localhost", err)
	}
}

// consumerState reads a durable consumer's state through a separate
// client, as an operator's nats CLI would.
func consumerState(t *testing.T, url, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(t.Context(), bus.TelemetryStream, durable)
	if err != nil {
		t.Fatalf("consumer %s: %v", durable, err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer %s info: %v", durable, err)
	}
	return info
}

func TestDurableConsumerResumesAfterRestart(t *testing.T) {
	const durable, total, acked = "storage", 10, 4
	dir := t.TempDir()
	// The first run listens on a port so the test can see, through a
	// separate client, when the server has applied the acks.
	first := open(t, bus.Options{StoreDir: dir, ListenAddr: "127.0.0.1:0"})

	// MaxAckPending of 4 means exactly the first four are delivered, and
	// they are acknowledged only after the consumption stopped. A message
	// delivered but not acknowledged would be redelivered only after the
	// 30 s ack wait, which is correct but would make this test slow.
	ch, c := consume(t, first, durable, acked)
	for i := range total {
		publish(t, first, fmt.Sprintf("msg-%d", i), fmt.Appendf(nil, "m%d", i))
	}
	var got []bus.Msg
	for range acked {
		got = append(got, next(t, ch))
	}
	c.Stop()
	for i, m := range got {
		if want := fmt.Sprintf("m%d", i); string(m.Data()) != want {
			t.Errorf("first run delivery %d = %q, want %q", i, m.Data(), want)
		}
		if err := m.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		info := consumerState(t, first.ClientURL(), durable)
		if info.AckFloor.Stream == acked && info.NumAckPending == 0 {
			if info.Delivered.Stream != acked {
				t.Fatalf("server delivered up to %d, want %d", info.Delivered.Stream, acked)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acks not applied: ack floor %d, ack pending %d", info.AckFloor.Stream, info.NumAckPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	second := open(t, bus.Options{StoreDir: dir})
	ch, _ = consume(t, second, durable, 100)
	for i := acked; i < total; i++ {
		m := next(t, ch)
		if want := fmt.Sprintf("m%d", i); string(m.Data()) != want {
			t.Errorf("after restart delivery = %q, want %q (acked ones must never come back)", m.Data(), want)
		}
		if err := m.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	// A message published now is delivered after anything still owed, so
	// once it arrives nothing else can be waiting.
	publish(t, second, "sentinel", []byte("sentinel"))
	if m := next(t, ch); string(m.Data()) != "sentinel" {
		t.Errorf("after the six unacked messages got %q, want the sentinel", m.Data())
	}
}

func TestDuplicateMessageIDIsStoredOnce(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir()})
	ch, _ := consume(t, b, "storage", 10)
	publish(t, b, "msg-1", []byte("first"))
	publish(t, b, "msg-1", []byte("first")) // a device's retry of the same message
	publish(t, b, "msg-2", []byte("second"))
	for _, want := range []string{"first", "second"} {
		if m := next(t, ch); string(m.Data()) != want {
			t.Fatalf("delivered %q, want %q: the retried message must be stored once", m.Data(), want)
		}
	}
}

func TestFullBusRefusesNewMessages(t *testing.T) {
	const maxBytes = 4 << 10
	b := open(t, bus.Options{StoreDir: t.TempDir(), MaxBytes: maxBytes})
	// Interest retention keeps a message only while a consumer still
	// needs it, so the durable consumer must exist but not ack.
	_, c := consume(t, b, "storage", 1000)
	c.Stop()

	payload := bytes.Repeat([]byte("x"), 200)
	var stored int
	var err error
	for stored = 0; stored < 100; stored++ {
		err = b.PublishTelemetry(t.Context(), "acme", "dev-1", fmt.Sprintf("msg-%d", stored), payload)
		if err != nil {
			break
		}
	}
	if err == nil {
		t.Fatalf("%d messages of %d bytes published into a %d-byte bus without an error", stored, len(payload), maxBytes)
	}
	if stored == 0 {
		t.Fatalf("the first message was refused: %v", err)
	}
	// The server refuses the message because of the limit, not for some
	// other reason such as a timeout.
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.Description != server.ErrMaxBytes.Error() {
		t.Fatalf("publish into a full bus: err = %v, want the server's %q", err, server.ErrMaxBytes)
	}
	if err := b.PublishTelemetry(t.Context(), "acme", "dev-1", "msg-again", payload); err == nil {
		t.Errorf("a publish into a still full bus succeeded")
	}

	ch, _ := consume(t, b, "storage", 1000)
	for i := range stored {
		m := next(t, ch)
		if !bytes.Equal(m.Data(), payload) {
			t.Fatalf("message %d = %q, want the payload", i, m.Data())
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	// Once the consumer has caught up, interest retention frees the space
	// and devices that were told to retry get through.
	deadline := time.Now().Add(wait)
	for b.PublishTelemetry(t.Context(), "acme", "dev-1", "msg-retry", payload) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the bus still refuses messages after every stored one was acknowledged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := next(t, ch); !bytes.Equal(m.Data(), payload) {
		t.Errorf("retried message = %q, want the payload", m.Data())
	}
}

func TestLifecycle(t *testing.T) {
	type event struct{ tenant, device, event string }
	tests := []struct {
		name string
		give event
	}{
		{"a deleted device is announced with its tenant and ID", event{"acme", "dev-1", "deleted"}},
		{"a rotated token is announced with its tenant and ID", event{"globex", "sensor_42", "token_rotated"}},
	}
	b := open(t, bus.Options{StoreDir: t.TempDir()})
	got := make(chan event, 16)
	unsubscribe, err := b.SubscribeLifecycle(func(tenant, device, ev string) { got <- event{tenant, device, ev} })
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := b.PublishLifecycle(tt.give.tenant, tt.give.device, tt.give.event); err != nil {
				t.Fatal(err)
			}
			select {
			case e := <-got:
				if e != tt.give {
					t.Errorf("received %+v, want %+v", e, tt.give)
				}
			case <-time.After(wait):
				t.Fatal("no lifecycle event received")
			}
		})
	}

	t.Run("an unsubscribed handler receives nothing more", func(t *testing.T) {
		other := make(chan event, 1)
		unsubscribeOther, err := b.SubscribeLifecycle(func(tenant, device, ev string) { other <- event{tenant, device, ev} })
		if err != nil {
			t.Fatal(err)
		}
		defer unsubscribeOther()
		unsubscribe()
		if err := b.PublishLifecycle("acme", "dev-1", "deleted"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-other:
		case <-time.After(wait):
			t.Fatal("the still subscribed handler received nothing")
		}
		// The event was published after unsubscribe returned, so it can
		// never reach the first handler's queue.
		select {
		case e := <-got:
			t.Errorf("unsubscribed handler received %+v", e)
		default:
		}
	})
}

func TestTelemetrySubjectsAreOneSubtreePerTenant(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"telemetry is under the tenant and device", bus.TelemetrySubject("acme", "dev-1"), "tether.acme.devices.dev-1.telemetry"},
		{"a batch of telemetry is under the tenant", bus.TelemetryBatchSubject("acme"), "tether.acme.telemetry"},
		{"lifecycle events are under the tenant and device", bus.LifecycleSubject("acme", "dev-1"), "tether.acme.devices.dev-1.lifecycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("subject = %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// The stream only captures what the subject helpers produce; a typo in
// either would lose telemetry silently, so check it against a real server.
func TestPublishedTelemetryLandsInTheStream(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	for _, subject := range []string{bus.TelemetrySubject("acme", "dev-1"), bus.TelemetryBatchSubject("acme")} {
		ack, err := js.Publish(ctx, subject, []byte("x"))
		if err != nil {
			t.Fatalf("publish on %s: %v", subject, err)
		}
		if ack.Stream != bus.TelemetryStream {
			t.Errorf("%s stored in stream %q, want %q", subject, ack.Stream, bus.TelemetryStream)
		}
	}
}
