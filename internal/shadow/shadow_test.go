package shadow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/shadow"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/testkit"
)

var _ shadow.Store = (*sqlite.DB)(nil)

const tenant = "acme"

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// events records what the service publishes.
type events struct {
	mu  sync.Mutex
	got []event
}

type event struct {
	tenant, kind, device string
	shadow               tether.Shadow
}

func (e *events) PublishEvent(_ context.Context, tenant, kind, device string, data []byte) error {
	var sh tether.Shadow
	if err := json.Unmarshal(data, &sh); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, event{tenant, kind, device, sh})
	return nil
}

func (e *events) all() []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event(nil), e.got...)
}

type fixture struct {
	svc    *shadow.Service
	db     *sqlite.DB
	events *events
}

// newService returns a shadow service over a new store with the tenant
// and devices d1 and d2 in it.
func newService(t *testing.T, o shadow.Options) fixture {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, tn := range []string{tenant, "other"} {
		if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tn, Name: tn}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"d1", "d2"} {
		if err := db.CreateDevice(ctx, &tether.Device{TenantID: tenant, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if o.Now == nil {
		c := testkit.NewClock(t0).Ticking(time.Second)
		o.Now = c.Now
	}
	ev := &events{}
	return fixture{svc: shadow.New(db, ev, o), db: db, events: ev}
}

// doc decodes a JSON object.
func doc(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test document %s: %v", s, err)
	}
	return m
}

func update(t *testing.T, desired, reported string) tether.ShadowUpdate {
	t.Helper()
	var u tether.ShadowUpdate
	if desired != "" {
		u.State.Desired = doc(t, desired)
	}
	if reported != "" {
		u.State.Reported = doc(t, reported)
	}
	return u
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (err %v), want %q", got, err, code)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGet(t *testing.T) {
	ctx := context.Background()
	f := newService(t, shadow.Options{})

	t.Run("a shadow never written has version 0 and empty documents", func(t *testing.T) {
		for _, name := range []string{"", "motor"} {
			sh, err := f.svc.Get(ctx, tenant, "d1", name)
			if err != nil {
				t.Fatal(err)
			}
			if sh.Version != 0 || sh.Name != name || sh.DeviceID != "d1" || sh.TenantID != tenant ||
				sh.State.Desired == nil || len(sh.State.Desired) != 0 || sh.State.Reported == nil || len(sh.State.Reported) != 0 ||
				sh.Metadata.Desired == nil || sh.Metadata.Reported == nil || sh.State.Delta != nil {
				t.Errorf("Get(%q) = %+v; want an empty version 0 shadow", name, sh)
			}
		}
	})
	t.Run("an unknown device, or one of another tenant, is not found", func(t *testing.T) {
		_, err := f.svc.Get(ctx, tenant, "nope", "")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = f.svc.Get(ctx, "other", "d1", "")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("a bad shadow name is invalid", func(t *testing.T) {
		for _, name := range []string{"a/b", "a.b", strings.Repeat("x", 65), "+"} {
			_, err := f.svc.Get(ctx, tenant, "d1", name)
			wantCode(t, err, tether.EINVALID)
		}
	})
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	f := newService(t, shadow.Options{})
	at := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339Nano) }

	steps := []struct {
		name              string
		desired, reported string // patches, "" for none
		wantState         string // desired, reported and delta
		wantMeta          string
	}{
		{
			name:      "a device reports its state",
			reported:  `{"temp": 21.5, "fan": {"speed": 1, "mode": "auto"}, "leds": [1, 2]}`,
			wantState: `{"desired":{},"reported":{"fan":{"mode":"auto","speed":1},"leds":[1,2],"temp":21.5}}`,
			wantMeta:  `{"desired":{},"reported":{"fan":{"mode":"` + at(1) + `","speed":"` + at(1) + `"},"leds":"` + at(1) + `","temp":"` + at(1) + `"}}`,
		},
		{
			name:      "an app sets a desired state: the delta holds what differs, nested fields one by one and arrays whole",
			desired:   `{"fan": {"speed": 3, "mode": "auto"}, "leds": [1, 2, 3], "temp": 21.5, "door": "closed"}`,
			wantState: `{"desired":{"door":"closed","fan":{"mode":"auto","speed":3},"leds":[1,2,3],"temp":21.5},"reported":{"fan":{"mode":"auto","speed":1},"leds":[1,2],"temp":21.5},"delta":{"door":"closed","fan":{"speed":3},"leds":[1,2,3]}}`,
			wantMeta:  `{"desired":{"door":"` + at(2) + `","fan":{"mode":"` + at(2) + `","speed":"` + at(2) + `"},"leds":"` + at(2) + `","temp":"` + at(2) + `"},"reported":{"fan":{"mode":"` + at(1) + `","speed":"` + at(1) + `"},"leds":"` + at(1) + `","temp":"` + at(1) + `"}}`,
		},
		{
			name:      "the device catches up on part of it: only the fields it wrote get a new time",
			reported:  `{"fan": {"speed": 3}, "leds": [1, 2, 3]}`,
			wantState: `{"desired":{"door":"closed","fan":{"mode":"auto","speed":3},"leds":[1,2,3],"temp":21.5},"reported":{"fan":{"mode":"auto","speed":3},"leds":[1,2,3],"temp":21.5},"delta":{"door":"closed"}}`,
			wantMeta:  `{"desired":{"door":"` + at(2) + `","fan":{"mode":"` + at(2) + `","speed":"` + at(2) + `"},"leds":"` + at(2) + `","temp":"` + at(2) + `"},"reported":{"fan":{"mode":"` + at(1) + `","speed":"` + at(3) + `"},"leds":"` + at(3) + `","temp":"` + at(1) + `"}}`,
		},
		{
			name:      "a null deletes a field and its time; deleting a missing field is no error",
			desired:   `{"door": null, "nothing": null, "fan": {"mode": null}}`,
			reported:  `{"temp": null}`,
			wantState: `{"desired":{"fan":{"speed":3},"leds":[1,2,3],"temp":21.5},"reported":{"fan":{"mode":"auto","speed":3},"leds":[1,2,3]},"delta":{"temp":21.5}}`,
			wantMeta:  `{"desired":{"fan":{"speed":"` + at(2) + `"},"leds":"` + at(2) + `","temp":"` + at(2) + `"},"reported":{"fan":{"mode":"` + at(1) + `","speed":"` + at(3) + `"},"leds":"` + at(3) + `"}}`,
		},
		{
			name:      "an object replaces a value that was not one, and a value replaces an object",
			desired:   `{"temp": {"min": 18, "max": null}, "fan": "off"}`,
			wantState: `{"desired":{"fan":"off","leds":[1,2,3],"temp":{"min":18}},"reported":{"fan":{"mode":"auto","speed":3},"leds":[1,2,3]},"delta":{"fan":"off","temp":{"min":18}}}`,
			wantMeta:  `{"desired":{"fan":"` + at(5) + `","leds":"` + at(2) + `","temp":{"min":"` + at(5) + `"}},"reported":{"fan":{"mode":"` + at(1) + `","speed":"` + at(3) + `"},"leds":"` + at(3) + `"}}`,
		},
		{
			name:      "an empty desired object is no delta against a reported object",
			desired:   `{"fan": {}}`,
			reported:  `{"temp": {"min": 18}, "fan": {"speed": 3, "mode": "auto"}}`,
			wantState: `{"desired":{"fan":{},"leds":[1,2,3],"temp":{"min":18}},"reported":{"fan":{"mode":"auto","speed":3},"leds":[1,2,3],"temp":{"min":18}}}`,
			wantMeta:  `{"desired":{"fan":{},"leds":"` + at(2) + `","temp":{"min":"` + at(5) + `"}},"reported":{"fan":{"mode":"` + at(6) + `","speed":"` + at(6) + `"},"leds":"` + at(3) + `","temp":{"min":"` + at(6) + `"}}}`,
		},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			sh, err := f.svc.Update(ctx, tenant, "d1", "", update(t, s.desired, s.reported))
			if err != nil {
				t.Fatal(err)
			}
			if sh.Version != int64(i+1) {
				t.Errorf("version = %d, want %d", sh.Version, i+1)
			}
			if got := jsonOf(t, sh.State); got != s.wantState {
				t.Errorf("state =\n%s\nwant\n%s", got, s.wantState)
			}
			if got := jsonOf(t, sh.Metadata); got != s.wantMeta {
				t.Errorf("metadata =\n%s\nwant\n%s", got, s.wantMeta)
			}
			if !sh.UpdatedAt.Equal(t0.Add(time.Duration(i+1) * time.Second)) {
				t.Errorf("updated_at = %v", sh.UpdatedAt)
			}
			got, err := f.svc.Get(ctx, tenant, "d1", "")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, sh) {
				t.Errorf("Get =\n%+v\nUpdate returned\n%+v", got, sh)
			}
		})
	}

	t.Run("every update is published with the new shadow", func(t *testing.T) {
		evs := f.events.all()
		if len(evs) != len(steps) {
			t.Fatalf("%d events, want %d", len(evs), len(steps))
		}
		for i, e := range evs {
			if e.tenant != tenant || e.kind != tether.EventShadow || e.device != "d1" || e.shadow.Version != int64(i+1) {
				t.Errorf("event %d = %s %s %s version %d", i, e.tenant, e.kind, e.device, e.shadow.Version)
			}
		}
		last, _ := f.svc.Get(ctx, tenant, "d1", "")
		if got, want := jsonOf(t, evs[len(evs)-1].shadow), jsonOf(t, last); got != want {
			t.Errorf("last event =\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("a Go value is stored as its JSON", func(t *testing.T) {
		var u tether.ShadowUpdate
		u.State.Reported = map[string]any{"n": 3, "list": []int{1, 2}, "s": struct {
			A int `json:"a"`
		}{7}}
		sh, err := f.svc.Update(ctx, tenant, "d2", "", u)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := jsonOf(t, sh.State.Reported), `{"list":[1,2],"n":3,"s":{"a":7}}`; got != want {
			t.Errorf("reported = %s, want %s", got, want)
		}
		if sh.State.Reported["n"] != 3.0 {
			t.Errorf("n = %#v, want float64 3 as JSON decodes it", sh.State.Reported["n"])
		}
	})
}

func TestUpdateRefusals(t *testing.T) {
	ctx := context.Background()
	f := newService(t, shadow.Options{MaxSize: 100, MaxDepth: 3})
	if _, err := f.svc.Update(ctx, tenant, "d1", "", update(t, `{"a":1}`, "")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		device   string
		shadow   string
		u        tether.ShadowUpdate
		code     string
		contains string
	}{
		{"a stale version is a conflict naming the current one", "d1", "", withVersion(update(t, `{"a":2}`, ""), 7),
			tether.ECONFLICT, "version 7 is stale; the shadow is at version 1"},
		{"a negative version is invalid", "d1", "", withVersion(update(t, `{"a":2}`, ""), -1), tether.EINVALID, "negative"},
		{"an update without a field is invalid", "d1", "", update(t, "", ""), tether.EINVALID, "changes nothing"},
		{"a document over the size limit is too large, naming the limit", "d1", "",
			update(t, `{"b":"`+strings.Repeat("x", 100)+`"}`, ""), tether.ETOOLARGE, "the limit is 100 bytes"},
		{"a reported document over the limit is too large too", "d1", "",
			update(t, "", `{"b":"`+strings.Repeat("x", 100)+`"}`), tether.ETOOLARGE, "state.reported"},
		{"a document nested deeper than the limit is invalid", "d1", "",
			update(t, "", `{"a":{"b":{"c":{"d":1}}}}`), tether.EINVALID, "4 levels deep; at most 3"},
		{"arrays count as nesting", "d1", "",
			update(t, `{"a":[[[1]]]}`, ""), tether.EINVALID, "at most 3"},
		{"an unknown device is not found", "nope", "", update(t, `{"a":2}`, ""), tether.ENOTFOUND, "nope"},
		{"a bad shadow name is invalid", "d1", "a/b", update(t, `{"a":2}`, ""), tether.EINVALID, "shadow name"},
		{"a value JSON cannot hold is invalid", "d1", "", func() tether.ShadowUpdate {
			var u tether.ShadowUpdate
			u.State.Desired = map[string]any{"f": func() {}}
			return u
		}(), tether.EINVALID, "not a JSON document"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sh, err := f.svc.Update(ctx, tenant, c.device, c.shadow, c.u)
			wantCode(t, err, c.code)
			if sh != nil {
				t.Errorf("returned a shadow with the error")
			}
			if msg := tether.ErrorMessage(err); !strings.Contains(msg, c.contains) {
				t.Errorf("message %q does not contain %q", msg, c.contains)
			}
		})
	}
	t.Run("a refused update changes nothing and publishes nothing", func(t *testing.T) {
		sh, err := f.svc.Get(ctx, tenant, "d1", "")
		if err != nil {
			t.Fatal(err)
		}
		if sh.Version != 1 || jsonOf(t, sh.State.Desired) != `{"a":1}` || len(sh.State.Reported) != 0 {
			t.Errorf("shadow = %+v", sh)
		}
		if n := len(f.events.all()); n != 1 {
			t.Errorf("%d events, want 1", n)
		}
	})
	t.Run("the current version is accepted", func(t *testing.T) {
		sh, err := f.svc.Update(ctx, tenant, "d1", "", withVersion(update(t, `{"a":2}`, ""), 1))
		if err != nil {
			t.Fatal(err)
		}
		if sh.Version != 2 {
			t.Errorf("version = %d, want 2", sh.Version)
		}
	})
	t.Run("a document within the limits after a delete is accepted though the patch alone is near it", func(t *testing.T) {
		// 60 bytes of new value in place of the old one: the result is what counts.
		_, err := f.svc.Update(ctx, tenant, "d1", "", update(t, `{"a":null,"c":"`+strings.Repeat("y", 60)+`"}`, ""))
		if err != nil {
			t.Fatal(err)
		}
	})
}

