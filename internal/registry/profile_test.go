package registry_test

import (
	"context"
	"testing"

	"github.com/tether-iot/tether"
)

func TestDeviceProfiles(t *testing.T) {
	ctx := context.Background()
	reg, _, db := newRegistry(t)
	if _, err := reg.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateProfile(ctx, &tether.Profile{TenantID: tether.DefaultTenantID, ID: "boiler"}); err != nil {
		t.Fatal(err)
	}

	t.Run("creates a device with a profile", func(t *testing.T) {
		d, _, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{ID: "b1", ProfileID: "boiler"})
		if err != nil || d.ProfileID != "boiler" {
			t.Fatalf("CreateDevice = %+v, %v", d, err)
		}
		got, err := reg.Device(ctx, tether.DefaultTenantID, "b1")
		if err != nil || got.ProfileID != "boiler" {
			t.Fatalf("Device = %+v, %v; want profile boiler", got, err)
		}
	})
	t.Run("refuses a malformed or unknown profile", func(t *testing.T) {
		for _, p := range []string{"a.b", "nope"} {
			_, _, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{ID: "x", ProfileID: p})
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Errorf("CreateDevice with profile %q: %v, want invalid", p, err)
			}
			_, err = reg.UpdateDevice(ctx, tether.DefaultTenantID, "b1", tether.DeviceUpdate{Profile: &p})
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Errorf("UpdateDevice to profile %q: %v, want invalid", p, err)
			}
		}
	})
	t.Run("removes a device's profile", func(t *testing.T) {
		none := ""
		d, err := reg.UpdateDevice(ctx, tether.DefaultTenantID, "b1", tether.DeviceUpdate{Profile: &none})
		if err != nil || d.ProfileID != "" {
			t.Fatalf("UpdateDevice = %+v, %v; want no profile", d, err)
		}
	})
}
