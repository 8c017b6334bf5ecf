package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func float(v float64) *float64 { return &v }

func sampleProfile(tenantID, id string) *tether.Profile {
	return &tether.Profile{
		TenantID: tenantID, ID: id, Name: "Boiler",
		Telemetry: map[string]tether.KeySchema{
			"temp": {Type: "number", Unit: "°C", Min: float(-20), Max: float(120), MaxRate: float(5)},
			"on":   {Type: "bool"},
		},
		ReportInterval: tether.Duration(time.Minute),
		Commands: map[string]tether.CommandDef{
			"reboot": {Roles: []string{"admin"}, Confirm: true},
			"set":    {Params: json.RawMessage(`{"type":"object"}`), RateLimit: &tether.Rate{Count: 1, Per: tether.Duration(time.Hour)}},
		},
		CreatedAt: t0, UpdatedAt: t0,
	}
}

func createProfile(t *testing.T, db *sqlite.DB, tenantID, id string) *tether.Profile {
	t.Helper()
	p := sampleProfile(tenantID, id)
	if err := db.CreateProfile(context.Background(), p); err != nil {
		t.Fatalf("CreateProfile %s: %v", id, err)
	}
	return p
}

func TestProfileCRUD(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	in := createProfile(t, db, tenantA, "boiler")

	t.Run("returns a created profile with every field as stored", func(t *testing.T) {
		got, err := db.Profile(ctx, tenantA, "boiler")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("Profile =\n%+v\nwant\n%+v", got, in)
		}
	})
	t.Run("refuses a second profile with the same id", func(t *testing.T) {
		wantCode(t, db.CreateProfile(ctx, sampleProfile(tenantA, "boiler")), tether.ECONFLICT)
	})
	t.Run("keeps tenants apart", func(t *testing.T) {
		_, err := db.Profile(ctx, tenantB, "boiler")
		wantCode(t, err, tether.ENOTFOUND)
		createProfile(t, db, tenantB, "boiler")
		ps, err := db.Profiles(ctx, tenantB)
		if err != nil || len(ps) != 1 || ps[0].TenantID != tenantB {
			t.Fatalf("Profiles(%s) = %v, %v", tenantB, ps, err)
		}
	})
	t.Run("refuses a profile of a tenant that does not exist", func(t *testing.T) {
		wantCode(t, db.CreateProfile(ctx, sampleProfile("nobody", "x")), tether.ENOTFOUND)
		_, err := db.PutProfile(ctx, sampleProfile("nobody", "x"))
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("put replaces a profile and keeps its creation time", func(t *testing.T) {
		p := &tether.Profile{TenantID: tenantA, ID: "boiler", Name: "Boiler v2", UpdatedAt: t0.Add(time.Hour)}
		created, err := db.PutProfile(ctx, p)
		if err != nil || created {
			t.Fatalf("PutProfile = %v, %v; want replaced", created, err)
		}
		got, err := db.Profile(ctx, tenantA, "boiler")
		if err != nil {
			t.Fatal(err)
		}
		want := &tether.Profile{TenantID: tenantA, ID: "boiler", Name: "Boiler v2", CreatedAt: t0, UpdatedAt: t0.Add(time.Hour)}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(p, want) {
			t.Errorf("after PutProfile\n got %+v\nwant %+v (returned %+v)", got, want, p)
		}
	})
	t.Run("put creates a missing profile", func(t *testing.T) {
		created, err := db.PutProfile(ctx, sampleProfile(tenantA, "pump"))
		if err != nil || !created {
			t.Fatalf("PutProfile = %v, %v; want created", created, err)
		}
	})
	t.Run("lists a tenant's profiles in id order", func(t *testing.T) {
		ps, err := db.Profiles(ctx, tenantA)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.ID)
		}
		if !slices.Equal(got, []string{"boiler", "pump"}) {
			t.Errorf("Profiles = %v", got)
		}
	})
	t.Run("deletes a profile no device uses", func(t *testing.T) {
		if err := db.DeleteProfile(ctx, tenantA, "pump"); err != nil {
			t.Fatal(err)
		}
		_, err := db.Profile(ctx, tenantA, "pump")
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, db.DeleteProfile(ctx, tenantA, "pump"), tether.ENOTFOUND)
	})
}

