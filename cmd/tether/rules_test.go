package main_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-iot/tether"
)

// This file holds the end-to-end tests of rules (issue 5) on a real node:
// telemetry from a real MQTT client, rules saved over REST, a webhook
// received by a real HTTP server, alerts read back over REST.

func TestARuleCallsASignedWebhookAndRepublishesForApps(t *testing.T) {
	n := startNode(t, nil)
	got := make(chan *http.Request, 4)
	bodies := make(chan []byte, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	defer hook.Close()
	rule := map[string]any{
		"id": "hot-rooms", "name": "Hot rooms",
		"statement": "SELECT temp, device.labels.room AS room FROM telemetry WHERE temp > 30",
		"actions": []map[string]any{{"type": "webhook", "url": hook.URL, "secret": "s3cret"},
			{"type": "republish", "topic": "hot/{device}"}},
	}
	app := newCollector()
	ac, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "dashboard", "$app", adminKey, func(o *paho3.ClientOptions) { o.SetDefaultPublishHandler(app.handle) })
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ac.Subscribe("$events/default/rules/#", 1, nil))
	if status, _, raw := n.api("POST", "/api/v1/rules", "", rule, nil); status != http.StatusCreated {
		t.Fatalf("create rule: %d %s", status, raw)
	}
	id, token := n.createDevice("room-1")
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "room-1", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.Publish("devices/"+id+"/telemetry", 1, false, `{"temp": 21}`))
	wait(t, c.Publish("devices/"+id+"/telemetry", 1, false, `{"temp": 35}`))
	select {
	case r := <-got:
		body := <-bodies
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(body)
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); r.Header.Get("X-Tether-Signature") != want {
			t.Errorf("signature %q, want %q", r.Header.Get("X-Tether-Signature"), want)
		}
		var m struct {
			Rule   string         `json:"rule"`
			Device string         `json:"device"`
			Values map[string]any `json:"values"`
		}
		decode(t, body, &m)
		if m.Rule != "hot-rooms" || m.Values["temp"] != 35.0 {
			t.Errorf("webhook body %s", body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no webhook call")
	}
	select {
	case <-got:
		t.Error("the reading of 21 called the webhook too")
	case <-time.After(300 * time.Millisecond):
	}
	t.Run("an app of the tenant reads the republished result", func(t *testing.T) {
		var m struct {
			Values map[string]any `json:"values"`
		}
		decode(t, app.wait(t, "$events/default/rules/hot/"+id).Payload(), &m)
		if m.Values["temp"] != 35.0 {
			t.Errorf("republished %+v", m)
		}
	})
}

