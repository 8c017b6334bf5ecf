package registry_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/registry"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// events records lifecycle announcements.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) PublishLifecycle(tenant, device, event string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, tenant+"/"+device+"/"+event)
	return nil
}

func newRegistry(t *testing.T) (*registry.Service, *events, *sqlite.DB) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ev := &events{}
	return registry.New(db, ev, registry.Options{PSKSecret: []byte("test node secret"), Logger: slog.New(slog.DiscardHandler)}), ev, db
}

func TestBootstrapCreatesOneAdminKeyOnce(t *testing.T) {
	ctx := context.Background()
	reg, _, _ := newRegistry(t)
	key, err := reg.Bootstrap(ctx, "")
	if err != nil || key == "" {
		t.Fatalf("first bootstrap: %q, %v", key, err)
	}
	t.Run("the printed key authenticates as admin", func(t *testing.T) {
		k, err := reg.AuthenticateAPIKey(ctx, key)
		if err != nil || k.Role != tether.RoleAdmin || k.TenantID != tether.DefaultTenantID {
			t.Errorf("%+v, %v", k, err)
		}
	})
	t.Run("a second start creates no key", func(t *testing.T) {
		again, err := reg.Bootstrap(ctx, "")
		if err != nil || again != "" {
			t.Errorf("%q, %v", again, err)
		}
	})
	t.Run("a supplied key is ignored once an admin key exists", func(t *testing.T) {
		supplied := strings.Repeat("s", 40)
		if _, err := reg.Bootstrap(ctx, supplied); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.AuthenticateAPIKey(ctx, supplied); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("supplied key authenticated: %v", err)
		}
	})
	t.Run("a key with a wrong secret is refused", func(t *testing.T) {
		id, _, _ := strings.Cut(key, ".")
		if _, err := reg.AuthenticateAPIKey(ctx, id+".wrong"); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("err = %v", err)
		}
	})
}

func TestBootstrapWithASuppliedKey(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, key string
		code      string
	}{
		{"a key of 32 characters or more becomes the admin key", "0123456789abcdef0123456789abcdef", ""},
		{"a key with a dot in it works too", "abc.0123456789abcdef0123456789abcdef", ""},
		{"a short key is refused", "short", tether.EINVALID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg, _, _ := newRegistry(t)
			printed, err := reg.Bootstrap(ctx, tc.key)
			if tether.ErrorCode(err) != tc.code {
				t.Fatalf("err = %v, want code %q", err, tc.code)
			}
			if tc.code != "" {
				return
			}
			if printed != "" {
				t.Errorf("a supplied key must not be printed, got %q", printed)
			}
			if _, err := reg.AuthenticateAPIKey(ctx, tc.key); err != nil {
				t.Errorf("authenticate: %v", err)
			}
		})
	}
}

func TestDeviceTokens(t *testing.T) {
	ctx := context.Background()
	reg, ev, db := newRegistry(t)
	if _, err := reg.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	d, token, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{ID: "pump-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the token names its device and is stored only as a hash", func(t *testing.T) {
		if !strings.HasPrefix(token, "pump-1.") || len(token) < 40 {
			t.Errorf("token %q", token)
		}
		stored, _ := db.DeviceByID(ctx, "pump-1")
		if strings.Contains(string(stored.TokenHash), token[len("pump-1."):]) || len(stored.TokenHash) != 32 {
			t.Errorf("stored hash %x", stored.TokenHash)
		}
	})
	auth := []struct {
		name, user, token string
		ok                bool
	}{
		{"the token alone authenticates", "", token, true},
		{"the token with its device id authenticates", "pump-1", token, true},
		{"the token with another device id is refused", "pump-2", token, false},
		{"a wrong secret is refused", "pump-1", "pump-1.nope", false},
		{"a token without a dot is refused", "", "garbage", false},
		{"an unknown device is refused", "", "ghost.secret", false},
	}
	for _, tc := range auth {
		t.Run(tc.name, func(t *testing.T) {
			got, err := reg.AuthenticateDevice(ctx, tc.user, tc.token)
			if tc.ok && (err != nil || got.ID != d.ID) {
				t.Errorf("%+v, %v", got, err)
			}
			if !tc.ok && tether.ErrorCode(err) != tether.EUNAUTHORIZED {
				t.Errorf("err = %v, want unauthorized", err)
			}
		})
	}
	t.Run("rotation replaces the token and announces it", func(t *testing.T) {
		fresh, err := reg.RotateToken(ctx, tether.DefaultTenantID, "pump-1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.AuthenticateDevice(ctx, "pump-1", token); err == nil {
			t.Error("the old token still works")
		}
		if _, err := reg.AuthenticateDevice(ctx, "pump-1", fresh); err != nil {
			t.Errorf("the new token: %v", err)
		}
		if got := ev.got; len(got) != 1 || got[0] != "default/pump-1/token_rotated" {
			t.Errorf("events %v", got)
		}
	})
	t.Run("deletion announces it", func(t *testing.T) {
		if err := reg.DeleteDevice(ctx, tether.DefaultTenantID, "pump-1"); err != nil {
			t.Fatal(err)
		}
		if got := ev.got; got[len(got)-1] != "default/pump-1/deleted" {
			t.Errorf("events %v", got)
		}
	})
	invalid := []struct {
		name string
		d    tether.Device
	}{
		{"an id with a dot is invalid", tether.Device{ID: "a.b"}},
		{"an id with a slash is invalid", tether.Device{ID: "a/b"}},
		{"an id over 64 characters is invalid", tether.Device{ID: strings.Repeat("a", 65)}},
		{"a label key with a space is invalid", tether.Device{ID: "ok", Labels: map[string]string{"a b": "c"}}},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tc.d); tether.ErrorCode(err) != tether.EINVALID {
				t.Errorf("err = %v", err)
			}
		})
	}
	t.Run("a device without an id gets one", func(t *testing.T) {
		d, tok, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{})
		if err != nil || !tether.ValidID(d.ID) || !strings.HasPrefix(tok, d.ID+".") {
			t.Errorf("%+v %q %v", d, tok, err)
		}
	})
}
