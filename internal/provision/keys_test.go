package provision_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/provision"
)

func TestCreateKey(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	past, future := t0.Add(-time.Second), t0.Add(time.Hour)

	t.Run("creates a key for a profile and shows it once", func(t *testing.T) {
		k, key, err := f.svc.CreateKey(ctx, tenant, "sensor", 10, &future)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k.ID, "pk_") || !tether.ValidID(k.ID) || !strings.HasPrefix(key, k.ID+".") || len(key) < len(k.ID)+40 {
			t.Errorf("key %+v, %q", k, key)
		}
		if k.TenantID != tenant || k.ProfileID != "sensor" || k.MaxUses != 10 || k.Uses != 0 || !k.ExpiresAt.Equal(future) || k.RevokedAt != nil || !k.CreatedAt.Equal(t0) {
			t.Errorf("key = %+v", k)
		}
		keys, err := f.svc.Keys(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || keys[0].ID != k.ID || !keys[0].ExpiresAt.Equal(future) {
			t.Errorf("Keys = %+v", keys)
		}
		if strings.Contains(fmt.Sprintf("%+v", keys[0]), strings.TrimPrefix(key, k.ID+".")) {
			t.Errorf("the stored key holds its secret")
		}
		if keys, _ := f.svc.Keys(ctx, "other"); len(keys) != 0 {
			t.Errorf("another tenant sees %d keys", len(keys))
		}
	})
	for _, c := range []struct {
		name    string
		profile string
		max     int
		expires *time.Time
		want    string
	}{
		{"a profile that does not exist is refused", "nope", 0, nil, `profile "nope" does not exist`},
		{"no profile is refused", "", 0, nil, "needs a profile"},
		{"a negative count is refused", "sensor", -1, nil, "max_uses is -1"},
		{"an expiry in the past is refused", "sensor", 0, &past, "not in the future"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.svc.CreateKey(ctx, tenant, c.profile, c.max, c.expires)
			wantCode(t, err, tether.EINVALID)
			if !strings.Contains(tether.ErrorMessage(err), c.want) {
				t.Errorf("message %q does not contain %q", tether.ErrorMessage(err), c.want)
			}
		})
	}
	t.Run("another tenant's profile is not found", func(t *testing.T) {
		_, _, err := f.svc.CreateKey(ctx, "other", "sensor", 0, nil)
		wantCode(t, err, tether.EINVALID)
	})
}

