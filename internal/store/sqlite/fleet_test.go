package sqlite_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func TestFleetCounts(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	// acme: on1 and on2 online, st1 stale, off1 offline after a
	// connection, never1 never connected; alerts: two active, one
	// acknowledged, one cleared. globex: one online device with an active
	// alert, which acme must not see.
	presence := map[string]string{"on1": tether.PresenceOnline, "on2": tether.PresenceOnline,
		"st1": tether.PresenceStale, "off1": tether.PresenceOffline, "never1": ""}
	for id, status := range presence {
		createDevice(t, db, tenantA, id, nil)
		setPresence(t, db, tenantA, id, status)
	}
	createDevice(t, db, tenantB, "g1", nil)
	setPresence(t, db, tenantB, "g1", tether.PresenceOnline)
	for i, status := range []string{tether.AlertActive, tether.AlertActive, tether.AlertAcknowledged, tether.AlertCleared} {
		putAlert(t, db, tenantA, "al_a"+string(rune('0'+i)), status)
	}
	putAlert(t, db, tenantB, "al_b0", tether.AlertActive)

	for _, c := range []struct {
		name   string
		tenant string
		want   sqlite.FleetCounts
	}{
		{"counts a tenant's devices by presence, a device never connected as offline, and its open alerts by status",
			tenantA, sqlite.FleetCounts{Devices: 5, Online: 2, Stale: 1, Offline: 2, ActiveAlerts: 2, AcknowledgedAlerts: 1}},
		{"counts only the other tenant's own devices and alerts",
			tenantB, sqlite.FleetCounts{Devices: 1, Online: 1, ActiveAlerts: 1}},
		{"counts nothing for a tenant without devices", "initech", sqlite.FleetCounts{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := db.FleetCounts(ctx, c.tenant)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("FleetCounts = %+v, want %+v", got, c.want)
			}
		})
	}

	t.Run("a deleted device leaves the counts with its presence", func(t *testing.T) {
		if err := db.DeleteDevice(ctx, tenantA, "on2"); err != nil {
			t.Fatal(err)
		}
		got, err := db.FleetCounts(ctx, tenantA)
		if err != nil {
			t.Fatal(err)
		}
		if got.Devices != 4 || got.Online != 1 || got.Offline != 2 {
			t.Errorf("FleetCounts = %+v, want 4 devices, 1 online, 2 offline", got)
		}
	})
}

// setPresence gives a device a presence row with the status ("": none,
// as for a device that never connected).
func setPresence(t *testing.T, db *sqlite.DB, tenant, id, status string) {
	t.Helper()
	ctx := context.Background()
	if status == "" {
		return
	}
	p, err := db.ConnectPresence(ctx, tenant, id, "mqtt", tether.ReasonConnected, "n1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if status == tether.PresenceOnline {
		return
	}
	if _, ok, err := db.UpdatePresence(ctx, tenant, id, p.Seq, []string{tether.PresenceOnline}, status, "test", t0.Add(time.Minute)); err != nil || !ok {
		t.Fatalf("UpdatePresence %s to %s: changed %t, %v", id, status, ok, err)
	}
}

