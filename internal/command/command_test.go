package command_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/command"
	"github.com/tether-iot/tether/internal/profile"
	"github.com/tether-iot/tether/internal/registry"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/testkit"
)

const tenant = tether.DefaultTenantID

// t0 is the fake clock's start.
var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

// events records the command events published.
type events struct {
	mu  sync.Mutex
	got []tether.Command
}

func (e *events) PublishEvent(_ context.Context, tenant, kind, device string, data []byte) error {
	var c tether.Command
	if err := json.Unmarshal(data, &c); err != nil {
		return err
	}
	if kind != tether.EventCommand || tenant != c.TenantID || device != c.DeviceID {
		return fmt.Errorf("event %s/%s/%s for command of %s/%s", tenant, kind, device, c.TenantID, c.DeviceID)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, c)
	return nil
}

// statuses returns the statuses of the events of one command, in order.
func (e *events) statuses(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var s []string
	for _, c := range e.got {
		if c.ID == id {
			s = append(s, c.Status)
		}
	}
	return s
}

// profiles gives every device the one compiled profile.
type profiles struct{ c *profile.Compiled }

func (p profiles) Compiled(context.Context, string, string) (*profile.Compiled, error) {
	return p.c, nil
}

// transport is a gateway whose devices are live or not.
type transport struct {
	mu   sync.Mutex
	live map[string]bool
	got  []*tether.Command
}

func (tr *transport) Deliver(c *tether.Command) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !tr.live[c.DeviceID] {
		return false
	}
	tr.got = append(tr.got, c)
	return true
}

func (tr *transport) setLive(device string, live bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.live[device] = live
}

// delivered returns the IDs of the commands delivered, in order, and
// forgets them.
func (tr *transport) delivered() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var ids []string
	for _, c := range tr.got {
		ids = append(ids, c.ID)
	}
	tr.got = nil
	return ids
}

type notifier struct{}

func (notifier) PublishLifecycle(string, string, string) error { return nil }

// env is a command service over a real SQLite store, with devices made
// through the real registry.
type env struct {
	t       *testing.T
	path    string
	db      *sqlite.DB
	svc     *command.Service
	events  *events
	clock   *testkit.Clock
	tr      *transport
	prof    profiles
	options command.Options
}

