package sqlite_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func sampleRule(tenantID, id string) *tether.Rule {
	return &tether.Rule{
		TenantID: tenantID, ID: id, Name: "Vibration",
		Statement: "SELECT avg(vibration) AS v FROM telemetry GROUP BY device, TUMBLING(1m) HAVING v > 4.2",
		Actions: []tether.RuleAction{
			{Type: tether.ActionWebhook, URL: "https://example.com/hook", Secret: "s3cret", MaxAttempts: 3, RetryBackoff: tether.Duration(2 * time.Second)},
			{Type: tether.ActionAlert, AlertType: "vibration", Severity: "warning", MinDuration: tether.Duration(time.Minute)},
			{Type: tether.ActionCommand, Command: "slow", Params: json.RawMessage(`{"rpm":"{v}"}`)},
		},
		Enabled:   true,
		UpdatedAt: t0,
	}
}

func createRule(t *testing.T, db *sqlite.DB, tenantID, id string) *tether.Rule {
	t.Helper()
	r := sampleRule(tenantID, id)
	if err := db.CreateRule(context.Background(), r, 0); err != nil {
		t.Fatalf("CreateRule %s: %v", id, err)
	}
	return r
}

func TestRuleCRUD(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	in := createRule(t, db, tenantA, "vib")

	t.Run("create makes version 1 with status ok, created when updated", func(t *testing.T) {
		if in.Version != 1 || in.Status != tether.RuleOK || !in.CreatedAt.Equal(t0) || !in.UpdatedAt.Equal(t0) {
			t.Errorf("created rule = %+v", in)
		}
	})
	t.Run("returns a created rule with every field as stored, webhook secret included", func(t *testing.T) {
		got, err := db.Rule(ctx, tenantA, "vib")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("Rule =\n%+v\nwant\n%+v", got, in)
		}
	})
	t.Run("refuses a second rule with the same id", func(t *testing.T) {
		wantCode(t, db.CreateRule(ctx, sampleRule(tenantA, "vib"), 0), tether.ECONFLICT)
	})
	t.Run("refuses a rule of a tenant that does not exist", func(t *testing.T) {
		wantCode(t, db.CreateRule(ctx, sampleRule("nobody", "x"), 0), tether.ENOTFOUND)
	})
	t.Run("refuses an invalid id", func(t *testing.T) {
		wantCode(t, db.CreateRule(ctx, sampleRule(tenantA, "no spaces"), 0), tether.EINVALID)
	})
	t.Run("keeps tenants apart", func(t *testing.T) {
		_, err := db.Rule(ctx, tenantB, "vib")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.RuleVersions(ctx, tenantB, "vib")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.SetRuleEnabled(ctx, tenantB, "vib", false, t0)
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, db.UpdateRule(ctx, sampleRule(tenantB, "vib"), 1, 0), tether.ENOTFOUND)
		wantCode(t, db.DeleteRule(ctx, tenantB, "vib"), tether.ENOTFOUND)
		createRule(t, db, tenantB, "vib")
		rs, err := db.Rules(ctx, tenantB)
		if err != nil || len(rs) != 1 || rs[0].TenantID != tenantB {
			t.Fatalf("Rules(%s) = %v, %v", tenantB, rs, err)
		}
		if got, _ := db.Rule(ctx, tenantA, "vib"); got.Version != 1 {
			t.Errorf("tenant %s's rule changed: %+v", tenantA, got)
		}
	})
	t.Run("lists a tenant's rules in id order", func(t *testing.T) {
		createRule(t, db, tenantA, "a-first")
		rs, err := db.Rules(ctx, tenantA)
		if err != nil || len(rs) != 2 || rs[0].ID != "a-first" || rs[1].ID != "vib" {
			t.Fatalf("Rules = %v, %v", rs, err)
		}
	})
	t.Run("deletes a rule with its versions", func(t *testing.T) {
		createRule(t, db, tenantA, "gone")
		if err := db.UpdateRule(ctx, sampleRule(tenantA, "gone"), 1, 0); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteRule(ctx, tenantA, "gone"); err != nil {
			t.Fatal(err)
		}
		_, err := db.Rule(ctx, tenantA, "gone")
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, db.DeleteRule(ctx, tenantA, "gone"), tether.ENOTFOUND)
		// Made again, it starts over at version 1 with only that version.
		r := createRule(t, db, tenantA, "gone")
		vs, err := db.RuleVersions(ctx, tenantA, "gone")
		if err != nil || r.Version != 1 || len(vs) != 1 {
			t.Fatalf("recreated rule version %d, versions %v, %v", r.Version, vs, err)
		}
	})
}

