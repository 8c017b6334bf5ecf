package conformance_test

import (
	"bytes"
	"reflect"
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

func TestTopicAliases(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.3.2-12]: the alias set with a topic stands for it in
		// later publishes, until set again. A subscriber that allows no
		// aliases always gets the whole topic [MQTT-3.3.2-9].
		name: "a client may publish with a topic alias it has set",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(0, "alias/#")
			p := connect5(t, b, "pub")
			// Without the property the maximum is 0 and a client may use
			// no alias [MQTT-3.2.2-17]; the case goes on to show what a
			// client that used one anyway would get.
			if m := p.connack.Properties.TopicAliasMaximum; m == nil || *m == 0 {
				t.Errorf("server topic alias maximum %v, want some", ptr(m))
			}
			one := uint16(1)
			for _, step := range []struct{ topic, payload string }{
				{"alias/a", "sets 1"}, {"", "uses 1"}, {"alias/b", "sets 1 again"}, {"", "uses 1 again"},
			} {
				p.pub(&packets.Publish{Topic: step.topic, Payload: []byte(step.payload),
					Properties: &packets.Properties{TopicAlias: &one}})
			}
			for _, want := range []string{"alias/a", "alias/a", "alias/b", "alias/b"} {
				m := s.expect()
				if m.Topic != want || m.Properties.TopicAlias != nil {
					t.Errorf("%s: topic %q alias %v, want %s and no alias", m.Payload, m.Topic, ptr(m.Properties.TopicAlias), want)
				}
			}
		},
	}, {
		// Whether a server uses aliases towards a client is its choice
		// [MQTT-3.3.2-10]; Mosquitto 2.0.11 never does. What is asserted is
		// that every alias it does use is within the client's maximum and
		// stands for the right topic.
		name: "topic aliases from the server stay within the client's maximum and stand for the right topic",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub", clientTopicAliasMaximum(2))
			s.sub(0, "alias/#")
			p := connect5(t, b, "pub")
			topics := []string{"alias/a", "alias/b", "alias/c", "alias/a", "alias/b", "alias/c", "alias/a"}
			for _, topic := range topics {
				p.publish(topic, 0, false, topic)
			}
			aliases, used := map[uint16]string{}, 0
			for _, want := range topics {
				m := s.expect()
				topic := m.Topic
				if a := m.Properties.TopicAlias; a != nil {
					used++
					switch {
					case *a == 0 || *a > 2:
						t.Fatalf("topic alias %d, want 1 or 2", *a)
					case topic != "":
						aliases[*a] = topic
					default:
						topic = aliases[*a]
					}
				}
				if topic != want {
					t.Errorf("message for %s arrived on %q", want, topic)
				}
			}
			t.Logf("the server used a topic alias in %d of %d publishes", used, len(topics))
		},
	}, {
		// A sender must not use alias 0 [MQTT-3.3.2-8]; the specification
		// names no one reason code for a receiver that gets it. It is a
		// malformed packet to Mosquitto (0x81); a protocol error (0x82)
		// or "Topic Alias invalid" (0x94) fit it as well, and are
		// accepted.
		name: "a topic alias of 0 ends the connection with a DISCONNECT saying why",
		v5: func(t *testing.T, b broker) {
			p := connect5(t, b, "pub")
			zero := uint16(0)
			p.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH},
				Content: &packets.Publish{Topic: "alias/a", Payload: []byte("x"), Properties: &packets.Properties{TopicAlias: &zero}}})
			if d := p.closed(); d == nil || !slices.Contains([]byte{0x81, 0x82, 0x94}, d.ReasonCode) {
				t.Errorf("DISCONNECT %v, want reason 0x81, 0x82 or 0x94", disconnectReason(d))
			}
		},
	}, {
		// [MQTT-3.2.2-17, 3.3.2.3.4]; 0x94 is "Topic Alias invalid".
		name: "a topic alias above the server's maximum ends the connection with 0x94",
		v5: func(t *testing.T, b broker) {
			p := connect5(t, b, "pub")
			// Without the property the server's maximum is 0.
			over := uint16(1)
			if m := p.connack.Properties.TopicAliasMaximum; m != nil {
				if *m == 65535 {
					t.Skip("server topic alias maximum 65535 leaves no alias above it")
				}
				over = *m + 1
			}
			p.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH},
				Content: &packets.Publish{Topic: "alias/a", Payload: []byte("x"), Properties: &packets.Properties{TopicAlias: &over}}})
			if d := p.closed(); d == nil || d.ReasonCode != 0x94 {
				t.Errorf("DISCONNECT %v, want reason 0x94", disconnectReason(d))
			}
		},
	}, {
		// An alias the client never set is a protocol error (0x82)
		// [3.3.2.3.4].
		name: "a topic alias that was never set ends the connection with 0x82",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(0, "#")
			p := connect5(t, b, "pub")
			three := uint16(3)
			p.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH},
				Content: &packets.Publish{Payload: []byte("x"), Properties: &packets.Properties{TopicAlias: &three}}})
			if d := p.closed(); d == nil || d.ReasonCode != 0x82 {
				t.Errorf("DISCONNECT %v, want reason 0x82", disconnectReason(d))
			}
			s.expectNone(quiet)
		},
	}})
}

