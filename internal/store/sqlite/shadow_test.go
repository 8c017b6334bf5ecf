package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func TestShadowStore(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "d1", nil)

	write := func(cur *tether.Shadow) (*tether.Shadow, error) {
		next := *cur
		next.State.Desired = map[string]any{"v": float64(cur.Version)}
		next.Metadata.Desired = map[string]any{"v": "t"}
		next.UpdatedAt = t0
		return &next, nil
	}

	t.Run("a never written shadow has version 0 and empty documents", func(t *testing.T) {
		sh, err := db.Shadow(ctx, tenantA, "d1", "")
		if err != nil {
			t.Fatal(err)
		}
		want := &tether.Shadow{TenantID: tenantA, DeviceID: "d1",
			State:    tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}},
			Metadata: tether.ShadowMetadata{Desired: map[string]any{}, Reported: map[string]any{}}}
		if !reflect.DeepEqual(sh, want) {
			t.Errorf("shadow = %+v", sh)
		}
	})
	t.Run("an update stores the next version with what apply returns", func(t *testing.T) {
		for want := int64(1); want <= 3; want++ {
			sh, err := db.UpdateShadow(ctx, tenantA, "d1", "", write)
			if err != nil {
				t.Fatal(err)
			}
			got, err := db.Shadow(ctx, tenantA, "d1", "")
			if err != nil {
				t.Fatal(err)
			}
			if sh.Version != want || !reflect.DeepEqual(got, sh) || got.State.Desired["v"] != float64(want-1) {
				t.Errorf("stored %+v, returned %+v; want version %d", got, sh, want)
			}
		}
	})
	t.Run("an error from apply stores nothing and is returned as it is", func(t *testing.T) {
		boom := tether.Errorf(tether.ECONFLICT, "boom")
		_, err := db.UpdateShadow(ctx, tenantA, "d1", "", func(*tether.Shadow) (*tether.Shadow, error) { return nil, boom })
		if !errors.Is(err, boom) {
			t.Errorf("err = %v", err)
		}
		if sh, _ := db.Shadow(ctx, tenantA, "d1", ""); sh.Version != 3 {
			t.Errorf("version = %d", sh.Version)
		}
	})
	t.Run("a device of another tenant or none is not found", func(t *testing.T) {
		for _, dev := range [][2]string{{tenantB, "d1"}, {tenantA, "nope"}} {
			_, err := db.Shadow(ctx, dev[0], dev[1], "")
			wantCode(t, err, tether.ENOTFOUND)
			_, err = db.UpdateShadow(ctx, dev[0], dev[1], "", write)
			wantCode(t, err, tether.ENOTFOUND)
			_, err = db.ShadowNames(ctx, dev[0], dev[1])
			wantCode(t, err, tether.ENOTFOUND)
			wantCode(t, db.DeleteShadow(ctx, dev[0], dev[1], ""), tether.ENOTFOUND)
		}
	})
	t.Run("names list the named shadows only; delete removes one", func(t *testing.T) {
		for _, n := range []string{"b", "a"} {
			if _, err := db.UpdateShadow(ctx, tenantA, "d1", n, write); err != nil {
				t.Fatal(err)
			}
		}
		names, err := db.ShadowNames(ctx, tenantA, "d1")
		if err != nil || !reflect.DeepEqual(names, []string{"a", "b"}) {
			t.Errorf("names = %q, %v", names, err)
		}
		if err := db.DeleteShadow(ctx, tenantA, "d1", "a"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, db.DeleteShadow(ctx, tenantA, "d1", "a"), tether.ENOTFOUND)
		if names, _ := db.ShadowNames(ctx, tenantA, "d1"); !reflect.DeepEqual(names, []string{"b"}) {
			t.Errorf("names = %q", names)
		}
	})
	t.Run("a device has at most MaxNamedShadows named shadows", func(t *testing.T) {
		createDevice(t, db, tenantA, "many", nil)
		for i := range sqlite.MaxNamedShadows {
			if _, err := db.UpdateShadow(ctx, tenantA, "many", fmt.Sprintf("part%d", i), write); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.UpdateShadow(ctx, tenantA, "many", "one-too-many", write); tether.ErrorCode(err) != tether.ETOOMANY {
			t.Errorf("err = %v, want ETOOMANY", err)
		}
		if _, err := db.UpdateShadow(ctx, tenantA, "many", "part0", write); err != nil {
			t.Errorf("an existing one can still be updated: %v", err)
		}
		if _, err := db.UpdateShadow(ctx, tenantA, "many", "", write); err != nil {
			t.Errorf("the classic one does not count: %v", err)
		}
	})
	t.Run("deleting the device deletes its shadows", func(t *testing.T) {
		if err := db.DeleteDevice(ctx, tenantA, "d1"); err != nil {
			t.Fatal(err)
		}
		createDevice(t, db, tenantA, "d1", nil)
		if sh, _ := db.Shadow(ctx, tenantA, "d1", "b"); sh.Version != 0 {
			t.Errorf("version = %d", sh.Version)
		}
	})
}