func TestARuleAlertsOnATrend(t *testing.T) {
	n := startNode(t, nil)
	rule := map[string]any{
		"id": "vibration-trend", "name": "Vibration heading for 6.0 within 48 h",
		"statement": `SELECT avg(vibration) AS v, time_to_threshold(avg(vibration), 6.0, 3600) AS eta
FROM telemetry GROUP BY device, TUMBLING(10s) HAVING eta < 172800`,
		"actions": []map[string]any{{"type": "alert", "alert_type": "vibration_trend", "severity": "warning"}},
	}
	if status, _, raw := n.api("POST", "/api/v1/rules", "", rule, nil); status != http.StatusCreated {
		t.Fatalf("create rule: %d %s", status, raw)
	}
	id, token := n.createDevice("arm-1")
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "arm-1", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Vibration creeping up 0.1 every 10 s: one reading per window, in
	// event time, an hour ago.
	base := time.Now().Add(-time.Hour).Truncate(10 * time.Second)
	for i := range 6 {
		ts := base.Add(time.Duration(i) * 10 * time.Second).UnixMilli()
		wait(t, c.Publish("devices/"+id+"/telemetry", 1, false, fmt.Sprintf(`{"vibration": %.1f, "ts": %d}`, 2.0+0.1*float64(i), ts)))
	}
	var alerts struct {
		Alerts []tether.Alert `json:"alerts"`
	}
	waitFor(t, "the trend alert", func() bool {
		n.api("GET", "/api/v1/alerts?status=active", "", nil, &alerts)
		return len(alerts.Alerts) > 0
	})
	a := alerts.Alerts[0]
	if len(alerts.Alerts) != 1 || a.RuleID != "vibration-trend" || a.DeviceID != id || a.Type != "vibration_trend" {
		t.Errorf("alerts = %+v", alerts.Alerts)
	}
	t.Run("a backtest over the stored data finds what the live stream found", func(t *testing.T) {
		n.waitStored(6)
		var bt struct {
			Results []tether.RuleResult `json:"results"`
			Actions []string            `json:"actions"`
		}
		body := map[string]any{"from": base.Add(-time.Minute), "to": time.Now(), "devices": []string{id}}
		if status, _, raw := n.api("POST", "/api/v1/rules/vibration-trend/backtest", "", body, &bt); status != http.StatusOK {
			t.Fatalf("%d %s", status, raw)
		}
		if len(bt.Results) == 0 || len(bt.Actions) != len(bt.Results) {
			t.Errorf("backtest: %d results, %d actions", len(bt.Results), len(bt.Actions))
		}
		var m struct {
			Evaluated uint64 `json:"evaluated"`
			Results   uint64 `json:"results"`
		}
		n.api("GET", "/api/v1/rules/vibration-trend/metrics", "", nil, &m)
		// Live, the last window is still open; the backtest closes it.
		if m.Evaluated != 6 || m.Results == 0 || m.Results > uint64(len(bt.Results)) {
			t.Errorf("metrics %+v, backtest %d results", m, len(bt.Results))
		}
	})
	t.Run("a dry run shows every step and a bad statement its position", func(t *testing.T) {
		var dr struct {
			Results []tether.RuleResult `json:"results"`
			Trace   []map[string]any    `json:"trace"`
		}
		body := map[string]any{"statement": "SELECT vibration FROM telemetry WHERE vibration > 5",
			"inputs": []map[string]any{{"device": id, "values": map[string]any{"vibration": 7}}, {"device": id, "values": map[string]any{"vibration": 1}}}}
		if status, _, raw := n.api("POST", "/api/v1/rules/dry-run", "", body, &dr); status != http.StatusOK {
			t.Fatalf("%d %s", status, raw)
		}
		if len(dr.Results) != 1 || len(dr.Trace) != 2 || dr.Trace[1]["where"] != false {
			t.Errorf("dry run: %+v", dr)
		}
		status, _, raw := n.api("POST", "/api/v1/rules/dry-run", "", map[string]any{"statement": "SELECT x FROM telemetry WHERE x >", "inputs": []map[string]any{{"device": id}}}, nil)
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(raw), `"column"`) {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("the rule is not failing", func(t *testing.T) {
		var m map[string]any
		if status, _, raw := n.api("GET", "/api/v1/rules/vibration-trend", "", nil, &m); status != http.StatusOK {
			t.Fatalf("%d %s", status, raw)
		}
		b, _ := json.Marshal(m)
		if m["status"] != tether.RuleOK {
			t.Errorf("rule %s", b)
		}
	})
}

func TestARuleReadsAnMQTTTopic(t *testing.T) {
	n := startNode(t, nil)
	rule := map[string]any{
		"id": "door-open", "name": "Door left open",
		"statement": "SELECT payload.state AS state FROM 'devices/+/door' WHERE payload.state = 'open'",
		"actions":   []map[string]any{{"type": "alert", "alert_type": "door_open", "severity": "info"}},
	}
	if status, _, raw := n.api("POST", "/api/v1/rules", "", rule, nil); status != http.StatusCreated {
		t.Fatalf("create rule: %d %s", status, raw)
	}
	id, token := n.createDevice("fridge-door")
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "fridge-door", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.Publish("devices/"+id+"/door", 1, false, `{"state": "closed"}`))
	wait(t, c.Publish("devices/"+id+"/door", 1, false, `{"state": "open"}`))
	var alerts struct {
		Alerts []tether.Alert `json:"alerts"`
	}
	waitFor(t, "the door alert", func() bool {
		n.api("GET", "/api/v1/alerts", "", nil, &alerts)
		return len(alerts.Alerts) > 0
	})
	if a := alerts.Alerts[0]; len(alerts.Alerts) != 1 || a.Type != "door_open" || a.DeviceID != id {
		t.Errorf("alerts = %+v", alerts.Alerts)
	}
}

func TestAFailingRuleLeavesTheOthersAndTheAPIRunning(t *testing.T) {
	n := startNode(t, nil)
	create := func(id, stmt string, actions []map[string]any) {
		t.Helper()
		rule := map[string]any{"id": id, "name": id, "statement": stmt, "actions": actions}
		done := make(chan int, 1)
		go func() {
			status, _, _ := n.api("POST", "/api/v1/rules", "", rule, nil)
			done <- status
		}()
		select {
		case status := <-done:
			if status != http.StatusCreated {
				t.Fatalf("create %s: %d", id, status)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("creating rule %s hangs", id)
		}
	}
	create("broken", "SELECT temp FROM telemetry WHERE temp > 'high'", nil)
	create("doubler", "SELECT temp * 2 AS twice FROM telemetry WHERE temp > 0", []map[string]any{{"type": "store"}})
	id, token := n.createDevice("oven-1")
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "oven-1", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.Publish("devices/"+id+"/telemetry", 1, false, `{"temp": 21}`))
	t.Run("the broken rule is marked failing with its error", func(t *testing.T) {
		var r tether.Rule
		waitFor(t, "the failing status", func() bool {
			n.api("GET", "/api/v1/rules/broken", "", nil, &r)
			return r.Status == tether.RuleFailing
		})
		if r.Error == "" {
			t.Error("no error recorded")
		}
	})
	t.Run("the API still saves rules", func(t *testing.T) {
		create("late", "SELECT temp FROM telemetry WHERE temp > 100", nil)
	})
	t.Run("the other rule stored its result, once", func(t *testing.T) {
		waitFor(t, "the derived series", func() bool {
			_, ok := n.telemetry(id, "keys=twice")["twice"]
			return ok
		})
		time.Sleep(500 * time.Millisecond) // a result stored back into the stream would be evaluated again by now
		var m struct {
			Evaluated uint64 `json:"evaluated"`
		}
		n.api("GET", "/api/v1/rules/doubler/metrics", "", nil, &m)
		if s := n.telemetry(id, "keys=twice")["twice"].Samples; len(s) != 1 || s[0].Value != 42.0 || m.Evaluated != 1 {
			t.Errorf("twice = %+v, evaluated %d; want one 42 from one evaluation", s, m.Evaluated)
		}
	})
}
