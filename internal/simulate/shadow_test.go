package simulate

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

// shadowLink is a link to a fake node that keeps the device's shadow. It
// loses what a node may lose under load: a delta (its shadow event never
// reached the gateway) or a report (acknowledged, then not stored).
type shadowLink struct {
	mu       sync.Mutex
	desired  map[string]any
	reported map[string]any
	// loseReports is how many reports to lose, from now.
	loseReports int
	// loseDeltas makes desire not send the delta.
	loseDeltas bool
	reports    int

	in   chan incoming
	lost chan struct{}
}

func newShadowLink() *shadowLink {
	return &shadowLink{desired: map[string]any{}, reported: map[string]any{},
		in: make(chan incoming, 16), lost: make(chan struct{})}
}

// desire is an application's update of the desired state: the node sends
// the delta (unless it is lost), as the MQTT gateway does.
func (l *shadowLink) desire(d map[string]any) {
	l.mu.Lock()
	maps.Copy(l.desired, d)
	delta := map[string]any{}
	for k, v := range l.desired {
		if !sameJSON(l.reported[k], v) {
			delta[k] = v
		}
	}
	lose := l.loseDeltas
	l.mu.Unlock()
	if len(delta) > 0 && !lose {
		l.in <- incoming{desired: delta, delta: true}
	}
}

func (l *shadowLink) reportedValue(k string) any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reported[k]
}

func (l *shadowLink) telemetry(context.Context, []byte) (string, error) { return "", nil }

func (l *shadowLink) report(_ context.Context, r map[string]any) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports++
	if l.loseReports > 0 {
		l.loseReports--
		return nil
	}
	maps.Copy(l.reported, r)
	return nil
}

func (l *shadowLink) reply(context.Context, string, tether.CommandReply) error { return nil }

func (l *shadowLink) sync(context.Context) error {
	l.mu.Lock()
	in := incoming{desired: maps.Clone(l.desired), reported: maps.Clone(l.reported)}
	l.mu.Unlock()
	select {
	case l.in <- in:
	default: // the device has not read the previous answers yet
	}
	return nil
}

func (l *shadowLink) incoming() <-chan incoming { return l.in }
func (l *shadowLink) done() <-chan struct{}     { return l.lost }
func (l *shadowLink) err() error                { return nil }
func (l *shadowLink) close()                    {}

// runShadowSession runs a thermostat's session on l until the test ends.
func runShadowSession(t *testing.T, l *shadowLink) {
	t.Helper()
	r, err := NewRunner([]Device{{ID: "t-1", Kind: KindThermostat}}, Options{
		MQTTAddr: "unused:1", Interval: 20 * time.Millisecond, ShadowSync: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	rng := NewRand("t-1")
	m, err := NewModel(KindThermostat, rng, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.session(ctx, m, rng, l, r.log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("session: %v", err)
		}
	})
}

// waitReported waits for the fake node to hold the reported value.
func waitReported(t *testing.T, l *shadowLink, k string, want any, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !sameJSON(l.reportedValue(k), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v the node holds reported %s %v, want %v", within, k, l.reportedValue(k), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A delta lost on the way (its shadow event never reached the gateway,
// which sends each delta once) must not leave the device behind until it
// reconnects: it reads its shadow again now and then.
func TestADesiredStateIsFollowedWhenItsDeltaIsLost(t *testing.T) {
	l := newShadowLink()
	runShadowSession(t, l)
	waitReportedSet(t, l)
	l.mu.Lock()
	l.loseDeltas = true
	l.mu.Unlock()
	l.desire(map[string]any{"target_temp": 24.5})
	waitReported(t, l, "target_temp", 24.5, 2*time.Second)
}

// A report lost after the device followed a delta (acknowledged, then not
// stored) must be made again: the next read of the shadow shows the node
// behind, though the device's state does not change any more.
func TestADesiredStateIsReportedAgainWhenTheReportIsLost(t *testing.T) {
	l := newShadowLink()
	runShadowSession(t, l)
	waitReportedSet(t, l)
	l.mu.Lock()
	l.loseReports = 1
	l.mu.Unlock()
	l.desire(map[string]any{"target_temp": 24.5})
	waitReported(t, l, "target_temp", 24.5, 2*time.Second)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loseReports != 0 {
		t.Fatal("the device never reported after the delta")
	}
}

// A delta for a state the device is in already (it followed it, and its
// report was lost) is answered with a report.
func TestADeltaTheDeviceFollowsAlreadyIsReported(t *testing.T) {
	l := newShadowLink()
	r, err := NewRunner([]Device{{ID: "t-1", Kind: KindThermostat}}, Options{MQTTAddr: "unused:1"})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewModel(KindThermostat, NewRand("t-1"), false)
	m.Desire(map[string]any{"target_temp": 24.5})
	if err := r.handle(context.Background(), m, l, incoming{desired: map[string]any{"target_temp": 24.5}, delta: true}, r.log); err != nil {
		t.Fatal(err)
	}
	if got := l.reportedValue("target_temp"); got != 24.5 {
		t.Fatalf("after the delta the node holds target_temp %v, want 24.5", got)
	}
	// A shadow that holds the device's state already needs no report.
	l.reports = 0
	in := incoming{desired: map[string]any{"target_temp": 24.5}, reported: maps.Clone(l.reported)}
	if err := r.handle(context.Background(), m, l, in, r.log); err != nil {
		t.Fatal(err)
	}
	if l.reports != 0 {
		t.Fatalf("%d reports of a state the node holds already", l.reports)
	}
}

// waitReportedSet waits for the session's first report.
func waitReportedSet(t *testing.T, l *shadowLink) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for l.reportedValue("target_temp") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the device never reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