// putAlert stores an alert of the tenant with the status, of an identity
// of its own.
func putAlert(t *testing.T, db *sqlite.DB, tenant, id, status string) {
	t.Helper()
	k := sqlite.AlertKey{TenantID: tenant, RuleID: "r1", DeviceID: "d-" + id, Type: "overheat"}
	a := &tether.Alert{TenantID: tenant, ID: id, RuleID: k.RuleID, DeviceID: k.DeviceID, Type: k.Type,
		Severity: "critical", Status: status, Count: 1, RaisedAt: t0, LastSeenAt: t0}
	if _, err := db.UpdateAlertState(context.Background(), k, func(st *sqlite.AlertState) (bool, error) {
		st.Alert = a
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestDevicesSearch(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	if err := db.CreateProfile(ctx, &tether.Profile{TenantID: tenantA, ID: "pumps", Name: "Pumps", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		id, name string
		labels   map[string]string
		profile  string
		online   bool
	}{
		{"pump-01", "Pump North", map[string]string{"site": "north"}, "pumps", true},
		{"pump-02", "Kühlschrank Süd", map[string]string{"site": "south"}, "pumps", false},
		{"sensor_a", "100% humidity", map[string]string{"site": "north"}, "", false},
		{"sensorXa", "plain", map[string]string{"site": "north"}, "", true},
		{"valve-1", "Backup PUMP", map[string]string{"site": "north"}, "", true},
		{"valve-2", "drain", map[string]string{"site": "south"}, "", false},
	} {
		dev := &tether.Device{TenantID: tenantA, ID: d.id, Name: d.name, Labels: d.labels, ProfileID: d.profile, CreatedAt: t0}
		if err := db.CreateDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
		if d.online {
			setPresence(t, db, tenantA, d.id, tether.PresenceOnline)
		}
	}
	// Another tenant's device matches every search below that has "pump".
	if err := db.CreateDevice(ctx, &tether.Device{TenantID: tenantB, ID: "pump-99", Name: "Pump", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		filter tether.DeviceFilter
		want   []string
	}{
		{"finds the devices whose ID starts with the text", tether.DeviceFilter{Query: "pump-0"},
			[]string{"pump-01", "pump-02"}},
		{"finds the devices whose name contains the text, in any case of ASCII letters", tether.DeviceFilter{Query: "pump"},
			[]string{"pump-01", "pump-02", "valve-1"}},
		{"matches an ID prefix in any case too", tether.DeviceFilter{Query: "PUMP-0"},
			[]string{"pump-01", "pump-02"}},
		{"does not match the middle of an ID", tether.DeviceFilter{Query: "ump-0"},
			[]string{}},
		{"matches other letters of a name as they are", tether.DeviceFilter{Query: "kühl"},
			[]string{"pump-02"}},
		{"folds only ASCII letters, so other letters in another case do not match", tether.DeviceFilter{Query: "SÜD"},
			[]string{}},
		{"matches a % in the text only as a %", tether.DeviceFilter{Query: "100%"},
			[]string{"sensor_a"}},
		{"matches a lone % only where a name has one", tether.DeviceFilter{Query: "%"},
			[]string{"sensor_a"}},
		{"matches an _ in the text only as an _", tether.DeviceFilter{Query: "sensor_"},
			[]string{"sensor_a"}},
		{"combines with a label selector", tether.DeviceFilter{Query: "pump", Labels: map[string]string{"site": "north"}},
			[]string{"pump-01", "valve-1"}},
		{"combines with a presence status that drives the walk", tether.DeviceFilter{Query: "pump", Status: tether.PresenceOnline},
			[]string{"pump-01", "valve-1"}},
		{"combines with offline", tether.DeviceFilter{Query: "pump", Status: tether.PresenceOffline},
			[]string{"pump-02"}},
		{"combines with a profile", tether.DeviceFilter{Query: "pump", Profile: "pumps"},
			[]string{"pump-01", "pump-02"}},
		{"combines with labels, status and profile at once", tether.DeviceFilter{Query: "p", Labels: map[string]string{"site": "north"},
			Status: tether.PresenceOnline, Profile: "pumps"},
			[]string{"pump-01"}},
		{"lists the matches after the cursor", tether.DeviceFilter{Query: "pump", After: "pump-01"},
			[]string{"pump-02", "valve-1"}},
		{"stops at the limit", tether.DeviceFilter{Query: "pump", Limit: 2},
			[]string{"pump-01", "pump-02"}},
		{"finds nothing for a text no device has", tether.DeviceFilter{Query: "zebra"},
			[]string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.filter.TenantID = tenantA
			ds, err := db.Devices(ctx, c.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(ds); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}

	t.Run("pages through every match with the cursor", func(t *testing.T) {
		var all []string
		f := tether.DeviceFilter{TenantID: tenantA, Query: "a", Limit: 2}
		for page := 0; ; page++ {
			ds, err := db.Devices(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) == 0 {
				break
			}
			if page > 10 {
				t.Fatal("paging does not end")
			}
			all = append(all, ids(ds)...)
			f.After = ds[len(ds)-1].ID
		}
		// No ID starts with an a; Kühlschrank, plain, Backup and drain
		// hold one.
		want := []string{"pump-02", "sensorXa", "valve-1", "valve-2"}
		if !slices.Equal(all, want) {
			t.Errorf("got %v, want %v", all, want)
		}
	})

	t.Run("refuses a text longer than any name", func(t *testing.T) {
		_, err := db.Devices(ctx, tether.DeviceFilter{TenantID: tenantA, Query: strings.Repeat("x", sqlite.MaxDeviceQuery+1)})
		wantCode(t, err, tether.EINVALID)
	})
}
