package conformance_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"
)

// queuedWhileAway subscribes a client with a persistent session at QoS 0,
// 1 and 2, disconnects it, publishes one message at each QoS and, if
// restart is set, restarts the broker; then it reconnects the client and
// checks what it receives.
//
// QoS 0 messages are not queued for an offline client: the specification
// lets the server choose [MQTT-3.1.2-5 in 3.1.1, 4.1 in 5.0], and that is
// Mosquitto's default (queue_qos0_messages false).
func queuedWhileAway(restart bool) conformanceCase {
	c := conformanceCase{}
	c.v311 = func(t *testing.T, b broker) {
		c := connect3(t, b, "sleeper", persistent)
		c.sub(0, "queue/0")
		c.sub(1, "queue/1")
		c.sub(2, "queue/2")
		c.disconnect()
		p := connect3(t, b, "pub")
		for qos := range byte(3) {
			p.publish("queue/"+string('0'+qos), qos, false, "at QoS "+string('0'+qos))
		}
		if restart {
			b.restart(t)
		}
		c, tok := dial3(t, b, "sleeper", persistent)
		if tok.Error() != nil || !tok.SessionPresent() {
			t.Fatalf("reconnect: %v, session present %t; want the session resumed", tok.Error(), tok.SessionPresent())
		}
		var got []string
		for range 2 {
			m := c.expect()
			got = append(got, fmt.Sprintf("%s at QoS %d", m.Topic(), m.Qos()))
		}
		checkQueued(t, got)
		c.expectNone(quiet)
	}
	c.v5 = func(t *testing.T, b broker) {
		// Clean start 0 from the first connection, as persistent
		// clients do: Mosquitto 2.0.11 saves to disk only sessions whose
		// last connection had clean start 0, so a session begun with
		// clean start 1 and an expiry interval does not survive its
		// restart (it does survive while Mosquitto runs).
		c := connect5(t, b, "sleeper", resume(300))
		c.sub(0, "queue/0")
		c.sub(1, "queue/1")
		c.sub(2, "queue/2")
		c.disconnect(0)
		p := connect5(t, b, "pub")
		for qos := range byte(3) {
			p.publish("queue/"+string('0'+qos), qos, false, "at QoS "+string('0'+qos))
		}
		if restart {
			b.restart(t)
		}
		c = connect5(t, b, "sleeper", resume(300))
		if !c.connack.SessionPresent {
			t.Fatal("session present 0, want the session resumed")
		}
		var got []string
		for range 2 {
			m := c.expect()
			got = append(got, fmt.Sprintf("%s at QoS %d", m.Topic, m.QoS))
		}
		checkQueued(t, got)
		c.expectNone(quiet)
	}
	return c
}

