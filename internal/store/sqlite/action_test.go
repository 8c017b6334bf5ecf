package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func newActionJob(tenant, rule, id string, at time.Time) sqlite.ActionJob {
	return sqlite.ActionJob{
		ID: id, TenantID: tenant, RuleID: rule, RuleVersion: 2, DeviceID: "d1", Index: 1,
		Action: json.RawMessage(`{"type":"webhook"}`), Result: json.RawMessage(`{"values":{"v":1}}`),
		NextAttemptAt: at, CreatedAt: at,
	}
}

func claimJobs(t *testing.T, db *sqlite.DB, now time.Time, lease time.Duration, limit int) []sqlite.ActionJob {
	t.Helper()
	jobs, err := db.ClaimActions(context.Background(), now, lease, limit)
	if err != nil {
		t.Fatalf("ClaimActions: %v", err)
	}
	return jobs
}

func jobIDs(jobs []sqlite.ActionJob) string {
	var s []string
	for _, j := range jobs {
		s = append(s, j.ID)
	}
	return strings.Join(s, ",")
}

func TestActionOutbox(t *testing.T) {
	ctx := context.Background()

	t.Run("claims due rows oldest first, once per lease, counting attempts", func(t *testing.T) {
		db := newDB(t)
		if err := db.EnqueueActions(ctx, []sqlite.ActionJob{
			newActionJob(tenantA, "r1", "j2", t0.Add(time.Second)), newActionJob(tenantA, "r1", "j1", t0),
			newActionJob(tenantB, "r9", "j3", t0.Add(time.Hour)),
		}); err != nil {
			t.Fatal(err)
		}
		if next, ok, err := db.NextActionDue(ctx); err != nil || !ok || !next.Equal(t0) {
			t.Errorf("NextActionDue = %v, %v, %v; want %v", next, ok, err, t0)
		}
		got := claimJobs(t, db, t0.Add(time.Second), time.Minute, 10)
		if jobIDs(got) != "j1,j2" {
			t.Fatalf("claimed %s, want j1,j2 (j3 is not due)", jobIDs(got))
		}
		want := newActionJob(tenantA, "r1", "j1", t0)
		want.Attempts, want.NextAttemptAt = 1, t0.Add(time.Second+time.Minute)
		if fmt.Sprint(got[0]) != fmt.Sprint(want) {
			t.Errorf("claimed\n%+v\nwant\n%+v", got[0], want)
		}
		if again := claimJobs(t, db, t0.Add(30*time.Second), time.Minute, 10); len(again) != 0 {
			t.Errorf("claimed %s again within the lease", jobIDs(again))
		}
		again := claimJobs(t, db, t0.Add(2*time.Minute), time.Minute, 1)
		if jobIDs(again) != "j1" || again[0].Attempts != 2 {
			t.Errorf("after the lease claimed %s (attempts %d), want j1 with 2 attempts", jobIDs(again), again[0].Attempts)
		}
	})

	t.Run("finishes, retries, releases and dead-letters only the current claim", func(t *testing.T) {
		db := newDB(t)
		for _, id := range []string{"ok", "retry", "release", "dead"} {
			if err := db.EnqueueActions(ctx, []sqlite.ActionJob{newActionJob(tenantA, "r1", id, t0)}); err != nil {
				t.Fatal(err)
			}
		}
		claimJobs(t, db, t0, time.Minute, 10)
		now := t0.Add(time.Second)
		if err := db.FinishAction(ctx, tenantA, "ok", 2); tether.ErrorCode(err) != tether.ECONFLICT {
			t.Errorf("FinishAction with another claim's attempts = %v, want ECONFLICT", err)
		}
		if err := db.FinishAction(ctx, tenantB, "ok", 1); tether.ErrorCode(err) != tether.ECONFLICT {
			t.Errorf("FinishAction of another tenant = %v, want ECONFLICT", err)
		}
		if err := db.FinishAction(ctx, tenantA, "ok", 1); err != nil {
			t.Fatal(err)
		}
		if err := db.RetryAction(ctx, tenantA, "retry", 1, now.Add(10*time.Second), "503"); err != nil {
			t.Fatal(err)
		}
		if err := db.ReleaseAction(ctx, tenantA, "release", 1, now); err != nil {
			t.Fatal(err)
		}
		if err := db.DeadLetterAction(ctx, tenantA, "dead", 1, now, "400 Bad Request"); err != nil {
			t.Fatal(err)
		}
		if err := db.DeadLetterAction(ctx, tenantA, "dead", 1, now, "again"); tether.ErrorCode(err) != tether.ECONFLICT {
			t.Errorf("second DeadLetterAction = %v, want ECONFLICT", err)
		}

		got := claimJobs(t, db, now, time.Minute, 10)
		if jobIDs(got) != "release" || got[0].Attempts != 1 {
			t.Errorf("claimed %s (%+v), want only release, with its interrupted attempt uncounted", jobIDs(got), got)
		}
		got = claimJobs(t, db, now.Add(10*time.Second), time.Minute, 10)
		if jobIDs(got) != "retry" || got[0].Attempts != 2 || got[0].LastError != "503" {
			t.Errorf("claimed %+v, want retry with 2 attempts and its last error", got)
		}

		dls, err := db.ActionDeadLetters(ctx, tenantA, "r1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) != 1 {
			t.Fatalf("dead letters %+v, want 1", dls)
		}
		d := dls[0]
		if d.ID != "dead" || d.Error != "400 Bad Request" || d.Attempts != 1 || !d.FailedAt.Equal(now) || !d.CreatedAt.Equal(t0) ||
			d.RuleVersion != 2 || d.Index != 1 || d.DeviceID != "d1" || string(d.Result) != `{"values":{"v":1}}` {
			t.Errorf("dead letter %+v", d)
		}
		if other, _ := db.ActionDeadLetters(ctx, tenantB, "r1", 0); len(other) != 0 {
			t.Errorf("another tenant sees %+v", other)
		}
		if other, _ := db.ActionDeadLetters(ctx, tenantA, "r2", 0); len(other) != 0 {
			t.Errorf("another rule sees %+v", other)
		}
		if all, _ := db.ActionDeadLetters(ctx, tenantA, "", 0); len(all) != 1 {
			t.Errorf("the tenant's dead letters of every rule: %+v", all)
		}
	})

	t.Run("lists dead letters newest first, at most limit", func(t *testing.T) {
		db := newDB(t)
		for i := range 5 {
			id := fmt.Sprintf("j%d", i)
			if err := db.EnqueueActions(ctx, []sqlite.ActionJob{newActionJob(tenantA, "r1", id, t0)}); err != nil {
				t.Fatal(err)
			}
		}
		for i, j := range claimJobs(t, db, t0, time.Minute, 10) {
			if err := db.DeadLetterAction(ctx, tenantA, j.ID, 1, t0.Add(time.Duration(i)*time.Second), "x"); err != nil {
				t.Fatal(err)
			}
		}
		dls, err := db.ActionDeadLetters(ctx, tenantA, "r1", 3)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range dls {
			got = append(got, d.ID)
		}
		if strings.Join(got, ",") != "j4,j3,j2" {
			t.Errorf("dead letters %v, want j4,j3,j2", got)
		}
		if next, ok, err := db.NextActionDue(ctx); ok || err != nil {
			t.Errorf("NextActionDue of an empty outbox = %v, %v, %v", next, ok, err)
		}
	})

	t.Run("refuses a batch with a taken delivery id, storing none of it", func(t *testing.T) {
		db := newDB(t)
		if err := db.EnqueueActions(ctx, []sqlite.ActionJob{newActionJob(tenantA, "r1", "a", t0)}); err != nil {
			t.Fatal(err)
		}
		err := db.EnqueueActions(ctx, []sqlite.ActionJob{newActionJob(tenantA, "r1", "b", t0), newActionJob(tenantA, "r1", "a", t0)})
		if tether.ErrorCode(err) != tether.ECONFLICT {
			t.Errorf("EnqueueActions = %v, want ECONFLICT", err)
		}
		if got := claimJobs(t, db, t0, time.Minute, 10); jobIDs(got) != "a" {
			t.Errorf("outbox holds %s, want only a", jobIDs(got))
		}
	})

	t.Run("concurrent claimers never claim one row twice", func(t *testing.T) {
		db := newDB(t)
		var jobs []sqlite.ActionJob
		for i := range 200 {
			jobs = append(jobs, newActionJob(tenantA, "r1", fmt.Sprintf("j%03d", i), t0))
		}
		if err := db.EnqueueActions(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		var (
			mu  sync.Mutex
			got []string
			wg  sync.WaitGroup
		)
		for range 8 {
			wg.Go(func() {
				for {
					js, err := db.ClaimActions(ctx, t0, time.Minute, 7)
					if err != nil {
						t.Error(err)
						return
					}
					if len(js) == 0 {
						return
					}
					mu.Lock()
					for _, j := range js {
						got = append(got, j.ID)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		sort.Strings(got)
		for i := 1; i < len(got); i++ {
			if got[i] == got[i-1] {
				t.Fatalf("%s claimed twice", got[i])
			}
		}
		if len(got) != 200 {
			t.Errorf("claimed %d rows, want 200", len(got))
		}
	})
}
