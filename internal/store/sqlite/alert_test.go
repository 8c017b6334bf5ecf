package sqlite_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func TestAlerts(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	k := sqlite.AlertKey{TenantID: tenantA, RuleID: "r1", DeviceID: "d1", Type: "overheat"}
	action := tether.RuleAction{Type: tether.ActionAlert, AlertType: "overheat", Severity: "critical", MinDuration: tether.Duration(time.Minute)}
	newAlert := func(id string, k sqlite.AlertKey) *tether.Alert {
		return &tether.Alert{TenantID: k.TenantID, ID: id, RuleID: k.RuleID, DeviceID: k.DeviceID, Type: k.Type,
			Severity: "critical", Status: tether.AlertActive, Values: map[string]any{"temp": 91.5}, Count: 1,
			RaisedAt: t0, LastSeenAt: t0}
	}

	t.Run("stores an identity's pending condition and gives it back", func(t *testing.T) {
		p := &sqlite.AlertPending{Met: true, Since: t0, Last: t0.Add(time.Second), Due: t0.Add(time.Minute),
			Action: action, Values: map[string]any{"temp": 90.0}}
		st, err := db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			if st.Pending != nil || st.Alert != nil {
				t.Errorf("a new identity has state %+v", st)
			}
			st.Pending = p
			return true, nil
		})
		if err != nil || st.Pending != p {
			t.Fatalf("UpdateAlertState = %+v, %v", st, err)
		}
		_, err = db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			if !reflect.DeepEqual(st.Pending, p) || st.Alert != nil {
				t.Errorf("stored state %+v, want pending %+v", st.Pending, p)
			}
			return false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("finds due conditions of any tenant", func(t *testing.T) {
		ks, err := db.DueAlertPending(ctx, t0.Add(59*time.Second), 10)
		if err != nil || len(ks) != 0 {
			t.Errorf("before due: %v, %v", ks, err)
		}
		ks, err = db.DueAlertPending(ctx, t0.Add(time.Minute), 10)
		if err != nil || len(ks) != 1 || ks[0] != k {
			t.Errorf("at due: %v, %v; want %v", ks, err, k)
		}
	})

	t.Run("stores the alert with the condition gone, in one transaction", func(t *testing.T) {
		a := newAlert("al_1", k)
		_, err := db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			st.Pending, st.Alert = nil, a
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := db.Alert(ctx, tenantA, "al_1")
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("Alert = %+v, %v; want %+v", got, err, a)
		}
		if ks, _ := db.DueAlertPending(ctx, t0.Add(time.Hour), 10); len(ks) != 0 {
			t.Errorf("the condition is still pending: %v", ks)
		}
		_, err = db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			if st.Alert == nil || st.Alert.ID != "al_1" || st.Pending != nil {
				t.Errorf("state %+v; want the open alert al_1", st)
			}
			return false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("refuses a second open alert of an identity and an alert of another identity", func(t *testing.T) {
		_, err := db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			st.Alert = newAlert("al_2", k)
			return true, nil
		})
		wantCode(t, err, tether.ECONFLICT)
		other := k
		other.DeviceID = "d2"
		_, err = db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			st.Alert = newAlert("al_3", other)
			return true, nil
		})
		if err == nil {
			t.Error("stored an alert of another identity")
		}
		if _, err := db.Alert(ctx, tenantA, "al_3"); tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("al_3: %v; want not found", err)
		}
	})

	t.Run("updates an alert by ID, keeping its identity", func(t *testing.T) {
		at := t0.Add(time.Hour)
		a, changed, err := db.UpdateAlert(ctx, tenantA, "al_1", func(a *tether.Alert) (bool, error) {
			a.Status, a.AcknowledgedAt, a.AcknowledgedBy = tether.AlertAcknowledged, &at, "me"
			a.DeviceID = "elsewhere"
			return true, nil
		})
		if err != nil || !changed || a.DeviceID != "d1" {
			t.Fatalf("UpdateAlert = %+v, %v, %v", a, changed, err)
		}
		got, _ := db.Alert(ctx, tenantA, "al_1")
		if got.Status != tether.AlertAcknowledged || !got.AcknowledgedAt.Equal(at) || got.AcknowledgedBy != "me" || got.DeviceID != "d1" {
			t.Errorf("stored %+v", got)
		}
		_, _, err = db.UpdateAlert(ctx, tenantB, "al_1", func(*tether.Alert) (bool, error) { return true, nil })
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("a cleared alert leaves room for a new one of its identity", func(t *testing.T) {
		at := t0.Add(2 * time.Hour)
		if _, _, err := db.UpdateAlert(ctx, tenantA, "al_1", func(a *tether.Alert) (bool, error) {
			a.Status, a.ClearedAt, a.ClearedBy = tether.AlertCleared, &at, "rule:r1"
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
		_, err := db.UpdateAlertState(ctx, k, func(st *sqlite.AlertState) (bool, error) {
			if st.Alert != nil {
				t.Errorf("a cleared alert is open: %+v", st.Alert)
			}
			st.Alert = newAlert("al_4", k)
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("lists a tenant's alerts newest first by status, device and rule", func(t *testing.T) {
		for _, tc := range []struct {
			name                         string
			tenant, status, device, rule string
			after                        string
			want                         []string
		}{
			{"every alert", tenantA, "", "", "", "", []string{"al_4", "al_1"}},
			{"the open ones", tenantA, "open", "", "", "", []string{"al_4"}},
			{"the cleared ones", tenantA, tether.AlertCleared, "", "", "", []string{"al_1"}},
			{"those of a device", tenantA, "", "d2", "", "", nil},
			{"those of a rule", tenantA, "", "", "r1", "", []string{"al_4", "al_1"}},
			{"after a cursor", tenantA, "", "", "", "al_4", []string{"al_1"}},
			{"none of another tenant", tenantB, "", "", "", "", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				as, err := db.Alerts(ctx, tc.tenant, tc.status, tc.device, tc.rule, tc.after, 0)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, a := range as {
					ids = append(ids, a.ID)
				}
				if !reflect.DeepEqual(ids, tc.want) {
					t.Errorf("ids %v, want %v", ids, tc.want)
				}
			})
		}
	})

	t.Run("refuses the state of a tenant that does not exist", func(t *testing.T) {
		_, err := db.UpdateAlertState(ctx, sqlite.AlertKey{TenantID: "nobody", RuleID: "r", Type: "x"}, func(st *sqlite.AlertState) (bool, error) {
			st.Pending = &sqlite.AlertPending{Met: true, Since: t0, Due: t0}
			return true, nil
		})
		wantCode(t, err, tether.ENOTFOUND)
	})
}

func TestAlertChannels(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	web := sqlite.AlertChannel{ID: "ch_1", Kind: "webhook", URL: "https://example.com/h", Secret: "k", MinSeverity: "warning", RatePerMinute: 5}
	mail := sqlite.AlertChannel{ID: "ch_2", Kind: "email", SMTPAddr: "mail:25", From: "a@b.c", To: []string{"x@y.z", "u@v.w"}, RatePerMinute: 10}

	t.Run("stores channels and lists them in order", func(t *testing.T) {
		for i, c := range []sqlite.AlertChannel{web, mail} {
			if err := db.CreateAlertChannel(ctx, tenantA, c, t0.Add(time.Duration(i)), 0); err != nil {
				t.Fatal(err)
			}
		}
		cs, err := db.AlertChannels(ctx, tenantA)
		if err != nil || !reflect.DeepEqual(cs, []sqlite.AlertChannel{web, mail}) {
			t.Errorf("AlertChannels = %+v, %v", cs, err)
		}
		if cs, _ := db.AlertChannels(ctx, tenantB); len(cs) != 0 {
			t.Errorf("tenant B sees %+v", cs)
		}
	})

	t.Run("refuses a used ID, a missing tenant and a channel over the limit", func(t *testing.T) {
		wantCode(t, db.CreateAlertChannel(ctx, tenantA, web, t0, 0), tether.ECONFLICT)
		c := web
		c.ID = "ch_9"
		wantCode(t, db.CreateAlertChannel(ctx, "nobody", c, t0, 0), tether.ENOTFOUND)
		wantCode(t, db.CreateAlertChannel(ctx, tenantA, c, t0, 2), tether.ETOOMANY)
	})

	t.Run("deletes a channel of its tenant only", func(t *testing.T) {
		wantCode(t, db.DeleteAlertChannel(ctx, tenantB, "ch_1"), tether.ENOTFOUND)
		if err := db.DeleteAlertChannel(ctx, tenantA, "ch_1"); err != nil {
			t.Fatal(err)
		}
		if cs, _ := db.AlertChannels(ctx, tenantA); len(cs) != 1 || cs[0].ID != "ch_2" {
			t.Errorf("after the delete: %+v", cs)
		}
	})
}