// checkQueued checks the messages queuedWhileAway got. Their order is not
// asserted: it is fixed only within a topic and QoS [MQTT-4.6.0-6]; see
// the ordering case.
func checkQueued(t *testing.T, got []string) {
	t.Helper()
	slices.Sort(got)
	if want := []string{"queue/1 at QoS 1", "queue/2 at QoS 2"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// queuedInOrder publishes n QoS 1 messages to one topic for a client that
// is away, then checks they reach it in the order published
// [MQTT-4.6.0-6] (Mosquitto keeps the order of queued messages across
// topics too, but that is not asserted).
func queuedInOrder(restart bool) conformanceCase {
	const n = 10
	c := conformanceCase{}
	c.v311 = func(t *testing.T, b broker) {
		c := connect3(t, b, "sleeper", persistent)
		c.sub(1, "queue/ordered")
		c.disconnect()
		p := connect3(t, b, "pub")
		for i := range n {
			p.publish("queue/ordered", 1, false, strconv.Itoa(i))
		}
		if restart {
			b.restart(t)
		}
		c = connect3(t, b, "sleeper", persistent)
		var got []string
		for range n {
			got = append(got, string(c.expect().Payload()))
		}
		checkOrdered(t, n, got)
	}
	c.v5 = func(t *testing.T, b broker) {
		c := connect5(t, b, "sleeper", resume(300))
		c.sub(1, "queue/ordered")
		c.disconnect(0)
		p := connect5(t, b, "pub")
		for i := range n {
			p.publish("queue/ordered", 1, false, strconv.Itoa(i))
		}
		if restart {
			b.restart(t)
		}
		c = connect5(t, b, "sleeper", resume(300))
		var got []string
		for range n {
			got = append(got, string(c.expect().Payload))
		}
		checkOrdered(t, n, got)
	}
	return c
}

func checkOrdered(t *testing.T, n int, got []string) {
	t.Helper()
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestPersistentSessions(t *testing.T) {
	whileAway := queuedWhileAway(false)
	whileAway.name = "QoS 1 and 2 messages published while the client is away are delivered when it comes back"
	restarted := queuedWhileAway(true)
	restarted.name = "QoS 1 and 2 messages queued for an absent client survive a broker restart"
	ordered := queuedInOrder(false)
	ordered.name = "messages queued for an absent client on one topic arrive in the order they were published"
	orderedRestarted := queuedInOrder(true)
	orderedRestarted.name = "messages queued for an absent client on one topic arrive in order after a broker restart"
	resent := resentOnResume(false)
	resent.name = "an unacknowledged message is sent again when the session resumes"
	resentReused := resentOnResume(true)
	resentReused.name = "an unacknowledged message is sent again on resuming even if the client used its packet identifier"
	run(t, []conformanceCase{whileAway, restarted, ordered, orderedRestarted, resent, resentReused, {
		name: "a clean session discards the stored one and its messages",
		v311: func(t *testing.T, b broker) {
			c := connect3(t, b, "sleeper", persistent)
			c.sub(1, "queue/1")
			c.disconnect()
			connect3(t, b, "pub").publish("queue/1", 1, false, "one")
			c, tok := dial3(t, b, "sleeper")
			if tok.Error() != nil || tok.SessionPresent() {
				t.Fatalf("reconnect: %v, session present %t; want a new session", tok.Error(), tok.SessionPresent())
			}
			c.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "sleeper", sessionExpiry(300))
			c.sub(1, "queue/1")
			c.disconnect(0)
			connect5(t, b, "pub").publish("queue/1", 1, false, "one")
			c = connect5(t, b, "sleeper")
			if c.connack.SessionPresent {
				t.Fatal("session present 1, want a new session")
			}
			c.expectNone(quiet)
		},
	}, {
		// A session's lifetime is its expiry interval; the clean start
		// flag of the connection that began it plays no part
		// [MQTT-3.1.2-4, MQTT-3.1.2-23].
		name: "a session begun with clean start and an expiry interval survives a broker restart",
		v5: func(t *testing.T, b broker) {
			mosquittoDeviates(t, b, "it saves only sessions whose connection had clean start 0, and loses this one at restart")
			c := connect5(t, b, "sleeper", sessionExpiry(300))
			c.sub(1, "queue/1")
			c.disconnect(0)
			connect5(t, b, "pub").publish("queue/1", 1, false, "one")
			b.restart(t)
			c = connect5(t, b, "sleeper", resume(300))
			if !c.connack.SessionPresent {
				t.Fatal("session present 0, want the session resumed")
			}
			if m := c.expect(); string(m.Payload) != "one" {
				t.Errorf("got %q, want one", m.Payload)
			}
		},
	}, {
		// [MQTT-3.1.2-23 and 3.1.2.11.2]: with no Session Expiry Interval
		// the session ends when the network connection closes. The client
		// comes back as soon as the server has closed the connection: a
		// server that forgets the session a moment after closing it fails
		// this only when the client is quicker.
		name: "a session without an expiry interval ends with the connection",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "sleeper")
			c.sub(1, "queue/1")
			c.disconnect(0)
			c = connect5(t, b, "sleeper", resume(300))
			if c.connack.SessionPresent {
				t.Fatal("session present 1, want a new session")
			}
			connect5(t, b, "pub").publish("queue/1", 1, false, "one")
			c.expectNone(quiet)
		},
	}, {
		// The session of a connection taken over ends with that
		// connection when it has no expiry interval (5.0) or is a clean
		// session (3.1.1) [MQTT-3.1.4-3, MQTT-3.1.2-23; MQTT-3.1.2-6 in
		// 3.1.1]. The old connection is closed; Mosquitto 2.0.11 closes it
		// without the DISCONNECT 0x8E that 5.0 describes, so that is not
		// asserted.
		name: "a session that ends with its connection is not inherited by the client that takes the connection over",
		v311: func(t *testing.T, b broker) {
			old := connect3(t, b, "same")
			old.sub(1, "queue/1")
			c, tok := dial3(t, b, "same", persistent)
			if tok.Error() != nil || tok.SessionPresent() {
				t.Fatalf("connect: %v, session present %t; want a new session", tok.Error(), tok.SessionPresent())
			}
			eventually(t, wait, "the old connection is closed", func() bool { return !old.IsConnectionOpen() })
			connect3(t, b, "pub").publish("queue/1", 1, false, "one")
			c.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			old := connect5(t, b, "same")
			old.sub(1, "queue/1")
			c := connect5(t, b, "same", resume(300))
			if c.connack.SessionPresent {
				t.Error("session present 1, want a new session")
			}
			t.Logf("the old connection got DISCONNECT %v", disconnectReason(old.closed()))
			connect5(t, b, "pub").publish("queue/1", 1, false, "one")
			c.expectNone(quiet)
		},
	}, {
		name: "a session with an expiry interval of 1s is gone after it",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "sleeper", sessionExpiry(1))
			c.sub(1, "queue/1")
			c.disconnect(0)
			connect5(t, b, "pub").publish("queue/1", 1, false, "one")
			// The expiry itself is under test: there is nothing to poll
			// that would not resume the session. Servers count it in
			// whole seconds, so allow one more, and one for the sweep.
			time.Sleep(3 * time.Second)
			c = connect5(t, b, "sleeper", resume(300))
			if c.connack.SessionPresent {
				t.Fatal("session present 1, want the session expired")
			}
			c.expectNone(quiet)
		},
	}, {
		name: "a session within its expiry interval is resumed",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "sleeper", sessionExpiry(10))
			c.sub(1, "queue/1")
			c.disconnect(0)
			connect5(t, b, "pub").publish("queue/1", 1, false, "one")
			time.Sleep(1500 * time.Millisecond)
			c = connect5(t, b, "sleeper", resume(10))
			if !c.connack.SessionPresent {
				t.Fatal("session present 0, want the session resumed")
			}
			if m := c.expect(); string(m.Payload) != "one" {
				t.Errorf("got %q, want one", m.Payload)
			}
		},
	}})
}

