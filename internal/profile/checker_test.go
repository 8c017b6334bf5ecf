package profile_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
	"github.com/tether-iot/tether/internal/telemetry"
)

func num(key string, at time.Duration, v float64) tether.Point {
	return tether.Point{Key: key, Time: t0.Add(at), Kind: tether.KindNumber, Num: v}
}

func boolean(key string, at time.Duration, v bool) tether.Point {
	p := tether.Point{Key: key, Time: t0.Add(at), Kind: tether.KindBool}
	if v {
		p.Num = 1
	}
	return p
}

func str(key string, at time.Duration, v string) tether.Point {
	return tether.Point{Key: key, Time: t0.Add(at), Kind: tether.KindString, Str: v}
}

func reasons(pts []tether.Point) []string {
	r := make([]string, len(pts))
	for i, p := range pts {
		r[i] = p.Quarantine
	}
	return r
}

// newChecker returns a Checker over a real store with the boiler profile
// (temp: number in [-20, 120] changing at most 2 per second; on: bool)
// and the devices b1..b3 of it and plain (no profile).
func newChecker(t testing.TB) (*profile.Checker, *profile.Service, *testStore) {
	t.Helper()
	s, db, _ := newService(t)
	if _, err := s.Create(context.Background(), tenant, boiler()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b1", "b2", "b3"} {
		if err := db.CreateDevice(context.Background(), &tether.Device{TenantID: tenant, ID: id, ProfileID: "boiler"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.CreateDevice(context.Background(), &tether.Device{TenantID: tenant, ID: "plain"}); err != nil {
		t.Fatal(err)
	}
	ts := &testStore{DB: db}
	return profile.NewChecker(s, ts), s, ts
}

func device(id string) *tether.Device {
	d := &tether.Device{TenantID: tenant, ID: id, ProfileID: "boiler"}
	if id == "plain" {
		d.ProfileID = ""
	}
	return d
}

func TestCheckerStaticRules(t *testing.T) {
	c, _, _ := newChecker(t)
	for _, tc := range []struct {
		name   string
		device string
		pts    []tether.Point
		want   []string
	}{
		{"accepts values that fit", "b1",
			[]tether.Point{num("temp", 0, 21), boolean("on", 0, true), num("temp", time.Second, 22)},
			[]string{"", "", ""}},
		{"quarantines a value of the wrong type", "b1",
			[]tether.Point{str("temp", 2*time.Second, "hot"), num("on", 2*time.Second, 1), boolean("temp", 2*time.Second, true)},
			[]string{tether.QuarantineType, tether.QuarantineType, tether.QuarantineType}},
		{"quarantines values out of bounds", "b2",
			[]tether.Point{num("temp", 0, -21), num("temp", time.Second, 121)},
			[]string{tether.QuarantineBelowMin, tether.QuarantineAboveMax}},
		{"accepts the bounds themselves", "b2",
			[]tether.Point{num("temp", time.Hour, -20), num("temp", 2*time.Hour, 120)},
			[]string{"", ""}},
		{"accepts keys the profile does not name", "b1",
			[]tether.Point{str("firmware", 0, "1.2"), num("rssi", 0, -1e9)},
			[]string{"", ""}},
		{"quarantines nothing of a device without a profile", "plain",
			[]tether.Point{str("temp", 0, "hot"), num("temp", 0, 1e9), num("temp", 0, -1e9)},
			[]string{"", "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Check(t.Context(), device(tc.device), tc.pts)
			if got := reasons(tc.pts); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reasons %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCheckerJumps(t *testing.T) {
	ctx := context.Background()

	t.Run("measures each point from the previous accepted one", func(t *testing.T) {
		c, _, _ := newChecker(t)
		pts := []tether.Point{
			num("temp", 0, 20),
			num("temp", time.Second, 22),     // +2 in 1 s: the most allowed
			num("temp", 2*time.Second, 30),   // +8 in 1 s: impossible
			num("temp", 3*time.Second, 25),   // +3 in 2 s from 22: fine, the rogue 30 is not the reference
			num("temp", 3*time.Second, 26),   // another value at the same time: impossible
			num("temp", 2*time.Second, 24.5), // older but within 2/s of 25: accepted, 25 stays the reference
			num("temp", 4*time.Second, 27),   // +2 in 1 s from 25
		}
		c.Check(ctx, device("b1"), pts)
		want := []string{"", "", tether.QuarantineJump, "", tether.QuarantineJump, "", ""}
		if got := reasons(pts); !reflect.DeepEqual(got, want) {
			t.Errorf("reasons %q, want %q", got, want)
		}
	})

	t.Run("remembers the previous point between messages and accepts a real change once enough time passed", func(t *testing.T) {
		c, _, _ := newChecker(t)
		for _, step := range []struct {
			p    tether.Point
			want string
		}{
			{num("temp", 0, 20), ""},
			{num("temp", 10*time.Second, 100), tether.QuarantineJump}, // +80 in 10 s
			{num("temp", 20*time.Second, 100), tether.QuarantineJump}, // +80 in 20 s
			{num("temp", 40*time.Second, 100), ""},                    // +80 in 40 s: 2/s
			{num("temp", 41*time.Second, 101), ""},
		} {
			pts := []tether.Point{step.p}
			c.Check(ctx, device("b1"), pts)
			if pts[0].Quarantine != step.want {
				t.Fatalf("%v at %v: reason %q, want %q", step.p.Num, step.p.Time.Sub(t0), pts[0].Quarantine, step.want)
			}
		}
	})

	t.Run("a point out of bounds or of the wrong type is never the reference", func(t *testing.T) {
		c, _, _ := newChecker(t)
		pts := []tether.Point{num("temp", 0, 20), num("temp", time.Second, 200), str("temp", 2*time.Second, "x"), num("temp", 3*time.Second, 25)}
		c.Check(ctx, device("b1"), pts)
		want := []string{"", tether.QuarantineAboveMax, tether.QuarantineType, ""}
		if got := reasons(pts); !reflect.DeepEqual(got, want) {
			t.Errorf("reasons %q, want %q", got, want)
		}
	})

	t.Run("starts from the store's latest values for a device it has not seen", func(t *testing.T) {
		c, _, st := newChecker(t)
		write(t, st, "b2", num("temp", 0, 50))
		pts := []tether.Point{num("temp", time.Second, 20)}
		c.Check(ctx, device("b2"), pts)
		if pts[0].Quarantine != tether.QuarantineJump {
			t.Errorf("reason %q, want impossible_jump from the stored 50", pts[0].Quarantine)
		}
		if st.latestCalls() != 1 {
			t.Errorf("read the store's latest values %d times, want once", st.latestCalls())
		}
		pts = []tether.Point{num("temp", 2*time.Second, 51)}
		c.Check(ctx, device("b2"), pts)
		if pts[0].Quarantine != "" || st.latestCalls() != 1 {
			t.Errorf("second message: reason %q after %d reads, want accepted without another read", pts[0].Quarantine, st.latestCalls())
		}
	})

	t.Run("forgets a device and starts again from the store", func(t *testing.T) {
		c, _, st := newChecker(t)
		c.Check(ctx, device("b3"), []tether.Point{num("temp", 0, 20)})
		c.Forget("b3")
		write(t, st, "b3", num("temp", time.Second, 80)) // as if another node accepted it
		pts := []tether.Point{num("temp", 2*time.Second, 81)}
		c.Check(ctx, device("b3"), pts)
		if pts[0].Quarantine != "" {
			t.Errorf("reason %q, want accepted against the stored 80", pts[0].Quarantine)
		}
	})

	t.Run("starts again when the device moves to another profile", func(t *testing.T) {
		c, s, _ := newChecker(t)
		p := boiler()
		p.ID = "boiler2"
		if _, err := s.Create(ctx, tenant, p); err != nil {
			t.Fatal(err)
		}
		c.Check(ctx, device("b1"), []tether.Point{num("temp", 0, 20)})
		moved := device("b1")
		moved.ProfileID = "boiler2"
		pts := []tether.Point{num("temp", time.Second, 100)}
		c.Check(ctx, moved, pts)
		if pts[0].Quarantine != "" {
			t.Errorf("reason %q, want accepted: the store has no value to measure from", pts[0].Quarantine)
		}
	})

	t.Run("retries the store after a failure", func(t *testing.T) {
		c, _, st := newChecker(t)
		write(t, st, "b1", num("temp", 0, 50))
		st.fail(errors.New("disk on fire"))
		pts := []tether.Point{num("temp", time.Second, 20)}
		c.Check(ctx, device("b1"), pts)
		if pts[0].Quarantine != "" {
			t.Errorf("with the store failing: reason %q, want accepted", pts[0].Quarantine)
		}
		st.fail(nil)
		pts = []tether.Point{num("temp", 2*time.Second, 80)}
		c.Check(ctx, device("b1"), pts)
		if pts[0].Quarantine != tether.QuarantineJump {
			t.Errorf("after the store is back: reason %q, want impossible_jump", pts[0].Quarantine)
		}
	})
}

func TestCheckerFailsOpen(t *testing.T) {
	c, _, _ := newChecker(t)
	d := device("b1")
	d.ProfileID = "gone"
	pts := []tether.Point{str("temp", 0, "hot")}
	c.Check(t.Context(), d, pts)
	if pts[0].Quarantine != "" {
		t.Errorf("a device whose profile cannot be read: reason %q, want none", pts[0].Quarantine)
	}
}

func TestCheckerMemoryIsBounded(t *testing.T) {
	s, db, _ := newService(t)
	if _, err := s.Create(t.Context(), tenant, boiler()); err != nil {
		t.Fatal(err)
	}
	c := profile.NewChecker(s, db)
	profile.SetMaxDevices(c, 10)
	for i := range 100 {
		d := &tether.Device{TenantID: tenant, ID: fmt.Sprintf("d%d", i), ProfileID: "boiler"}
		c.Check(t.Context(), d, []tether.Point{num("temp", 0, 20)})
		if n := c.Devices(); n > 10 {
			t.Fatalf("after %d devices the checker remembers %d, want at most 10", i+1, n)
		}
	}
	// A profile without max_rate needs no memory at all.
	p := boiler()
	p.ID, p.Telemetry = "static", map[string]tether.KeySchema{"temp": {Type: "number", Max: f(1)}}
	if _, err := s.Create(t.Context(), tenant, p); err != nil {
		t.Fatal(err)
	}
	c = profile.NewChecker(s, db)
	c.Check(t.Context(), &tether.Device{TenantID: tenant, ID: "s1", ProfileID: "static"}, []tether.Point{num("temp", 0, 0)})
	if n := c.Devices(); n != 0 {
		t.Errorf("a profile without max_rate: the checker remembers %d devices, want 0", n)
	}
}

func TestCheckerConcurrentMessagesOfOneDevice(t *testing.T) {
	c, _, _ := newChecker(t)
	c.Check(t.Context(), device("b1"), []tether.Point{num("temp", 0, 20)})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				at := time.Duration(g*1000+i+1) * time.Second
				c.Check(t.Context(), device("b1"), []tether.Point{num("temp", at, 20)})
			}
		}()
	}
	wg.Wait()
}

// The whole path of a rogue value: checked, across the bus codec, stored
// apart from the series, listed with its reason.
func TestQuarantinedPointsAreStoredApart(t *testing.T) {
	ctx := context.Background()
	c, _, st := newChecker(t)
	pts := []tether.Point{num("temp", 0, 20), num("temp", time.Second, 95), num("temp", 2*time.Second, 21)}
	c.Check(ctx, device("b1"), pts)
	data, err := telemetry.MarshalMessage(tether.Message{ID: "m1", TenantID: tenant, DeviceID: "b1", ReceivedAt: t0.Add(3 * time.Second), Points: pts})
	if err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.UnmarshalMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := st.WriteMessages(ctx, []tether.Message{m}); err != nil || n != 2 {
		t.Fatalf("WriteMessages = %d, %v; want 2 points in the series", n, err)
	}
	latest, err := st.Latest(ctx, tenant, "b1")
	if err != nil || len(latest) != 1 || latest[0].Value != 21.0 {
		t.Errorf("Latest = %v, %v; want temp 21", latest, err)
	}
	q, err := st.Quarantined(ctx, tenant, "b1", time.Time{}, time.Time{}, 0)
	want := []tether.QuarantinedPoint{{Key: "temp", Time: t0.Add(time.Second), Value: 95.0, Reason: tether.QuarantineJump,
		MessageID: "m1", ReceivedAt: t0.Add(3 * time.Second)}}
	if err != nil || !reflect.DeepEqual(q, want) {
		t.Errorf("Quarantined = %+v, %v\nwant %+v", q, err, want)
	}
	if n, err := st.QuarantineCount(ctx, tenant, "b1"); err != nil || n != 1 {
		t.Errorf("QuarantineCount = %d, %v; want 1", n, err)
	}
}
