package bus_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/bus"
)

// liveMsg is one message a live subscriber saw.
type liveMsg struct{ tenant, data string }

// subscribeLive collects what a live subscription sees; it stops when the
// test ends.
func subscribeLive(t *testing.T, b *bus.Bus) (<-chan liveMsg, *bus.LiveTelemetry) {
	t.Helper()
	ch := make(chan liveMsg, 10000)
	l, err := b.SubscribeTelemetryLive(func(tenant string, data []byte) { ch <- liveMsg{tenant, string(data)} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	return ch, l
}

func TestLiveTelemetrySeesEveryNodesMessagesBatchesSplit(t *testing.T) {
	ns := runExternalServer(t)
	a := open(t, bus.Options{URL: ns.ClientURL()})
	b := open(t, bus.Options{URL: ns.ClientURL()})
	ch, l := subscribeLive(t, a)

	// Concurrent publishers on the other node make batches (the batching
	// test proves it); a lone one makes single messages.
	const devices, each = 20, 25
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			device := fmt.Sprintf("dev-%d", d)
			tenant := []string{"acme", "globex"}[d%2]
			for i := range each {
				data := fmt.Appendf(nil, "%s/%s/%03d", tenant, device, i)
				if err := b.PublishTelemetry(t.Context(), tenant, device, string(data), data); err != nil {
					t.Errorf("PublishTelemetry %s: %v", data, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := b.PublishTelemetry(t.Context(), "acme", "lone", "lone-1", []byte("acme/lone/000")); err != nil {
		t.Fatal(err)
	}

	last := map[string]int{}
	deadline := time.After(wait)
	for range devices*each + 1 {
		var m liveMsg
		select {
		case m = <-ch:
		case <-deadline:
			t.Fatalf("saw %d of %d messages", len(last), devices*each+1)
		}
		parts := strings.Split(m.data, "/")
		if len(parts) != 3 || parts[0] != m.tenant {
			t.Fatalf("saw %q as tenant %q; want the tenant the message was published for", m.data, m.tenant)
		}
		var n int
		if _, err := fmt.Sscanf(parts[2], "%d", &n); err != nil {
			t.Fatalf("saw %q, which nobody published", m.data)
		}
		key := parts[0] + "/" + parts[1]
		if prev, seen := last[key]; seen && n != prev+1 || !seen && n != 0 {
			t.Fatalf("%s: message %d seen after %d; want each device's messages once and in order", key, n, prev)
		}
		last[key] = n
	}
	select {
	case m := <-ch:
		t.Errorf("saw %q more than once", m.data)
	case <-time.After(50 * time.Millisecond):
	}
	if d := l.Dropped(); d != 0 {
		t.Errorf("a subscriber that keeps up dropped %d", d)
	}
}

func TestAStuckLiveSubscriberDropsAndNeverSlowsPublishers(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir(), Durables: []string{"storage"}})
	release := make(chan struct{})
	var seen sync.WaitGroup
	seen.Add(1)
	var once sync.Once
	l, err := b.SubscribeTelemetryLive(func(string, []byte) {
		once.Do(seen.Done)
		<-release
	})
	if err != nil {
		t.Fatal(err)
	}
	// Publishes one at a time each travel alone, so each is a bus message
	// the stuck subscriber's bounded queue must hold or drop.
	const n = 1000
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("m-%d", i)
		if err := b.PublishTelemetry(t.Context(), "acme", "dev-1", id, []byte(id)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	took := time.Since(start)
	seen.Wait()
	if d := l.Dropped(); d == 0 {
		t.Errorf("a subscriber stuck on its first message dropped nothing of %d", n)
	}
	// Generous: JetStream takes well under a millisecond per publish; a
	// subscriber that held publishers up would hold them forever.
	if took > 30*time.Second {
		t.Errorf("%d publishes took %s with a stuck live subscriber", n, took)
	}
	close(release)
	l.Stop()
}

func TestStoppedLiveSubscriptionSeesNothing(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir()})
	ch, l := subscribeLive(t, b)
	publish(t, b, "before", []byte("before"))
	select {
	case m := <-ch:
		if m.data != "before" {
			t.Fatalf("saw %q, want before", m.data)
		}
	case <-time.After(wait):
		t.Fatal("saw nothing")
	}
	l.Stop()
	publish(t, b, "after", []byte("after"))
	select {
	case m := <-ch:
		t.Errorf("saw %q after Stop", m.data)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestALiveBatchNotInTetherFormatIsSkippedAndCounted(t *testing.T) {
	b := open(t, bus.Options{StoreDir: t.TempDir()})
	ch, l := subscribeLive(t, b)
	// A length prefix that promises more bytes than follow.
	if err := b.Publish(bus.TelemetryBatchSubject("acme"), []byte{0x7f, 'x'}); err != nil {
		t.Fatal(err)
	}
	publish(t, b, "good", []byte("good"))
	select {
	case m := <-ch:
		if m.data != "good" {
			t.Fatalf("saw %q, want only the well-formed message", m.data)
		}
	case <-time.After(wait):
		t.Fatal("saw nothing")
	}
	if n := l.Malformed(); n != 1 {
		t.Errorf("Malformed() = %d, want 1", n)
	}
}
