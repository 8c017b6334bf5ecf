package conformance_test

import (
	"testing"
	"time"
)

func TestWillMessages(t *testing.T) {
	run(t, []conformanceCase{{
		name: "the will is published when the connection drops without a DISCONNECT",
		v311: func(t *testing.T, b broker) {
			w := connect3(t, b, "watcher")
			w.sub(1, "will/#")
			c := connect3(t, b, "dying", will3("will/dying", "gone", 1, false))
			c.drop()
			m := w.expect()
			if m.Topic() != "will/dying" || string(m.Payload()) != "gone" || m.Qos() != 1 {
				t.Errorf("got %q %q QoS %d, want will/dying gone QoS 1", m.Topic(), m.Payload(), m.Qos())
			}
		},
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			c := connect5(t, b, "dying", will5("will/dying", "gone", 1, false, 0))
			c.drop()
			m := w.expect()
			if m.Topic != "will/dying" || string(m.Payload) != "gone" || m.QoS != 1 {
				t.Errorf("got %q %q QoS %d, want will/dying gone QoS 1", m.Topic, m.Payload, m.QoS)
			}
		},
	}, {
		name: "no will is published after a normal DISCONNECT",
		v311: func(t *testing.T, b broker) {
			w := connect3(t, b, "watcher")
			w.sub(1, "will/#")
			connect3(t, b, "leaving", will3("will/leaving", "gone", 1, false)).disconnect()
			w.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			connect5(t, b, "leaving", will5("will/leaving", "gone", 1, false, 0)).disconnect(0x00)
			w.expectNone(quiet)
		},
	}, {
		name: "a DISCONNECT with reason 0x04 publishes the will",
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			connect5(t, b, "leaving", will5("will/leaving", "gone", 1, false, 0)).disconnect(0x04)
			if m := w.expect(); string(m.Payload) != "gone" {
				t.Errorf("got %q, want gone", m.Payload)
			}
		},
	}, {
		name: "a will with the retain flag is retained",
		v311: func(t *testing.T, b broker) {
			w := connect3(t, b, "watcher")
			w.sub(1, "will/#")
			connect3(t, b, "dying", will3("will/dying", "gone", 1, true)).drop()
			w.expect()
			s := connect3(t, b, "late")
			s.sub(1, "will/dying")
			if m := s.expect(); string(m.Payload()) != "gone" || !m.Retained() {
				t.Errorf("got %q retain %t, want gone retained", m.Payload(), m.Retained())
			}
		},
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			connect5(t, b, "dying", will5("will/dying", "gone", 1, true, 0)).drop()
			w.expect()
			s := connect5(t, b, "late")
			s.sub(1, "will/dying")
			if m := s.expect(); string(m.Payload) != "gone" || !m.Retain {
				t.Errorf("got %q retain %t, want gone retained", m.Payload, m.Retain)
			}
		},
	}, {
		// The server may count the delay in whole seconds (Mosquitto
		// does), so the will may come up to a second early.
		name: "the will delay interval holds the will back",
		v5: func(t *testing.T, b broker) {
			const delay = 2
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			c := connect5(t, b, "dying", sessionExpiry(60), will5("will/dying", "gone", 1, false, delay))
			start := time.Now()
			c.drop()
			m := w.expect()
			waited := m.at.Sub(start)
			t.Logf("will published %v after the connection dropped", waited.Round(time.Millisecond))
			if waited < (delay-1)*time.Second {
				t.Errorf("will published after %v, want about %ds", waited, delay)
			}
		},
	}, {
		// [MQTT-3.1.3-9]: a new connection to the session within the
		// delay means the will is not sent.
		name: "a reconnect within the will delay cancels the will",
		v5: func(t *testing.T, b broker) {
			const delay = 2
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			connect5(t, b, "flaky", sessionExpiry(60), will5("will/flaky", "gone", 1, false, delay)).drop()
			connect5(t, b, "flaky", resume(60))
			w.expectNone(delay*time.Second + time.Second)
		},
	}, {
		// The will is sent when the delay passes or the session ends,
		// whichever comes first [MQTT-3.1.3-9].
		name: "a session that ends before the will delay publishes the will then",
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			c := connect5(t, b, "dying", sessionExpiry(1), will5("will/dying", "gone", 1, false, 60))
			start := time.Now()
			c.drop()
			m := w.expect()
			if waited := m.at.Sub(start); waited > 3*time.Second {
				t.Errorf("will published after %v, want about 1s (the session expiry)", waited)
			}
		},
	}})
}
