package presence_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/presence"
	"github.com/tether-iot/tether/internal/profile"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/testkit"
)

const tenant = "acme"

var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

// events records the presence events published.
type events struct {
	mu  sync.Mutex
	got []tether.Presence
}

func (e *events) PublishEvent(_ context.Context, tenant, kind, device string, data []byte) error {
	var p tether.Presence
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	if kind != tether.EventPresence || p.TenantID != tenant || p.DeviceID != device {
		panic("event of the wrong kind or subject: " + kind + " " + device)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, p)
	return nil
}

// of returns the status/reason of one device's events, in order.
func (e *events) of(device string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var s []string
	for _, p := range e.got {
		if p.DeviceID == device {
			s = append(s, p.Status+"/"+p.Reason)
		}
	}
	return s
}

// profiles gives each device the report interval of its profile ID
// ("30s": 30 seconds; "": never stale).
type profiles struct{}

func (profiles) Compiled(_ context.Context, _, id string) (*profile.Compiled, error) {
	var iv time.Duration
	if id != "" {
		var err error
		if iv, err = time.ParseDuration(id); err != nil {
			return nil, err
		}
	}
	return profile.Compile(&tether.Profile{ID: id, ReportInterval: tether.Duration(iv)})
}

type env struct {
	t      *testing.T
	db     *sqlite.DB
	svc    *presence.Service
	events *events
	clock  *testkit.Clock
}

