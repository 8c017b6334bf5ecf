package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// fleetStore is the fleet service as main builds it: the store's counts,
// with fixed message counters in place of the node's ingest.
type fleetStore struct {
	*sqlite.DB
	received, points uint64
}

func (f fleetStore) Messages() (uint64, uint64) { return f.received, f.points }

var _ httpapi.Fleet = fleetStore{}

// fleetView is the body of GET /api/v1/fleet.
type fleetView struct {
	Devices struct {
		Total, Online, Stale, Offline int64
	}
	Alerts struct {
		Active, Acknowledged int64
	}
	Messages struct {
		Received, Points uint64
	}
	Time time.Time
}

// newFleetAPI runs the API with the fleet overview over a real SQLite
// file in which the default tenant has devices on1 and on2 online, st1
// stale, off1 offline and never1 never connected, an active, an
// acknowledged and a cleared alert; and the tenant "other" one online
// device and one active alert.
func newFleetAPI(t *testing.T) *stateAPI {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, id := range []string{tether.DefaultTenantID, "other"} {
		if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, d := range []struct{ tenant, id, status string }{
		{tether.DefaultTenantID, "on1", tether.PresenceOnline},
		{tether.DefaultTenantID, "on2", tether.PresenceOnline},
		{tether.DefaultTenantID, "st1", tether.PresenceStale},
		{tether.DefaultTenantID, "off1", tether.PresenceOffline},
		{tether.DefaultTenantID, "never1", ""},
		{"other", "o1", tether.PresenceOnline},
	} {
		if err := db.CreateDevice(ctx, &tether.Device{TenantID: d.tenant, ID: d.id}); err != nil {
			t.Fatal(err)
		}
		if d.status == "" {
			continue
		}
		p, err := db.ConnectPresence(ctx, d.tenant, d.id, "mqtt", tether.ReasonConnected, "n1", at)
		if err != nil {
			t.Fatal(err)
		}
		if d.status != tether.PresenceOnline {
			if _, _, err := db.UpdatePresence(ctx, d.tenant, d.id, p.Seq, []string{tether.PresenceOnline}, d.status, "test", at); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, a := range []struct{ tenant, status string }{
		{tether.DefaultTenantID, tether.AlertActive},
		{tether.DefaultTenantID, tether.AlertAcknowledged},
		{tether.DefaultTenantID, tether.AlertCleared},
		{"other", tether.AlertActive},
	} {
		k := sqlite.AlertKey{TenantID: a.tenant, RuleID: "r1", DeviceID: "d1", Type: "t" + string(rune('0'+i))}
		if _, err := db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			st.Alert = &tether.Alert{TenantID: a.tenant, ID: "al_" + k.Type, RuleID: k.RuleID, DeviceID: k.DeviceID, Type: k.Type,
				Severity: "warning", Status: a.status, Count: 1, RaisedAt: at, LastSeenAt: at}
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := httpapi.New(tenantsRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
		Services: httpapi.Services{Fleet: fleetStore{DB: db, received: 1234, points: 5678}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &stateAPI{url: serve(t, srv), srv: srv}
}

func TestFleet(t *testing.T) {
	a := newFleetAPI(t)
	for _, c := range []struct {
		name                          string
		key                           string
		total, online, stale, offline int64
		active, acknowledged          int64
	}{
		{"a viewer sees the tenant's devices by presence, one never connected as offline, and its open alerts",
			testViewerKey, 5, 2, 1, 2, 1, 1},
		{"another tenant sees only its own devices and alerts",
			otherTenantKey, 1, 1, 0, 0, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := time.Now().UTC()
			var v fleetView
			a.expect(t, http.StatusOK, "GET", "/api/v1/fleet", c.key, "").decode(t, &v)
			d := v.Devices
			if d.Total != c.total || d.Online != c.online || d.Stale != c.stale || d.Offline != c.offline {
				t.Errorf("devices %+v, want total %d, online %d, stale %d, offline %d", d, c.total, c.online, c.stale, c.offline)
			}
			if v.Alerts.Active != c.active || v.Alerts.Acknowledged != c.acknowledged {
				t.Errorf("alerts %+v, want active %d, acknowledged %d", v.Alerts, c.active, c.acknowledged)
			}
			if v.Messages.Received != 1234 || v.Messages.Points != 5678 {
				t.Errorf("messages %+v, want the node's counters 1234 and 5678", v.Messages)
			}
			if v.Time.Before(before.Add(-time.Second)) || v.Time.After(time.Now().Add(time.Second)) {
				t.Errorf("time %s is not the time of the request (%s)", v.Time, before)
			}
		})
	}

	t.Run("a request without a key is refused", func(t *testing.T) {
		a.expect(t, http.StatusUnauthorized, "GET", "/api/v1/fleet", "", "")
	})

	t.Run("a node without the fleet service answers 503", func(t *testing.T) {
		p := newStateAPI(t).expect(t, http.StatusServiceUnavailable, "GET", "/api/v1/fleet", testViewerKey, "").problem(t)
		if p.Code != tether.EUNAVAILABLE || !strings.Contains(p.Detail, "fleet") {
			t.Errorf("problem %+v", p)
		}
	})
}

func TestDeviceSearch(t *testing.T) {
	a := newStateAPI(t)
	for _, c := range []struct {
		name  string
		query url.Values
		want  tether.DeviceFilter
	}{
		{"q is the filter's search text", url.Values{"q": {"pump"}},
			tether.DeviceFilter{Query: "pump"}},
		{"q is trimmed of spaces", url.Values{"q": {"  Pump North "}},
			tether.DeviceFilter{Query: "Pump North"}},
		{"q combines with labels, status, profile and the cursor", url.Values{"q": {"pu"}, "labels": {"site=north"},
			"status": {"online"}, "profile": {"pumps"}, "cursor": {"pump-01"}},
			tether.DeviceFilter{Query: "pu", Labels: map[string]string{"site": "north"}, Status: "online", Profile: "pumps", After: "pump-01"}},
		{"no q searches nothing", url.Values{}, tether.DeviceFilter{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.expect(t, http.StatusOK, "GET", "/api/v1/devices?"+c.query.Encode(), testViewerKey, "")
			a.reg.mu.Lock()
			got := a.reg.filter
			a.reg.mu.Unlock()
			if got.Query != c.want.Query || got.Status != c.want.Status || got.Profile != c.want.Profile || got.After != c.want.After ||
				len(got.Labels) != len(c.want.Labels) || got.Labels["site"] != c.want.Labels["site"] {
				t.Errorf("filter %+v, want %+v", got, c.want)
			}
		})
	}

	t.Run("a q longer than any name is 400", func(t *testing.T) {
		p := a.expect(t, http.StatusBadRequest, "GET", "/api/v1/devices?q="+strings.Repeat("x", 257), testViewerKey, "").problem(t)
		if p.Code != tether.EINVALID || !strings.Contains(p.Detail, "q is 257 bytes") {
			t.Errorf("problem %+v", p)
		}
	})
}
