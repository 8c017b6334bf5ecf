package ingest_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/ingest"
	"github.com/tether-iot/tether/internal/telemetry"
)

// published is one PublishTelemetry call as a recordingPublisher saw it.
type published struct {
	tenant, device, msgID string
	data                  []byte
}

// recordingPublisher keeps a copy of every message, as the bus does, and
// fails with err if it is set.
type recordingPublisher struct {
	mu   sync.Mutex
	got  []published
	err  error
	seen func(data []byte) // called before returning, if set
}

func (p *recordingPublisher) PublishTelemetry(_ context.Context, tenant, device, msgID string, data []byte) error {
	if p.seen != nil {
		p.seen(data)
	}
	if p.err != nil {
		return p.err
	}
	p.mu.Lock()
	p.got = append(p.got, published{tenant, device, msgID, append([]byte(nil), data...)})
	p.mu.Unlock()
	return nil
}

var device = &tether.Device{TenantID: "acme", ID: "dev-1"}

func newIngestor(pub ingest.Publisher) *ingest.Ingestor {
	return ingest.New(pub, telemetry.DefaultLimits(), 0, slog.New(slog.DiscardHandler))
}

func TestAcceptPublishesTheEncodedMessage(t *testing.T) {
	pub := &recordingPublisher{}
	in := newIngestor(pub)
	n, err := in.Accept(t.Context(), device, []byte(`{"temp":21.5,"on":true}`))
	if err != nil || n != 2 {
		t.Fatalf("Accept = %d, %v; want 2 points", n, err)
	}
	if len(pub.got) != 1 {
		t.Fatalf("published %d messages, want 1", len(pub.got))
	}
	p := pub.got[0]
	m, err := telemetry.UnmarshalMessage(p.data)
	if err != nil {
		t.Fatalf("published data does not decode: %v", err)
	}
	if p.tenant != "acme" || p.device != "dev-1" || m.TenantID != "acme" || m.DeviceID != "dev-1" {
		t.Errorf("published for %s/%s a message of %s/%s, want acme/dev-1", p.tenant, p.device, m.TenantID, m.DeviceID)
	}
	if p.msgID != m.ID || len(m.ID) != 32 {
		t.Errorf("bus message ID %q, message ID %q: want the same 32 digits", p.msgID, m.ID)
	}
	if len(m.Points) != 2 {
		t.Errorf("message has %d points, want 2", len(m.Points))
	}
	if s := in.Stats(); s.Accepted != 1 || s.Points != 2 {
		t.Errorf("stats %+v, want 1 message and 2 points accepted", s)
	}
}

// The store's dedupe table is keyed by message ID: IDs must never repeat,
// and an Ingestor's IDs sort in the order it made them so that the table
// grows at one end.
func TestMessageIDsAreUniqueAndOrdered(t *testing.T) {
	pub := &recordingPublisher{}
	in := newIngestor(pub)
	const each, goroutines = 200, 8
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				if _, err := in.Accept(context.Background(), device, []byte(`{"v":1}`)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool)
	for _, p := range pub.got {
		if seen[p.msgID] {
			t.Fatalf("message ID %s used twice", p.msgID)
		}
		seen[p.msgID] = true
	}
	if len(seen) != each*goroutines {
		t.Fatalf("%d IDs for %d messages", len(seen), each*goroutines)
	}
	var prev string
	for range 100 {
		if _, err := in.Accept(t.Context(), device, []byte(`{"v":1}`)); err != nil {
			t.Fatal(err)
		}
		id := pub.got[len(pub.got)-1].msgID
		if id <= prev {
			t.Fatalf("ID %s after %s: an Ingestor's IDs must increase", id, prev)
		}
		prev = id
	}
	other := newIngestor(pub)
	if _, err := other.Accept(t.Context(), device, []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if a, b := pub.got[0].msgID[:16], pub.got[len(pub.got)-1].msgID[:16]; a == b {
		t.Errorf("two Ingestors made IDs with the same random half %s", a)
	}
}

// The encoding buffer is reused, so a message must be complete while the
// bus has it and the next message must not show through it afterwards.
func TestAcceptReusesItsBufferOnlyAfterThePublish(t *testing.T) {
	pub := &recordingPublisher{}
	in := newIngestor(pub)
	pub.seen = func(data []byte) {
		if _, err := telemetry.UnmarshalMessage(data); err != nil {
			t.Errorf("the bus was handed %q: %v", data, err)
		}
	}
	for _, payload := range []string{`{"long_key_name_to_grow_the_buffer":1,"b":2,"c":3}`, `{"a":1}`, `{"x":"yz"}`} {
		if _, err := in.Accept(t.Context(), device, []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range pub.got {
		if _, err := telemetry.UnmarshalMessage(p.data); err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
}

func TestAcceptFailures(t *testing.T) {
	t.Run("a bus failure is EUNAVAILABLE and wraps ErrBus", func(t *testing.T) {
		busErr := errors.New("stream full")
		in := newIngestor(&recordingPublisher{err: busErr})
		_, err := in.Accept(t.Context(), device, []byte(`{"v":1}`))
		if !errors.Is(err, ingest.ErrBus) || !errors.Is(err, busErr) || tether.ErrorCode(err) != tether.EUNAVAILABLE {
			t.Fatalf("err = %v (code %q), want ErrBus, the bus's error and EUNAVAILABLE", err, tether.ErrorCode(err))
		}
		if s := in.Stats(); s.BusFailed != 1 || s.Accepted != 0 {
			t.Errorf("stats %+v, want one bus failure and nothing accepted", s)
		}
	})
	t.Run("a refused payload is not published and is counted by reason", func(t *testing.T) {
		pub := &recordingPublisher{}
		in := newIngestor(pub)
		_, err := in.Accept(t.Context(), device, []byte(`{"v":`))
		var te *telemetry.Error
		if !errors.As(err, &te) {
			t.Fatalf("err = %v, want a *telemetry.Error", err)
		}
		if len(pub.got) != 0 {
			t.Errorf("a refused payload was published")
		}
		if in.Refused("dev-1") != 1 || in.Stats().Refused[te.Reason] != 1 {
			t.Errorf("refusal not counted: %+v", in.Stats())
		}
	})
}