// resentOnResume has a client with a persistent session receive a QoS 1
// message and not acknowledge it, then drop the connection and resume the
// session: the message must come again, with its packet identifier and
// DUP set [MQTT-4.4.0-1]. With reuseID the client first publishes a
// message of its own under the same packet identifier: client and server
// number their packets independently (2.2.1), so that must not touch the
// server's message in flight.
func resentOnResume(reuseID bool) conformanceCase {
	c := conformanceCase{}
	c.v311 = func(t *testing.T, b broker) {
		cn := connectPacket3("sub", 60)
		cn.CleanSession = false
		s, _ := dialRaw3(t, b, cn)
		sub := packets3.NewControlPacket(packets3.Subscribe).(*packets3.SubscribePacket)
		sub.MessageID, sub.Topics, sub.Qoss = 1, []string{"ids/t"}, []byte{1}
		s.send(sub)
		expectAck3[*packets3.SubackPacket](t, s, 1)
		connect3(t, b, "pub").publish("ids/t", 1, false, "unacknowledged")
		m, ok := s.next().(*packets3.PublishPacket)
		if !ok {
			t.Fatalf("want PUBLISH, got %v", m)
		}
		if reuseID {
			mine := packets3.NewControlPacket(packets3.Publish).(*packets3.PublishPacket)
			mine.Qos, mine.MessageID, mine.TopicName, mine.Payload = 1, m.MessageID, "ids/other", []byte("mine")
			s.send(mine)
			expectAck3[*packets3.PubackPacket](t, s, m.MessageID)
		}
		s.conn.Close()
		s, ack := dialRaw3(t, b, cn)
		if !ack.SessionPresent {
			t.Fatal("session present 0, want the session resumed")
		}
		again, ok := s.next().(*packets3.PublishPacket)
		if !ok || string(again.Payload) != "unacknowledged" || again.MessageID != m.MessageID || !again.Dup {
			t.Fatalf("got %v, want the unacknowledged message again, as packet %d with DUP set", again, m.MessageID)
		}
	}
	c.v5 = func(t *testing.T, b broker) {
		s := connect5(t, b, "sub", resume(300))
		s.sub(1, "ids/t")
		s.autoAck.Store(false)
		connect5(t, b, "pub").publish("ids/t", 1, false, "unacknowledged")
		m := s.expect()
		if reuseID {
			// Mosquitto answers 0x10, "no matching subscribers".
			if rc := s.pub(&packets.Publish{Topic: "ids/other", QoS: 1, PacketID: m.PacketID, Payload: []byte("mine")}); rc >= 0x80 {
				t.Fatalf("PUBACK reason %#x", rc)
			}
		}
		s.drop()
		s = connect5(t, b, "sub", resume(300))
		again := s.expect()
		if string(again.Payload) != "unacknowledged" || again.PacketID != m.PacketID || !again.Duplicate {
			t.Fatalf("got %q as packet %d, DUP %t; want the unacknowledged message again, as packet %d with DUP set",
				again.Payload, again.PacketID, again.Duplicate, m.PacketID)
		}
	}
	return c
}
