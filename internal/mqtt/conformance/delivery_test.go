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

// collect3 takes n messages from clients between them, failing the test
// if they do not come; it returns the payloads each client got.
func collect3(t *testing.T, n int, cs ...*client3) [][]string {
	t.Helper()
	got, total := make([][]string, len(cs)), 0
	timeout := time.After(wait)
	for total < n {
		for i, c := range cs {
			select {
			case m := <-c.msgs:
				got[i] = append(got[i], string(m.Payload()))
				total++
			default:
			}
		}
		select {
		case <-timeout:
			t.Fatalf("%d of %d messages within %v", total, n, wait)
		case <-time.After(time.Millisecond):
		}
	}
	return got
}

// collect5 is collect3 for MQTT 5.0 clients.
func collect5(t *testing.T, n int, cs ...*client5) [][]string {
	t.Helper()
	got, total := make([][]string, len(cs)), 0
	timeout := time.After(wait)
	for total < n {
		for i, c := range cs {
			select {
			case m := <-c.pubs:
				got[i] = append(got[i], string(m.Payload))
				total++
			default:
			}
		}
		select {
		case <-timeout:
			t.Fatalf("%d of %d messages within %v", total, n, wait)
		case <-time.After(time.Millisecond):
		}
	}
	return got
}

// checkSplit checks that n messages numbered 0 to n-1 went to the members
// of a shared subscription, each to one member, and some to each.
func checkSplit(t *testing.T, n int, got [][]string) {
	t.Helper()
	all := slices.Concat(got...)
	slices.SortFunc(all, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	if !slices.Equal(all, want) {
		t.Errorf("the members got %v between them, want each of 0…%d once", all, n-1)
	}
	for i, g := range got {
		if len(g) == 0 {
			t.Errorf("member %d got none of the %d messages; want them shared", i+1, n)
		}
	}
}

func TestSharedSubscriptions(t *testing.T) {
	const n = 20
	run(t, []conformanceCase{{
		// 4.8.2: each message goes to one member of the group. How the
		// server picks the member is its choice; Mosquitto takes turns.
		// Some to each is asserted: with 20 messages, a server that picks
		// at random fails that one time in half a million. Shared
		// subscriptions are a 5.0 feature that Mosquitto (and mochi) offer
		// 3.1.1 clients too.
		name: "messages to a shared subscription are split between the group's members, each to one",
		v311: func(t *testing.T, b broker) {
			a, bb, plain := connect3(t, b, "member-a"), connect3(t, b, "member-b"), connect3(t, b, "plain")
			a.sub(1, "$share/g/shared/t")
			bb.sub(1, "$share/g/shared/t")
			plain.sub(1, "shared/t")
			p := connect3(t, b, "pub")
			for i := range n {
				p.publish("shared/t", 1, false, strconv.Itoa(i))
			}
			checkSplit(t, n, collect3(t, n, a, bb))
			if got := collect3(t, n, plain)[0]; len(got) != n {
				t.Errorf("the plain subscriber got %d messages, want all %d", len(got), n)
			}
			a.expectNone(quiet)
			bb.expectNone(0)
			plain.expectNone(0)
		},
		v5: func(t *testing.T, b broker) {
			a, bb, plain := connect5(t, b, "member-a"), connect5(t, b, "member-b"), connect5(t, b, "plain")
			a.sub(1, "$share/g/shared/t")
			bb.sub(1, "$share/g/shared/t")
			plain.sub(1, "shared/t")
			p := connect5(t, b, "pub")
			for i := range n {
				p.publish("shared/t", 1, false, strconv.Itoa(i))
			}
			checkSplit(t, n, collect5(t, n, a, bb))
			if got := collect5(t, n, plain)[0]; len(got) != n {
				t.Errorf("the plain subscriber got %d messages, want all %d", len(got), n)
			}
			a.expectNone(quiet)
			bb.expectNone(0)
			plain.expectNone(0)
		},
	}})
}

func TestOverlappingSubscriptions(t *testing.T) {
	run(t, []conformanceCase{{
		// 3.1.1 lets the server send one copy at the highest QoS of the
		// matching subscriptions [MQTT-3.3.5-1] or more; Mosquitto sends
		// one. (5.0 has its own cases below.)
		name: "a message matching two filters of a 3.1.1 client arrives once, at the higher QoS",
		v311: func(t *testing.T, b broker) {
			s := connect3(t, b, "sub")
			s.sub(0, "overlap/#")
			s.sub(2, "overlap/a")
			connect3(t, b, "pub").publish("overlap/a", 2, false, "x")
			if m := s.expect(); m.Qos() != 2 {
				t.Errorf("QoS %d, want 2", m.Qos())
			}
			s.expectNone(quiet)
		},
	}, {
		// As above with the higher QoS on the wildcard filter.
		name: "a message matching two filters of a 3.1.1 client arrives once, at the higher QoS, whichever filter has it",
		v311: func(t *testing.T, b broker) {
			mosquittoDeviates(t, b, "it sends one copy at the QoS of the filter without wildcards (0), not the highest [MQTT-3.3.5-1]")
			s := connect3(t, b, "sub")
			s.sub(2, "overlap/#")
			s.sub(0, "overlap/a")
			connect3(t, b, "pub").publish("overlap/a", 2, false, "x")
			if m := s.expect(); m.Qos() != 2 {
				t.Errorf("QoS %d, want 2", m.Qos())
			}
			s.expectNone(quiet)
		},
	}, {
		// 5.0 lets the server send one copy at the highest QoS with every
		// matching subscription identifier, or one copy per subscription
		// with its own QoS and identifier [MQTT-3.3.4-2, -3, -4, -5].
		// Mosquitto sends one per subscription.
		name: "a message matching two filters of a 5.0 client arrives once per subscription, with its QoS and identifier",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.subscribe(1, packets.SubOptions{Topic: "overlap/#", QoS: 0})
			s.subscribe(2, packets.SubOptions{Topic: "overlap/a", QoS: 2})
			connect5(t, b, "pub").publish("overlap/a", 2, false, "x")
			var got []string
			m := s.expect()
			got = append(got, fmt.Sprintf("QoS %d ids %v", m.QoS, m.subscriptionIDs()))
		more:
			for {
				select {
				case m := <-s.pubs:
					got = append(got, fmt.Sprintf("QoS %d ids %v", m.QoS, m.subscriptionIDs()))
				case <-time.After(quiet):
					break more
				}
			}
			slices.Sort(got)
			if want := []string{"QoS 0 ids [1]", "QoS 2 ids [2]"}; !slices.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
		},
	}})
}

