package sqlite_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

func TestDeviceCRUD(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	seen := t0.Add(-time.Minute)
	in := &tether.Device{
		TenantID: tenantA, ID: "pump-1", Name: "Pump 1",
		Labels:    map[string]string{"site": "north", "type": "pump"},
		Metadata:  map[string]any{"floor": 2.0, "tags": []any{"a", "b"}, "model": map[string]any{"v": "x1"}},
		CreatedAt: t0, UpdatedAt: t0.Add(time.Second), LastSeenAt: &seen,
		TokenHash: []byte("hash"),
	}
	if err := db.CreateDevice(ctx, in); err != nil {
		t.Fatalf("CreateDevice: %v", err)
	}

	t.Run("returns a created device with every field as stored", func(t *testing.T) {
		for name, get := range map[string]func() (*tether.Device, error){
			"Device":     func() (*tether.Device, error) { return db.Device(ctx, tenantA, "pump-1") },
			"DeviceByID": func() (*tether.Device, error) { return db.DeviceByID(ctx, "pump-1") },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !reflect.DeepEqual(got, in) {
				t.Errorf("%s =\n%+v\nwant\n%+v", name, got, in)
			}
			if got.CreatedAt.Location() != time.UTC || got.LastSeenAt.Location() != time.UTC {
				t.Errorf("%s returned times not in UTC", name)
			}
		}
	})

	t.Run("returns empty maps and no last-seen time for a device created without them", func(t *testing.T) {
		createDevice(t, db, tenantA, "bare", nil)
		got, err := db.Device(ctx, tenantA, "bare")
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels == nil || len(got.Labels) != 0 || got.Metadata == nil || len(got.Metadata) != 0 {
			t.Errorf("labels %#v, metadata %#v; want empty maps", got.Labels, got.Metadata)
		}
		if got.LastSeenAt != nil || got.TokenHash != nil {
			t.Errorf("LastSeenAt %v, TokenHash %v; want nil", got.LastSeenAt, got.TokenHash)
		}
	})

	t.Run("refuses a second device with the same id in any tenant", func(t *testing.T) {
		wantCode(t, db.CreateDevice(ctx, &tether.Device{TenantID: tenantA, ID: "pump-1"}), tether.ECONFLICT)
		wantCode(t, db.CreateDevice(ctx, &tether.Device{TenantID: tenantB, ID: "pump-1"}), tether.ECONFLICT)
	})

	t.Run("refuses a device of a tenant that does not exist", func(t *testing.T) {
		wantCode(t, db.CreateDevice(ctx, &tether.Device{TenantID: "nobody", ID: "x"}), tether.ENOTFOUND)
	})

	t.Run("refuses an invalid device id", func(t *testing.T) {
		wantCode(t, db.CreateDevice(ctx, &tether.Device{TenantID: tenantA, ID: "a.b"}), tether.EINVALID)
	})

	t.Run("reports a missing device as not found", func(t *testing.T) {
		_, err := db.Device(ctx, tenantA, "nope")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.DeviceByID(ctx, "nope")
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("updates only the fields named and sets the update time", func(t *testing.T) {
		name := "Pump one"
		now := t0.Add(time.Hour)
		got, err := db.UpdateDevice(ctx, tenantA, "pump-1", tether.DeviceUpdate{Name: &name}, now)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := db.Device(ctx, tenantA, "pump-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, stored) {
			t.Errorf("UpdateDevice returned %+v, store has %+v", got, stored)
		}
		if stored.Name != name || !stored.UpdatedAt.Equal(now) || !stored.CreatedAt.Equal(t0) ||
			!reflect.DeepEqual(stored.Labels, in.Labels) || !reflect.DeepEqual(stored.Metadata, in.Metadata) {
			t.Errorf("after update: %+v", stored)
		}
	})

	t.Run("replaces the whole labels and metadata maps", func(t *testing.T) {
		labels := map[string]string{"site": "south"}
		meta := map[string]any{"new": true}
		if _, err := db.UpdateDevice(ctx, tenantA, "pump-1", tether.DeviceUpdate{Labels: labels, Metadata: meta}, t0); err != nil {
			t.Fatal(err)
		}
		got, err := db.Device(ctx, tenantA, "pump-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Labels, labels) || !reflect.DeepEqual(got.Metadata, meta) {
			t.Errorf("labels %v, metadata %v; want %v, %v", got.Labels, got.Metadata, labels, meta)
		}
		// The label index must follow: the old labels select nothing.
		for sel, want := range map[string]int{"type=pump": 0, "site=north": 0, "site=south": 1} {
			k, v, _ := strings.Cut(sel, "=")
			ds, err := db.Devices(ctx, tether.DeviceFilter{TenantID: tenantA, Labels: map[string]string{k: v}})
			if err != nil || len(ds) != want {
				t.Errorf("devices with %s = %d, %v; want %d", sel, len(ds), err, want)
			}
		}
	})

	t.Run("reports an update of a missing device as not found", func(t *testing.T) {
		_, err := db.UpdateDevice(ctx, tenantA, "nope", tether.DeviceUpdate{}, t0)
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("sets the token hash and the update time", func(t *testing.T) {
		now := t0.Add(2 * time.Hour)
		if err := db.SetDeviceToken(ctx, tenantA, "bare", []byte("new"), now); err != nil {
			t.Fatal(err)
		}
		got, err := db.DeviceByID(ctx, "bare")
		if err != nil {
			t.Fatal(err)
		}
		if string(got.TokenHash) != "new" || !got.UpdatedAt.Equal(now) {
			t.Errorf("TokenHash %q, UpdatedAt %v; want new, %v", got.TokenHash, got.UpdatedAt, now)
		}
	})

	t.Run("reports a token for a missing device as not found", func(t *testing.T) {
		wantCode(t, db.SetDeviceToken(ctx, tenantA, "nope", []byte("x"), t0), tether.ENOTFOUND)
	})

	t.Run("deletes a device so that it is no longer found", func(t *testing.T) {
		if err := db.DeleteDevice(ctx, tenantA, "bare"); err != nil {
			t.Fatal(err)
		}
		_, err := db.DeviceByID(ctx, "bare")
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, db.DeleteDevice(ctx, tenantA, "bare"), tether.ENOTFOUND)
	})

	t.Run("lets a deleted device's id be used again", func(t *testing.T) {
		createDevice(t, db, tenantB, "bare", nil)
	})
}

func TestDeviceTenantIsolation(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "a1", map[string]string{"k": "v"})
	createDevice(t, db, tenantB, "b1", map[string]string{"k": "v"})
	name := "stolen"

	for _, c := range []struct {
		name string
		call func() error
	}{
		{"Device", func() error { _, err := db.Device(ctx, tenantB, "a1"); return err }},
		{"UpdateDevice", func() error {
			_, err := db.UpdateDevice(ctx, tenantB, "a1", tether.DeviceUpdate{Name: &name}, t0)
			return err
		}},
		{"SetDeviceToken", func() error { return db.SetDeviceToken(ctx, tenantB, "a1", []byte("x"), t0) }},
		{"DeleteDevice", func() error { return db.DeleteDevice(ctx, tenantB, "a1") }},
		{"Latest", func() error { _, err := db.Latest(ctx, tenantB, "a1"); return err }},
		{"Telemetry", func() error {
			_, err := db.Telemetry(ctx, tether.TelemetryQuery{TenantID: tenantB, DeviceID: "a1"})
			return err
		}},
	} {
		t.Run(c.name+" of another tenant's device reports it as not found", func(t *testing.T) {
			wantCode(t, c.call(), tether.ENOTFOUND)
		})
	}

	t.Run("the device is unchanged by the other tenant's attempts", func(t *testing.T) {
		d, err := db.Device(ctx, tenantA, "a1")
		if err != nil {
			t.Fatal(err)
		}
		if d.Name == name || d.TokenHash != nil {
			t.Errorf("device changed: %+v", d)
		}
	})

	t.Run("a listing holds only the tenant's own devices", func(t *testing.T) {
		for _, f := range []tether.DeviceFilter{
			{TenantID: tenantA},
			{TenantID: tenantA, Labels: map[string]string{"k": "v"}},
		} {
			ds, err := db.Devices(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(ds); !slices.Equal(got, []string{"a1"}) {
				t.Errorf("Devices(%+v) = %v, want [a1]", f, got)
			}
		}
	})

	t.Run("a message naming the device under another tenant stores nothing", func(t *testing.T) {
		n, err := db.WriteMessages(ctx, []tether.Message{{ID: "m1", TenantID: tenantB, DeviceID: "a1", ReceivedAt: t0,
			Points: []tether.Point{{Key: "x", Time: t0, Kind: tether.KindNumber, Num: 1}}}})
		if err != nil || n != 0 {
			t.Fatalf("WriteMessages = %d, %v; want 0, nil", n, err)
		}
		l, err := db.Latest(ctx, tenantA, "a1")
		if err != nil || len(l) != 0 {
			t.Fatalf("Latest = %v, %v; want none", l, err)
		}
	})
}

func ids(ds []*tether.Device) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func TestDevicesFilter(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	// d00..d19: site alternates north/south, every third one is a pump,
	// d05 has an extra label.
	for i := range 20 {
		labels := map[string]string{"site": []string{"north", "south"}[i%2]}
		if i%3 == 0 {
			labels["type"] = "pump"
		}
		if i == 5 {
			labels["extra"] = "yes"
		}
		createDevice(t, db, tenantA, fmt.Sprintf("d%02d", i), labels)
	}

	for _, c := range []struct {
		name   string
		filter tether.DeviceFilter
		want   []string
	}{
		{"lists all devices in id order", tether.DeviceFilter{Limit: 3},
			[]string{"d00", "d01", "d02"}},
		{"lists the devices after the cursor", tether.DeviceFilter{After: "d17"},
			[]string{"d18", "d19"}},
		{"lists the devices with a label", tether.DeviceFilter{Labels: map[string]string{"site": "south"}, Limit: 4},
			[]string{"d01", "d03", "d05", "d07"}},
		{"lists the devices with all of several labels", tether.DeviceFilter{Labels: map[string]string{"site": "north", "type": "pump"}},
			[]string{"d00", "d06", "d12", "d18"}},
		{"lists the devices with all labels after the cursor", tether.DeviceFilter{Labels: map[string]string{"site": "north", "type": "pump"}, After: "d06"},
			[]string{"d12", "d18"}},
		{"lists the devices with three labels", tether.DeviceFilter{Labels: map[string]string{"site": "south", "type": "pump", "extra": "yes"}},
			[]string{}},
		{"lists nothing for a label value no device has", tether.DeviceFilter{Labels: map[string]string{"site": "east"}},
			[]string{}},
		{"lists nothing for a label key no device has", tether.DeviceFilter{Labels: map[string]string{"colour": "north"}},
			[]string{}},
		{"treats a limit above the maximum as the maximum", tether.DeviceFilter{Limit: 1 << 30, After: "d15"},
			[]string{"d16", "d17", "d18", "d19"}},
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

	t.Run("pages through every matching device with the cursor", func(t *testing.T) {
		var all []string
		f := tether.DeviceFilter{TenantID: tenantA, Labels: map[string]string{"site": "north"}, Limit: 3}
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
		want := []string{"d00", "d02", "d04", "d06", "d08", "d10", "d12", "d14", "d16", "d18"}
		if !slices.Equal(all, want) {
			t.Errorf("got %v, want %v", all, want)
		}
	})

	t.Run("returns labels and metadata of listed devices", func(t *testing.T) {
		ds, err := db.Devices(ctx, tether.DeviceFilter{TenantID: tenantA, Labels: map[string]string{"extra": "yes"}})
		if err != nil || len(ds) != 1 {
			t.Fatalf("Devices = %v, %v", ds, err)
		}
		want := map[string]string{"site": "south", "extra": "yes"}
		if !reflect.DeepEqual(ds[0].Labels, want) || ds[0].Metadata == nil {
			t.Errorf("labels %v, metadata %v; want %v and an empty map", ds[0].Labels, ds[0].Metadata, want)
		}
	})
}