// newEnv returns an env whose devices have profile p (nil: none) and the
// devices d1 and d2.
func newEnv(t *testing.T, p *tether.Profile, o command.Options) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "t.db"), events: &events{}, clock: testkit.NewClock(t0),
		tr: &transport{live: map[string]bool{}}, options: o}
	c, err := profile.Compile(&tether.Profile{ID: "none"})
	if p != nil {
		c, err = profile.Compile(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	e.prof = profiles{c}
	e.open()
	t.Cleanup(func() { e.db.Close() })
	reg := registry.New(e.db, notifier{}, registry.Options{Logger: slog.New(slog.DiscardHandler)})
	if _, err := reg.Bootstrap(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"d1", "d2"} {
		if _, _, err := reg.CreateDevice(context.Background(), tenant, tether.Device{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// open opens the store and a new service over it.
func (e *env) open() {
	e.t.Helper()
	db, err := sqlite.Open(context.Background(), e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.db = db
	o := e.options
	o.Now = e.clock.Now
	reg := registry.New(db, notifier{}, registry.Options{Logger: slog.New(slog.DiscardHandler)})
	e.svc = command.New(db, reg, e.prof, e.events, o)
	e.svc.AddTransport(e.tr)
}

// restart closes the store and opens it again with a new service: what a
// restart of the process leaves.
func (e *env) restart() {
	e.t.Helper()
	if err := e.db.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// send sends a command that must be accepted.
func (e *env) send(device string, r tether.CommandRequest) *tether.Command {
	e.t.Helper()
	if r.Role == "" {
		r.Role = tether.RoleAdmin
	}
	c, created, err := e.svc.Send(context.Background(), tenant, device, r)
	if err != nil || !created {
		e.t.Fatalf("Send %s = %v, %v; want created", r.Name, created, err)
	}
	return c
}

// get returns a stored command.
func (e *env) get(device, id string) *tether.Command {
	e.t.Helper()
	c, err := e.svc.Get(context.Background(), tenant, device, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func wantStatus(t *testing.T, c *tether.Command, status string) {
	t.Helper()
	if c.Status != status {
		t.Fatalf("command %s is %s (%s), want %s; history %+v", c.ID, c.Status, c.Reason, status, c.History)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

// pizzaProfile has a rate-limited command, one for operators, one with a
// parameter schema and one that needs confirmation.
func pizzaProfile() *tether.Profile {
	return &tether.Profile{ID: "fridge", Commands: map[string]tether.CommandDef{
		"order_pizza": {RateLimit: &tether.Rate{Count: 1, Per: tether.Duration(time.Hour)}, Roles: []string{"operator"}},
		"defrost":     {},
		"set_temp": {Roles: []string{"operator"}, Params: json.RawMessage(`{"type":"object",
			"properties":{"celsius":{"type":"number","minimum":-30,"maximum":10}},"required":["celsius"]}`)},
		"open_door": {Confirm: true},
	}}
}

func TestSendGuardrails(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		prior   []tether.CommandRequest // sent first, all accepted
		req     tether.CommandRequest
		code    string
		reason  string
		options command.Options
	}{
		{name: "refuses a command the profile does not define",
			req: tether.CommandRequest{Name: "launch", Role: tether.RoleAdmin}, code: tether.EINVALID, reason: `unknown command "launch"`},
		{name: "refuses a role the command does not list",
			req: tether.CommandRequest{Name: "order_pizza", Role: "viewer"}, code: tether.EFORBIDDEN, reason: `role "viewer" may not send`},
		{name: "refuses any role but admin for a command without roles",
			req: tether.CommandRequest{Name: "defrost", Role: "operator"}, code: tether.EFORBIDDEN, reason: `role "operator"`},
		{name: "refuses parameters that break the schema",
			req: tether.CommandRequest{Name: "set_temp", Role: "operator", Params: json.RawMessage(`{"celsius":99}`)}, code: tether.EINVALID, reason: "/celsius"},
		{name: "refuses parameters that are not JSON",
			req: tether.CommandRequest{Name: "defrost", Role: tether.RoleAdmin, Params: json.RawMessage(`{bad`)}, code: tether.EINVALID, reason: "not valid JSON"},
		{name: "refuses a command over its own rate limit",
			prior: []tether.CommandRequest{{Name: "order_pizza", Role: "operator"}},
			req:   tether.CommandRequest{Name: "order_pizza", Role: "operator"}, code: tether.ETOOMANY, reason: `at most 1 "order_pizza" commands per 1h0m0s`},
		{name: "refuses a command over the device's rate limit",
			options: command.Options{DeviceRate: tether.Rate{Count: 2, Per: tether.Duration(time.Minute)}},
			prior:   []tether.CommandRequest{{Name: "defrost"}, {Name: "defrost"}},
			req:     tether.CommandRequest{Name: "defrost", Role: tether.RoleAdmin}, code: tether.ETOOMANY, reason: "at most 2 commands per 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pizzaProfile(), tc.options)
			for _, r := range tc.prior {
				e.send("d1", r)
			}
			c, created, err := e.svc.Send(ctx, tenant, "d1", tc.req)
			wantCode(t, err, tc.code)
			if c == nil || !created {
				t.Fatalf("Send returned %v, created %v; want the rejected command", c, created)
			}
			stored := e.get("d1", c.ID)
			wantStatus(t, stored, tether.CommandRejected)
			if !strings.Contains(stored.Reason, tc.reason) || stored.Reason != tether.ErrorMessage(err) {
				t.Errorf("reason %q, error %q; want both to say %q", stored.Reason, tether.ErrorMessage(err), tc.reason)
			}
			if got := e.events.statuses(c.ID); !slices.Equal(got, []string{tether.CommandRejected}) {
				t.Errorf("events %v, want one rejected", got)
			}
		})
	}

	t.Run("lets commands through within their limits, roles and schemas", func(t *testing.T) {
		e := newEnv(t, pizzaProfile(), command.Options{})
		for _, r := range []struct {
			device string
			req    tether.CommandRequest
		}{
			{"d1", tether.CommandRequest{Name: "order_pizza", Role: "operator"}},
			{"d2", tether.CommandRequest{Name: "order_pizza", Role: "operator"}}, // the limit is per device
			{"d1", tether.CommandRequest{Name: "set_temp", Role: "operator", Params: json.RawMessage(`{"celsius":4}`)}},
			{"d1", tether.CommandRequest{Name: "set_temp", Role: tether.RoleAdmin, Params: json.RawMessage(`{"celsius":-3}`)}},
			{"d1", tether.CommandRequest{Name: "defrost", Role: tether.RoleAdmin}},
		} {
			wantStatus(t, e.send(r.device, r.req), tether.CommandQueued)
		}
	})

	t.Run("does not count rejected commands against a rate limit", func(t *testing.T) {
		e := newEnv(t, pizzaProfile(), command.Options{})
		_, _, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "order_pizza", Role: "viewer"})
		wantCode(t, err, tether.EFORBIDDEN)
		wantStatus(t, e.send("d1", tether.CommandRequest{Name: "order_pizza", Role: "operator"}), tether.CommandQueued)
	})

	t.Run("counts a rate limit over a sliding window", func(t *testing.T) {
		e := newEnv(t, pizzaProfile(), command.Options{})
		e.send("d1", tether.CommandRequest{Name: "order_pizza", Role: "operator"})
		e.clock.Add(59 * time.Minute)
		_, _, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "order_pizza", Role: "operator"})
		wantCode(t, err, tether.ETOOMANY)
		e.clock.Add(time.Minute)
		wantStatus(t, e.send("d1", tether.CommandRequest{Name: "order_pizza", Role: "operator"}), tether.CommandQueued)
	})

	t.Run("refuses a malformed request without storing it", func(t *testing.T) {
		e := newEnv(t, pizzaProfile(), command.Options{})
		for _, r := range []tether.CommandRequest{
			{Name: ""}, {Name: "a/b"}, {Name: "defrost", Timeout: -time.Second}, {Name: "defrost", IdempotencyKey: strings.Repeat("k", 300)},
		} {
			r.Role = tether.RoleAdmin
			_, _, err := e.svc.Send(ctx, tenant, "d1", r)
			wantCode(t, err, tether.EINVALID)
		}
		if cs, _ := e.svc.List(ctx, tenant, "d1", tether.CommandFilter{}); len(cs) != 0 {
			t.Errorf("stored %d commands, want none", len(cs))
		}
	})

	t.Run("stores nothing for a device that does not exist", func(t *testing.T) {
		e := newEnv(t, pizzaProfile(), command.Options{})
		_, _, err := e.svc.Send(ctx, tenant, "nope", tether.CommandRequest{Name: "defrost", Role: tether.RoleAdmin})
		wantCode(t, err, tether.ENOTFOUND)
		if len(e.events.got) != 0 {
			t.Errorf("events %v, want none", e.events.got)
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pizzaProfile(), command.Options{})

	t.Run("returns the first command for a repeated key, unchanged", func(t *testing.T) {
		first := e.send("d1", tether.CommandRequest{Name: "defrost", IdempotencyKey: "k1"})
		again, created, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "defrost", Role: tether.RoleAdmin, IdempotencyKey: "k1",
			Params: json.RawMessage(`{"other":true}`)})
		if err != nil || created || again.ID != first.ID || again.Seq != first.Seq {
			t.Fatalf("repeat = %s (seq %d), created %v, %v; want %s, false, nil", again.ID, again.Seq, created, err, first.ID)
		}
		if cs, _ := e.svc.List(ctx, tenant, "d1", tether.CommandFilter{}); len(cs) != 1 {
			t.Errorf("stored %d commands, want 1", len(cs))
		}
	})

	t.Run("scopes a key to its device", func(t *testing.T) {
		c := e.send("d2", tether.CommandRequest{Name: "defrost", IdempotencyKey: "k1"})
		wantStatus(t, c, tether.CommandQueued)
	})

	t.Run("returns a rejected first command without an error", func(t *testing.T) {
		first, _, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "launch", Role: tether.RoleAdmin, IdempotencyKey: "k2"})
		wantCode(t, err, tether.EINVALID)
		again, created, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "launch", Role: tether.RoleAdmin, IdempotencyKey: "k2"})
		if err != nil || created || again.ID != first.ID {
			t.Fatalf("repeat = %s, %v, %v; want %s, false, nil", again.ID, created, err, first.ID)
		}
		wantStatus(t, again, tether.CommandRejected)
	})

	t.Run("creates one command for concurrent requests with one key", func(t *testing.T) {
		var wg sync.WaitGroup
		ids := make([]string, 50)
		for i := range ids {
			wg.Go(func() {
				c, _, err := e.svc.Send(ctx, tenant, "d2", tether.CommandRequest{Name: "defrost", Role: tether.RoleAdmin, IdempotencyKey: "k3"})
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = c.ID
			})
		}
		wg.Wait()
		if ids[0] == "" || slices.ContainsFunc(ids, func(id string) bool { return id != ids[0] }) {
			t.Errorf("ids %v, want one", ids)
		}
	})
}

func TestCommandStorm(t *testing.T) {
	ctx := context.Background()
	const limit, calls = 7, 2000
	p := &tether.Profile{ID: "fridge", Commands: map[string]tether.CommandDef{
		"order_pizza": {RateLimit: &tether.Rate{Count: limit, Per: tether.Duration(time.Hour)}},
	}}
	e := newEnv(t, p, command.Options{DeviceRate: tether.Rate{Count: -1}})
	storm := func(n int) (accepted, rejected int) {
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		for range n {
			wg.Go(func() {
				c, _, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "order_pizza", Role: tether.RoleAdmin})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && c.Status == tether.CommandQueued:
					accepted++
				case tether.ErrorCode(err) == tether.ETOOMANY && c.Status == tether.CommandRejected:
					rejected++
				default:
					t.Errorf("Send = %v, %v", c, err)
				}
			})
		}
		wg.Wait()
		return accepted, rejected
	}

	t.Run("lets exactly the limit through", func(t *testing.T) {
		a, r := storm(calls)
		if a != limit || r != calls-limit {
			t.Fatalf("%d accepted, %d rejected; want %d, %d", a, r, limit, calls-limit)
		}
		queued, err := e.svc.List(ctx, tenant, "d1", tether.CommandFilter{Status: tether.CommandQueued})
		if err != nil || len(queued) != limit {
			t.Fatalf("%d queued (%v), want %d", len(queued), err, limit)
		}
	})

	t.Run("keeps counting across a restart", func(t *testing.T) {
		e.restart()
		if a, _ := storm(50); a != 0 {
			t.Fatalf("%d accepted after the restart, want 0", a)
		}
		e.clock.Add(time.Hour)
		if a, _ := storm(50); a != limit {
			t.Fatalf("%d accepted an hour later, want %d", a, limit)
		}
	})
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, command.Options{})
	e.tr.setLive("d1", true)

	t.Run("sends a two-way command at once to a live device and follows it to its reply", func(t *testing.T) {
		c := e.send("d1", tether.CommandRequest{Name: "reboot", Params: json.RawMessage(`{"delay":1}`)})
		if got := e.tr.delivered(); !slices.Equal(got, []string{c.ID}) {
			t.Fatalf("delivered %v, want %s", got, c.ID)
		}
		wantStatus(t, e.get("d1", c.ID), tether.CommandSent)
		if err := e.svc.Delivered(ctx, tenant, "d1", c.ID); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, e.get("d1", c.ID), tether.CommandDelivered)
		got, err := e.svc.Reply(ctx, tenant, "d1", c.ID, tether.CommandReply{Result: json.RawMessage(`{"ok":true}`)})
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, got, tether.CommandSucceeded)
		if string(got.Result) != `{"ok":true}` {
			t.Errorf("result %s", got.Result)
		}
		want := []string{tether.CommandQueued, tether.CommandSent, tether.CommandDelivered, tether.CommandSucceeded}
		if ev := e.events.statuses(c.ID); !slices.Equal(ev, want) {
			t.Errorf("events %v, want %v", ev, want)
		}
		var hist []string
		for _, h := range e.get("d1", c.ID).History {
			hist = append(hist, h.Status)
		}
		if !slices.Equal(hist, want) {
			t.Errorf("history %v, want %v", hist, want)
		}
	})

	t.Run("moves only forward: a late delivery after the reply changes nothing", func(t *testing.T) {
		c := e.send("d1", tether.CommandRequest{Name: "reboot"})
		if _, err := e.svc.Reply(ctx, tenant, "d1", c.ID, tether.CommandReply{Status: tether.CommandFailed, Error: "disk full"}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Delivered(ctx, tenant, "d1", c.ID); err != nil {
			t.Fatal(err)
		}
		got := e.get("d1", c.ID)
		wantStatus(t, got, tether.CommandFailed)
		if got.Reason != "disk full" {
			t.Errorf("reason %q", got.Reason)
		}
		again, err := e.svc.Reply(ctx, tenant, "d1", c.ID, tether.CommandReply{})
		wantCode(t, err, tether.ECONFLICT)
		wantStatus(t, again, tether.CommandFailed)
	})

	t.Run("finishes a one-way command when it is delivered", func(t *testing.T) {
		c := e.send("d1", tether.CommandRequest{Name: "blink", OneWay: true})
		if err := e.svc.Delivered(ctx, tenant, "d1", c.ID); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, e.get("d1", c.ID), tether.CommandSucceeded)
	})

	t.Run("refuses a reply to an unknown command and a malformed reply", func(t *testing.T) {
		_, err := e.svc.Reply(ctx, tenant, "d1", "c_nope", tether.CommandReply{})
		wantCode(t, err, tether.ENOTFOUND)
		c := e.send("d1", tether.CommandRequest{Name: "reboot"})
		_, err = e.svc.Reply(ctx, tenant, "d1", c.ID, tether.CommandReply{Status: "maybe"})
		wantCode(t, err, tether.EINVALID)
		_, err = e.svc.Reply(ctx, tenant, "d2", c.ID, tether.CommandReply{})
		wantCode(t, err, tether.ENOTFOUND)
	})

	t.Run("lists a device's commands by status and seq", func(t *testing.T) {
		all, err := e.svc.List(ctx, tenant, "d1", tether.CommandFilter{})
		if err != nil || len(all) < 4 {
			t.Fatalf("List = %d, %v", len(all), err)
		}
		for i := 1; i < len(all); i++ {
			if all[i].Seq != all[i-1].Seq+1 {
				t.Errorf("seqs %d then %d", all[i-1].Seq, all[i].Seq)
			}
		}
		page, _ := e.svc.List(ctx, tenant, "d1", tether.CommandFilter{After: all[0].Seq, Limit: 1})
		if len(page) != 1 || page[0].ID != all[1].ID {
			t.Errorf("page after the first = %v", page)
		}
		failed, _ := e.svc.List(ctx, tenant, "d1", tether.CommandFilter{Status: tether.CommandFailed})
		if len(failed) != 1 {
			t.Errorf("%d failed, want 1", len(failed))
		}
		_, err = e.svc.List(ctx, tenant, "nope", tether.CommandFilter{})
		wantCode(t, err, tether.ENOTFOUND)
		_, err = e.svc.List(ctx, tenant, "d1", tether.CommandFilter{Status: "odd"})
		wantCode(t, err, tether.EINVALID)
	})
}

