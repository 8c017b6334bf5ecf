package conformance_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

func TestMessageExpiry(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.3.2-5]: an expired message is not delivered;
		// [MQTT-3.3.2-6]: a delivered one carries what is left of its
		// interval.
		name: "a queued message whose expiry has passed is dropped and the other carries the time it has left",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "sleeper", resume(300))
			c.sub(1, "expiry/#")
			c.disconnect(0)
			p := connect5(t, b, "pub")
			short, long := uint32(1), uint32(60)
			p.pub(&packets.Publish{Topic: "expiry/short", QoS: 1, Payload: []byte("short"),
				Properties: &packets.Properties{MessageExpiry: &short}})
			p.pub(&packets.Publish{Topic: "expiry/long", QoS: 1, Payload: []byte("long"),
				Properties: &packets.Properties{MessageExpiry: &long}})
			published := time.Now()
			// Waiting out the expiry is the case; servers count it in
			// whole seconds.
			time.Sleep(2500 * time.Millisecond)
			c = connect5(t, b, "sleeper", resume(300))
			m := c.expect()
			if m.Topic != "expiry/long" {
				t.Fatalf("got %s, want expiry/long (expiry/short has expired)", m.Topic)
			}
			waited := uint32(time.Since(published) / time.Second)
			if e := m.Properties.MessageExpiry; e == nil || *e > long-waited+1 || *e < long-waited-2 {
				t.Errorf("message expiry interval %v after %ds queued, want about %d", ptr(e), waited, long-waited)
			}
			c.expectNone(quiet)
		},
	}, {
		name: "a message forwarded at once carries its expiry interval",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(1, "expiry/#")
			expiry := uint32(60)
			connect5(t, b, "pub").pub(&packets.Publish{Topic: "expiry/a", QoS: 1, Payload: []byte("a"),
				Properties: &packets.Properties{MessageExpiry: &expiry}})
			if e := s.expect().Properties.MessageExpiry; e == nil || *e < expiry-1 || *e > expiry {
				t.Errorf("message expiry interval %v, want %d", ptr(e), expiry)
			}
		},
	}, {
		// Without the property the message does not expire [3.3.2.3.3],
		// and the server has no interval to forward.
		name: "a message without an expiry interval is forwarded without one",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(1, "expiry/#")
			connect5(t, b, "pub").publish("expiry/none", 1, false, "none")
			if e := s.expect().Properties.MessageExpiry; e != nil {
				t.Errorf("message expiry interval %d, want none", *e)
			}
		},
	}, {
		name: "a retained message whose expiry has passed is not sent to new subscribers",
		v5: func(t *testing.T, b broker) {
			expiry := uint32(1)
			connect5(t, b, "pub").pub(&packets.Publish{Topic: "expiry/retained", QoS: 1, Retain: true,
				Payload: []byte("old"), Properties: &packets.Properties{MessageExpiry: &expiry}})
			time.Sleep(2500 * time.Millisecond)
			s := connect5(t, b, "sub")
			s.sub(1, "expiry/retained")
			s.expectNone(quiet)
		},
	}})
}

// ptr shows an optional property.
func ptr[T any](p *T) any {
	if p == nil {
		return "absent"
	}
	return *p
}
