// SPDX-License-Identifier: MIT

// Tests for the changes listed in PATCHES.md, each named there.

package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// readPacket reads and decodes the next packet the server wrote.
func readPacket(t *testing.T, r *bufio.Reader, protocolVersion byte) packets.Packet {
	t.Helper()
	b, err := r.ReadByte()
	require.NoError(t, err)
	var fh packets.FixedHeader
	require.NoError(t, fh.Decode(b))
	fh.Remaining, _, err = packets.DecodeLength(r)
	require.NoError(t, err)
	buf := make([]byte, fh.Remaining)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)

	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: protocolVersion}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(buf)
	case packets.Publish:
		err = pk.PublishDecode(buf)
	case packets.Puback:
		err = pk.PubackDecode(buf)
	case packets.Pubrec:
		err = pk.PubrecDecode(buf)
	case packets.Pubrel:
		err = pk.PubrelDecode(buf)
	case packets.Pubcomp:
		err = pk.PubcompDecode(buf)
	case packets.Disconnect:
		err = pk.DisconnectDecode(buf)
	default:
		t.Fatalf("unexpected packet type %d", fh.Type)
	}
	require.NoError(t, err)
	return pk
}

// A QoS 2 message the client sends again before PUBREL (its PUBREC was
// lost) is acknowledged again with success and delivered once
// [MQTT-4.3.3-10].
func TestServerQos2SentTwiceDeliveredOnce(t *testing.T) {
	s := newServerWithInlineClient()
	var delivered atomic.Int32
	require.NoError(t, s.Subscribe("a/b/c", 1, func(*Client, packets.Subscription, packets.Packet) { delivered.Add(1) }))

	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5
	acks := make(chan packets.Packet, 3)
	go func() {
		br := bufio.NewReader(r)
		for i := 0; i < 3; i++ {
			acks <- readPacket(t, br, 5)
		}
	}()

	pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos2Mqtt5).Packet
	require.NoError(t, s.processPacket(cl, pk))
	pk.FixedHeader.Dup = true
	require.NoError(t, s.processPacket(cl, pk))
	for i := 0; i < 2; i++ {
		ack := <-acks
		require.Equal(t, packets.Pubrec, ack.FixedHeader.Type)
		require.Equal(t, pk.PacketID, ack.PacketID)
		require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode)
	}

	require.NoError(t, s.processPacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID}))
	comp := <-acks
	require.Equal(t, packets.Pubcomp, comp.FixedHeader.Type)
	require.Equal(t, packets.CodeSuccess.Code, comp.ReasonCode)
	require.Equal(t, int32(1), delivered.Load())
	require.Equal(t, 0, cl.State.Inflight.Len())
}

// The receive maximum limits QoS 1 and 2 messages [MQTT-3.3.4-7]; a QoS 0
// message is not refused when it is used up.
func TestServerReceiveMaximumSparesQos0(t *testing.T) {
	s := newServer()
	cl, _, _ := newTestClient()
	cl.Properties.ProtocolVersion = 5
	atomic.StoreInt32(&cl.State.Inflight.receiveQuota, 0)
	require.NoError(t, s.processPublish(cl, *packets.TPacketData[packets.Publish].Get(packets.TPublishBasicMqtt5).Packet))
	require.False(t, cl.Closed())
}

// With a client's receive maximum used up, messages wait in order; each
// PUBACK frees one place and lets one through, which then stays in flight
// until it is acknowledged itself [MQTT-3.3.4-9] [MQTT-4.9.0-3].
func TestServerReceiveMaximumOneMorePerAck(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	defer w.Close()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	cl.Properties.ProtocolVersion = 5
	cl.State.Inflight.ResetSendQuota(2)
	s.Clients.Add(cl)
	s.Topics.Subscribe(cl.ID, packets.Subscription{Filter: "a/b/c", Qos: 1})

	for i := 0; i < 5; i++ {
		s.publishToSubscribers(*packets.TPacketData[packets.Publish].Get(packets.TPublishQos1).Packet)
	}
	waitingIDs := func() (ids []uint16) {
		for _, pk := range cl.State.Inflight.GetAll(true) {
			ids = append(ids, pk.PacketID)
		}
		return ids
	}
	require.Equal(t, 5, cl.State.Inflight.Len())
	require.Equal(t, []uint16{3, 4, 5}, waitingIDs())

	ack := func(id uint16) {
		t.Helper()
		// As a client would, once it has received what was sent (the
		// test client's outbound queue holds only three).
		require.Eventually(t, func() bool { return atomic.LoadInt32(&cl.State.outboundQty) == 0 }, 5*time.Second, time.Millisecond)
		require.NoError(t, s.processPacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id}))
	}
	ack(1)
	require.Equal(t, []uint16{4, 5}, waitingIDs())
	require.Equal(t, 4, cl.State.Inflight.Len())
	require.Equal(t, int32(0), atomic.LoadInt32(&cl.State.Inflight.sendQuota))

	ack(2)
	ack(3) // the one released by the first PUBACK: it was in flight
	require.Empty(t, waitingIDs())
	require.Equal(t, 2, cl.State.Inflight.Len())
	require.Equal(t, int32(0), atomic.LoadInt32(&cl.State.Inflight.sendQuota))

	ack(4)
	ack(5)
	require.Equal(t, 0, cl.State.Inflight.Len())
	require.Equal(t, int32(2), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
}

