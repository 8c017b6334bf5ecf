package action_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/action"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// The store implements the outbox the runner needs.
var _ action.Store = (*sqlite.DB)(nil)

// quiet discards the runners' logs.
var quiet = slog.New(slog.DiscardHandler)

var t0 = time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC)

func newDB(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// start runs r until the returned stop is called (or the test ends);
// stop returns once Run has.
func start(t *testing.T, r *action.Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually fails the test if cond is not true within 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newRule(actions ...tether.RuleAction) *tether.Rule {
	return &tether.Rule{TenantID: "acme", ID: "r1", Name: "hot", Version: 3, Actions: actions, Enabled: true}
}

func result(device string, values map[string]any) tether.RuleResult {
	return tether.RuleResult{DeviceID: device, Time: t0, Values: values}
}

// receiver is a webhook peer that verifies the signature and answers
// with the statuses given, in turn (the last one repeating).
type receiver struct {
	t        *testing.T
	secret   string
	mu       sync.Mutex
	statuses []int
	got      []delivery // every request with a valid signature
	bad      int        // requests with a wrong or missing signature
}

type delivery struct {
	id     string
	status int
	msg    action.Message
	body   string
	header http.Header
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	m := hmac.New(sha256.New, []byte(rc.secret))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !hmac.Equal([]byte(req.Header.Get("X-Tether-Signature")), []byte(want)) || req.Method != http.MethodPost {
		rc.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	status := rc.statuses[min(len(rc.got), len(rc.statuses)-1)]
	d := delivery{id: req.Header.Get("X-Tether-Delivery"), status: status, body: string(body), header: req.Header}
	if err := json.Unmarshal(body, &d.msg); err != nil {
		rc.t.Errorf("webhook body %s: %v", body, err)
	}
	rc.got = append(rc.got, d)
	w.WriteHeader(status)
	fmt.Fprintf(w, "status %d", status)
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func newReceiver(t *testing.T, secret string, statuses ...int) (*receiver, *httptest.Server) {
	rc := &receiver{t: t, secret: secret, statuses: statuses}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func webhook(url string) tether.RuleAction {
	return tether.RuleAction{Type: tether.ActionWebhook, URL: url, Secret: "s3cret",
		RetryBackoff: tether.Duration(10 * time.Millisecond)}
}

func deadLetters(t *testing.T, r *action.Runner) []action.DeadLetter {
	t.Helper()
	dls, err := r.DeadLetters(context.Background(), "acme", "r1", 0)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return dls
}

func TestWebhook(t *testing.T) {
	ctx := context.Background()

	t.Run("posts the signed result with its delivery id", func(t *testing.T) {
		rc, srv := newReceiver(t, "s3cret", 200)
		r := action.New(newDB(t), action.Sinks{}, action.Options{Logger: quiet})
		start(t, r)
		res := result("d1", map[string]any{"v": 4.5, "line": "A"})
		ws := t0.Add(-time.Minute)
		res.WindowStart = &ws
		if err := r.Enqueue(ctx, newRule(webhook(srv.URL+"/hook?token=x")), []tether.RuleResult{res}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the webhook is called", func() bool { return len(rc.deliveries()) == 1 })
		d := rc.deliveries()[0]
		want := action.Message{Rule: "r1", Version: 3, Device: "d1", Time: t0, WindowStart: &ws, Values: map[string]any{"v": 4.5, "line": "A"}}
		if fmt.Sprint(d.msg) != fmt.Sprint(want) || !d.msg.WindowStart.Equal(ws) {
			t.Errorf("body %s, want %+v", d.body, want)
		}
		if d.id == "" || d.header.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", d.header)
		}
		if rc.bad != 0 {
			t.Errorf("%d requests with a bad signature", rc.bad)
		}
		eventually(t, "the success is counted", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 1 })
	})

	t.Run("reaches an https receiver", func(t *testing.T) {
		rc := &receiver{t: t, secret: "s3cret", statuses: []int{204}}
		srv := httptest.NewTLSServer(rc)
		t.Cleanup(srv.Close)
		r := action.New(newDB(t), action.Sinks{HTTP: srv.Client()}, action.Options{Logger: quiet})
		start(t, r)
		if err := r.Enqueue(ctx, newRule(webhook(srv.URL)), []tether.RuleResult{result("d1", nil)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the webhook is called", func() bool { return len(rc.deliveries()) == 1 })
		if body := rc.deliveries()[0].body; !strings.Contains(body, `"values":{}`) {
			t.Errorf("body %s: want empty values as {}", body)
		}
	})

	t.Run("retries a failure with backoff, then succeeds with the same delivery id", func(t *testing.T) {
		rc, srv := newReceiver(t, "s3cret", 500, 503, 200)
		r := action.New(newDB(t), action.Sinks{}, action.Options{Logger: quiet})
		start(t, r)
		began := time.Now()
		if err := r.Enqueue(ctx, newRule(webhook(srv.URL)), []tether.RuleResult{result("d1", map[string]any{"v": 1})}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the third attempt succeeds", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 1 })
		ds := rc.deliveries()
		if len(ds) != 3 || ds[0].id != ds[1].id || ds[1].id != ds[2].id {
			t.Errorf("deliveries %+v: want 3 with one id", ds)
		}
		// Backoff 10ms, then 20ms.
		if took := time.Since(began); took < 30*time.Millisecond {
			t.Errorf("three attempts took %v, less than the backoff", took)
		}
		if dls := deadLetters(t, r); len(dls) != 0 {
			t.Errorf("dead letters %+v", dls)
		}
	})

	for _, c := range []struct {
		status   int
		attempts int // before the dead letter
	}{
		{400, 1}, {401, 1}, {404, 1}, {410, 1},
		{408, 3}, {429, 3}, {500, 3}, {503, 3}, {302, 3},
	} {
		name := fmt.Sprintf("is dead-lettered after %d attempt(s) when the receiver answers %d", c.attempts, c.status)
		t.Run(name, func(t *testing.T) {
			rc, srv := newReceiver(t, "s3cret", c.status)
			r := action.New(newDB(t), action.Sinks{}, action.Options{Logger: quiet})
			start(t, r)
			a := webhook(srv.URL + "/hook?token=secret-token")
			a.MaxAttempts = 3
			if err := r.Enqueue(ctx, newRule(a), []tether.RuleResult{result("d1", nil)}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the action fails for good", func() bool { _, failed := r.Stats("acme", "r1"); return failed == 1 })
			if n := len(rc.deliveries()); n != c.attempts {
				t.Errorf("%d attempts, want %d", n, c.attempts)
			}
			dls := deadLetters(t, r)
			if len(dls) != 1 {
				t.Fatalf("dead letters %+v, want 1", dls)
			}
			d := dls[0]
			if d.Attempts != c.attempts || !strings.Contains(d.Error, fmt.Sprint(c.status)) {
				t.Errorf("dead letter after %d attempts with error %q", d.Attempts, d.Error)
			}
			if strings.Contains(d.Error, fmt.Sprintf("status %d", c.status)) {
				t.Errorf("dead letter shows the receiver's answer, which is not the tenant's to read: %q", d.Error)
			}
			if strings.Contains(string(d.Action), "s3cret") || strings.Contains(d.Error, "secret-token") {
				t.Errorf("dead letter shows a secret: %s, %q", d.Action, d.Error)
			}
			if d.ID != rc.deliveries()[0].id || d.RuleID != "r1" || d.RuleVersion != 3 || d.DeviceID != "d1" {
				t.Errorf("dead letter %+v", d)
			}
		})
	}

	t.Run("is dead-lettered with the last error when the receiver is unreachable", func(t *testing.T) {
		_, srv := newReceiver(t, "s3cret", 200)
		url := srv.URL
		srv.Close()
		r := action.New(newDB(t), action.Sinks{}, action.Options{Logger: quiet})
		start(t, r)
		a := webhook(url)
		a.MaxAttempts = 2
		if err := r.Enqueue(ctx, newRule(a), []tether.RuleResult{result("d1", nil)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the action fails for good", func() bool { _, failed := r.Stats("acme", "r1"); return failed == 1 })
		if dls := deadLetters(t, r); len(dls) != 1 || dls[0].Attempts != 2 || !strings.Contains(dls[0].Error, "connection refused") {
			t.Errorf("dead letters %+v", dls)
		}
	})

	t.Run("sends non-finite numbers as null", func(t *testing.T) {
		rc, srv := newReceiver(t, "s3cret", 200)
		r := action.New(newDB(t), action.Sinks{}, action.Options{Logger: quiet})
		start(t, r)
		res := result("d1", map[string]any{"eta": math.Inf(1), "v": 2, "nested": map[string]any{"x": math.NaN()}})
		if err := r.Enqueue(ctx, newRule(webhook(srv.URL)), []tether.RuleResult{res}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the webhook is called", func() bool { return len(rc.deliveries()) == 1 })
		if body := rc.deliveries()[0].body; !strings.Contains(body, `"values":{"eta":null,"nested":{"x":null},"v":2}`) {
			t.Errorf("body %s", body)
		}
		if !math.IsInf(res.Values["eta"].(float64), 1) {
			t.Error("Enqueue changed the caller's values")
		}
	})
}

func TestCrashRecovery(t *testing.T) {
	ctx := context.Background()

	t.Run("a new runner delivers once what a stopped one left enqueued", func(t *testing.T) {
		rc, srv := newReceiver(t, "s3cret", 200)
		db := newDB(t)
		old := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
		stop := start(t, old)
		stop() // stopped before it could deliver anything
		if err := old.Enqueue(ctx, newRule(webhook(srv.URL)), []tether.RuleResult{result("d1", nil), result("d2", nil)}); err != nil {
			t.Fatal(err)
		}
		r := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
		start(t, r)
		eventually(t, "both are delivered", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 2 })
		time.Sleep(50 * time.Millisecond)
		if ds := rc.deliveries(); len(ds) != 2 || ds[0].id == ds[1].id {
			t.Errorf("deliveries %+v: want one of each", ds)
		}
	})

	t.Run("a new runner delivers once, after the lease, what a crashed worker had claimed", func(t *testing.T) {
		rc, srv := newReceiver(t, "s3cret", 200)
		db := newDB(t)
		if err := action.New(db, action.Sinks{}, action.Options{Logger: quiet}).Enqueue(ctx, newRule(webhook(srv.URL)), []tether.RuleResult{result("d1", nil)}); err != nil {
			t.Fatal(err)
		}
		// A worker claims the row and dies without a word.
		jobs, err := db.ClaimActions(ctx, time.Now(), 300*time.Millisecond, 10)
		if err != nil || len(jobs) != 1 {
			t.Fatalf("claim = %v, %v", jobs, err)
		}
		r := action.New(db, action.Sinks{}, action.Options{Logger: quiet, PollInterval: 20 * time.Millisecond})
		start(t, r)
		time.Sleep(100 * time.Millisecond)
		if n := len(rc.deliveries()); n != 0 {
			t.Fatalf("%d deliveries within the dead worker's lease", n)
		}
		eventually(t, "it is delivered", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 1 })
		time.Sleep(50 * time.Millisecond)
		if ds := rc.deliveries(); len(ds) != 1 || ds[0].id != jobs[0].ID {
			t.Errorf("deliveries %+v: want one, with the claimed row's id %s", ds, jobs[0].ID)
		}
		if next, ok, err := db.NextActionDue(ctx); ok || err != nil {
			t.Errorf("outbox not empty: %v, %v, %v", next, ok, err)
		}
	})

	t.Run("an attempt cut short by stopping is handed back uncounted", func(t *testing.T) {
		var (
			mu       sync.Mutex
			calls    int
			released = make(chan struct{})
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			// Reading the body to its end lets the server notice the
			// client going away (and end req.Context()).
			_, _ = io.ReadAll(req.Body)
			mu.Lock()
			calls++
			first := calls == 1
			mu.Unlock()
			if first {
				<-req.Context().Done() // hang until the runner gives up
				close(released)
				return
			}
			w.WriteHeader(http.StatusOK)
		}))
		t.Cleanup(srv.Close)
		db := newDB(t)
		old := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
		stop := start(t, old)
		a := webhook(srv.URL)
		a.MaxAttempts = 1 // the interrupted attempt must not use it up
		if err := old.Enqueue(ctx, newRule(a), []tether.RuleResult{result("d1", nil)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the first attempt is under way", func() bool { mu.Lock(); defer mu.Unlock(); return calls == 1 })
		stop()
		select {
		case <-released:
		case <-time.After(10 * time.Second):
			t.Fatal("the receiver did not see the runner give up")
		}
		r := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
		start(t, r)
		eventually(t, "it is delivered", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 1 })
		if _, failed := old.Stats("acme", "r1"); failed != 0 {
			t.Errorf("the stopped runner counted %d failures", failed)
		}
	})
}

// call is one call of a sink.
type call struct {
	sink  string
	args  string
	delID string
}

// recorder records sink calls and fails the first fail of them.
type recorder struct {
	mu    sync.Mutex
	calls []call
	fail  error
	fails int
}

func (rc *recorder) record(ctx context.Context, sink string, args ...any) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	id, _ := action.DeliveryID(ctx)
	var parts []string
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			parts = append(parts, string(v))
		case json.RawMessage:
			parts = append(parts, string(v))
		case time.Time:
			parts = append(parts, v.Format(time.RFC3339))
		case map[string]any:
			b, _ := json.Marshal(v)
			parts = append(parts, string(b))
		case tether.RuleAction:
			parts = append(parts, v.Type+":"+v.AlertType+":"+v.Severity)
		default:
			parts = append(parts, fmt.Sprint(v))
		}
	}
	rc.calls = append(rc.calls, call{sink: sink, args: strings.Join(parts, " | "), delID: id})
	if rc.fails > 0 {
		rc.fails--
		return rc.fail
	}
	return nil
}

func (rc *recorder) sinks() action.Sinks {
	return action.Sinks{
		Republish: func(ctx context.Context, tenant, topic string, payload []byte) error {
			return rc.record(ctx, "republish", tenant, topic, payload)
		},
		NATS: func(ctx context.Context, subject string, payload []byte) error {
			return rc.record(ctx, "nats", subject, payload)
		},
		Store: func(ctx context.Context, tenant, deviceID string, t time.Time, values map[string]any) error {
			return rc.record(ctx, "store", tenant, deviceID, t, values)
		},
		Command: func(ctx context.Context, tenant, deviceID, name string, params json.RawMessage, source string) error {
			return rc.record(ctx, "command", tenant, deviceID, name, params, source)
		},
		Alert: func(ctx context.Context, tenant, ruleID, deviceID string, a tether.RuleAction, met bool, t time.Time, values map[string]any) error {
			return rc.record(ctx, "alert", tenant, ruleID, deviceID, a, met, t, values)
		},
	}
}

func (rc *recorder) all() []call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]call(nil), rc.calls...)
}

func TestSinks(t *testing.T) {
	ctx := context.Background()
	values := map[string]any{"v": 4.5, "line": "A", "n": 3}
	msg := `{"rule":"r1","version":3,"device":"d7","ts":"2025-03-04T05:00:00Z","values":{"line":"A","n":3,"v":4.5}}`
	for _, c := range []struct {
		name   string
		action tether.RuleAction
		want   string // the sink and its arguments
	}{
		{"republish publishes the result on the topic with {device} replaced",
			tether.RuleAction{Type: tether.ActionRepublish, Topic: "factory/{device}/hot"},
			"republish: acme | factory/d7/hot | " + msg},
		{"nats publishes the result under the tenant's rules subject",
			tether.RuleAction{Type: tether.ActionNATS, Topic: "hot.{device}"},
			"nats: tether.acme.rules.hot.d7 | " + msg},
		{"store stores the values for the device at the result's time",
			tether.RuleAction{Type: tether.ActionStore},
			`store: acme | d7 | 2025-03-04T05:00:00Z | {"line":"A","n":3,"v":4.5}`},
		{"command sends the command with {field} params from the result, as the rule",
			tether.RuleAction{Type: tether.ActionCommand, Command: "slow_down",
				Params: json.RawMessage(`{"speed": "{v}", "line": "{line}", "who": "{device}", "keep": "{v} rpm", "list": ["{n}", 1.50]}`)},
			`command: acme | d7 | slow_down | {"keep":"{v} rpm","line":"A","list":[3,1.50],"speed":4.5,"who":"d7"} | rule:r1`},
		{"command without params sends none",
			tether.RuleAction{Type: tether.ActionCommand, Command: "reboot"},
			`command: acme | d7 | reboot |  | rule:r1`},
		{"alert signals the condition met for the rule and device",
			tether.RuleAction{Type: tether.ActionAlert, AlertType: "overheat", Severity: "critical"},
			`alert: acme | r1 | d7 | alert:overheat:critical | true | 2025-03-04T05:00:00Z | {"line":"A","n":3,"v":4.5}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			r := action.New(newDB(t), rec.sinks(), action.Options{Logger: quiet})
			start(t, r)
			if err := r.Enqueue(ctx, newRule(c.action), []tether.RuleResult{result("d7", values)}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the sink is called", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 1 })
			calls := rec.all()
			if len(calls) != 1 {
				t.Fatalf("calls %+v", calls)
			}
			if got := calls[0].sink + ": " + calls[0].args; got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			if calls[0].delID == "" {
				t.Error("the sink's context has no delivery id")
			}
		})
	}

	t.Run("runs every action of every result", func(t *testing.T) {
		rec := &recorder{}
		r := action.New(newDB(t), rec.sinks(), action.Options{Logger: quiet})
		start(t, r)
		rule := newRule(tether.RuleAction{Type: tether.ActionStore}, tether.RuleAction{Type: tether.ActionNATS, Topic: "x"})
		if err := r.Enqueue(ctx, rule, []tether.RuleResult{result("d1", values), result("d2", values), result("d3", values)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "six actions ran", func() bool { ok, _ := r.Stats("acme", "r1"); return ok == 6 })
		seen := map[string]bool{}
		for _, c := range rec.all() {
			if seen[c.delID] {
				t.Errorf("delivery id %s used twice", c.delID)
			}
			seen[c.delID] = true
		}
	})

	for _, c := range []struct {
		name     string
		fail     error
		fails    int
		calls    int
		failedOK bool // dead-lettered rather than delivered
		errText  string
	}{
		{"a sink's passing failure is retried", errors.New("broker busy"), 2, 3, false, ""},
		{"a sink's invalid-input failure is dead-lettered at once", tether.Errorf(tether.EINVALID, "no such command"), 5, 1, true, "no such command"},
		{"a sink failing every attempt is dead-lettered with its last error", tether.Errorf(tether.EUNAVAILABLE, "bus down"), 99, 3, true, "bus down"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{fail: c.fail, fails: c.fails}
			r := action.New(newDB(t), rec.sinks(), action.Options{Logger: quiet})
			start(t, r)
			a := tether.RuleAction{Type: tether.ActionStore, MaxAttempts: 3, RetryBackoff: tether.Duration(time.Millisecond)}
			if err := r.Enqueue(ctx, newRule(a), []tether.RuleResult{result("d1", values)}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the action ends", func() bool { ok, failed := r.Stats("acme", "r1"); return ok+failed == 1 })
			if n := len(rec.all()); n != c.calls {
				t.Errorf("%d calls, want %d", n, c.calls)
			}
			dls := deadLetters(t, r)
			if c.failedOK != (len(dls) == 1) || c.failedOK && !strings.Contains(dls[0].Error, c.errText) {
				t.Errorf("dead letters %+v", dls)
			}
		})
	}

	for _, c := range []struct {
		name   string
		action tether.RuleAction
		res    tether.RuleResult
		err    string
	}{
		{"a republish without an MQTT sink", tether.RuleAction{Type: tether.ActionRepublish, Topic: "x"}, result("d1", nil), "MQTT publishing is not configured"},
		{"a nats action without a NATS sink", tether.RuleAction{Type: tether.ActionNATS, Topic: "x"}, result("d1", nil), "NATS publishing is not configured"},
		{"a store action without a store sink", tether.RuleAction{Type: tether.ActionStore}, result("d1", nil), "storing derived series is not configured"},
		{"a command without a command sink", tether.RuleAction{Type: tether.ActionCommand, Command: "x"}, result("d1", nil), "sending commands is not configured"},
		{"an alert without an alert sink", tether.RuleAction{Type: tether.ActionAlert, AlertType: "x"}, result("d1", nil), "alerting is not configured"},
		{"a command for a result without a device", tether.RuleAction{Type: tether.ActionCommand, Command: "x"}, result("", nil), "the result has no device"},
		{"a command whose params name a missing field", tether.RuleAction{Type: tether.ActionCommand, Command: "x", Params: json.RawMessage(`{"a":"{nope}"}`)}, result("d1", nil), `no value "nope"`},
		{"an action stored invalid", tether.RuleAction{Type: "teleport"}, result("d1", nil), "teleport"},
	} {
		t.Run(c.name+" is dead-lettered at once", func(t *testing.T) {
			r := action.New(newDB(t), action.Sinks{}, action.Options{Logger: quiet})
			start(t, r)
			if err := r.Enqueue(ctx, newRule(c.action), []tether.RuleResult{c.res}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the action fails", func() bool { _, failed := r.Stats("acme", "r1"); return failed == 1 })
			if dls := deadLetters(t, r); len(dls) != 1 || dls[0].Attempts != 1 || !strings.Contains(dls[0].Error, c.err) {
				t.Errorf("dead letters %+v, want one after 1 attempt with %q", dls, c.err)
			}
		})
	}
}

func TestStats(t *testing.T) {
	t.Run("counts per tenant and rule", func(t *testing.T) {
		rec := &recorder{}
		r := action.New(newDB(t), rec.sinks(), action.Options{Logger: quiet})
		start(t, r)
		ok := tether.RuleAction{Type: tether.ActionStore}
		bad := tether.RuleAction{Type: tether.ActionStore, MaxAttempts: 1}
		r1 := newRule(ok, ok)
		r2 := &tether.Rule{TenantID: "acme", ID: "r2", Actions: []tether.RuleAction{bad}}
		other := &tether.Rule{TenantID: "globex", ID: "r1", Actions: []tether.RuleAction{ok}}
		ctx := context.Background()
		for _, rule := range []*tether.Rule{r1, other} {
			if err := r.Enqueue(ctx, rule, []tether.RuleResult{result("d1", nil)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Enqueue(ctx, r2, []tether.RuleResult{result("", nil)}); err != nil { // no device: fails
			t.Fatal(err)
		}
		eventually(t, "all ran", func() bool {
			a, _ := r.Stats("acme", "r1")
			_, b := r.Stats("acme", "r2")
			c, _ := r.Stats("globex", "r1")
			return a == 2 && b == 1 && c == 1
		})
		if ok, failed := r.Stats("acme", "r1"); ok != 2 || failed != 0 {
			t.Errorf("acme/r1 %d ok, %d failed", ok, failed)
		}
		if ok, failed := r.Stats("nobody", "r1"); ok != 0 || failed != 0 {
			t.Errorf("unknown rule %d ok, %d failed", ok, failed)
		}
	})
}

func TestEnqueue(t *testing.T) {
	ctx := context.Background()

	t.Run("does nothing without actions or results", func(t *testing.T) {
		db := newDB(t)
		r := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
		for _, err := range []error{
			r.Enqueue(ctx, newRule(), []tether.RuleResult{result("d1", nil)}),
			r.Enqueue(ctx, newRule(tether.RuleAction{Type: tether.ActionStore}), nil),
			r.Enqueue(ctx, nil, []tether.RuleResult{result("d1", nil)}),
		} {
			if err != nil {
				t.Error(err)
			}
		}
		if _, ok, _ := db.NextActionDue(ctx); ok {
			t.Error("something was enqueued")
		}
	})

	t.Run("records 1,000 results in one transaction quickly", func(t *testing.T) {
		db := newDB(t)
		r := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
		rule := newRule(tether.RuleAction{Type: tether.ActionStore})
		results := make([]tether.RuleResult, 1000)
		for i := range results {
			results[i] = result(fmt.Sprintf("d%d", i), map[string]any{"v": float64(i), "line": "A"})
		}
		began := time.Now()
		if err := r.Enqueue(ctx, rule, results); err != nil {
			t.Fatal(err)
		}
		took := time.Since(began)
		t.Logf("Enqueue of 1,000 results took %v", took)
		if took > 2*time.Second {
			t.Errorf("Enqueue of 1,000 results took %v", took)
		}
		jobs, err := db.ClaimActions(ctx, time.Now(), time.Minute, 2000)
		if err != nil || len(jobs) != 1000 {
			t.Errorf("outbox holds %d rows (%v), want 1000", len(jobs), err)
		}
	})
}

func BenchmarkEnqueue(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("results=%d", n), func(b *testing.B) {
			db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "t.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			r := action.New(db, action.Sinks{}, action.Options{Logger: quiet})
			rule := newRule(tether.RuleAction{Type: tether.ActionStore})
			results := make([]tether.RuleResult, n)
			for i := range results {
				results[i] = result(fmt.Sprintf("d%d", i), map[string]any{"v": float64(i)})
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Enqueue(context.Background(), rule, results); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/result")
		})
	}
}