func TestOfflineDeviceGetsItsQueuedCommandsInOrder(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, command.Options{})
	var want []string
	for i := range 5 {
		want = append(want, e.send("d1", tether.CommandRequest{Name: fmt.Sprintf("step%d", i)}).ID)
	}
	if got := e.tr.delivered(); len(got) != 0 {
		t.Fatalf("delivered %v to an offline device", got)
	}
	pending, err := e.svc.Pending(ctx, tenant, "d1")
	if err != nil || len(pending) != 5 || pending[0].ID != want[0] || pending[4].ID != want[4] {
		t.Fatalf("Pending = %v, %v; want the 5 in order", pending, err)
	}

	e.tr.setLive("d1", true)
	e.svc.Ready(ctx, tenant, "d1", false)
	if got := e.tr.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	for _, id := range want {
		wantStatus(t, e.get("d1", id), tether.CommandSent)
	}
	t.Run("offers nothing twice to a resumed session", func(t *testing.T) {
		e.svc.Ready(ctx, tenant, "d1", true)
		if got := e.tr.delivered(); len(got) != 0 {
			t.Fatalf("delivered %v again", got)
		}
	})
	t.Run("offers the sent but undelivered ones again to a new session", func(t *testing.T) {
		if err := e.svc.Delivered(ctx, tenant, "d1", want[0]); err != nil {
			t.Fatal(err)
		}
		e.svc.Ready(ctx, tenant, "d1", false)
		if got := e.tr.delivered(); !slices.Equal(got, want[1:]) {
			t.Fatalf("delivered %v, want %v", got, want[1:])
		}
	})
	t.Run("keeps the order when a command is sent while others wait", func(t *testing.T) {
		e.tr.setLive("d2", false)
		a := e.send("d2", tether.CommandRequest{Name: "a"}).ID
		b := e.send("d2", tether.CommandRequest{Name: "b"}).ID
		e.tr.setLive("d2", true)
		var wg sync.WaitGroup
		wg.Go(func() { e.svc.Ready(ctx, tenant, "d2", true) })
		c := e.send("d2", tether.CommandRequest{Name: "c"}).ID
		wg.Wait()
		if got := e.tr.delivered(); !slices.Equal(got, []string{a, b, c}) {
			t.Fatalf("delivered %v, want %v", got, []string{a, b, c})
		}
	})
}

