package conformance_test

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"
)

func TestFlowControl(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.3.4-9]: no more unacknowledged QoS 1 and 2 publishes
		// in flight to a client than its Receive Maximum; the rest wait.
		name: "the server sends no more QoS 1 messages than the client's receive maximum before an acknowledgement",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub", receiveMaximum(2))
			s.sub(1, "flow/t")
			s.autoAck.Store(false)
			p := connect5(t, b, "pub")
			for i := range 5 {
				p.publish("flow/t", 1, false, strconv.Itoa(i))
			}
			for i := range 2 {
				if m := s.expect(); string(m.Payload) != strconv.Itoa(i) {
					t.Errorf("message %d was %q, want them in order", i, m.Payload)
				}
			}
			s.expectNone(quiet)
		},
	}, {
		// Each PUBACK frees one place [MQTT-4.9.0-3]; the messages
		// waiting follow one for one.
		name: "each acknowledgement lets one more QoS 1 message through",
		v5: func(t *testing.T, b broker) {
			mosquittoDeviates(t, b, "after the first PUBACK it sends two of the waiting messages, so three are in flight to a client whose receive maximum is 2 [MQTT-3.3.4-9]")
			s := connect5(t, b, "sub", receiveMaximum(2))
			s.sub(1, "flow/t")
			s.autoAck.Store(false)
			p := connect5(t, b, "pub")
			for i := range 5 {
				p.publish("flow/t", 1, false, strconv.Itoa(i))
			}
			var held []received
			take := func(n int) {
				t.Helper()
				for range n {
					held = append(held, s.expect())
				}
				s.expectNone(quiet)
			}
			take(2)
			s.ack(held[0].Publish)
			take(1)
			s.ack(held[1].Publish)
			s.ack(held[2].Publish)
			take(2)
			for i, m := range held {
				if string(m.Payload) != strconv.Itoa(i) {
					t.Errorf("message %d was %q, want them in order", i, m.Payload)
				}
			}
		},
	}, {
		// A QoS 2 publish counts until its PUBCOMP [MQTT-4.9.0-2, 4.9].
		name: "a QoS 2 message counts against the receive maximum until PUBCOMP",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub", receiveMaximum(1))
			s.sub(2, "flow/t")
			s.autoAck.Store(false)
			p := connect5(t, b, "pub")
			p.publish("flow/t", 2, false, "0")
			p.publish("flow/t", 2, false, "1")
			m := s.expect()
			s.ack(m.Publish)
			s.next(packets.PUBREL)
			s.expectNone(quiet)
			s.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBCOMP},
				Content: &packets.Pubcomp{PacketID: m.PacketID, Properties: &packets.Properties{}}})
			if m := s.expect(); string(m.Payload) != "1" {
				t.Errorf("got %q, want 1", m.Payload)
			}
		},
	}})
}

func TestMaximumPacketSize(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.1.2-24, -25]: a packet over the client's maximum is
		// dropped, not sent, as if delivered; the next one goes.
		name: "the server drops a message larger than the client's maximum packet size",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub", clientMaxPacketSize(256))
			s.sub(1, "size/#")
			p := connect5(t, b, "pub")
			p.publish("size/big", 1, false, string(bytes.Repeat([]byte("x"), 1000)))
			p.publish("size/small", 1, false, "small")
			if m := s.expect(); m.Topic != "size/small" {
				t.Errorf("got %s (%d bytes), want size/small", m.Topic, len(m.raw))
			}
			s.expectNone(quiet)
		},
	}, {
		// [MQTT-3.2.2-15 and 4.13]: the server advertises its maximum and
		// answers a larger packet with DISCONNECT 0x95 "Packet too large".
		name: "a client sending a packet larger than the server's maximum is disconnected with 0x95",
		v5: func(t *testing.T, b broker) {
			p := connect5(t, b, "pub")
			limit := p.connack.Properties.MaximumPacketSize
			if limit == nil || *limit != maxPacketSize {
				t.Errorf("server maximum packet size %v, want %d", ptr(limit), maxPacketSize)
			}
			p.sendQuiet(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH},
				Content: &packets.Publish{Topic: "size/big", Payload: make([]byte, maxPacketSize), Properties: &packets.Properties{}}})
			if d := p.closed(); d == nil || d.ReasonCode != 0x95 {
				t.Errorf("DISCONNECT %v, want reason 0x95", disconnectReason(d))
			}
		},
		// 3.1.1 has no way to say so: the server closes the connection.
		v311: func(t *testing.T, b broker) {
			c, _ := dialRaw3(t, b, connectPacket3("pub", 60))
			pub := packets3.NewControlPacket(packets3.Publish).(*packets3.PublishPacket)
			pub.TopicName, pub.Payload = "size/big", make([]byte, maxPacketSize)
			_ = pub.Write(c.conn) // the server may close before reading it all
			c.closed()
		},
	}})
}