func TestQoS2ExactlyOnce(t *testing.T) {
	run(t, []conformanceCase{{
		// A sender that did not see the PUBREC sends the PUBLISH again
		// with DUP set; until PUBREL the receiver answers PUBREC again and
		// delivers nothing more [MQTT-4.3.3-10 in 5.0; 4.3.3 method B in
		// 3.1.1].
		name: "a QoS 2 message sent twice before PUBREL is delivered once",
		v311: func(t *testing.T, b broker) {
			s := connect3(t, b, "sub")
			s.sub(2, "qos2/a")
			p, _ := dialRaw3(t, b, connectPacket3("pub", 60))
			pub := packets3.NewControlPacket(packets3.Publish).(*packets3.PublishPacket)
			pub.Qos, pub.MessageID, pub.TopicName, pub.Payload = 2, 10, "qos2/a", []byte("once")
			p.send(pub)
			expectAck3[*packets3.PubrecPacket](t, p, 10)
			pub.Dup = true
			p.send(pub)
			expectAck3[*packets3.PubrecPacket](t, p, 10)
			rel := packets3.NewControlPacket(packets3.Pubrel).(*packets3.PubrelPacket)
			rel.MessageID = 10
			p.send(rel)
			expectAck3[*packets3.PubcompPacket](t, p, 10)
			if m := s.expect(); string(m.Payload()) != "once" || m.Qos() != 2 {
				t.Errorf("got %q at QoS %d", m.Payload(), m.Qos())
			}
			s.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(2, "qos2/a")
			s.autoAck.Store(false)
			p := connect5(t, b, "pub")
			pub := &packets.Publish{Topic: "qos2/a", QoS: 2, PacketID: 10, Payload: []byte("once"), Properties: &packets.Properties{}}
			for _, dup := range []bool{false, true} {
				pub.Duplicate = dup
				p.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH}, Content: pub})
				if rec := p.next(packets.PUBREC).Content.(*packets.Pubrec); rec.PacketID != 10 || rec.ReasonCode != 0 {
					t.Fatalf("PUBLISH (DUP %t): PUBREC for %d reason %#x, want for 10 reason 0", dup, rec.PacketID, rec.ReasonCode)
				}
			}
			p.pubrel(10)
			if comp := p.next(packets.PUBCOMP).Content.(*packets.Pubcomp); comp.PacketID != 10 || comp.ReasonCode != 0 {
				t.Fatalf("PUBCOMP for %d reason %#x", comp.PacketID, comp.ReasonCode)
			}

			// The subscriber's side of the exchange, by hand.
			m := s.expect()
			if string(m.Payload) != "once" || m.QoS != 2 {
				t.Fatalf("got %q at QoS %d", m.Payload, m.QoS)
			}
			s.ack(m.Publish)
			if rel := s.next(packets.PUBREL).Content.(*packets.Pubrel); rel.PacketID != m.PacketID {
				t.Fatalf("PUBREL for %d, want %d", rel.PacketID, m.PacketID)
			}
			s.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBCOMP},
				Content: &packets.Pubcomp{PacketID: m.PacketID, Properties: &packets.Properties{}}})
			s.expectNone(quiet)
		},
	}})
}