func TestRuleVersions(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	v1 := createRule(t, db, tenantA, "vib")

	v2 := sampleRule(tenantA, "vib")
	v2.Name, v2.Statement, v2.Actions = "Vibration v2", "SELECT * FROM telemetry", []tether.RuleAction{{Type: tether.ActionNATS, Topic: "vib"}}
	v2.UpdatedAt = t0.Add(time.Hour)
	v2.Enabled = false // ignored: enabling is SetRuleEnabled's
	if err := db.UpdateRule(ctx, v2, 1, 0); err != nil {
		t.Fatal(err)
	}

	t.Run("an update makes the next version, keeps the creation time and the enabled flag", func(t *testing.T) {
		got, err := db.Rule(ctx, tenantA, "vib")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != 2 || !got.Enabled || !got.CreatedAt.Equal(t0) || !got.UpdatedAt.Equal(t0.Add(time.Hour)) ||
			got.Name != "Vibration v2" || got.Statement != "SELECT * FROM telemetry" || !reflect.DeepEqual(got.Actions, v2.Actions) {
			t.Errorf("Rule = %+v", got)
		}
		if !reflect.DeepEqual(got, v2) {
			t.Errorf("UpdateRule set\n%+v\nthe store has\n%+v", v2, got)
		}
	})
	t.Run("an update naming a version that is not the current one is a conflict", func(t *testing.T) {
		wantCode(t, db.UpdateRule(ctx, sampleRule(tenantA, "vib"), 1, 0), tether.ECONFLICT)
	})
	t.Run("every version's definition is kept, oldest first", func(t *testing.T) {
		vs, err := db.RuleVersions(ctx, tenantA, "vib")
		if err != nil {
			t.Fatal(err)
		}
		want := []*tether.Rule{
			{TenantID: tenantA, ID: "vib", Name: v1.Name, Statement: v1.Statement, Actions: v1.Actions, Version: 1, CreatedAt: t0, UpdatedAt: t0},
			{TenantID: tenantA, ID: "vib", Name: v2.Name, Statement: v2.Statement, Actions: v2.Actions, Version: 2, CreatedAt: t0, UpdatedAt: t0.Add(time.Hour)},
		}
		if !reflect.DeepEqual(vs, want) {
			t.Errorf("RuleVersions =\n%+v\nwant\n%+v", vs, want)
		}
		got, err := db.RuleVersion(ctx, tenantA, "vib", 1)
		if err != nil || !reflect.DeepEqual(got, want[0]) {
			t.Errorf("RuleVersion 1 = %+v, %v", got, err)
		}
	})
	t.Run("a version that does not exist is not found, and so is one of another tenant", func(t *testing.T) {
		_, err := db.RuleVersion(ctx, tenantA, "vib", 3)
		wantCode(t, err, tether.ENOTFOUND)
		_, err = db.RuleVersion(ctx, tenantB, "vib", 1)
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("only the newest keep versions are kept", func(t *testing.T) {
		for prev := 2; prev < 6; prev++ {
			if err := db.UpdateRule(ctx, sampleRule(tenantA, "vib"), prev, 3); err != nil {
				t.Fatal(err)
			}
		}
		vs, err := db.RuleVersions(ctx, tenantA, "vib")
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, v := range vs {
			got = append(got, v.Version)
		}
		if !reflect.DeepEqual(got, []int{4, 5, 6}) {
			t.Errorf("versions kept = %v, want [4 5 6]", got)
		}
		_, err = db.RuleVersion(ctx, tenantA, "vib", 1)
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("concurrent updates from the same version: one wins, the others conflict", func(t *testing.T) {
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			won int
		)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.UpdateRule(ctx, sampleRule(tenantA, "vib"), 6, 0)
				mu.Lock()
				defer mu.Unlock()
				switch tether.ErrorCode(err) {
				case "":
					won++
				case tether.ECONFLICT:
				default:
					t.Errorf("UpdateRule: %v", err)
				}
			}()
		}
		wg.Wait()
		if r, _ := db.Rule(ctx, tenantA, "vib"); won != 1 || r.Version != 7 {
			t.Errorf("%d updates won, rule at version %d; want 1 and 7", won, r.Version)
		}
	})
}

func TestRuleState(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	createRule(t, db, tenantA, "vib")
	off := sampleRule(tenantA, "off")
	off.Enabled = false
	if err := db.CreateRule(ctx, off, 0); err != nil {
		t.Fatal(err)
	}
	createRule(t, db, tenantB, "other")

	t.Run("the enabled rules of every tenant are listed for the engine", func(t *testing.T) {
		rs, err := db.EnabledRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.TenantID+"/"+r.ID)
		}
		if want := []string{tenantA + "/vib", tenantB + "/other"}; !reflect.DeepEqual(got, want) {
			t.Errorf("EnabledRules = %v, want %v", got, want)
		}
	})
	t.Run("the status of the current version is recorded, with the error cut to 1 KiB", func(t *testing.T) {
		set, err := db.SetRuleStatus(ctx, tenantA, "vib", 1, tether.RuleFailing, strings.Repeat("é", 1000))
		if err != nil || !set {
			t.Fatalf("SetRuleStatus = %t, %v", set, err)
		}
		r, _ := db.Rule(ctx, tenantA, "vib")
		if r.Status != tether.RuleFailing || len(r.Error) != 1024 || !strings.HasPrefix(r.Error, "éé") || !r.UpdatedAt.Equal(t0) {
			t.Errorf("rule status %q, error of %d bytes, updated %v", r.Status, len(r.Error), r.UpdatedAt)
		}
	})
	t.Run("the status of a version that is no longer current is dropped", func(t *testing.T) {
		if err := db.UpdateRule(ctx, sampleRule(tenantA, "vib"), 1, 0); err != nil {
			t.Fatal(err)
		}
		r, _ := db.Rule(ctx, tenantA, "vib")
		if r.Status != tether.RuleOK || r.Error != "" {
			t.Fatalf("a new version starts with status %q, error %q", r.Status, r.Error)
		}
		set, err := db.SetRuleStatus(ctx, tenantA, "vib", 1, tether.RuleFailing, "old")
		if err != nil || set {
			t.Fatalf("SetRuleStatus for version 1 = %t, %v; want dropped", set, err)
		}
		if r, _ := db.Rule(ctx, tenantA, "vib"); r.Status != tether.RuleOK {
			t.Errorf("status %q after a stale report", r.Status)
		}
	})
	t.Run("a status that is neither ok nor failing is refused", func(t *testing.T) {
		_, err := db.SetRuleStatus(ctx, tenantA, "vib", 2, "broken", "")
		wantCode(t, err, tether.EINVALID)
	})
	t.Run("the status of a rule that does not exist is not found", func(t *testing.T) {
		_, err := db.SetRuleStatus(ctx, tenantB, "vib", 1, tether.RuleOK, "")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("disabling keeps the status; enabling resets it to ok; neither makes a version", func(t *testing.T) {
		if _, err := db.SetRuleStatus(ctx, tenantA, "vib", 2, tether.RuleFailing, "boom"); err != nil {
			t.Fatal(err)
		}
		r, err := db.SetRuleEnabled(ctx, tenantA, "vib", false, t0.Add(time.Minute))
		if err != nil || r.Enabled || r.Status != tether.RuleFailing || r.Version != 2 || !r.UpdatedAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("disabled = %+v, %v", r, err)
		}
		r, err = db.SetRuleEnabled(ctx, tenantA, "vib", true, t0.Add(2*time.Minute))
		if err != nil || !r.Enabled || r.Status != tether.RuleOK || r.Error != "" || r.Version != 2 {
			t.Fatalf("enabled = %+v, %v", r, err)
		}
		if got, _ := db.Rule(ctx, tenantA, "vib"); !reflect.DeepEqual(got, r) {
			t.Errorf("stored %+v\nreturned %+v", got, r)
		}
	})
}

func TestRuleLimit(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	for _, id := range []string{"r1", "r2"} {
		if err := db.CreateRule(ctx, sampleRule(tenantA, id), 2); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a tenant at its limit cannot create another rule", func(t *testing.T) {
		wantCode(t, db.CreateRule(ctx, sampleRule(tenantA, "r3"), 2), tether.ETOOMANY)
	})
	t.Run("the limit is per tenant", func(t *testing.T) {
		if err := db.CreateRule(ctx, sampleRule(tenantB, "r3"), 2); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("deleting a rule makes room", func(t *testing.T) {
		if err := db.DeleteRule(ctx, tenantA, "r1"); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateRule(ctx, sampleRule(tenantA, "r3"), 2); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("concurrent creates never pass the limit", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.CreateRule(ctx, sampleRule(tenantB, "c"+string(rune('a'+i))), 5)
				if c := tether.ErrorCode(err); c != "" && c != tether.ETOOMANY {
					t.Errorf("CreateRule: %v", err)
				}
			}()
		}
		wg.Wait()
		if rs, _ := db.Rules(ctx, tenantB); len(rs) != 5 {
			t.Errorf("tenant %s has %d rules, want 5", tenantB, len(rs))
		}
	})
}
