package mqtt

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestTelemetry(t *testing.T) {
	tg := startGateway(t, nil)
	const topic = "devices/d1/telemetry"

	t.Run("telemetry is ingested, acknowledged and still reaches subscribers", func(t *testing.T) {
		sub := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		sub.subscribe(t, topic, 1)
		before := tg.in.acceptedCount()
		if code, _ := tg.mustConnect5(t, "tcp", token("d1"), opts5{}).publish(t, topic, 1, false, `{"a":1}`); code != 0 {
			t.Fatalf("5.0 PUBACK %#x", code)
		}
		tg.mustConnect3(t, "wss", token("d1"), opts3{}).publish(t, topic, 2, false, `{"a":2}`)
		if n := tg.in.acceptedCount() - before; n != 2 {
			t.Fatalf("%d ingested, want 2", n)
		}
		receive(t, sub.msgs, "the 5.0 telemetry")
		receive(t, sub.msgs, "the 3.1.1 telemetry")
	})

	t.Run("a refused payload is answered 0x99 in 5.0 and explained on the errors topic", func(t *testing.T) {
		errs := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		errs.subscribe(t, "devices/d1/#", 1)
		pub := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		code, reason := pub.publish(t, topic, 1, false, "bad")
		if code != 0x99 || !strings.Contains(reason, "JSON") {
			t.Errorf("QoS 1: PUBACK %#x %q, want 0x99 with the reason", code, reason)
		}
		if code, _ := pub.publish(t, topic, 2, false, "bad"); code != 0x99 {
			t.Errorf("QoS 2: PUBREC %#x, want 0x99", code)
		}
		for range 2 {
			m := receive(t, errs.msgs, "the notice")
			var n map[string]string
			if m.Topic != "devices/d1/errors" || json.Unmarshal(m.Payload, &n) != nil || n["reason"] != "invalid_json" {
				t.Fatalf("got %q on %s", m.Payload, m.Topic)
			}
		}
		nothing(t, errs.msgs, "the refused payload itself")
	})

	t.Run("a refused payload is acknowledged in 3.1.1 and explained on the errors topic", func(t *testing.T) {
		errs := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		errs.subscribe(t, "devices/d1/#", 1)
		pub := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		pub.publish(t, topic, 1, false, "bad")
		if m := receive(t, errs.msgs, "the notice"); m.Topic() != "devices/d1/errors" {
			t.Fatalf("got a message on %s", m.Topic())
		}
		nothing(t, errs.msgs, "the refused payload itself")
	})

	t.Run("a message the bus did not store is never acknowledged", func(t *testing.T) {
		code, _ := tg.mustConnect5(t, "tcp", token("d1"), opts5{}).publish(t, topic, 1, false, "unstorable")
		if code != 0x80 {
			t.Errorf("5.0 PUBACK %#x, want 0x80", code)
		}
		// A 3.1.1 client is disconnected, so that it sends the message
		// again when it reconnects.
		c := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		tok := c.Publish(topic, 1, false, "unstorable")
		tok.WaitTimeout(time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for c.IsConnectionOpen() {
			if time.Now().After(deadline) {
				t.Fatal("the 3.1.1 client is still connected")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("Disconnect cuts a device's connections and no other's", func(t *testing.T) {
		d1 := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		d2 := tg.mustConnect5(t, "tcp", token("d2"), opts5{})
		if n := tg.Disconnect("d1"); n < 1 {
			t.Fatalf("Disconnect cut %d connections", n)
		}
		if d := receive(t, d1.gone, "the DISCONNECT"); d.ReasonCode != notAuthorized {
			t.Errorf("DISCONNECT reason %#x, want %#x", d.ReasonCode, notAuthorized)
		}
		nothing(t, d2.gone, "a DISCONNECT of another device")
	})
}
