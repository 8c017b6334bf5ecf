package main_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/tether-iot/tether/internal/config"
)

func TestTelemetryFromMQTTIsReadBackOverREST(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("thermo-1")

	c, err := connect3(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	ms := func(d time.Duration) int64 { return base.Add(d).UnixMilli() }
	msgs := []struct {
		qos     byte
		payload string
	}{
		{0, fmt.Sprintf(`{"temp": 20.0, "ts": %d}`, ms(0))},
		{1, fmt.Sprintf(`{"temp": 22.0, "on": true, "mode": "eco", "ts": %d}`, ms(10*time.Second))},
		{1, fmt.Sprintf(`[{"temp": 24.0, "ts": %d}, {"temp": 30.0, "env": {"hum": 40}, "ts": "%s"}]`,
			ms(20*time.Second), base.Add(time.Minute).Format(time.RFC3339Nano))},
	}
	for _, m := range msgs {
		tok := c.Publish("devices/"+id+"/telemetry", m.qos, false, m.payload)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", m.payload, tok.Error())
		}
	}
	n.waitStored(7)

	from, to := base.Add(-time.Minute).Format(time.RFC3339), base.Add(5*time.Minute).Format(time.RFC3339)
	t.Run("raw points come back with their types and times", func(t *testing.T) {
		got := n.telemetry(id, "from="+from+"&to="+to)
		temps := got["temp"].Samples
		if len(temps) != 4 || temps[0].Value != 20.0 || temps[3].Value != 30.0 || !temps[1].TS.Equal(base.Add(10*time.Second)) {
			t.Errorf("temp = %+v", temps)
		}
		if s := got["on"].Samples; len(s) != 1 || s[0].Value != true {
			t.Errorf("on = %+v", s)
		}
		if s := got["mode"].Samples; len(s) != 1 || s[0].Value != "eco" {
			t.Errorf("mode = %+v", s)
		}
		if s := got["env.hum"].Samples; len(s) != 1 || s[0].Value != 40.0 {
			t.Errorf("nested object not flattened to env.hum: %+v", got)
		}
	})
	t.Run("bucketed averages are per minute", func(t *testing.T) {
		got := n.telemetry(id, "keys=temp&agg=avg&bucket=1m&from="+from+"&to="+to)
		s := got["temp"].Samples
		if len(s) != 2 || s[0].Value != 22.0 || s[1].Value != 30.0 || !s[0].TS.Equal(base) {
			t.Errorf("avg buckets = %+v", s)
		}
		if len(got) != 1 {
			t.Errorf("keys=temp returned %d series", len(got))
		}
	})
	t.Run("bucketed counts count every point", func(t *testing.T) {
		got := n.telemetry(id, "keys=temp&agg=count&bucket=1h&from="+from+"&to="+to)
		if s := got["temp"].Samples; len(s) != 1 || s[0].Value != 4.0 {
			t.Errorf("count = %+v", s)
		}
	})
	t.Run("a query naming over 100 keys is refused", func(t *testing.T) {
		keys := strings.TrimSuffix(strings.Repeat("k,", 101), ",")
		status, h, raw := n.api("GET", "/api/v1/devices/"+id+"/telemetry?keys="+keys, "", nil, nil)
		if status != http.StatusBadRequest || h.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(raw), "at most 100") {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("latest values are the newest per key", func(t *testing.T) {
		var out struct {
			Values []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"values"`
		}
		n.api("GET", "/api/v1/devices/"+id+"/latest", "", nil, &out)
		got := map[string]any{}
		for _, v := range out.Values {
			got[v.Key] = v.Value
		}
		if got["temp"] != 30.0 || got["mode"] != "eco" || got["on"] != true || len(got) != 4 {
			t.Errorf("latest = %v", got)
		}
	})
	t.Run("last seen is set", func(t *testing.T) {
		var d struct {
			LastSeenAt *time.Time `json:"last_seen_at"`
		}
		n.api("GET", "/api/v1/devices/"+id, "", nil, &d)
		if d.LastSeenAt == nil || time.Since(*d.LastSeenAt) > time.Minute {
			t.Errorf("last_seen_at = %v", d.LastSeenAt)
		}
	})
}

func TestMQTT5PublishIsAcknowledgedAfterItIsStored(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("")
	c, ca, err := connect5(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	if code, reason := publish5(t, c, "devices/"+id+"/telemetry", 1, `{"rpm": 1200}`); code != 0 {
		t.Fatalf("PUBACK %#x %s", code, reason)
	}
	// The bus has it at PUBACK time; the writer stores it shortly after.
	n.waitStored(1)
	if s := n.telemetry(id, "keys=rpm")["rpm"].Samples; len(s) != 1 || s[0].Value != 1200.0 {
		t.Errorf("rpm = %+v", s)
	}
}

func TestDevicesAuthenticateAndStayInTheirNamespace(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("dev-a")
	other, otherToken := n.createDevice("dev-b")
	gone, goneToken := n.createDevice("dev-gone")
	if status, _, raw := n.api("DELETE", "/api/v1/devices/"+gone, "", nil, nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, raw)
	}

	refusals := []struct {
		name, user, pass string
	}{
		{"a wrong token is refused", id, id + ".wrong"},
		{"another device's token is refused", id, otherToken},
		{"an unknown device is refused", "nobody", "nobody.secret"},
		{"a deleted device is refused", gone, goneToken},
		{"no credentials are refused", "", ""},
	}
	for _, tc := range refusals {
		t.Run(tc.name+" with MQTT 5 not authorized", func(t *testing.T) {
			_, ca, err := connect5(t, n.MQTT.Addr(), tc.user, tc.pass)
			if err == nil || ca == nil || ca.ReasonCode != 0x87 {
				t.Errorf("connack = %+v, err = %v; want reason 0x87", ca, err)
			}
		})
		t.Run(tc.name+" with MQTT 3.1.1 not authorized", func(t *testing.T) {
			_, err := connect3(t, n.MQTT.Addr(), tc.user, tc.pass)
			if !errors.Is(err, packets3.ErrorRefusedNotAuthorised) {
				t.Errorf("err = %v, want %v", err, packets3.ErrorRefusedNotAuthorised)
			}
		})
	}

	c, ca, err := connect5(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	t.Run("publishing into another device's tree is not authorized", func(t *testing.T) {
		if code, _ := publish5(t, c, "devices/"+other+"/telemetry", 1, `{"x":1}`); code != 0x87 {
			t.Errorf("PUBACK %#x, want 0x87", code)
		}
	})
	t.Run("publishing outside devices/ is not authorized", func(t *testing.T) {
		if code, _ := publish5(t, c, "factory/line1", 1, `{"x":1}`); code != 0x87 {
			t.Errorf("PUBACK %#x, want 0x87", code)
		}
	})
	for _, filter := range []string{"devices/" + other + "/#", "devices/+/telemetry", "#", "$SYS/#"} {
		t.Run("subscribing to "+filter+" is refused", func(t *testing.T) {
			ctx := t.Context()
			sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
			if err == nil || sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] < 0x80 {
				t.Errorf("suback = %+v, err = %v; want a failure", sa, err)
			}
		})
	}
	t.Run("subscribing inside its own tree is allowed", func(t *testing.T) {
		sa, err := c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/#", QoS: 1}}})
		if err != nil || sa.Reasons[0] != 1 {
			t.Errorf("suback = %+v, err = %v", sa, err)
		}
	})
	// 3.1.1 has no negative PUBACK; Mosquitto acknowledges a denied
	// publish and drops it, and so does Tether.
	t.Run("a 3.1.1 device publishing outside its tree is acknowledged and dropped", func(t *testing.T) {
		c3, err := connect3(t, n.MQTT.Addr(), other, otherToken)
		if err != nil {
			t.Fatal(err)
		}
		before := n.Writer.Stored()
		if tok := c3.Publish("devices/"+id+"/telemetry", 1, false, `{"intruder":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		if tok := c3.Publish("devices/"+other+"/telemetry", 1, false, `{"own":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		n.waitStored(before + 1)
		if s := n.telemetry(id, "keys=intruder&from=0")["intruder"].Samples; len(s) != 0 {
			t.Errorf("the denied publish was stored: %+v", s)
		}
	})
	t.Run("another device using the same client id does not take over the connection", func(t *testing.T) {
		a, aToken := n.createDevice("dev-same-a")
		b, bToken := n.createDevice("dev-same-b")
		connectAs := func(user, pass string) paho3.Client {
			opts := paho3.NewClientOptions().AddBroker("tcp://" + n.MQTT.Addr()).SetClientID("esp32").
				SetUsername(user).SetPassword(pass).SetAutoReconnect(false)
			c := paho3.NewClient(opts)
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("connect %s: %v", user, tok.Error())
			}
			t.Cleanup(func() { c.Disconnect(0) })
			return c
		}
		ca := connectAs(a, aToken)
		connectAs(b, bToken)
		time.Sleep(200 * time.Millisecond)
		if !ca.IsConnectionOpen() {
			t.Error("device a was disconnected by device b's connect")
		}
	})
	t.Run("deleting a device cuts its live connection", func(t *testing.T) {
		victim, vtoken := n.createDevice("dev-victim")
		vc, err := connect3(t, n.MQTT.Addr(), victim, vtoken)
		if err != nil {
			t.Fatal(err)
		}
		n.api("DELETE", "/api/v1/devices/"+victim, "", nil, nil)
		waitFor(t, "disconnect", func() bool { return !vc.IsConnectionOpen() })
	})
	t.Run("rotating a token cuts the connection and only the new token works", func(t *testing.T) {
		dev, oldToken := n.createDevice("dev-rotate")
		rc, err := connect3(t, n.MQTT.Addr(), dev, oldToken)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ Token string }
		n.api("POST", "/api/v1/devices/"+dev+"/token", "", nil, &out)
		waitFor(t, "disconnect", func() bool { return !rc.IsConnectionOpen() })
		if _, err := connect3(t, n.MQTT.Addr(), dev, oldToken); !errors.Is(err, packets3.ErrorRefusedNotAuthorised) {
			t.Errorf("old token: err = %v", err)
		}
		if _, err := connect3(t, n.MQTT.Addr(), dev, out.Token); err != nil {
			t.Errorf("new token: %v", err)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRESTRefusesMissingAndWrongKeys(t *testing.T) {
	n := startNode(t, nil)
	cases := []struct {
		name string
		key  string
	}{
		{"a request without a key", "-"},
		{"a request with a wrong key", "not-a-key"},
		{"a request with a key of the right shape but wrong secret", "bootstrap.wrongsecret"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is 401 with a problem", func(t *testing.T) {
			status, h, raw := n.api("GET", "/api/v1/devices", tc.key, nil, nil)
			if status != http.StatusUnauthorized {
				t.Errorf("status %d", status)
			}
			if ct := h.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			var p struct {
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if err := json.Unmarshal(raw, &p); err != nil || p.Status != 401 || !strings.Contains(p.Detail, "API key") {
				t.Errorf("problem = %s", raw)
			}
		})
	}
	t.Run("the OpenAPI document needs no key", func(t *testing.T) {
		status, _, raw := n.api("GET", "/api/v1/openapi.json", "-", nil, nil)
		var doc map[string]any
		if status != 200 || json.Unmarshal(raw, &doc) != nil || doc["openapi"] == nil {
			t.Errorf("status %d, body %.80s", status, raw)
		}
	})
}

func TestBadTelemetryIsRefusedCountedAndToldToTheDevice(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.MaxPayload = 1024 })
	id, token := n.createDevice("bad-sender")
	c, ca, err := connect5(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	if _, err := c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/errors", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	// A second, well-behaved device publishes throughout.
	good, goodToken := n.createDevice("good-sender")
	gc, _, err := connect5(t, n.MQTT.Addr(), good, goodToken)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, payload, reason string
	}{
		{"malformed JSON", `{"temp": 21.5`, "malformed_json"},
		{"a payload that is not an object", `42`, "not_object"},
		{"a key over 128 bytes", `{"` + strings.Repeat("k", 129) + `": 1}`, "key_too_long"},
		{"a payload over the configured limit", `{"blob": "` + strings.Repeat("x", 1100) + `"}`, "too_large"},
		{"a timestamp out of range", `{"temp": 1, "ts": "1999-12-31T23:59:59Z"}`, "ts_out_of_range"},
		{"a timestamp in seconds, not milliseconds", `{"temp": 1, "ts": 1700000000}`, "ts_out_of_range"},
	}
	for i, tc := range cases {
		t.Run(tc.name+" is refused with reason "+tc.reason, func(t *testing.T) {
			code, reason := publish5(t, c, "devices/"+id+"/telemetry", 1, tc.payload)
			if code != 0x99 || reason == "" {
				t.Errorf("PUBACK %#x %q; want 0x99 with a reason", code, reason)
			}
			msgs := c.waitMessages(t, i+1)
			var told struct{ Reason, Error string }
			if err := json.Unmarshal(msgs[i].Payload, &told); err != nil || told.Reason != tc.reason || told.Error == "" {
				t.Errorf("errors topic got %s", msgs[i].Payload)
			}
			if code, _ := publish5(t, gc, "devices/"+good+"/telemetry", 1, `{"ok": 1}`); code != 0 {
				t.Errorf("the good device's PUBACK %#x", code)
			}
		})
	}
	t.Run("a refused QoS 2 publish gets a PUBREC with the reason", func(t *testing.T) {
		code, reason := publish5(t, c, "devices/"+id+"/telemetry", 2, `{"x": }`)
		if code != 0x99 || reason == "" {
			t.Errorf("PUBREC %#x %q; want 0x99 with a reason", code, reason)
		}
	})
	n.waitStored(uint64(len(cases)))
	t.Run("nothing of the bad device is stored", func(t *testing.T) {
		if got := n.telemetry(id, ""); len(got) != 0 {
			t.Errorf("stored %v", got)
		}
		if got := n.telemetry(good, "")["ok"].Samples; len(got) != len(cases) {
			t.Errorf("good device stored %d points, want %d", len(got), len(cases))
		}
	})
	t.Run("every refusal is counted on the device", func(t *testing.T) {
		var d struct {
			Refused int `json:"refused_messages"`
		}
		n.api("GET", "/api/v1/devices/"+id, "", nil, &d)
		if d.Refused != len(cases)+1 {
			t.Errorf("refused_messages = %d, want %d", d.Refused, len(cases)+1)
		}
	})
	t.Run("refusals are logged once per device per minute", func(t *testing.T) {
		if got := countLines(n.logs.String(), "telemetry refused"); got != 1 {
			t.Errorf("logged %d times, want 1", got)
		}
	})
	t.Run("an MQTT 3.1.1 device is told on its errors topic", func(t *testing.T) {
		c3, err := connect3(t, n.MQTT.Addr(), good, goodToken)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan []byte, 1)
		c3.Subscribe("devices/"+good+"/errors", 0, func(_ paho3.Client, m paho3.Message) { got <- m.Payload() }).Wait()
		if tok := c3.Publish("devices/"+good+"/telemetry", 1, false, `not json`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		select {
		case p := <-got:
			if !strings.Contains(string(p), "malformed_json") {
				t.Errorf("told %s", p)
			}
		case <-time.After(5 * time.Second):
			t.Error("nothing on the errors topic")
		}
	})
}

func TestAMessageTheBusCannotStoreIsNeverAcknowledged(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.BusMaxBytes = 1 << 20 })
	// With the storage writer stopped, nothing drains the stream, so it
	// fills up and JetStream refuses new messages.
	if err := n.Writer.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	id, token := n.createDevice("filler")
	c, _, err := connect5(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"blob": "` + strings.Repeat("x", 200<<10) + `"}`
	var code byte
	var reason string
	for range 20 {
		if code, reason = publish5(t, c, "devices/"+id+"/telemetry", 1, big); code != 0 {
			break
		}
	}
	t.Run("MQTT 5 gets PUBACK 0x80 and a reason", func(t *testing.T) {
		if code != 0x80 || !strings.Contains(reason, "could not be stored") {
			t.Errorf("PUBACK %#x %q", code, reason)
		}
	})
	t.Run("MQTT 3.1.1 gets no PUBACK and is disconnected to resend", func(t *testing.T) {
		c3, err := connect3(t, n.MQTT.Addr(), id, token)
		if err != nil {
			t.Fatal(err)
		}
		tok := c3.Publish("devices/"+id+"/telemetry", 1, false, big)
		if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			t.Error("acknowledged a message the bus refused")
		}
		waitFor(t, "the disconnect", func() bool { return !c3.IsConnectionOpen() })
	})
	t.Run("the refusal is counted as a bus failure", func(t *testing.T) {
		if got := n.Ingestor.Stats().BusFailed; got < 2 {
			t.Errorf("bus failures = %d", got)
		}
	})
}