// expectAck3 checks that the next packet is an acknowledgement of this
// type for this packet identifier.
func expectAck3[P interface {
	packets3.ControlPacket
	Details() packets3.Details
}](t *testing.T, c *raw3, id uint16) {
	t.Helper()
	p := c.next()
	if a, ok := p.(P); !ok || a.Details().MessageID != id {
		t.Fatalf("got %v, want %T for packet %d", p, *new(P), id)
	}
}

func TestQoSDowngrade(t *testing.T) {
	// [MQTT-3.8.4-6 in 3.1.1, 3.3.4 in 5.0]: a message is delivered at
	// the lower of its own QoS and the subscription's maximum.
	run(t, []conformanceCase{{
		name: "a message is delivered at the lower of its QoS and the subscription's",
		v311: func(t *testing.T, b broker) {
			s := connect3(t, b, "sub")
			for q := range byte(3) {
				s.sub(q, fmt.Sprintf("down/%d", q))
			}
			p := connect3(t, b, "pub")
			for pq := range byte(3) {
				for sq := range byte(3) {
					p.publish(fmt.Sprintf("down/%d", sq), pq, false, fmt.Sprintf("%d %d", pq, sq))
				}
			}
			checkDowngrade(t, func() (string, byte) { m := s.expect(); return string(m.Payload()), m.Qos() })
		},
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			for q := range byte(3) {
				s.sub(q, fmt.Sprintf("down/%d", q))
			}
			p := connect5(t, b, "pub")
			for pq := range byte(3) {
				for sq := range byte(3) {
					p.publish(fmt.Sprintf("down/%d", sq), pq, false, fmt.Sprintf("%d %d", pq, sq))
				}
			}
			checkDowngrade(t, func() (string, byte) { m := s.expect(); return string(m.Payload), m.QoS })
		},
	}})
}

// checkDowngrade reads the nine messages "<published QoS> <subscribed
// QoS>" and checks the QoS each arrived at.
func checkDowngrade(t *testing.T, next func() (string, byte)) {
	t.Helper()
	for range 9 {
		payload, qos := next()
		var pq, sq byte
		if _, err := fmt.Sscanf(payload, "%d %d", &pq, &sq); err != nil {
			t.Fatalf("payload %q: %v", payload, err)
		}
		if want := min(pq, sq); qos != want {
			t.Errorf("published at QoS %d, subscribed at %d: delivered at %d, want %d", pq, sq, qos, want)
		}
	}
}