// disconnectReason shows a DISCONNECT's reason code, or that none came.
func disconnectReason(d *packets.Disconnect) any {
	if d == nil {
		return "none (the connection was closed without one)"
	}
	return d.ReasonCode
}

func TestSubscriptionIdentifiers(t *testing.T) {
	run(t, []conformanceCase{{
		name: "a message carries the identifier of the subscription it matched",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.subscribe(7, packets.SubOptions{Topic: "sid/a", QoS: 1})
			connect5(t, b, "pub").publish("sid/a", 1, false, "x")
			if ids := s.expect().subscriptionIDs(); !slices.Equal(ids, []int{7}) {
				t.Errorf("subscription identifiers %v, want [7]", ids)
			}
		},
	}, {
		name: "a subscription without an identifier adds none",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(1, "sid/a")
			connect5(t, b, "pub").publish("sid/a", 1, false, "x")
			if ids := s.expect().subscriptionIDs(); len(ids) != 0 {
				t.Errorf("subscription identifiers %v, want none", ids)
			}
		},
	}, {
		name: "subscribing again with another identifier replaces the identifier",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.subscribe(1, packets.SubOptions{Topic: "sid/a", QoS: 1})
			s.subscribe(2, packets.SubOptions{Topic: "sid/a", QoS: 1})
			connect5(t, b, "pub").publish("sid/a", 1, false, "x")
			if ids := s.expect().subscriptionIDs(); !slices.Equal(ids, []int{2}) {
				t.Errorf("subscription identifiers %v, want [2]", ids)
			}
			s.expectNone(quiet)
		},
	}, {
		name: "a retained message sent at subscribe carries the subscription's identifier",
		v5: func(t *testing.T, b broker) {
			connect5(t, b, "pub").publish("sid/a", 1, true, "x")
			s := connect5(t, b, "sub")
			s.subscribe(5, packets.SubOptions{Topic: "sid/#", QoS: 1})
			if ids := s.expect().subscriptionIDs(); !slices.Equal(ids, []int{5}) {
				t.Errorf("subscription identifiers %v, want [5]", ids)
			}
		},
	}})
}

func TestRequestResponse(t *testing.T) {
	run(t, []conformanceCase{{
		// Response Topic and Correlation Data [MQTT-3.3.2-15, -16], Content
		// Type [MQTT-3.3.2-20] and Payload Format Indicator [MQTT-3.3.2-4]
		// reach the subscriber unaltered.
		name: "a request's response topic and correlation data reach the responder, and the response the requester",
		v5: func(t *testing.T, b broker) {
			responder := connect5(t, b, "responder")
			responder.sub(1, "service/time")
			requester := connect5(t, b, "requester")
			requester.sub(1, "replies/requester")
			utf8 := byte(1)
			requester.pub(&packets.Publish{Topic: "service/time", QoS: 1, Payload: []byte(`{"tz":"UTC"}`),
				Properties: &packets.Properties{
					ResponseTopic: "replies/requester", CorrelationData: []byte{0, 1, 0xfe, 0xff},
					ContentType: "application/json", PayloadFormat: &utf8,
				}})
			req := responder.expect()
			p := req.Properties
			if p.ResponseTopic != "replies/requester" || !bytes.Equal(p.CorrelationData, []byte{0, 1, 0xfe, 0xff}) ||
				p.ContentType != "application/json" || p.PayloadFormat == nil || *p.PayloadFormat != 1 {
				t.Fatalf("request arrived with %s", p)
			}
			responder.pub(&packets.Publish{Topic: p.ResponseTopic, QoS: 1, Payload: []byte("12:00"),
				Properties: &packets.Properties{CorrelationData: p.CorrelationData}})
			res := requester.expect()
			if res.Topic != "replies/requester" || !bytes.Equal(res.Properties.CorrelationData, []byte{0, 1, 0xfe, 0xff}) {
				t.Errorf("response on %s with correlation data %x", res.Topic, res.Properties.CorrelationData)
			}
		},
	}})
}

func TestUserProperties(t *testing.T) {
	run(t, []conformanceCase{{
		// [MQTT-3.3.2-17, -18]: forwarded unaltered, in order, a key
		// repeated included.
		name: "user properties are forwarded in order, repeated keys included",
		v5: func(t *testing.T, b broker) {
			s := connect5(t, b, "sub")
			s.sub(1, "props/#")
			want := []packets.User{{Key: "b", Value: "1"}, {Key: "a", Value: "2"}, {Key: "b", Value: "3"}, {Key: "ünïcode", Value: ""}}
			connect5(t, b, "pub").pub(&packets.Publish{Topic: "props/a", QoS: 1, Payload: []byte("x"),
				Properties: &packets.Properties{User: want}})
			if got := s.expect().Properties.User; !reflect.DeepEqual(got, want) {
				t.Errorf("user properties %v, want %v", got, want)
			}
		},
	}})
}