// A message too large for the client is dropped as if it had been sent
// [MQTT-3.1.2-25]: it leaves the in-flight map and gives back its place of
// the client's receive maximum, so the message waiting for it goes.
func TestWriteLoopDiscardsTooLarge(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	defer w.Close()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.MaximumPacketSize = 40
	cl.State.Inflight.ResetSendQuota(1)
	s.Clients.Add(cl)
	s.Topics.Subscribe(cl.ID, packets.Subscription{Filter: "a/b/c", Qos: 1})

	big := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos1).Packet
	big.Payload = make([]byte, 100)
	small := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos1).Packet
	s.publishToSubscribers(big)   // packet id 1
	s.publishToSubscribers(small) // packet id 2, waits for the first

	require.Eventually(t, func() bool {
		_, bigThere := cl.State.Inflight.Get(1)
		return !bigThere && len(cl.State.Inflight.GetAll(true)) == 0
	}, 5*time.Second, time.Millisecond)
	_, ok := cl.State.Inflight.Get(2)
	require.True(t, ok)
	require.Equal(t, int32(0), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
}

// A retained message sent when a client subscribes carries the
// subscription's identifier [MQTT-3.3.4-3]; one whose expiry has passed is
// not sent, even before the once-a-second sweep deletes it [MQTT-3.3.2-5].
func TestPublishRetainedToClientIdentifierAndExpiry(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5

	now := time.Now().Unix()
	expired := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName: "a/old", Payload: []byte("old"), ProtocolVersion: 5, Created: now - 10, Expiry: now - 2}
	s.Topics.RetainMessage(expired)
	s.publishRetainedToClient(cl, packets.Subscription{Filter: "a/#", Identifier: 5}, false)
	require.Equal(t, int32(0), atomic.LoadInt32(&cl.State.outboundQty))

	fresh := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName: "a/new", Payload: []byte("new"), ProtocolVersion: 5, Created: now}
	s.Topics.RetainMessage(fresh)
	go s.publishRetainedToClient(cl, packets.Subscription{Filter: "a/#", Identifier: 5}, false)

	pk := readPacket(t, bufio.NewReader(r), 5)
	require.Equal(t, "a/new", pk.TopicName)
	require.Equal(t, []int{5}, pk.Properties.SubscriptionIdentifier)
}

// A message whose expiry passed while it was queued is not sent when the
// session resumes [MQTT-3.3.2-5].
func TestResendInflightMessagesDropsExpired(t *testing.T) {
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5
	now := time.Now().Unix()
	cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID: 1, TopicName: "a/short", ProtocolVersion: 5, Created: now - 5, Expiry: now - 2})
	cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID: 2, TopicName: "a/long", ProtocolVersion: 5, Created: now - 5, Expiry: now + 60})

	go func() { require.NoError(t, cl.ResendInflightMessages(true)) }()
	pk := readPacket(t, bufio.NewReader(r), 5)
	require.Equal(t, "a/long", pk.TopicName)
	require.True(t, pk.FixedHeader.Dup)
	require.Equal(t, 1, cl.State.Inflight.Len())
}