func TestRestartInEachState(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pizzaProfile(), command.Options{})
	queued := e.send("d1", tether.CommandRequest{Name: "defrost"})
	awaiting := e.send("d1", tether.CommandRequest{Name: "open_door"})
	e.tr.setLive("d2", true)
	sent := e.send("d2", tether.CommandRequest{Name: "defrost"})
	delivered := e.send("d2", tether.CommandRequest{Name: "defrost"})
	if err := e.svc.Delivered(ctx, tenant, "d2", delivered.ID); err != nil {
		t.Fatal(err)
	}
	done := e.send("d2", tether.CommandRequest{Name: "defrost"})
	if _, err := e.svc.Reply(ctx, tenant, "d2", done.ID, tether.CommandReply{}); err != nil {
		t.Fatal(err)
	}
	e.tr.delivered()
	e.tr.setLive("d2", false)
	wantStatus(t, awaiting, tether.CommandAwaitingConfirmation)

	e.restart()

	for c, status := range map[*tether.Command]string{queued: tether.CommandQueued, awaiting: tether.CommandAwaitingConfirmation,
		sent: tether.CommandSent, delivered: tether.CommandDelivered, done: tether.CommandSucceeded} {
		wantStatus(t, e.get(c.DeviceID, c.ID), status)
	}
	t.Run("offers a queued command once when its device is ready", func(t *testing.T) {
		e.tr.setLive("d1", true)
		e.svc.Ready(ctx, tenant, "d1", false)
		e.svc.Ready(ctx, tenant, "d1", true)
		if got := e.tr.delivered(); !slices.Equal(got, []string{queued.ID}) {
			t.Fatalf("delivered %v, want %s once", got, queued.ID)
		}
	})
	t.Run("queues an awaiting command when it is confirmed", func(t *testing.T) {
		c, err := e.svc.Confirm(ctx, tenant, "d1", awaiting.ID, "api:k2")
		if err != nil {
			t.Fatal(err)
		}
		if c.ConfirmedBy != "api:k2" {
			t.Errorf("confirmed by %q", c.ConfirmedBy)
		}
		if got := e.tr.delivered(); !slices.Equal(got, []string{awaiting.ID}) {
			t.Fatalf("delivered %v, want %s", got, awaiting.ID)
		}
		_, err = e.svc.Confirm(ctx, tenant, "d1", awaiting.ID, "api:k2")
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("offers a sent command again to a new session only", func(t *testing.T) {
		e.tr.setLive("d2", true)
		e.svc.Ready(ctx, tenant, "d2", true)
		if got := e.tr.delivered(); len(got) != 0 {
			t.Fatalf("delivered %v to a resumed session", got)
		}
		e.svc.Ready(ctx, tenant, "d2", false)
		if got := e.tr.delivered(); !slices.Equal(got, []string{sent.ID}) {
			t.Fatalf("delivered %v, want %s", got, sent.ID)
		}
	})
	t.Run("accepts replies to commands sent before the restart", func(t *testing.T) {
		for _, c := range []*tether.Command{sent, delivered} {
			got, err := e.svc.Reply(ctx, tenant, "d2", c.ID, tether.CommandReply{})
			if err != nil {
				t.Fatal(err)
			}
			wantStatus(t, got, tether.CommandSucceeded)
		}
		_, err := e.svc.Reply(ctx, tenant, "d2", done.ID, tether.CommandReply{})
		wantCode(t, err, tether.ECONFLICT)
	})
	t.Run("continues the seq after the restart", func(t *testing.T) {
		c := e.send("d2", tether.CommandRequest{Name: "defrost"})
		if c.Seq != done.Seq+1 {
			t.Errorf("seq %d, want %d", c.Seq, done.Seq+1)
		}
	})
}

func TestExpiryAndTimeout(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, command.Options{DefaultTTL: time.Hour, DefaultTimeout: 30 * time.Second})
	queued := e.send("d1", tether.CommandRequest{Name: "a"})
	short := e.send("d1", tether.CommandRequest{Name: "a", TTL: time.Minute})
	e.tr.setLive("d2", true)
	twoWay := e.send("d2", tether.CommandRequest{Name: "a"})
	delivered := e.send("d2", tether.CommandRequest{Name: "a", Timeout: time.Minute})
	if err := e.svc.Delivered(ctx, tenant, "d2", delivered.ID); err != nil {
		t.Fatal(err)
	}
	oneWay := e.send("d2", tether.CommandRequest{Name: "a", OneWay: true})

	e.clock.Add(30 * time.Second)
	e.svc.Sweep(ctx)
	got := e.get("d2", twoWay.ID)
	wantStatus(t, got, tether.CommandFailed)
	if got.Reason != "timeout" {
		t.Errorf("reason %q, want timeout", got.Reason)
	}
	wantStatus(t, e.get("d2", delivered.ID), tether.CommandDelivered)
	wantStatus(t, e.get("d2", oneWay.ID), tether.CommandSent)

	e.clock.Add(30 * time.Second)
	e.svc.Sweep(ctx)
	wantStatus(t, e.get("d2", delivered.ID), tether.CommandFailed)
	wantStatus(t, e.get("d1", short.ID), tether.CommandExpired)
	wantStatus(t, e.get("d1", queued.ID), tether.CommandQueued)
	if p, _ := e.svc.Pending(ctx, tenant, "d1"); len(p) != 1 || p[0].ID != queued.ID {
		t.Errorf("Pending = %v, want only %s", p, queued.ID)
	}

	e.clock.Add(time.Hour)
	e.svc.Sweep(ctx)
	wantStatus(t, e.get("d1", queued.ID), tether.CommandExpired)
	wantStatus(t, e.get("d2", oneWay.ID), tether.CommandExpired)
	_, err := e.svc.Reply(ctx, tenant, "d1", queued.ID, tether.CommandReply{})
	wantCode(t, err, tether.ECONFLICT)
	if ev := e.events.statuses(queued.ID); !slices.Equal(ev, []string{tether.CommandQueued, tether.CommandExpired}) {
		t.Errorf("events %v", ev)
	}
}