func newEnv(t *testing.T, node string) *env {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.EnsureTenant(context.Background(), tether.Tenant{ID: tenant, Name: tenant}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"d1", "d2", "d3"} {
		if err := db.CreateDevice(context.Background(), &tether.Device{TenantID: tenant, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{t: t, db: db, events: &events{}, clock: testkit.NewClock(t0)}
	e.svc = e.service(node)
	return e
}

// service returns a new service over the env's store, as another process
// (or this one after a restart) would have.
func (e *env) service(node string) *presence.Service {
	return presence.New(e.db, profiles{}, e.events, presence.Options{
		Node: node, Now: e.clock.Now, Tick: 2 * time.Millisecond, ConnectionlessTimeout: 5 * time.Minute,
	})
}

// run runs the service until the test ends.
func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.svc.Run(ctx)
		close(done)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (e *env) get(device string) *tether.Presence {
	e.t.Helper()
	p, err := e.svc.Get(context.Background(), tenant, device)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// want fails unless the device's presence is status/reason.
func (e *env) want(device, status, reason string) *tether.Presence {
	e.t.Helper()
	p := e.get(device)
	if p.Status != status || p.Reason != reason {
		e.t.Fatalf("%s is %s/%s, want %s/%s", device, p.Status, p.Reason, status, reason)
	}
	return p
}

// eventually waits up to 2 seconds for the device's presence to become
// status/reason.
func (e *env) eventually(device, status, reason string) *tether.Presence {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		p := e.get(device)
		if p.Status == status && p.Reason == reason {
			return p
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s is %s/%s, want %s/%s", device, p.Status, p.Reason, status, reason)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle lets Run tick a few times.
func settle() { time.Sleep(30 * time.Millisecond) }

func device(id, profile string) *tether.Device {
	return &tether.Device{TenantID: tenant, ID: id, ProfileID: profile}
}

func TestConnectDisconnect(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "n1")

	t.Run("reports a device that never connected as offline", func(t *testing.T) {
		p := e.want("d1", tether.PresenceOffline, tether.ReasonNeverConnected)
		if p.DeviceID != "d1" || p.TenantID != tenant {
			t.Errorf("presence %+v", p)
		}
	})

	t.Run("ignores a late disconnect of an older connection", func(t *testing.T) {
		a, err := e.svc.Connected(ctx, device("d1", ""), "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Add(time.Second)
		b, err := e.svc.Connected(ctx, device("d1", ""), "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		if a != 1 || b != 2 {
			t.Fatalf("seqs %d, %d; want 1, 2", a, b)
		}
		if err := e.svc.Disconnected(ctx, device("d1", ""), a, tether.ReasonTakeover); err != nil {
			t.Fatal(err)
		}
		p := e.want("d1", tether.PresenceOnline, tether.ReasonConnected)
		if p.Seq != b || !p.Since.Equal(t0.Add(time.Second)) || p.Transport != "mqtt" {
			t.Errorf("presence %+v", p)
		}

		e.clock.Add(time.Second)
		if err := e.svc.Disconnected(ctx, device("d1", ""), b, tether.ReasonKeepAliveTimeout); err != nil {
			t.Fatal(err)
		}
		p = e.want("d1", tether.PresenceOffline, tether.ReasonKeepAliveTimeout)
		if !p.Since.Equal(t0.Add(2 * time.Second)) {
			t.Errorf("since %v", p.Since)
		}
		// A second disconnect of the same connection changes nothing.
		if err := e.svc.Disconnected(ctx, device("d1", ""), b, tether.ReasonConnectionLost); err != nil {
			t.Fatal(err)
		}
		e.want("d1", tether.PresenceOffline, tether.ReasonKeepAliveTimeout)
		want := []string{"online/connected", "online/connected", "offline/keepalive_timeout"}
		if got := e.events.of("d1"); !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	})

	t.Run("refuses a device that does not exist", func(t *testing.T) {
		_, err := e.svc.Connected(ctx, device("nope", ""), "mqtt")
		if tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("Connected = %v, want not found", err)
		}
	})
}

func TestStale(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "n1")
	e.run()
	d := device("d1", "30s")
	if _, err := e.svc.Connected(ctx, d, "mqtt"); err != nil {
		t.Fatal(err)
	}
	never := device("d2", "")
	if _, err := e.svc.Connected(ctx, never, "mqtt"); err != nil {
		t.Fatal(err)
	}

	t.Run("keeps a device that reports within its interval online", func(t *testing.T) {
		e.clock.Add(20 * time.Second)
		e.svc.Seen(d, "mqtt")
		e.clock.Add(20 * time.Second)
		settle()
		e.want("d1", tether.PresenceOnline, tether.ReasonConnected)
	})
	t.Run("marks a connected device silent for longer than its interval stale", func(t *testing.T) {
		e.clock.Add(11 * time.Second)
		p := e.eventually("d1", tether.PresenceStale, tether.ReasonSilent)
		if !p.Since.Equal(t0.Add(51 * time.Second)) {
			t.Errorf("since %v", p.Since)
		}
	})
	t.Run("never marks a device without an interval stale", func(t *testing.T) {
		e.want("d2", tether.PresenceOnline, tether.ReasonConnected)
	})
	t.Run("brings a stale device back online on its next message", func(t *testing.T) {
		e.clock.Add(time.Second)
		e.svc.Seen(d, "mqtt")
		e.eventually("d1", tether.PresenceOnline, tether.ReasonActivity)
	})
	t.Run("takes a stale device offline when its connection ends", func(t *testing.T) {
		e.clock.Add(time.Minute)
		p := e.eventually("d1", tether.PresenceStale, tether.ReasonSilent)
		if err := e.svc.Disconnected(ctx, d, p.Seq, tether.ReasonWill); err != nil {
			t.Fatal(err)
		}
		e.want("d1", tether.PresenceOffline, tether.ReasonWill)
	})
	want := []string{"online/connected", "stale/silent", "online/activity", "stale/silent", "offline/will"}
	if got := e.events.of("d1"); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestConnectionless(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "n1")
	e.run()
	d := device("d1", "")

	t.Run("marks a device online on its first request", func(t *testing.T) {
		e.svc.Seen(d, "http")
		p := e.eventually("d1", tether.PresenceOnline, tether.ReasonActivity)
		if p.Transport != "http" {
			t.Errorf("transport %q", p.Transport)
		}
	})
	t.Run("keeps it online while it sends", func(t *testing.T) {
		for range 3 {
			e.clock.Add(4 * time.Minute)
			e.svc.Seen(d, "http")
			settle()
		}
		e.want("d1", tether.PresenceOnline, tether.ReasonActivity)
	})
	t.Run("marks it offline after the timeout without a request", func(t *testing.T) {
		e.clock.Add(5 * time.Minute)
		e.eventually("d1", tether.PresenceOffline, tether.ReasonSilent)
	})
	t.Run("marks it online again on its next request", func(t *testing.T) {
		e.svc.Seen(d, "coap")
		p := e.eventually("d1", tether.PresenceOnline, tether.ReasonActivity)
		if p.Transport != "coap" {
			t.Errorf("transport %q", p.Transport)
		}
	})
	t.Run("lets a connection take over and ignores the requests' timeout", func(t *testing.T) {
		seq, err := e.svc.Connected(ctx, d, "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		e.svc.Seen(d, "http")
		e.clock.Add(10 * time.Minute)
		settle()
		p := e.want("d1", tether.PresenceOnline, tether.ReasonConnected)
		if p.Seq != seq {
			t.Errorf("seq %d, want %d", p.Seq, seq)
		}
	})
	t.Run("ignores messages of a connected transport without a connection", func(t *testing.T) {
		e.svc.Seen(device("d2", ""), "mqtt")
		settle()
		e.want("d2", tether.PresenceOffline, tether.ReasonNeverConnected)
	})
}

func TestRecover(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "n1")
	other := e.service("n2")
	if _, err := e.svc.Connected(ctx, device("d1", ""), "mqtt"); err != nil {
		t.Fatal(err)
	}
	seq, err := e.svc.Connected(ctx, device("d2", ""), "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Disconnected(ctx, device("d2", ""), seq, tether.ReasonCleanDisconnect); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Connected(ctx, device("d3", ""), "mqtt"); err != nil {
		t.Fatal(err)
	}

	e.clock.Add(time.Minute)
	restarted := e.service("n1")
	if err := restarted.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	p := e.want("d1", tether.PresenceOffline, tether.ReasonServerShutdown)
	if !p.Since.Equal(t0.Add(time.Minute)) {
		t.Errorf("since %v", p.Since)
	}
	e.want("d2", tether.PresenceOffline, tether.ReasonCleanDisconnect)
	e.want("d3", tether.PresenceOnline, tether.ReasonConnected)
	if got := e.events.of("d1"); !slices.Equal(got, []string{"online/connected", "offline/server_shutdown"}) {
		t.Errorf("events %v", got)
	}
}

func TestSeenIsSafeForConcurrentUse(t *testing.T) {
	e := newEnv(t, "n1")
	e.run()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 1000 {
				e.svc.Seen(device([]string{"d1", "d2", "d3"}[(i+j)%3], ""), "coap")
			}
		})
	}
	wg.Wait()
	for _, id := range []string{"d1", "d2", "d3"} {
		e.eventually(id, tether.PresenceOnline, tether.ReasonActivity)
		if got := e.events.of(id); len(got) != 1 {
			t.Errorf("%s: events %v, want one", id, got)
		}
	}
}