func TestDeviceProfiles(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createProfile(t, db, tenantA, "boiler")
	createProfile(t, db, tenantA, "pump")
	createProfile(t, db, tenantB, "other")

	t.Run("stores and returns a device's profile", func(t *testing.T) {
		d := &tether.Device{TenantID: tenantA, ID: "b1", ProfileID: "boiler", CreatedAt: t0}
		if err := db.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		got, err := db.Device(ctx, tenantA, "b1")
		if err != nil || got.ProfileID != "boiler" {
			t.Fatalf("Device = %+v, %v; want profile boiler", got, err)
		}
		got, err = db.DeviceByID(ctx, "b1")
		if err != nil || got.ProfileID != "boiler" {
			t.Fatalf("DeviceByID = %+v, %v; want profile boiler", got, err)
		}
	})
	t.Run("refuses a device with an unknown profile", func(t *testing.T) {
		for _, p := range []string{"nope", "other"} { // other is tenantB's
			err := db.CreateDevice(ctx, &tether.Device{TenantID: tenantA, ID: "x-" + p, ProfileID: p})
			wantCode(t, err, tether.EINVALID)
		}
		if _, err := db.Device(ctx, tenantA, "x-nope"); tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("a refused device was stored: %v", err)
		}
	})
	t.Run("refuses to delete a profile while a device uses it", func(t *testing.T) {
		wantCode(t, db.DeleteProfile(ctx, tenantA, "boiler"), tether.ECONFLICT)
	})
	t.Run("changes, keeps and removes a device's profile", func(t *testing.T) {
		pump, none, bad := "pump", "", "nope"
		for _, step := range []struct {
			name    string
			profile *string
			want    string
			code    string
		}{
			{"moves it to another profile", &pump, "pump", ""},
			{"keeps it when the update names none", nil, "pump", ""},
			{"refuses an unknown profile", &bad, "pump", tether.EINVALID},
			{"removes it with an empty id", &none, "", ""},
		} {
			_, err := db.UpdateDevice(ctx, tenantA, "b1", tether.DeviceUpdate{Profile: step.profile}, t0)
			if tether.ErrorCode(err) != step.code {
				t.Fatalf("%s: UpdateDevice error %v, want code %q", step.name, err, step.code)
			}
			got, err := db.Device(ctx, tenantA, "b1")
			if err != nil || got.ProfileID != step.want {
				t.Fatalf("%s: device profile %q (%v), want %q", step.name, got.ProfileID, err, step.want)
			}
		}
		if err := db.DeleteProfile(ctx, tenantA, "boiler"); err != nil {
			t.Errorf("DeleteProfile once no device uses it: %v", err)
		}
	})
}

func TestDevicesFilterByProfileAndStatus(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createProfile(t, db, tenantA, "boiler")
	// d00..d11: every other one a boiler; d00, d03, d06, d09 online,
	// d01, d04 stale, d02 offline with a row, the rest never connected.
	// Odd ones have site=south.
	for i := range 12 {
		d := &tether.Device{TenantID: tenantA, ID: fmt.Sprintf("d%02d", i), CreatedAt: t0}
		if i%2 == 0 {
			d.ProfileID = "boiler"
		} else {
			d.Labels = map[string]string{"site": "south"}
		}
		if err := db.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// A device of another tenant online, which must never be listed.
	createDevice(t, db, tenantB, "zz", nil)
	for id, status := range map[string]string{
		"d00": tether.PresenceOnline, "d03": tether.PresenceOnline, "d06": tether.PresenceOnline, "d09": tether.PresenceOnline,
		"d01": tether.PresenceStale, "d04": tether.PresenceStale, "d02": tether.PresenceOffline,
	} {
		if err := sqlite.SetPresenceRow(ctx, db, tenantA, id, status); err != nil {
			t.Fatal(err)
		}
	}
	if err := sqlite.SetPresenceRow(ctx, db, tenantB, "zz", tether.PresenceOnline); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		filter tether.DeviceFilter
		want   []string
	}{
		{"lists the devices of a profile", tether.DeviceFilter{Profile: "boiler"},
			[]string{"d00", "d02", "d04", "d06", "d08", "d10"}},
		{"lists nothing for a profile no device has", tether.DeviceFilter{Profile: "pump"}, []string{}},
		{"lists the online devices", tether.DeviceFilter{Status: tether.PresenceOnline},
			[]string{"d00", "d03", "d06", "d09"}},
		{"lists the online devices after the cursor", tether.DeviceFilter{Status: tether.PresenceOnline, After: "d03", Limit: 1},
			[]string{"d06"}},
		{"lists the stale devices", tether.DeviceFilter{Status: tether.PresenceStale},
			[]string{"d01", "d04"}},
		{"counts a device without presence as offline", tether.DeviceFilter{Status: tether.PresenceOffline},
			[]string{"d02", "d05", "d07", "d08", "d10", "d11"}},
		{"combines a profile and a status", tether.DeviceFilter{Profile: "boiler", Status: tether.PresenceOnline},
			[]string{"d00", "d06"}},
		{"combines a profile and offline", tether.DeviceFilter{Profile: "boiler", Status: tether.PresenceOffline, After: "d02"},
			[]string{"d08", "d10"}},
		{"combines labels and a status", tether.DeviceFilter{Labels: map[string]string{"site": "south"}, Status: tether.PresenceOnline},
			[]string{"d03", "d09"}},
		{"combines labels and offline", tether.DeviceFilter{Labels: map[string]string{"site": "south"}, Status: tether.PresenceOffline},
			[]string{"d05", "d07", "d11"}},
		{"combines labels and a profile", tether.DeviceFilter{Labels: map[string]string{"site": "south"}, Profile: "boiler"},
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
	t.Run("refuses an unknown status", func(t *testing.T) {
		_, err := db.Devices(ctx, tether.DeviceFilter{TenantID: tenantA, Status: "sleeping"})
		wantCode(t, err, tether.EINVALID)
	})
}