func TestCircuitBreaker(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, command.Options{BreakerFailures: 3, BreakerCooldown: time.Minute})
	fail := func() {
		t.Helper()
		c := e.send("d1", tether.CommandRequest{Name: "a"})
		if _, err := e.svc.Reply(ctx, tenant, "d1", c.ID, tether.CommandReply{Status: tether.CommandFailed}); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(want string) {
		t.Helper()
		c, _, err := e.svc.Send(ctx, tenant, "d1", tether.CommandRequest{Name: "a", Role: tether.RoleAdmin})
		wantCode(t, err, tether.EUNAVAILABLE)
		wantStatus(t, e.get("d1", c.ID), tether.CommandRejected)
		if !strings.Contains(c.Reason, want) {
			t.Errorf("reason %q, want it to say %q", c.Reason, want)
		}
	}
	for range 3 {
		fail()
	}

	t.Run("opens after the configured failures in a row", func(t *testing.T) {
		refused("circuit open")
		e.clock.Add(59 * time.Second)
		refused("circuit open")
	})
	t.Run("leaves other devices alone", func(t *testing.T) {
		e.send("d2", tether.CommandRequest{Name: "a"})
	})
	var trial *tether.Command
	t.Run("lets one command through after the cooldown", func(t *testing.T) {
		e.clock.Add(time.Second)
		trial = e.send("d1", tether.CommandRequest{Name: "a"})
		refused("trial command")
	})
	t.Run("opens again when the trial fails", func(t *testing.T) {
		if _, err := e.svc.Reply(ctx, tenant, "d1", trial.ID, tether.CommandReply{Status: tether.CommandFailed}); err != nil {
			t.Fatal(err)
		}
		refused("circuit open")
	})
	t.Run("closes when the trial succeeds", func(t *testing.T) {
		e.clock.Add(time.Minute)
		trial = e.send("d1", tether.CommandRequest{Name: "a"})
		if _, err := e.svc.Reply(ctx, tenant, "d1", trial.ID, tether.CommandReply{}); err != nil {
			t.Fatal(err)
		}
		e.send("d1", tether.CommandRequest{Name: "a"})
		e.send("d1", tether.CommandRequest{Name: "a"})
	})
	t.Run("counts expired commands as failures", func(t *testing.T) {
		for range 3 {
			e.send("d2", tether.CommandRequest{Name: "a", TTL: time.Second})
		}
		e.clock.Add(time.Second)
		e.svc.Sweep(ctx)
		_, _, err := e.svc.Send(ctx, tenant, "d2", tether.CommandRequest{Name: "a", Role: tether.RoleAdmin})
		wantCode(t, err, tether.EUNAVAILABLE)
	})
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, command.Options{})
	c := e.send("d1", tether.CommandRequest{Name: "a"})

	t.Run("returns the current state when its context ends", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		got, err := e.svc.Wait(wctx, tenant, "d1", c.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, got, tether.CommandQueued)
	})
	t.Run("returns the reply as soon as it is stored", func(t *testing.T) {
		type result struct {
			c   *tether.Command
			err error
		}
		done := make(chan result, 3)
		for range 3 {
			go func() {
				got, err := e.svc.Wait(ctx, tenant, "d1", c.ID)
				done <- result{got, err}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		if _, err := e.svc.Reply(ctx, tenant, "d1", c.ID, tether.CommandReply{Result: json.RawMessage(`42`)}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			wantStatus(t, r.c, tether.CommandSucceeded)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("woken after %v", d)
		}
	})
	t.Run("returns a done command at once and reports a missing one", func(t *testing.T) {
		got, err := e.svc.Wait(ctx, tenant, "d1", c.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, got, tether.CommandSucceeded)
		_, err = e.svc.Wait(ctx, tenant, "d1", "c_nope")
		wantCode(t, err, tether.ENOTFOUND)
	})
}
