package bus_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-iot/tether/internal/bus"
)

// TestConcurrentPublishesAreBatchedAndDeliveredOneByOne publishes from many
// devices at once, so that the bus stores them in batches, and checks the
// consumer still sees every message once, unchanged, each device's in the
// order it published them.
func TestConcurrentPublishesAreBatchedAndDeliveredOneByOne(t *testing.T) {
	const devices, each = 40, 20
	b := open(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	// Nothing is acknowledged until the end: the stream keeps every
	// JetStream message until then, so its count shows the batching.
	ch, c := consume(t, b, "storage", 10000)
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			device := fmt.Sprintf("dev-%d", d)
			for i := range each {
				data := fmt.Appendf(nil, "%s/%03d", device, i)
				if err := b.PublishTelemetry(t.Context(), "acme", device, string(data), data); err != nil {
					t.Errorf("PublishTelemetry %s: %v", data, err)
					return
				}
			}
		})
	}
	wg.Wait()
	last := make(map[string]int)
	var msgs []bus.Msg
	for range devices * each {
		m := next(t, ch)
		msgs = append(msgs, m)
		device, seq, ok := strings.Cut(string(m.Data()), "/")
		var n int
		if _, err := fmt.Sscanf(seq, "%d", &n); !ok || err != nil {
			t.Fatalf("delivered %q, which no device published", m.Data())
		}
		if prev, seen := last[device]; seen && n != prev+1 || !seen && n != 0 {
			t.Fatalf("%s: message %d delivered after %d, want each device's messages once and in order", device, n, prev)
		}
		last[device] = n
	}
	select {
	case m := <-ch:
		t.Fatalf("delivered %q more than the %d published", m.Data(), devices*each)
	case <-time.After(50 * time.Millisecond):
	}
	stored := streamMsgs(t, b)
	if stored >= devices*each {
		t.Errorf("the stream holds %d JetStream messages for %d telemetry messages published by %d devices at once; want batches", stored, devices*each, devices)
	}
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	waitCaughtUp(t, c)
	if n := streamMsgs(t, b); n != 0 {
		t.Errorf("after every message was acknowledged the stream still holds %d", n)
	}
}

// streamMsgs returns the number of JetStream messages in the telemetry
// stream.
func streamMsgs(t *testing.T, b *bus.Bus) int {
	t.Helper()
	js := jetStream(t, b)
	s, err := js.Stream(t.Context(), bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Msgs)
}

