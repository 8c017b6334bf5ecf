package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

func TestPresence(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "d1", nil)
	createDevice(t, db, tenantA, "d2", nil)
	live := []string{tether.PresenceOnline, tether.PresenceStale}

	t.Run("reports a device that never connected as not found", func(t *testing.T) {
		_, err := db.Presence(ctx, tenantA, "d1")
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("counts each connection and stores it online", func(t *testing.T) {
		for i, want := range []int64{1, 2} {
			at := t0.Add(time.Duration(i) * time.Second)
			p, err := db.ConnectPresence(ctx, tenantA, "d1", "mqtt", tether.ReasonConnected, "n1", at)
			if err != nil {
				t.Fatal(err)
			}
			wantP := tether.Presence{TenantID: tenantA, DeviceID: "d1", Status: tether.PresenceOnline,
				Reason: tether.ReasonConnected, Since: at, Seq: want, Transport: "mqtt"}
			if *p != wantP {
				t.Errorf("ConnectPresence = %+v, want %+v", p, wantP)
			}
		}
		_, err := db.ConnectPresence(ctx, tenantA, "nope", "mqtt", tether.ReasonConnected, "n1", t0)
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("changes the status only for the stored seq and one of the given statuses", func(t *testing.T) {
		p, changed, err := db.UpdatePresence(ctx, tenantA, "d1", 1, live, tether.PresenceOffline, tether.ReasonTakeover, t0.Add(time.Minute))
		if err != nil || changed || p.Seq != 2 || p.Status != tether.PresenceOnline {
			t.Fatalf("late update = %+v, %v, %v; want the stored seq 2, unchanged", p, changed, err)
		}
		p, changed, err = db.UpdatePresence(ctx, tenantA, "d1", 2, []string{tether.PresenceStale}, tether.PresenceOnline, tether.ReasonActivity, t0.Add(time.Minute))
		if err != nil || changed || p.Reason != tether.ReasonConnected {
			t.Fatalf("update from another status = %+v, %v, %v; want unchanged", p, changed, err)
		}
		p, changed, err = db.UpdatePresence(ctx, tenantA, "d1", 2, live, tether.PresenceOffline, tether.ReasonWill, t0.Add(time.Minute))
		if err != nil || !changed || p.Status != tether.PresenceOffline || p.Reason != tether.ReasonWill || !p.Since.Equal(t0.Add(time.Minute)) {
			t.Fatalf("update = %+v, %v, %v", p, changed, err)
		}
		stored, err := db.Presence(ctx, tenantA, "d1")
		if err != nil || *stored != *p {
			t.Errorf("stored %+v, %v; want %+v", stored, err, p)
		}
		p, changed, err = db.UpdatePresence(ctx, tenantA, "d2", 1, live, tether.PresenceOffline, tether.ReasonWill, t0)
		if err != nil || changed || p != nil {
			t.Errorf("update of a device without presence = %+v, %v, %v", p, changed, err)
		}
	})

	t.Run("takes the devices a node left online offline", func(t *testing.T) {
		if _, err := db.ConnectPresence(ctx, tenantA, "d1", "mqtt", tether.ReasonConnected, "n1", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ConnectPresence(ctx, tenantA, "d2", "mqtt", tether.ReasonConnected, "n2", t0); err != nil {
			t.Fatal(err)
		}
		ps, err := db.RecoverPresence(ctx, "n1", tether.ReasonServerShutdown, t0.Add(time.Hour))
		if err != nil || len(ps) != 1 || ps[0].DeviceID != "d1" || ps[0].Status != tether.PresenceOffline ||
			ps[0].Reason != tether.ReasonServerShutdown || ps[0].Seq != 3 {
			t.Fatalf("RecoverPresence = %+v, %v", ps, err)
		}
		if p, _ := db.Presence(ctx, tenantA, "d2"); p.Status != tether.PresenceOnline {
			t.Errorf("another node's device is %s", p.Status)
		}
		if ps, _ := db.RecoverPresence(ctx, "n1", tether.ReasonServerShutdown, t0.Add(time.Hour)); len(ps) != 0 {
			t.Errorf("second recovery changed %v", ps)
		}
	})

	t.Run("deletes a device's presence with the device", func(t *testing.T) {
		if err := db.DeleteDevice(ctx, tenantA, "d2"); err != nil {
			t.Fatal(err)
		}
		_, err := db.Presence(ctx, tenantA, "d2")
		wantCode(t, err, tether.ENOTFOUND)
	})
}