func withVersion(u tether.ShadowUpdate, v int64) tether.ShadowUpdate {
	u.Version = v
	return u
}

func TestDefaultLimits(t *testing.T) {
	ctx := context.Background()
	f := newService(t, shadow.Options{})
	t.Run("a 16 KiB document is accepted and one byte more is too large", func(t *testing.T) {
		// {"v":"…"} is 8 bytes around the string.
		_, err := f.svc.Update(ctx, tenant, "d1", "", update(t, "", `{"v":"`+strings.Repeat("x", 16384-8)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Update(ctx, tenant, "d1", "", update(t, "", `{"v":"`+strings.Repeat("x", 16384-7)+`"}`))
		wantCode(t, err, tether.ETOOLARGE)
		if !strings.Contains(tether.ErrorMessage(err), "16384 bytes") {
			t.Errorf("message %q does not name the limit", tether.ErrorMessage(err))
		}
	})
	t.Run("8 levels are accepted and 9 are not", func(t *testing.T) {
		nest := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
		if _, err := f.svc.Update(ctx, tenant, "d2", "", update(t, nest(8), "")); err != nil {
			t.Fatal(err)
		}
		_, err := f.svc.Update(ctx, tenant, "d2", "", update(t, nest(9), ""))
		wantCode(t, err, tether.EINVALID)
	})
}

func TestConcurrentUpdates(t *testing.T) {
	ctx := context.Background()
	const n = 40

	t.Run("unversioned updates all land, each on its own version", func(t *testing.T) {
		f := newService(t, shadow.Options{})
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, err := f.svc.Update(ctx, tenant, "d1", "", update(t, "", fmt.Sprintf(`{"f%d": %d}`, i, i)))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		sh, err := f.svc.Get(ctx, tenant, "d1", "")
		if err != nil {
			t.Fatal(err)
		}
		if sh.Version != n || len(sh.State.Reported) != n || len(sh.Metadata.Reported) != n {
			t.Errorf("version %d with %d fields (%d stamps); want %d of each", sh.Version, len(sh.State.Reported), len(sh.Metadata.Reported), n)
		}
		versions := map[int64]bool{}
		for _, e := range f.events.all() {
			versions[e.shadow.Version] = true
		}
		if len(versions) != n {
			t.Errorf("%d distinct versions published, want %d", len(versions), n)
		}
	})

	t.Run("of updates made against the same version exactly one wins", func(t *testing.T) {
		f := newService(t, shadow.Options{})
		if _, err := f.svc.Update(ctx, tenant, "d1", "", update(t, `{"x":0}`, "")); err != nil {
			t.Fatal(err)
		}
		var (
			wg              sync.WaitGroup
			mu              sync.Mutex
			wins, conflicts int
			unexpected      []error
		)
		for i := range n {
			wg.Go(func() {
				_, err := f.svc.Update(ctx, tenant, "d1", "", withVersion(update(t, fmt.Sprintf(`{"x":%d}`, i+1), ""), 1))
				mu.Lock()
				defer mu.Unlock()
				switch tether.ErrorCode(err) {
				case "":
					wins++
				case tether.ECONFLICT:
					conflicts++
				default:
					unexpected = append(unexpected, err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || conflicts != n-1 || len(unexpected) > 0 {
			t.Errorf("%d won, %d conflicts, other errors %v; want 1 and %d", wins, conflicts, unexpected, n-1)
		}
		sh, _ := f.svc.Get(ctx, tenant, "d1", "")
		if sh.Version != 2 {
			t.Errorf("version = %d, want 2", sh.Version)
		}
	})
}

func TestNamedShadows(t *testing.T) {
	ctx := context.Background()
	f := newService(t, shadow.Options{})
	for _, w := range []struct{ name, patch string }{
		{"", `{"power":"on"}`}, {"motor", `{"rpm":100}`}, {"motor", `{"rpm":200}`}, {"led-1", `{"on":true}`},
	} {
		if _, err := f.svc.Update(ctx, tenant, "d1", w.name, update(t, w.patch, "")); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("each named shadow has its own documents and version", func(t *testing.T) {
		for name, want := range map[string]struct {
			version int64
			desired string
		}{"": {1, `{"power":"on"}`}, "motor": {2, `{"rpm":200}`}, "led-1": {1, `{"on":true}`}} {
			sh, err := f.svc.Get(ctx, tenant, "d1", name)
			if err != nil {
				t.Fatal(err)
			}
			if sh.Name != name || sh.Version != want.version || jsonOf(t, sh.State.Desired) != want.desired {
				t.Errorf("shadow %q = version %d %s; want %d %s", name, sh.Version, jsonOf(t, sh.State.Desired), want.version, want.desired)
			}
		}
	})
	t.Run("Names lists the named shadows in order, not the classic one", func(t *testing.T) {
		names, err := f.svc.Names(ctx, tenant, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(names, []string{"led-1", "motor"}) {
			t.Errorf("Names = %q", names)
		}
		names, err = f.svc.Names(ctx, tenant, "d2")
		if err != nil || names == nil || len(names) != 0 {
			t.Errorf("Names of a device without shadows = %#v, %v; want an empty list", names, err)
		}
		_, err = f.svc.Names(ctx, tenant, "nope")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("an event names the shadow", func(t *testing.T) {
		evs := f.events.all()
		if evs[1].shadow.Name != "motor" || evs[3].shadow.Name != "led-1" {
			t.Errorf("events name %q and %q", evs[1].shadow.Name, evs[3].shadow.Name)
		}
	})
	t.Run("Delete removes one shadow; a later update starts it again", func(t *testing.T) {
		if err := f.svc.Delete(ctx, tenant, "d1", "motor"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, f.svc.Delete(ctx, tenant, "d1", "motor"), tether.ENOTFOUND)
		wantCode(t, f.svc.Delete(ctx, "other", "d1", "led-1"), tether.ENOTFOUND)
		wantCode(t, f.svc.Delete(ctx, tenant, "d1", "a/b"), tether.EINVALID)
		names, _ := f.svc.Names(ctx, tenant, "d1")
		if !reflect.DeepEqual(names, []string{"led-1"}) {
			t.Errorf("Names after delete = %q", names)
		}
		sh, _ := f.svc.Get(ctx, tenant, "d1", "motor")
		if sh.Version != 0 || len(sh.State.Desired) != 0 {
			t.Errorf("deleted shadow = %+v", sh)
		}
		sh, err := f.svc.Update(ctx, tenant, "d1", "motor", update(t, "", `{"rpm":5}`))
		if err != nil || sh.Version != 1 {
			t.Errorf("update after delete: version %v, %v", sh, err)
		}
		if sh, _ := f.svc.Get(ctx, tenant, "d1", ""); sh.Version != 1 {
			t.Errorf("classic shadow version = %d after deleting a named one", sh.Version)
		}
	})
	t.Run("deleting the device deletes its shadows", func(t *testing.T) {
		if err := f.db.DeleteDevice(ctx, tenant, "d1"); err != nil {
			t.Fatal(err)
		}
		if err := f.db.CreateDevice(ctx, &tether.Device{TenantID: tenant, ID: "d1"}); err != nil {
			t.Fatal(err)
		}
		names, _ := f.svc.Names(ctx, tenant, "d1")
		sh, _ := f.svc.Get(ctx, tenant, "d1", "")
		if len(names) != 0 || sh.Version != 0 {
			t.Errorf("a new device of the same id has shadows %q and version %d", names, sh.Version)
		}
	})
}