func waitCaughtUp(t *testing.T, c *bus.Consumption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := c.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// jetStream connects a separate client to b, which must listen on a port.
func jetStream(t *testing.T, b *bus.Bus) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// batchBody frames msgs as the bus does.
func batchBody(msgs ...string) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

func TestBatchIsAcknowledgedWhenEveryMessageInItIs(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	ch, _ := consume(t, b, "storage", 10)
	js := jetStream(t, b)
	if _, err := js.Publish(t.Context(), bus.TelemetryBatchSubject("acme"), batchBody("one", "two", "three")); err != nil {
		t.Fatal(err)
	}
	var got []bus.Msg
	for _, want := range []string{"one", "two", "three"} {
		m := next(t, ch)
		if string(m.Data()) != want {
			t.Fatalf("delivered %q, want %q", m.Data(), want)
		}
		got = append(got, m)
	}
	for _, m := range got[:2] {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if info := ackState(t, b); info.NumAckPending != 1 {
		t.Fatalf("with two of three messages acknowledged, %d JetStream messages are pending acknowledgement, want the batch", info.NumAckPending)
	}
	if err := got[2].Ack(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for ackState(t, b).NumAckPending != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the batch is still unacknowledged after every message in it was")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNakOfOneMessageRedeliversItsBatch(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	ch, _ := consume(t, b, "storage", 10)
	js := jetStream(t, b)
	if _, err := js.Publish(t.Context(), bus.TelemetryBatchSubject("acme"), batchBody("one", "two")); err != nil {
		t.Fatal(err)
	}
	first, second := next(t, ch), next(t, ch)
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := second.Nak(0); err != nil {
		t.Fatal(err)
	}
	// Both come again: the store drops the one it already has by its ID.
	for _, want := range []string{"one", "two"} {
		if m := next(t, ch); string(m.Data()) != want {
			t.Fatalf("redelivered %q, want %q", m.Data(), want)
		}
	}
}

func TestMalformedBatchIsDeliveredAsItIs(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	ch, _ := consume(t, b, "storage", 10)
	js := jetStream(t, b)
	body := append(batchBody("one"), 0x7f) // claims 127 more bytes
	if _, err := js.Publish(t.Context(), bus.TelemetryBatchSubject("acme"), body); err != nil {
		t.Fatal(err)
	}
	m := next(t, ch)
	if string(m.Data()) != string(body) {
		t.Fatalf("delivered %q, want the whole body %q for the consumer's decoder to refuse", m.Data(), body)
	}
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
}

func TestPublishAfterCloseFails(t *testing.T) {
	b, err := bus.Open(t.Context(), bus.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishTelemetry(t.Context(), "acme", "dev-1", "msg-1", []byte("x")); err == nil {
		t.Fatal("PublishTelemetry after Close succeeded")
	}
}

func ackState(t *testing.T, b *bus.Bus) *jetstream.ConsumerInfo {
	t.Helper()
	return consumerState(t, b.ClientURL(), "storage")
}

// When the bus fills up under concurrent publishers, every publish either
// fails or is stored: the consumer gets exactly the messages whose
// publish succeeded.
func TestFullBusUnderConcurrentPublishesAcknowledgesOnlyWhatItStored(t *testing.T) {
	const publishers, each = 40, 10
	b := open(t, bus.Options{StoreDir: t.TempDir(), MaxBytes: 16 << 10})
	_, c := consume(t, b, "storage", 10000)
	c.Stop() // the consumer exists, so messages are kept, but nothing is acknowledged

	payload := strings.Repeat("x", 200)
	var mu sync.Mutex
	succeeded := make(map[string]bool)
	var failed int
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("p%02d-%02d", p, i)
				err := b.PublishTelemetry(t.Context(), "acme", fmt.Sprintf("dev-%d", p), id, []byte(id+payload))
				mu.Lock()
				if err == nil {
					succeeded[id] = true
				} else {
					failed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed == 0 || len(succeeded) == 0 {
		t.Fatalf("%d publishes succeeded and %d failed; want the bus to fill up part way", len(succeeded), failed)
	}
	ch, _ := consume(t, b, "storage", 10000)
	for range len(succeeded) {
		m := next(t, ch)
		id := strings.TrimSuffix(string(m.Data()), payload)
		if !succeeded[id] {
			t.Fatalf("delivered %s, whose publish failed or which was delivered before", id)
		}
		delete(succeeded, id)
	}
	select {
	case m := <-ch:
		t.Fatalf("delivered %.10s… beyond the messages whose publish succeeded", m.Data())
	case <-time.After(100 * time.Millisecond):
	}
}

// A stream created before batches existed captures only device subjects;
// Open must add the batch subject, or batches would find no stream.
func TestOpenAddsTheBatchSubjectToAnOlderStream(t *testing.T) {
	ns := runExternalServer(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: bus.TelemetryStream, Subjects: []string{"tether.*.devices.*.telemetry"},
		Retention: jetstream.InterestPolicy, Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}
	b := open(t, bus.Options{URL: ns.ClientURL(), Durables: []string{"storage"}})
	ch, _ := consume(t, b, "storage", 10)
	if _, err := js.Publish(t.Context(), bus.TelemetryBatchSubject("acme"), batchBody("one", "two")); err != nil {
		t.Fatalf("publish a batch after Open: %v", err)
	}
	for _, want := range []string{"one", "two"} {
		if m := next(t, ch); string(m.Data()) != want {
			t.Fatalf("delivered %q, want %q", m.Data(), want)
		}
	}
}
