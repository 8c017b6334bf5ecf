package alert_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/alert"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// The SQLite store is the alert service's store, with no adapter.
var _ alert.Store = (*sqlite.DB)(nil)

var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

const (
	tenantA = "acme"
	tenantB = "globex"
)

// clock is a settable Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// event is one event published on the fake bus.
type event struct {
	tenant, kind, device string
	alert                tether.Alert
}

type fakeBus struct {
	mu     sync.Mutex
	events []event
}

func (b *fakeBus) PublishEvent(_ context.Context, tenant, kind, device string, data []byte) error {
	var a tether.Alert
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	b.mu.Lock()
	b.events = append(b.events, event{tenant, kind, device, a})
	b.mu.Unlock()
	return nil
}

func (b *fakeBus) statuses() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s []string
	for _, e := range b.events {
		s = append(s, e.alert.Status)
	}
	return s
}

// harness is an alert service over a real SQLite file.
type harness struct {
	path  string
	db    *sqlite.DB
	svc   *alert.Service
	bus   *fakeBus
	clock *clock
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{path: filepath.Join(t.TempDir(), "t.db"), bus: &fakeBus{}, clock: &clock{now: t0}}
	h.open(t)
	for _, id := range []string{tenantA, tenantB} {
		if _, err := h.db.EnsureTenant(context.Background(), tether.Tenant{ID: id, Name: id, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// open opens the store and a service over it, closed at the test's end.
func (h *harness) open(t *testing.T) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), h.path)
	if err != nil {
		t.Fatal(err)
	}
	h.db = db
	t.Cleanup(func() { db.Close() })
	h.svc = alert.New(db, h.bus, alert.Options{Now: h.clock.Now})
}

// restart closes the store and opens it again with a new service, as a
// restarted process would.
func (h *harness) restart(t *testing.T) {
	t.Helper()
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	h.open(t)
}

// run runs the service's background work until the test ends.
func (h *harness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.svc.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (h *harness) signal(t *testing.T, device string, a tether.RuleAction, met bool, at time.Time, values map[string]any) *tether.Alert {
	t.Helper()
	al, err := h.svc.Signal(context.Background(), tenantA, "r1", device, a, met, at, values)
	if err != nil {
		t.Fatalf("Signal(%v at %v): %v", met, at, err)
	}
	return al
}

func (h *harness) alerts(t *testing.T, tenant string, f tether.AlertFilter) []*tether.Alert {
	t.Helper()
	as, err := h.svc.List(context.Background(), tenant, f)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Errorf("error %v has code %q, want %q", err, got, code)
	}
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestSignal(t *testing.T) {
	ctx := context.Background()
	hot := tether.RuleAction{Type: tether.ActionAlert, AlertType: "overheat", Severity: alert.SeverityCritical,
		MinDuration: tether.Duration(30 * time.Second), ClearAfter: tether.Duration(2 * time.Minute)}

	for _, tc := range []struct {
		name string
		min  time.Duration
	}{
		{"a series flapping faster than ClearAfter raises exactly one alert", 0},
		{"a series that holds for MinDuration and then flaps raises exactly one alert", 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := hot
			a.MinDuration = tether.Duration(tc.min)
			// Steady for MinDuration, then true and false every 10 s for
			// ten minutes: each false lasts far less than ClearAfter.
			var sig time.Duration
			for ; sig <= tc.min; sig += 10 * time.Second {
				h.signal(t, "d1", a, true, at(sig), map[string]any{"temp": 90})
			}
			trues := 0
			for i := 0; sig <= tc.min+10*time.Minute; i, sig = i+1, sig+10*time.Second {
				met := i%2 == 1
				if met {
					trues++
				}
				h.signal(t, "d1", a, met, at(sig), map[string]any{"temp": 90})
			}
			as := h.alerts(t, tenantA, tether.AlertFilter{})
			if len(as) != 1 {
				t.Fatalf("%d alerts, want 1: %+v", len(as), as)
			}
			if as[0].Status != tether.AlertActive || as[0].Count != 1+trues || !as[0].RaisedAt.Equal(at(tc.min)) {
				t.Errorf("alert %+v; want active, count %d, raised at %v", as[0], 1+trues, at(tc.min))
			}
			if got := h.bus.statuses(); len(got) != 1 || got[0] != tether.AlertActive {
				t.Errorf("events %v, want one raise", got)
			}
		})
	}

	t.Run("an alert is raised only once the condition has held for MinDuration, and a false restarts the wait", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = tether.Duration(time.Minute)
		for _, s := range []struct {
			d   time.Duration
			met bool
		}{{0, true}, {30 * time.Second, true}, {50 * time.Second, false}, {60 * time.Second, true}, {110 * time.Second, true}} {
			if al := h.signal(t, "d1", a, s.met, at(s.d), nil); al != nil {
				t.Fatalf("signal %v at %v raised %+v; the condition has not held a minute", s.met, s.d, al)
			}
		}
		al := h.signal(t, "d1", a, true, at(2*time.Minute), map[string]any{"temp": 91.5})
		if al == nil || al.Status != tether.AlertActive || !al.RaisedAt.Equal(at(2*time.Minute)) || al.Count != 1 ||
			al.Severity != alert.SeverityCritical || al.Type != "overheat" || al.RuleID != "r1" || al.DeviceID != "d1" || al.Values["temp"] != 91.5 {
			t.Fatalf("raised %+v; want active since the minute after the restart at 60 s", al)
		}
		stored, err := h.svc.Get(ctx, tenantA, al.ID)
		if err != nil || stored.ID != al.ID || stored.Status != tether.AlertActive {
			t.Errorf("stored %+v, %v", stored, err)
		}
	})

	t.Run("an alert clears only once the condition has been false for ClearAfter", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = 0
		raised := h.signal(t, "d1", a, true, t0, nil)
		for _, s := range []struct {
			d   time.Duration
			met bool
		}{{time.Minute, false}, {2*time.Minute + 50*time.Second, false}, {3 * time.Minute, true}, {4 * time.Minute, false}, {5 * time.Minute, false}} {
			if al := h.signal(t, "d1", a, s.met, at(s.d), nil); al != nil && al.Status != tether.AlertActive {
				t.Fatalf("signal %v at %v: %+v; want it still active", s.met, s.d, al)
			}
		}
		al := h.signal(t, "d1", a, false, at(6*time.Minute), nil)
		if al == nil || al.ID != raised.ID || al.Status != tether.AlertCleared || al.ClearedAt == nil ||
			!al.ClearedAt.Equal(at(6*time.Minute)) || al.ClearedBy != "rule:r1" {
			t.Fatalf("after two minutes false: %+v; want %s cleared at 6m by rule:r1", al, raised.ID)
		}
		if al := h.signal(t, "d1", a, false, at(7*time.Minute), nil); al != nil {
			t.Errorf("a false with no alert changed %+v", al)
		}
		if got := h.bus.statuses(); len(got) != 2 || got[1] != tether.AlertCleared {
			t.Errorf("events %v, want raised, cleared", got)
		}
	})

	t.Run("a repeat updates Count, LastSeenAt and Values of the one alert", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = 0
		first := h.signal(t, "d1", a, true, t0, map[string]any{"temp": 90.0})
		for i := 1; i <= 3; i++ {
			h.signal(t, "d1", a, true, at(time.Duration(i)*time.Second), map[string]any{"temp": 90.0 + float64(i)})
		}
		got, err := h.svc.Get(ctx, tenantA, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Count != 4 || !got.LastSeenAt.Equal(at(3*time.Second)) || !got.RaisedAt.Equal(t0) || got.Values["temp"] != 93.0 {
			t.Errorf("after 4 signals: %+v", got)
		}
		other := h.signal(t, "d2", a, true, t0, nil)
		typed := a
		typed.AlertType = "vibration"
		third := h.signal(t, "d1", typed, true, t0, nil)
		if other.ID == first.ID || third.ID == first.ID || other.ID == third.ID {
			t.Error("another device or another type shares the alert; the identity is (rule, device, type)")
		}
	})

	t.Run("acknowledging and clearing record who and when; a clear ends the alert and a new signal raises a new one", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = 0
		al := h.signal(t, "d1", a, true, t0, nil)
		h.clock.Set(at(time.Hour))
		acked, err := h.svc.Acknowledge(ctx, tenantA, al.ID, "api:ak_1")
		if err != nil || acked.Status != tether.AlertAcknowledged || acked.AcknowledgedBy != "api:ak_1" ||
			acked.AcknowledgedAt == nil || !acked.AcknowledgedAt.Equal(at(time.Hour)) {
			t.Fatalf("Acknowledge = %+v, %v", acked, err)
		}
		again, err := h.svc.Acknowledge(ctx, tenantA, al.ID, "api:ak_2")
		if err != nil || again.AcknowledgedBy != "api:ak_1" {
			t.Errorf("a second acknowledge = %+v, %v; want the first unchanged", again, err)
		}
		if rep := h.signal(t, "d1", a, true, at(time.Minute), nil); rep.ID != al.ID || rep.Status != tether.AlertAcknowledged || rep.Count != 2 {
			t.Errorf("a repeat of an acknowledged alert = %+v; want it counted and still acknowledged", rep)
		}
		h.clock.Set(at(2 * time.Hour))
		cleared, err := h.svc.Clear(ctx, tenantA, al.ID, "api:ak_2")
		if err != nil || cleared.Status != tether.AlertCleared || cleared.ClearedBy != "api:ak_2" ||
			cleared.ClearedAt == nil || !cleared.ClearedAt.Equal(at(2*time.Hour)) || cleared.AcknowledgedBy != "api:ak_1" {
			t.Fatalf("Clear = %+v, %v", cleared, err)
		}
		_, err = h.svc.Acknowledge(ctx, tenantA, al.ID, "api:ak_1")
		wantCode(t, err, tether.ECONFLICT)
		_, err = h.svc.Acknowledge(ctx, tenantA, al.ID, "")
		wantCode(t, err, tether.EINVALID)

		re := h.signal(t, "d1", a, true, at(2*time.Hour+time.Second), nil)
		if re == nil || re.ID == al.ID || re.Status != tether.AlertActive || re.Count != 1 {
			t.Fatalf("signal after a clear = %+v; want a new active alert", re)
		}
		if open := h.alerts(t, tenantA, tether.AlertFilter{Status: "open"}); len(open) != 1 || open[0].ID != re.ID {
			t.Errorf("open alerts %+v, want only the new one", open)
		}
		if all := h.alerts(t, tenantA, tether.AlertFilter{}); len(all) != 2 || all[0].ID != re.ID || all[1].ID != al.ID {
			t.Errorf("all alerts %+v, want the new one, then the cleared one", all)
		}
		if got := h.bus.statuses(); len(got) != 4 {
			t.Errorf("events %v, want raised, acknowledged, cleared, raised", got)
		}
	})

	t.Run("a pending condition survives a restart", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = tether.Duration(5 * time.Minute)
		h.signal(t, "d1", a, true, t0, nil)
		h.signal(t, "d1", a, true, at(2*time.Minute), nil)
		h.restart(t)
		if al := h.signal(t, "d1", a, true, at(4*time.Minute), nil); al != nil {
			t.Fatalf("raised %+v before five minutes", al)
		}
		al := h.signal(t, "d1", a, true, at(5*time.Minute), nil)
		if al == nil || !al.RaisedAt.Equal(at(5*time.Minute)) {
			t.Fatalf("after the restart: %+v; want raised five minutes after the first signal", al)
		}
		// And a pending clear.
		h.signal(t, "d1", a, false, at(10*time.Minute), nil)
		h.restart(t)
		if al := h.signal(t, "d1", a, false, at(12*time.Minute), nil); al == nil || al.Status != tether.AlertCleared {
			t.Errorf("after the restart: %+v; want cleared two minutes after the first false", al)
		}
	})

	t.Run("a sweep settles a condition no later signal settled, at its due time", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = tether.Duration(time.Minute)
		h.signal(t, "d1", a, true, t0, map[string]any{"temp": 95.0})
		if n, err := h.svc.Sweep(ctx, at(59*time.Second)); err != nil || n != 0 {
			t.Fatalf("Sweep before due = %d, %v", n, err)
		}
		n, err := h.svc.Sweep(ctx, at(2*time.Minute))
		if err != nil || n != 1 {
			t.Fatalf("Sweep = %d, %v; want one raised", n, err)
		}
		as := h.alerts(t, tenantA, tether.AlertFilter{Status: tether.AlertActive})
		if len(as) != 1 || !as[0].RaisedAt.Equal(at(time.Minute)) || as[0].Values["temp"] != 95.0 {
			t.Fatalf("alerts %+v; want one raised at 1m with the values", as)
		}
		h.signal(t, "d1", a, false, at(3*time.Minute), nil)
		if n, err := h.svc.Sweep(ctx, at(10*time.Minute)); err != nil || n != 1 {
			t.Fatalf("Sweep = %d, %v; want one cleared", n, err)
		}
		got, _ := h.svc.Get(ctx, tenantA, as[0].ID)
		if got.Status != tether.AlertCleared || !got.ClearedAt.Equal(at(5*time.Minute)) {
			t.Errorf("swept %+v; want cleared at 5m", got)
		}
	})

	t.Run("lists by status, device and rule, newest first, in pages", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = 0
		var ids []string
		for i, d := range []string{"d1", "d2", "d3", "d4"} {
			h.clock.Set(at(time.Duration(i) * time.Second))
			ids = append(ids, h.signal(t, d, a, true, t0, nil).ID)
		}
		if _, err := h.svc.Acknowledge(ctx, tenantA, ids[1], "me"); err != nil {
			t.Fatal(err)
		}
		page := h.alerts(t, tenantA, tether.AlertFilter{Limit: 2})
		if len(page) != 2 || page[0].ID != ids[3] || page[1].ID != ids[2] {
			t.Fatalf("first page %v", page)
		}
		page = h.alerts(t, tenantA, tether.AlertFilter{Limit: 2, After: page[1].ID})
		if len(page) != 2 || page[0].ID != ids[1] || page[1].ID != ids[0] {
			t.Fatalf("second page %v", page)
		}
		if as := h.alerts(t, tenantA, tether.AlertFilter{Status: tether.AlertAcknowledged}); len(as) != 1 || as[0].ID != ids[1] {
			t.Errorf("acknowledged: %v", as)
		}
		if as := h.alerts(t, tenantA, tether.AlertFilter{DeviceID: "d3"}); len(as) != 1 || as[0].ID != ids[2] {
			t.Errorf("device d3: %v", as)
		}
		if as := h.alerts(t, tenantA, tether.AlertFilter{RuleID: "r2"}); len(as) != 0 {
			t.Errorf("rule r2: %v", as)
		}
		_, err := h.svc.List(ctx, tenantA, tether.AlertFilter{Status: "bogus"})
		wantCode(t, err, tether.EINVALID)
	})

	t.Run("a tenant sees and changes only its own alerts", func(t *testing.T) {
		h := newHarness(t)
		a := hot
		a.MinDuration = 0
		al := h.signal(t, "d1", a, true, t0, nil)
		_, err := h.svc.Get(ctx, tenantB, al.ID)
		wantCode(t, err, tether.ENOTFOUND)
		_, err = h.svc.Acknowledge(ctx, tenantB, al.ID, "x")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = h.svc.Clear(ctx, tenantB, al.ID, "x")
		wantCode(t, err, tether.ENOTFOUND)
		if as := h.alerts(t, tenantB, tether.AlertFilter{}); len(as) != 0 {
			t.Errorf("tenant B lists %v", as)
		}
		// The same identity in another tenant is another alert.
		b, err := h.svc.Signal(ctx, tenantB, "r1", "d1", a, true, t0, nil)
		if err != nil || b.ID == al.ID || b.TenantID != tenantB {
			t.Errorf("tenant B's signal = %+v, %v", b, err)
		}
		if got, _ := h.svc.Get(ctx, tenantA, al.ID); got.Count != 1 {
			t.Errorf("tenant B's signal counted on tenant A's alert: %+v", got)
		}
	})

	t.Run("refuses a bad action", func(t *testing.T) {
		h := newHarness(t)
		for _, bad := range []tether.RuleAction{
			{Severity: "panic"},
			{AlertType: "has space"},
			{MinDuration: -1},
			{ClearAfter: -1},
		} {
			_, err := h.svc.Signal(ctx, tenantA, "r1", "d1", bad, true, t0, nil)
			wantCode(t, err, tether.EINVALID)
		}
		al, err := h.svc.Signal(ctx, tenantA, "r1", "d1", tether.RuleAction{}, true, t0, nil)
		if err != nil || al.Type != alert.DefaultType || al.Severity != alert.DefaultSeverity {
			t.Errorf("an action with no type or severity = %+v, %v; want the defaults", al, err)
		}
	})
}
