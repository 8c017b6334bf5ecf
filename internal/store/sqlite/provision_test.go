package sqlite_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

func TestImportDevices(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	if err := db.CreateProfile(ctx, &tether.Profile{TenantID: tenantA, ID: "sensor"}); err != nil {
		t.Fatal(err)
	}
	createDevice(t, db, tenantB, "taken", nil)
	fp := "00000000000000000000000000000000000000000000000000000000000000aa"

	t.Run("refuses the whole import, naming each device at fault", func(t *testing.T) {
		ds := []*tether.Device{
			{TenantID: tenantA, ID: "new-1", ProfileID: "sensor"},
			{TenantID: tenantA, ID: "taken"},
			{TenantID: tenantA, ID: "new-2", ProfileID: "nope"},
		}
		for name, run := range map[string]func() ([]tether.RowError, error){
			"CheckImport":   func() ([]tether.RowError, error) { return db.CheckImport(ctx, ds, nil) },
			"ImportDevices": func() ([]tether.RowError, error) { return db.ImportDevices(ctx, ds, nil) },
		} {
			problems, err := run()
			if err != nil {
				t.Fatal(err)
			}
			want := []tether.RowError{{ID: "taken", Error: `device "taken" already exists`}, {ID: "new-2", Error: `profile "nope" does not exist`}}
			if !reflect.DeepEqual(problems, want) {
				t.Errorf("%s = %+v", name, problems)
			}
		}
		_, err := db.Device(ctx, tenantA, "new-1")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("stores devices with labels, profile and certificates", func(t *testing.T) {
		ds := []*tether.Device{
			{TenantID: tenantA, ID: "new-1", ProfileID: "sensor", Labels: map[string]string{"k": "v"}, TokenHash: []byte("h"), CreatedAt: t0},
			{TenantID: tenantA, ID: "new-2", CreatedAt: t0},
		}
		problems, err := db.ImportDevices(ctx, ds, []*tether.Certificate{{Fingerprint: fp, TenantID: tenantA, DeviceID: "new-2", CreatedAt: t0}})
		if err != nil || problems != nil {
			t.Fatalf("problems %v, err %v", problems, err)
		}
		d, err := db.Device(ctx, tenantA, "new-1")
		if err != nil {
			t.Fatal(err)
		}
		if d.ProfileID != "sensor" || d.Labels["k"] != "v" || string(d.TokenHash) != "h" || !d.UpdatedAt.Equal(t0) {
			t.Errorf("device = %+v", d)
		}
		c, err := db.Certificate(ctx, fp)
		if err != nil || c.DeviceID != "new-2" || c.NotAfter.Before(t0.AddDate(100, 0, 0)) {
			t.Errorf("certificate = %+v, %v", c, err)
		}
		problems, err = db.CheckImport(ctx, []*tether.Device{{TenantID: tenantA, ID: "x"}},
			[]*tether.Certificate{{Fingerprint: fp, TenantID: tenantA, DeviceID: "x"}})
		if err != nil || len(problems) != 1 || problems[0].ID != "x" {
			t.Errorf("a registered fingerprint: %+v, %v", problems, err)
		}
	})
}

func TestProvisioningKeyStore(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	if err := db.CreateProfile(ctx, &tether.Profile{TenantID: tenantA, ID: "sensor"}); err != nil {
		t.Fatal(err)
	}
	exp := t0.Add(time.Hour)
	k := &tether.ProvisioningKey{TenantID: tenantA, ID: "pk_1", ProfileID: "sensor", Hash: []byte("h1"), MaxUses: 2, ExpiresAt: &exp, CreatedAt: t0}
	if err := db.CreateProvisioningKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.CreateProvisioningKey(ctx, k), tether.ECONFLICT)

	t.Run("reads a key back as stored", func(t *testing.T) {
		got, err := db.ProvisioningKey(ctx, "pk_1")
		if err != nil || !reflect.DeepEqual(got, k) {
			t.Errorf("got %+v, %v; want %+v", got, err, k)
		}
		_, err = db.ProvisioningKey(ctx, "pk_none")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("registers devices until the key is used up, in the key's tenant and profile", func(t *testing.T) {
		for _, id := range []string{"r1", "r2"} {
			d := &tether.Device{ID: id, CreatedAt: t0}
			if err := db.RegisterDevice(ctx, "pk_1", d, t0); err != nil {
				t.Fatal(err)
			}
			if d.TenantID != tenantA || d.ProfileID != "sensor" {
				t.Errorf("device = %+v", d)
			}
		}
		err := db.RegisterDevice(ctx, "pk_1", &tether.Device{ID: "r3"}, t0)
		wantCode(t, err, tether.EUNAUTHORIZED)
	})
	t.Run("an expired key, or a taken device id, registers nothing and counts no use", func(t *testing.T) {
		k2 := &tether.ProvisioningKey{TenantID: tenantA, ID: "pk_2", ProfileID: "sensor", Hash: []byte("h2"), ExpiresAt: &exp, CreatedAt: t0}
		if err := db.CreateProvisioningKey(ctx, k2); err != nil {
			t.Fatal(err)
		}
		wantCode(t, db.RegisterDevice(ctx, "pk_2", &tether.Device{ID: "late"}, exp), tether.EUNAUTHORIZED)
		wantCode(t, db.RegisterDevice(ctx, "pk_2", &tether.Device{ID: "r1"}, t0), tether.ECONFLICT)
		if got, _ := db.ProvisioningKey(ctx, "pk_2"); got.Uses != 0 {
			t.Errorf("uses = %d after refusals", got.Uses)
		}
	})
	t.Run("rotation revokes the old key and carries its limits and uses", func(t *testing.T) {
		next := &tether.ProvisioningKey{ID: "pk_3", Hash: []byte("h3"), CreatedAt: t0.Add(time.Minute)}
		if err := db.RotateProvisioningKey(ctx, tenantA, "pk_1", next, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		old, _ := db.ProvisioningKey(ctx, "pk_1")
		if old.RevokedAt == nil || next.Uses != 2 || next.MaxUses != 2 || next.ProfileID != "sensor" || next.TenantID != tenantA {
			t.Errorf("old %+v, next %+v", old, next)
		}
		keys, err := db.ProvisioningKeys(ctx, tenantA)
		if err != nil || len(keys) != 3 || keys[2].ID != "pk_3" {
			t.Errorf("keys = %+v, %v", keys, err)
		}
		wantCode(t, db.RotateProvisioningKey(ctx, tenantA, "pk_1", &tether.ProvisioningKey{ID: "pk_4", Hash: []byte("h4")}, t0), tether.ECONFLICT)
		wantCode(t, db.RevokeProvisioningKey(ctx, tenantB, "pk_3", t0), tether.ENOTFOUND)
	})
}