func TestNoLocal(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.8.3-3]
		name: "a no-local subscription does not receive the client's own messages",
		v5: func(t *testing.T, b broker) {
			a := connect5(t, b, "a")
			a.subscribe(0, packets.SubOptions{Topic: "local/t", QoS: 1, NoLocal: true})
			other := connect5(t, b, "other")
			other.sub(1, "local/t")
			a.publish("local/t", 1, false, "from a")
			if m := other.expect(); string(m.Payload) != "from a" {
				t.Fatalf("other client got %q", m.Payload)
			}
			other.publish("local/t", 1, false, "from other")
			if m := a.expect(); string(m.Payload) != "from other" {
				t.Errorf("got %q, want only the other client's message", m.Payload)
			}
		},
	}, {
		name: "without no-local a client receives its own messages",
		v5: func(t *testing.T, b broker) {
			a := connect5(t, b, "a")
			a.sub(1, "local/t")
			a.publish("local/t", 1, false, "from a")
			if m := a.expect(); string(m.Payload) != "from a" {
				t.Errorf("got %q", m.Payload)
			}
		},
	}})
}

func TestDollarTopics(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-4.7.2-1]: a filter starting with a wildcard matches no
		// topic starting with $. The $SYS messages the broker publishes
		// (every second for both) show the $ topics exist.
		name: "# and +/… do not match $SYS topics",
		v311: func(t *testing.T, b broker) {
			all := connect3(t, b, "all")
			all.sub(0, "#", "+/broker/#")
			sys := connect3(t, b, "sys")
			sys.sub(0, "$SYS/#")
			if m := sys.expect(); m.Topic()[0] != '$' {
				t.Fatalf("$SYS/# matched %s", m.Topic())
			}
			connect3(t, b, "pub").publish("plain/t", 0, false, "x")
			if m := all.expect(); m.Topic() != "plain/t" {
				t.Errorf("# matched %s", m.Topic())
			}
			all.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			all := connect5(t, b, "all")
			all.sub(0, "#", "+/broker/#")
			sys := connect5(t, b, "sys")
			sys.sub(0, "$SYS/#")
			if m := sys.expect(); m.Topic[0] != '$' {
				t.Fatalf("$SYS/# matched %s", m.Topic)
			}
			connect5(t, b, "pub").publish("plain/t", 0, false, "x")
			if m := all.expect(); m.Topic != "plain/t" {
				t.Errorf("# matched %s", m.Topic)
			}
			all.expectNone(quiet)
		},
	}, {
		// Only $SYS is the server's; other $ topics are open to clients,
		// as in Mosquitto, and still not matched by # [MQTT-4.7.2-1].
		name: "a client may publish to a $ topic outside $SYS, which # does not match",
		v311: func(t *testing.T, b broker) {
			all, w := connect3(t, b, "all"), connect3(t, b, "watcher")
			all.sub(1, "#")
			w.sub(1, "$custom/#")
			connect3(t, b, "pub").publish("$custom/t", 1, false, "x")
			if m := w.expect(); m.Topic() != "$custom/t" {
				t.Errorf("got %s", m.Topic())
			}
			all.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			all, w := connect5(t, b, "all"), connect5(t, b, "watcher")
			all.sub(1, "#")
			w.sub(1, "$custom/#")
			connect5(t, b, "pub").publish("$custom/t", 1, false, "x")
			if m := w.expect(); m.Topic != "$custom/t" {
				t.Errorf("got %s", m.Topic)
			}
			all.expectNone(quiet)
		},
	}, {
		// The server should keep clients from exchanging messages on $SYS
		// topics (4.7.2). Mosquitto refuses the publish: 5.0 "not
		// authorized" (0x87); 3.1.1, which has no negative
		// acknowledgement, gets its PUBACK and the message goes nowhere.
		name: "a client's publish to $SYS is acknowledged, refused and delivered to no one",
		v311: func(t *testing.T, b broker) {
			w := connect3(t, b, "watcher")
			w.sub(1, "$SYS/test/#")
			connect3(t, b, "pub").publish("$SYS/test/x", 1, false, "x")
			w.expectNone(quiet)
		},
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "$SYS/test/#")
			if rc := connect5(t, b, "pub").pub(&packets.Publish{Topic: "$SYS/test/x", QoS: 1, Payload: []byte("x")}); rc != 0x87 {
				t.Errorf("PUBACK reason %#x, want 0x87", rc)
			}
			w.expectNone(quiet)
		},
	}})
}