func TestKeepAlive(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.2.2-21]: a server with a maximum keep-alive tells a 5.0
		// client the one to use in Server Keep Alive. Turning keep-alive
		// off (0) is over any maximum.
		name: "a keep-alive of 0 is answered with the server's maximum",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "c", keepAlive(0))
			if k := c.connack.Properties.ServerKeepAlive; k == nil || *k != maxKeepAlive {
				t.Errorf("server keep alive %v, want %d", ptr(k), maxKeepAlive)
			}
		},
	}, {
		name: "a keep-alive over the server's maximum is lowered to it",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "c", keepAlive(2*maxKeepAlive))
			if k := c.connack.Properties.ServerKeepAlive; k == nil || *k != maxKeepAlive {
				t.Errorf("server keep alive %v, want %d", ptr(k), maxKeepAlive)
			}
		},
	}, {
		// Mosquitto leaves Server Keep Alive out when it keeps the
		// client's value; sending the same value would be as good.
		name: "a keep-alive within the server's maximum is kept",
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "c", keepAlive(60))
			if k := c.connack.Properties.ServerKeepAlive; k != nil && *k != 60 {
				t.Errorf("server keep alive %d, want 60 or none", *k)
			}
		},
	}, {
		// 3.1.1 cannot tell a client to use another keep-alive, and a
		// long one lets a client hold a connection open on little traffic
		// (CVE-2020-13849). The server may refuse it; Mosquitto does since
		// 2.0.12, with "identifier rejected" (2), keep-alive 0 included.
		name: "a 3.1.1 client with a keep-alive of 0 or over the server's maximum is refused",
		v311: func(t *testing.T, b broker) {
			mosquittoBefore(t, b, "2.0.12", "it accepts any keep-alive from a 3.1.1 client")
			for _, k := range []uint16{0, 2 * maxKeepAlive} {
				if _, ack := dialRaw3(t, b, connectPacket3("c"+strconv.Itoa(int(k)), k)); ack.ReturnCode != 2 {
					t.Errorf("keep-alive %d: CONNACK return code %d, want 2", k, ack.ReturnCode)
				}
			}
			if _, ack := dialRaw3(t, b, connectPacket3("c", maxKeepAlive)); ack.ReturnCode != 0 {
				t.Errorf("keep-alive %d: CONNACK return code %d, want 0", maxKeepAlive, ack.ReturnCode)
			}
		},
	}, {
		// [MQTT-3.1.2-24 in 3.1.1, MQTT-3.1.2-22 in 5.0]: silence for one
		// and a half keep-alives ends the connection, and the will goes
		// [MQTT-3.1.2-8]. Servers count in whole seconds, so a second's
		// slack either way. Mosquitto 2.0.11 looks at keep-alives only
		// every few seconds (a silent client with keep-alive 2 is cut
		// after about 6 s rather than 3): for it a late disconnect is
		// logged, not failed.
		name: "a client silent for one and a half keep-alives is disconnected and its will published",
		v311: func(t *testing.T, b broker) {
			w := connect3(t, b, "watcher")
			w.sub(1, "will/#")
			cn := connectPacket3("silent", 2)
			cn.WillFlag, cn.WillTopic, cn.WillMessage, cn.WillQos = true, "will/silent", []byte("timed out"), 1
			c, _ := dialRaw3(t, b, cn)
			start := time.Now()
			c.closedWithin(10 * time.Second)
			checkKeepAliveTimeout(t, b, time.Since(start), 2)
			if m := w.expect(); string(m.Payload()) != "timed out" {
				t.Errorf("will %q", m.Payload())
			}
		},
		v5: func(t *testing.T, b broker) {
			w := connect5(t, b, "watcher")
			w.sub(1, "will/#")
			c := connect5(t, b, "silent", keepAlive(2), will5("will/silent", "timed out", 1, false, 0))
			start := time.Now()
			d := c.closedWithin(10 * time.Second)
			checkKeepAliveTimeout(t, b, time.Since(start), 2)
			t.Logf("DISCONNECT before closing: %v", disconnectReason(d))
			if m := w.expect(); string(m.Payload) != "timed out" {
				t.Errorf("will %q", m.Payload)
			}
		},
	}, {
		// The other side of the case above, so that it cannot pass by a
		// server that closes every connection after a while.
		name: "a client that pings within its keep-alive stays connected",
		v311: func(t *testing.T, b broker) {
			c, _ := dialRaw3(t, b, connectPacket3("pinging", 2))
			for range 4 {
				time.Sleep(time.Second)
				c.send(packets3.NewControlPacket(packets3.Pingreq))
				if _, ok := c.next().(*packets3.PingrespPacket); !ok {
					t.Fatal("want PINGRESP")
				}
			}
		},
		v5: func(t *testing.T, b broker) {
			c := connect5(t, b, "pinging", keepAlive(2))
			for range 4 {
				time.Sleep(time.Second)
				c.send(packets.NewControlPacket(packets.PINGREQ))
				c.next(packets.PINGRESP)
			}
		},
	}})
}

// checkKeepAliveTimeout checks that a silent client with this keep-alive
// was disconnected after about one and a half times it.
func checkKeepAliveTimeout(t *testing.T, b broker, after time.Duration, keepAlive int) {
	t.Helper()
	want := time.Duration(keepAlive) * 1500 * time.Millisecond
	switch _, mosquitto := b.(*mosquittoBroker); {
	case after < want-time.Second:
		t.Errorf("disconnected after %v of silence, want about %v", after.Round(time.Millisecond), want)
	case after > want+1500*time.Millisecond && mosquitto:
		t.Logf("Mosquitto disconnected after %v of silence, late as it is known to be (want about %v)", after.Round(time.Millisecond), want)
	case after > want+1500*time.Millisecond:
		t.Errorf("disconnected after %v of silence, want about %v", after.Round(time.Millisecond), want)
	}
}