func TestRegister(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	expires := t0.Add(time.Hour)
	k, key, err := f.svc.CreateKey(ctx, tenant, "sensor", 3, &expires)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a device registers with the key and gets its own token", func(t *testing.T) {
		d, token, err := f.svc.Register(ctx, key, provision.Request{DeviceID: "zt-1", Name: "Zero touch", Labels: map[string]string{"site": "x"}})
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != "zt-1" || d.TenantID != tenant || d.ProfileID != "sensor" || d.Name != "Zero touch" || d.Labels["site"] != "x" {
			t.Errorf("device = %+v", d)
		}
		wantToken(t, f.db, "zt-1", token)
		stored, err := f.db.Device(ctx, tenant, "zt-1")
		if err != nil {
			t.Fatal(err)
		}
		if stored.ProfileID != "sensor" || stored.Labels["site"] != "x" {
			t.Errorf("stored device = %+v", stored)
		}
		if got := uses(t, f, k.ID); got != 1 {
			t.Errorf("uses = %d, want 1", got)
		}
	})
	t.Run("a taken device id is a conflict and costs no use", func(t *testing.T) {
		_, _, err := f.svc.Register(ctx, key, provision.Request{DeviceID: "zt-1"})
		wantCode(t, err, tether.ECONFLICT)
		if got := uses(t, f, k.ID); got != 1 {
			t.Errorf("uses = %d, want 1", got)
		}
	})
	t.Run("a bad device id, name or labels is invalid", func(t *testing.T) {
		for _, r := range []provision.Request{
			{DeviceID: ""}, {DeviceID: "a/b"}, {DeviceID: "ok", Name: strings.Repeat("n", 300)},
			{DeviceID: "ok", Labels: map[string]string{"": "v"}},
		} {
			_, _, err := f.svc.Register(ctx, key, r)
			wantCode(t, err, tether.EINVALID)
		}
	})

	other, otherKey, err := f.svc.CreateKey(ctx, tenant, "gateway", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := k.ID + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	t.Run("every unusable key gets the same answer", func(t *testing.T) {
		revoked, revokedKey, err := f.svc.CreateKey(ctx, tenant, "sensor", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.svc.RevokeKey(ctx, tenant, revoked.ID); err != nil {
			t.Fatal(err)
		}
		_, usedUpKey, err := f.svc.CreateKey(ctx, tenant, "sensor", 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.svc.Register(ctx, usedUpKey, provision.Request{DeviceID: "once"}); err != nil {
			t.Fatal(err)
		}
		var want string
		for name, bad := range map[string]string{
			"empty":             "",
			"no dot":            "pk_abc",
			"not a key id":      "ak_abc.secret",
			"unknown id":        "pk_doesnotexist.secret",
			"wrong secret":      wrongSecret,
			"another key's id":  other.ID + "." + strings.SplitN(key, ".", 2)[1],
			"revoked":           revokedKey,
			"used up":           usedUpKey,
			"a device token":    "zt-1.secret",
			"key with a suffix": key + "x",
		} {
			_, _, err := f.svc.Register(ctx, bad, provision.Request{DeviceID: "never-" + strings.ReplaceAll(name, " ", "-")})
			wantCode(t, err, tether.EUNAUTHORIZED)
			msg := tether.ErrorMessage(err)
			if want == "" {
				want = msg
			}
			if msg != want {
				t.Errorf("%s: message %q differs from %q", name, msg, want)
			}
		}
		if _, _, err := f.svc.Register(ctx, otherKey, provision.Request{DeviceID: "gw-zt"}); err != nil {
			t.Errorf("the other key: %v", err)
		}
	})
	t.Run("an expired key is refused", func(t *testing.T) {
		f.clock.Add(time.Hour)
		_, _, err := f.svc.Register(ctx, key, provision.Request{DeviceID: "late"})
		wantCode(t, err, tether.EUNAUTHORIZED)
		f.clock.Add(-time.Second)
		if _, _, err := f.svc.Register(ctx, key, provision.Request{DeviceID: "just-in-time"}); err != nil {
			t.Errorf("a second before expiry: %v", err)
		}
		f.clock.Add(time.Second)
	})
}

func uses(t *testing.T, f fixture, id string) int {
	t.Helper()
	keys, err := f.svc.Keys(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == id {
			return k.Uses
		}
	}
	t.Fatalf("no key %s", id)
	return 0
}

func TestConcurrentRegistrationsStopAtMaxUses(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	const maxUses, tries = 7, 60
	k, key, err := f.svc.CreateKey(ctx, tenant, "sensor", maxUses, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		ok, refused int
		unexpected  []error
	)
	for i := range tries {
		wg.Go(func() {
			_, _, err := f.svc.Register(ctx, key, provision.Request{DeviceID: fmt.Sprintf("c-%d", i)})
			mu.Lock()
			defer mu.Unlock()
			switch tether.ErrorCode(err) {
			case "":
				ok++
			case tether.EUNAUTHORIZED:
				refused++
			default:
				unexpected = append(unexpected, err)
			}
		})
	}
	wg.Wait()
	if ok != maxUses || refused != tries-maxUses || len(unexpected) > 0 {
		t.Errorf("%d registered, %d refused, other errors %v; want %d and %d", ok, refused, unexpected, maxUses, tries-maxUses)
	}
	if got := uses(t, f, k.ID); got != maxUses {
		t.Errorf("uses = %d, want %d", got, maxUses)
	}
	ds, err := f.db.Devices(ctx, tether.DeviceFilter{TenantID: tenant})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != maxUses {
		t.Errorf("%d devices exist, want %d", len(ds), maxUses)
	}
}

func TestRotateKey(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	expires := t0.Add(24 * time.Hour)
	old, oldKey, err := f.svc.CreateKey(ctx, tenant, "sensor", 5, &expires)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.svc.Register(ctx, oldKey, provision.Request{DeviceID: "before"}); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Minute)
	k, key, err := f.svc.RotateKey(ctx, tenant, old.ID)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the new key has a new id and secret and the old one's profile, limits and uses", func(t *testing.T) {
		if k.ID == old.ID || key == oldKey || !strings.HasPrefix(key, k.ID+".") {
			t.Errorf("new key %s (%q) vs old %s", k.ID, key, old.ID)
		}
		if k.TenantID != tenant || k.ProfileID != "sensor" || k.MaxUses != 5 || k.Uses != 1 || !k.ExpiresAt.Equal(expires) || k.RevokedAt != nil {
			t.Errorf("new key = %+v", k)
		}
	})
	t.Run("the old key is refused and listed as revoked", func(t *testing.T) {
		_, _, err := f.svc.Register(ctx, oldKey, provision.Request{DeviceID: "after-old"})
		wantCode(t, err, tether.EUNAUTHORIZED)
		keys, _ := f.svc.Keys(ctx, tenant)
		if len(keys) != 2 || keys[0].ID != old.ID || keys[0].RevokedAt == nil || !keys[0].RevokedAt.Equal(t0.Add(time.Minute)) || keys[1].RevokedAt != nil {
			t.Errorf("keys = %+v %+v", keys[0], keys[1])
		}
	})
	t.Run("the new key works", func(t *testing.T) {
		d, _, err := f.svc.Register(ctx, key, provision.Request{DeviceID: "after-new"})
		if err != nil {
			t.Fatal(err)
		}
		if d.ProfileID != "sensor" {
			t.Errorf("profile = %q", d.ProfileID)
		}
	})
	t.Run("a revoked key cannot be rotated, an unknown one is not found", func(t *testing.T) {
		_, _, err := f.svc.RotateKey(ctx, tenant, old.ID)
		wantCode(t, err, tether.ECONFLICT)
		_, _, err = f.svc.RotateKey(ctx, tenant, "pk_nope")
		wantCode(t, err, tether.ENOTFOUND)
		_, _, err = f.svc.RotateKey(ctx, "other", k.ID)
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("revoking is idempotent and keeps the first time; other tenants cannot", func(t *testing.T) {
		wantCode(t, f.svc.RevokeKey(ctx, "other", k.ID), tether.ENOTFOUND)
		wantCode(t, f.svc.RevokeKey(ctx, tenant, "pk_nope"), tether.ENOTFOUND)
		f.clock.Add(time.Minute)
		if err := f.svc.RevokeKey(ctx, tenant, old.ID); err != nil {
			t.Fatal(err)
		}
		keys, _ := f.svc.Keys(ctx, tenant)
		if !keys[0].RevokedAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("revoked_at moved to %v", keys[0].RevokedAt)
		}
	})
}
