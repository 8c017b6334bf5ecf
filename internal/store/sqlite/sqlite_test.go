package sqlite_test

// The tests in package sqlite_test check behaviour through the exported
// methods only, so that they can move to a shared suite run against the
// PostgreSQL store too: only newDB knows it is SQLite.

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// t0 is a fixed time well after the epoch, on a whole hour.
var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

// Tenants newDB creates.
const (
	tenantA = "acme"
	tenantB = "globex"
)

// newDB opens a store in a new temporary directory with the tenants
// tenantA and tenantB, and closes it when the test ends.
func newDB(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, id := range []string{tenantA, tenantB} {
		if _, err := db.EnsureTenant(context.Background(), tether.Tenant{ID: id, Name: id, CreatedAt: t0}); err != nil {
			t.Fatalf("EnsureTenant %s: %v", id, err)
		}
	}
	return db
}

// createDevice creates a device of the tenant with the labels.
func createDevice(t testing.TB, db *sqlite.DB, tenantID, id string, labels map[string]string) *tether.Device {
	t.Helper()
	d := &tether.Device{TenantID: tenantID, ID: id, Name: "device " + id, Labels: labels, CreatedAt: t0}
	if err := db.CreateDevice(context.Background(), d); err != nil {
		t.Fatalf("CreateDevice %s: %v", id, err)
	}
	return d
}

// wantCode fails the test unless err carries the tether error code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (err %v), want %q", got, err, code)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()

	t.Run("refuses a path that is not a plain file", func(t *testing.T) {
		for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
			_, err := sqlite.Open(ctx, path)
			wantCode(t, err, tether.EINVALID)
		}
	})

	t.Run("keeps the data of a closed store when reopened", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tether.db")
		db, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tenantA}); err != nil {
			t.Fatal(err)
		}
		createDevice(t, db, tenantA, "d1", nil)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db, err = sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer db.Close()
		if _, err := db.Device(ctx, tenantA, "d1"); err != nil {
			t.Fatalf("device after reopen: %v", err)
		}
	})
}

func TestEnsureTenant(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)

	t.Run("creates a missing tenant and reports it", func(t *testing.T) {
		created, err := db.EnsureTenant(ctx, tether.Tenant{ID: "initech", Name: "Initech"})
		if err != nil || !created {
			t.Fatalf("EnsureTenant = %v, %v; want true, nil", created, err)
		}
	})
	t.Run("leaves an existing tenant and reports that it created nothing", func(t *testing.T) {
		created, err := db.EnsureTenant(ctx, tether.Tenant{ID: "initech", Name: "Other name"})
		if err != nil || created {
			t.Fatalf("EnsureTenant = %v, %v; want false, nil", created, err)
		}
	})
	t.Run("rejects an invalid tenant id", func(t *testing.T) {
		_, err := db.EnsureTenant(ctx, tether.Tenant{ID: "a/b"})
		wantCode(t, err, tether.EINVALID)
	})
}

func TestAPIKeys(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	used := t0.Add(time.Hour)
	key := &tether.APIKey{TenantID: tenantA, ID: "k1", Name: "ci", Role: tether.RoleAdmin,
		CreatedAt: t0, LastUsedAt: &used, Hash: []byte{1, 2, 3}}
	if err := db.CreateAPIKey(ctx, key); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}

	t.Run("returns a stored key with all its fields", func(t *testing.T) {
		got, err := db.APIKey(ctx, "k1")
		if err != nil {
			t.Fatal(err)
		}
		if got.TenantID != tenantA || got.Name != "ci" || got.Role != tether.RoleAdmin ||
			!got.CreatedAt.Equal(t0) || got.CreatedAt.Location() != time.UTC ||
			got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) || string(got.Hash) != "\x01\x02\x03" {
			t.Fatalf("APIKey = %+v, want %+v", got, key)
		}
	})
	t.Run("refuses a second key with the same id", func(t *testing.T) {
		err := db.CreateAPIKey(ctx, &tether.APIKey{TenantID: tenantB, ID: "k1", Role: tether.RoleAdmin, Hash: []byte{9}})
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("refuses a key of a tenant that does not exist", func(t *testing.T) {
		err := db.CreateAPIKey(ctx, &tether.APIKey{TenantID: "nobody", ID: "k9", Role: tether.RoleAdmin, Hash: []byte{9}})
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("reports a missing key as not found", func(t *testing.T) {
		_, err := db.APIKey(ctx, "nope")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("counts keys by tenant and role", func(t *testing.T) {
		for _, k := range []*tether.APIKey{
			{TenantID: tenantA, ID: "k2", Role: "viewer", Hash: []byte{2}},
			{TenantID: tenantB, ID: "k3", Role: tether.RoleAdmin, Hash: []byte{3}},
		} {
			if err := db.CreateAPIKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			tenant, role string
			want         int
		}{
			{tenantA, tether.RoleAdmin, 1},
			{tenantA, "viewer", 1},
			{tenantA, "", 2},
			{tenantB, "viewer", 0},
			{"", tether.RoleAdmin, 2},
			{"", "", 3},
		} {
			n, err := db.CountAPIKeys(ctx, c.tenant, c.role)
			if err != nil || n != c.want {
				t.Errorf("CountAPIKeys(%q, %q) = %d, %v; want %d", c.tenant, c.role, n, err, c.want)
			}
		}
	})
}

// TestConcurrentUse runs writers and readers at once; with a store that
// let two writers race for SQLite's lock, some calls would fail with
// "database is locked" whatever the busy timeout.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "d0", nil)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for w := range 4 {
		wg.Go(func() {
			for i := range 20 {
				id := string(rune('a'+w)) + "-" + string(rune('a'+i))
				if err := db.CreateDevice(ctx, &tether.Device{TenantID: tenantA, ID: id}); err != nil {
					errs <- err
				}
				msg := tether.Message{ID: id, TenantID: tenantA, DeviceID: "d0", ReceivedAt: t0,
					Points: []tether.Point{{Key: id, Time: t0, Kind: tether.KindNumber, Num: 1}}}
				if _, err := db.WriteMessages(ctx, []tether.Message{msg}); err != nil {
					errs <- err
				}
				// UpdateDevice reads, then writes: in a deferred transaction it
				// would fail at once when another writer committed in between.
				name := id
				if _, err := db.UpdateDevice(ctx, tenantA, "d0", tether.DeviceUpdate{Name: &name}, t0); err != nil {
					errs <- err
				}
				if _, err := db.Devices(ctx, tether.DeviceFilter{TenantID: tenantA}); err != nil {
					errs <- err
				}
				if _, err := db.Latest(ctx, tenantA, "d0"); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	latest, err := db.Latest(ctx, tenantA, "d0")
	if err != nil || len(latest) != 80 {
		t.Fatalf("Latest = %d keys, %v; want 80", len(latest), err)
	}
}