// A 5.0 session without an expiry interval ends with its connection
// [MQTT-3.1.2-23]: a client taking over the connection does not inherit
// it, even while the server has not yet deleted it.
func TestInheritClientSessionEndedWithConnection(t *testing.T) {
	s := newServer()
	existing, _, _ := newTestClient()
	existing.Net.Conn = nil // not connected: nothing to send the DISCONNECT to
	existing.ID = "mochi"
	existing.Properties.ProtocolVersion = 5
	existing.State.Subscriptions.Add("a/b/c", packets.Subscription{Filter: "a/b/c", Qos: 1})
	existing.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1})
	s.Clients.Add(existing)

	cl, _, _ := newTestClient()
	cl.Properties.ProtocolVersion = 5
	require.False(t, s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "mochi"}}, cl))
	require.Equal(t, 0, cl.State.Inflight.Len())
	require.Equal(t, 0, cl.State.Subscriptions.Len())
	require.True(t, existing.IsTakenOver())

	// With an expiry interval it is inherited.
	kept, _, _ := newTestClient()
	kept.Net.Conn = nil
	kept.ID = "mochi"
	kept.Properties.ProtocolVersion = 5
	kept.Properties.Props.SessionExpiryInterval = 30
	kept.State.Subscriptions.Add("a/b/c", packets.Subscription{Filter: "a/b/c", Qos: 1})
	kept.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1})
	s.Clients.Add(kept)

	cl, _, _ = newTestClient()
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.ReceiveMaximum = 3
	require.True(t, s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "mochi"}}, cl))
	require.Equal(t, 1, cl.State.Inflight.Len())
	require.Equal(t, 1, cl.State.Subscriptions.Len())
	// The inherited message in flight takes one of the new connection's places.
	require.Equal(t, int32(2), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
}

// A packet over the server's maximum size from a 5.0 client is answered
// with DISCONNECT 0x95 before the connection is closed (3.2.2.3.6,
// 4.13.1); the CONNACK announced the maximum.
func TestEstablishConnectionPacketTooLarge(t *testing.T) {
	s := newServer()
	s.Options.Capabilities.MaximumPacketSize = 256 // the CONNECT is within it
	defer s.Close()

	r, w := net.Pipe()
	o := make(chan error)
	go func() { o <- s.EstablishConnection("tcp", r) }()

	recv := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(w) // until the server closes the connection
		recv <- b
	}()

	_, err := w.Write(packets.TPacketData[packets.Connect].Get(packets.TConnectMqtt5).RawBytes)
	require.NoError(t, err)
	_, _ = w.Write([]byte{packets.Publish << 4, 0x90, 0x03}) // 400 bytes to follow

	require.ErrorIs(t, <-o, packets.ErrPacketTooLarge)
	br := bufio.NewReader(bytes.NewReader(<-recv))
	connack := readPacket(t, br, 5)
	require.Equal(t, packets.Connack, connack.FixedHeader.Type)
	require.Equal(t, uint32(256), connack.Properties.MaximumPacketSize)
	disconnect := readPacket(t, br, 5)
	require.Equal(t, packets.Disconnect, disconnect.FixedHeader.Type)
	require.Equal(t, packets.ErrPacketTooLarge.Code, disconnect.ReasonCode)
}

// An alias the client never set is a protocol error (3.3.2.3.4), not an
// empty topic.
func TestServerProcessPublishTopicAliasNotSet(t *testing.T) {
	s := newServer()
	cl, _, _ := newTestClient()
	cl.Properties.ProtocolVersion = 5
	cl.State.TopicAliases.Inbound = NewInboundTopicAliases(10)

	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 5,
		Payload: []byte("x"), Properties: packets.Properties{TopicAlias: 3, TopicAliasFlag: true}}
	require.ErrorIs(t, s.processPublish(cl, pk), packets.ErrProtocolViolationTopicAliasNotSet)

	// Once set, it stands for its topic.
	pk.TopicName = "a/b/c"
	require.NoError(t, s.processPublish(cl, pk))
	pk.TopicName = ""
	require.NoError(t, s.processPublish(cl, pk))
}

// A message kept in flight names its topic, though the copy sent used a
// topic alias: aliases end with the connection [MQTT-3.3.2-7], and the
// message may be resent on the next one.
func TestPublishToClientInflightKeepsTopic(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	defer w.Close()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.TopicAliasMaximum = 5
	s.Clients.Add(cl)

	pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos1).Packet
	first, err := s.publishToClient(cl, packets.Subscription{Filter: "a/b/c", Qos: 1}, pk)
	require.NoError(t, err)
	second, err := s.publishToClient(cl, packets.Subscription{Filter: "a/b/c", Qos: 1}, pk)
	require.NoError(t, err)
	require.Equal(t, "", second.TopicName) // sent with the alias alone
	require.Equal(t, first.Properties.TopicAlias, second.Properties.TopicAlias)

	kept, ok := cl.State.Inflight.Get(second.PacketID)
	require.True(t, ok)
	require.Equal(t, "a/b/c", kept.TopicName)
	require.False(t, kept.Properties.TopicAliasFlag)
}
