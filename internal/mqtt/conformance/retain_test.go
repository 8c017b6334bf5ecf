package conformance_test

import (
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

func TestRetainedMessages(t *testing.T) {
	run(t, []conformanceCase{{
		name: "a retained message is delivered to a new subscriber with the retain flag set",
		v311: func(t *testing.T, b broker) {
			connect3(t, b, "pub").publish("retain/a", 1, true, "one")
			s := connect3(t, b, "sub")
			s.sub(1, "retain/#")
			m := s.expect()
			if m.Topic() != "retain/a" || string(m.Payload()) != "one" || !m.Retained() || m.Qos() != 1 {
				t.Errorf("got %q %q retain %t QoS %d, want retain/a one retain true QoS 1", m.Topic(), m.Payload(), m.Retained(), m.Qos())
			}
		},
		v5: func(t *testing.T, b broker) {
			connect5(t, b, "pub").publish("retain/a", 1, true, "one")
			s := connect5(t, b, "sub")
			s.sub(1, "retain/#")
			m := s.expect()
			if m.Topic != "retain/a" || string(m.Payload) != "one" || !m.Retain || m.QoS != 1 {
				t.Errorf("got %q %q retain %t QoS %d, want retain/a one retain true QoS 1", m.Topic, m.Payload, m.Retain, m.QoS)
			}
		},
	}, {
		name: "a newer retained message replaces the older one",
		v311: func(t *testing.T, b broker) {
			p := connect3(t, b, "pub")
			p.publish("retain/a", 1, true, "one")
			p.publish("retain/a", 1, true, "two")
			s := connect3(t, b, "sub")
			s.sub(1, "retain/a")
			if m := s.expect(); string(m.Payload()) != "two" {
				t.Errorf("got %q, want two", m.Payload())
			}
			s.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			p := connect5(t, b, "pub")
			p.publish("retain/a", 1, true, "one")
			p.publish("retain/a", 1, true, "two")
			s := connect5(t, b, "sub")
			s.sub(1, "retain/a")
			if m := s.expect(); string(m.Payload) != "two" {
				t.Errorf("got %q, want two", m.Payload)
			}
			s.expectNone(quiet)
		},
	}, {
		// The empty message itself reaches the subscribers there are
		// [MQTT-3.3.1-10]; only the retained copy goes.
		name: "an empty retained message deletes the retained message and reaches current subscribers",
		v311: func(t *testing.T, b broker) {
			p := connect3(t, b, "pub")
			p.publish("retain/a", 1, true, "one")
			old := connect3(t, b, "old")
			old.sub(1, "retain/a")
			old.expect()
			p.publish("retain/a", 1, true, "")
			if m := old.expect(); len(m.Payload()) != 0 {
				t.Errorf("current subscriber got %q, want the empty message", m.Payload())
			}
			s := connect3(t, b, "sub")
			s.sub(1, "retain/a")
			s.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			p := connect5(t, b, "pub")
			p.publish("retain/a", 1, true, "one")
			old := connect5(t, b, "old")
			old.sub(1, "retain/a")
			old.expect()
			p.publish("retain/a", 1, true, "")
			if m := old.expect(); len(m.Payload) != 0 {
				t.Errorf("current subscriber got %q, want the empty message", m.Payload)
			}
			s := connect5(t, b, "sub")
			s.sub(1, "retain/a")
			s.expectNone(quiet)
		},
	}, {
		// [MQTT-3.3.1-9]; in 5.0 when Retain As Published is 0 [MQTT-3.3.1-12].
		name: "a retained message forwarded to a subscription made before it has the retain flag cleared",
		v311: func(t *testing.T, b broker) {
			s := connect3(t, b, "sub")
			s.sub(1, "retain/a")
			connect3(t, b, "pub").publish("retain/a", 1, true, "one")
			if m := s.expect(); m.Retained() {
				t.Error("retain flag set, want cleared")
			}
		},
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(1, "retain/a")
			connect5(t, b, "pub").publish("retain/a", 1, true, "one")
			if m := s.expect(); m.Retain {
				t.Error("retain flag set, want cleared")
			}
		},
	}, {
		name: "retain as published keeps the retain flag of a forwarded message",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.subscribe(0, packets.SubOptions{Topic: "retain/#", QoS: 1, RetainAsPublished: true})
			p := connect5(t, b, "pub")
			p.publish("retain/a", 1, true, "retained")
			p.publish("retain/b", 1, false, "not retained")
			for _, want := range []struct {
				payload string
				retain  bool
			}{{"retained", true}, {"not retained", false}} {
				if m := s.expect(); string(m.Payload) != want.payload || m.Retain != want.retain {
					t.Errorf("got %q retain %t, want %q retain %t", m.Payload, m.Retain, want.payload, want.retain)
				}
			}
			s.expectNone(quiet)
		},
	}, {
		// Retain Handling 0 sends the retained messages at every
		// SUBSCRIBE, a repeated one included [MQTT-3.3.1-9].
		name: "retain handling 0 sends retained messages at every subscribe",
		v5: func(t *testing.T, b broker) {
			connect5(t, b, "pub").publish("retain/a", 1, true, "one")
			s := connect5(t, b, "sub")
			for i := range 2 {
				s.subscribe(0, packets.SubOptions{Topic: "retain/a", QoS: 1, RetainHandling: 0})
				if m := s.expect(); string(m.Payload) != "one" || !m.Retain {
					t.Errorf("subscribe %d: got %q retain %t", i+1, m.Payload, m.Retain)
				}
			}
		},
	}, {
		// Retain Handling 1: only when the subscription did not exist
		// [MQTT-3.3.1-10].
		name: "retain handling 1 sends retained messages only for a new subscription",
		v5: func(t *testing.T, b broker) {
			connect5(t, b, "pub").publish("retain/a", 1, true, "one")
			s := connect5(t, b, "sub")
			s.subscribe(0, packets.SubOptions{Topic: "retain/a", QoS: 1, RetainHandling: 1})
			if m := s.expect(); string(m.Payload) != "one" || !m.Retain {
				t.Errorf("new subscription: got %q retain %t", m.Payload, m.Retain)
			}
			s.subscribe(0, packets.SubOptions{Topic: "retain/a", QoS: 1, RetainHandling: 1})
			s.expectNone(quiet)
		},
	}, {
		// Retain Handling 2: never [MQTT-3.3.1-11].
		name: "retain handling 2 sends no retained messages",
		v5: func(t *testing.T, b broker) {
			connect5(t, b, "pub").publish("retain/a", 1, true, "one")
			s := connect5(t, b, "sub")
			s.subscribe(0, packets.SubOptions{Topic: "retain/a", QoS: 1, RetainHandling: 2})
			s.expectNone(quiet)
		},
	}})
}
