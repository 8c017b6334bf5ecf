package sqlite_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// newCommand returns a queued command to the device, created at.
func newCommand(device, id, name string, at time.Time) *tether.Command {
	return &tether.Command{
		TenantID: tenantA, DeviceID: device, ID: id, Name: name, Status: tether.CommandQueued, Source: "api:k1",
		Timeout: tether.Duration(30 * time.Second), ExpiresAt: at.Add(time.Hour), CreatedAt: at, UpdatedAt: at,
		History: []tether.CommandTransition{{Status: tether.CommandQueued, At: at}},
	}
}

func createCommand(t *testing.T, db *sqlite.DB, c *tether.Command) *tether.Command {
	t.Helper()
	got, created, err := db.CreateCommand(context.Background(), c, nil)
	if err != nil || !created {
		t.Fatalf("CreateCommand %s = %v, %v", c.ID, created, err)
	}
	return got
}

func TestCommands(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createDevice(t, db, tenantA, "d1", nil)
	createDevice(t, db, tenantA, "d2", nil)

	t.Run("stores a command with every field and the device's next seq", func(t *testing.T) {
		c := newCommand("d1", "c1", "reboot", t0)
		c.Params, c.OneWay, c.IdempotencyKey = json.RawMessage(`{"delay":1}`), true, "k1"
		createCommand(t, db, c)
		if c.Seq != 1 {
			t.Errorf("seq %d, want 1", c.Seq)
		}
		got, err := db.Command(ctx, tenantA, "d1", "c1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("stored\n%+v\nwant\n%+v", got, c)
		}
		if c2 := createCommand(t, db, newCommand("d1", "c2", "reboot", t0)); c2.Seq != 2 {
			t.Errorf("second seq %d, want 2", c2.Seq)
		}
		if c3 := createCommand(t, db, newCommand("d2", "c3", "reboot", t0)); c3.Seq != 1 {
			t.Errorf("other device's seq %d, want 1", c3.Seq)
		}
	})

	t.Run("returns the command with the same idempotency key without calling admit", func(t *testing.T) {
		c := newCommand("d1", "c4", "reboot", t0)
		c.IdempotencyKey = "k1"
		got, created, err := db.CreateCommand(ctx, c, func(sqlite.CommandGuard) error {
			t.Error("admit called")
			return nil
		})
		if err != nil || created || got.ID != "c1" {
			t.Fatalf("CreateCommand = %v, %v, %v; want c1, false, nil", got, created, err)
		}
	})

	t.Run("reports a missing command or device as not found", func(t *testing.T) {
		_, err := db.Command(ctx, tenantA, "d2", "c1")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.Command(ctx, tenantB, "d1", "c1")
		wantCode(t, err, tether.ENOTFOUND)
		_, _, err = db.CreateCommand(ctx, newCommand("nope", "c9", "x", t0), nil)
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.CommandByKey(ctx, tenantA, "d1", "k2")
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("answers the guard inside the transaction and stores what admit made", func(t *testing.T) {
		rejected := newCommand("d1", "c5", "reboot", t0.Add(time.Minute))
		rejected.Status = tether.CommandRejected
		createCommand(t, db, rejected)
		c := newCommand("d1", "c6", "reboot", t0.Add(2*time.Minute))
		got, _, err := db.CreateCommand(ctx, c, func(g sqlite.CommandGuard) error {
			for _, tc := range []struct {
				name  string
				since time.Time
				want  int
			}{
				{"reboot", t0.Add(-time.Second), 2}, // c1, c2; c5 is rejected
				{"", t0.Add(-time.Second), 2},
				{"reboot", t0, 0}, // after since only
				{"other", t0.Add(-time.Second), 0},
			} {
				if n, err := g.CountCommands(tc.name, tc.since); err != nil || n != tc.want {
					t.Errorf("CountCommands(%q, %v) = %d, %v; want %d", tc.name, tc.since, n, err, tc.want)
				}
			}
			if n, err := g.OpenCommands(t0); err != nil || n != 2 {
				t.Errorf("OpenCommands = %d, %v; want 2", n, err)
			}
			c.Status, c.Reason = tether.CommandRejected, "too many"
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := db.Command(ctx, tenantA, "d1", got.ID)
		if stored.Status != tether.CommandRejected || stored.Reason != "too many" || stored.Seq != 4 {
			t.Errorf("stored %s/%s seq %d", stored.Status, stored.Reason, stored.Seq)
		}
	})

	t.Run("updates a command through fn and writes only a change", func(t *testing.T) {
		at := t0.Add(3 * time.Minute)
		got, changed, err := db.UpdateCommand(ctx, tenantA, "d1", "c2", func(c *tether.Command) (bool, error) {
			c.Status, c.UpdatedAt = tether.CommandSent, at
			c.History = append(c.History, tether.CommandTransition{Status: tether.CommandSent, At: at})
			return true, nil
		})
		if err != nil || !changed || got.Status != tether.CommandSent {
			t.Fatalf("UpdateCommand = %v, %v, %v", got, changed, err)
		}
		stored, _ := db.Command(ctx, tenantA, "d1", "c2")
		if !reflect.DeepEqual(stored, got) {
			t.Errorf("stored\n%+v\nwant\n%+v", stored, got)
		}
		_, changed, err = db.UpdateCommand(ctx, tenantA, "d1", "c2", func(c *tether.Command) (bool, error) {
			c.Status = "ignored"
			return false, nil
		})
		if err != nil || changed {
			t.Fatalf("UpdateCommand without a change = %v, %v", changed, err)
		}
		if stored, _ := db.Command(ctx, tenantA, "d1", "c2"); stored.Status != tether.CommandSent {
			t.Errorf("status %s after an update without a change", stored.Status)
		}
		_, _, err = db.UpdateCommand(ctx, tenantA, "d1", "nope", func(*tether.Command) (bool, error) { return true, nil })
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("lists by seq, status and cursor, and the open ones in seq order", func(t *testing.T) {
		all, err := db.Commands(ctx, tenantA, "d1", "", 0, 0)
		if err != nil || len(all) != 4 || all[0].ID != "c1" || all[3].ID != "c6" {
			t.Fatalf("Commands = %v, %v", all, err)
		}
		page, _ := db.Commands(ctx, tenantA, "d1", "", 1, 2)
		if len(page) != 2 || page[0].ID != "c2" || page[1].ID != "c5" {
			t.Errorf("page = %v", page)
		}
		sent, _ := db.Commands(ctx, tenantA, "d1", tether.CommandSent, 0, 0)
		if len(sent) != 1 || sent[0].ID != "c2" {
			t.Errorf("sent = %v", sent)
		}
		open, _ := db.OpenCommands(ctx, tenantA, "d1")
		if len(open) != 2 || open[0].ID != "c1" || open[1].ID != "c2" {
			t.Errorf("open = %v", open)
		}
	})

	t.Run("finds the commands due for expiry or timeout", func(t *testing.T) {
		due, err := db.DueCommands(ctx, t0.Add(3*time.Minute+30*time.Second), 10)
		if err != nil || len(due) != 1 || due[0].ID != "c2" {
			t.Fatalf("due at the timeout = %v, %v; want c2", due, err)
		}
		due, _ = db.DueCommands(ctx, t0.Add(time.Hour), 10)
		if len(due) != 3 { // c1 (d1), c2, c3 (d2)
			t.Fatalf("due at the expiry = %d commands, want 3", len(due))
		}
	})

	t.Run("returns the last finished commands, newest first", func(t *testing.T) {
		for i, id := range []string{"c1", "c2"} {
			at := t0.Add(time.Duration(10+i) * time.Minute)
			if _, _, err := db.UpdateCommand(ctx, tenantA, "d1", id, func(c *tether.Command) (bool, error) {
				c.Status, c.UpdatedAt = tether.CommandFailed, at
				return true, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := db.CreateCommand(ctx, newCommand("d1", "c7", "x", t0.Add(time.Hour)), func(g sqlite.CommandGuard) error {
			last, err := g.FinishedCommands(5)
			if err != nil || len(last) != 2 || last[0].ID != "c2" || last[1].ID != "c1" {
				t.Errorf("FinishedCommands = %v, %v; want c2, c1", last, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("deletes a device's commands with the device", func(t *testing.T) {
		if err := db.DeleteDevice(ctx, tenantA, "d2"); err != nil {
			t.Fatal(err)
		}
		_, err := db.Command(ctx, tenantA, "d2", "c3")
		wantCode(t, err, tether.ENOTFOUND)
	})
}
