// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2022 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

func TestInflightSet(t *testing.T) {
	cl, _, _ := newTestClient()

	r := cl.State.Inflight.Set(packets.Packet{PacketID: 1})
	require.True(t, r)
	require.NotNil(t, cl.State.Inflight.internal[1])
	require.NotEqual(t, 0, cl.State.Inflight.internal[1].pk.PacketID)

	r = cl.State.Inflight.Set(packets.Packet{PacketID: 1})
	require.False(t, r)
}

func TestInflightGet(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.State.Inflight.Set(packets.Packet{PacketID: 2})

	msg, ok := cl.State.Inflight.Get(2)
	require.True(t, ok)
	require.NotEqual(t, 0, msg.PacketID)
}

func TestInflightGetAllAndImmediate(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.State.Inflight.Set(packets.Packet{PacketID: 1, Created: 1})
	cl.State.Inflight.Set(packets.Packet{PacketID: 2, Created: 2})
	atomic.StoreInt32(&cl.State.Inflight.sendQuota, 0)
	require.False(t, cl.State.Inflight.enqueue(packets.Packet{PacketID: 3, Created: 3}))
	require.False(t, cl.State.Inflight.enqueue(packets.Packet{PacketID: 4, Created: 4}))
	cl.State.Inflight.Set(packets.Packet{PacketID: 5, Created: 5})

	require.Equal(t, []packets.Packet{
		{PacketID: 1, Created: 1},
		{PacketID: 2, Created: 2},
		{PacketID: 3, Created: 3},
		{PacketID: 4, Created: 4},
		{PacketID: 5, Created: 5},
	}, cl.State.Inflight.GetAll(false))

	require.Equal(t, []packets.Packet{
		{PacketID: 3, Created: 3},
		{PacketID: 4, Created: 4},
	}, cl.State.Inflight.GetAll(true))
}

// Messages are kept in the order they were added, not sorted by the
// second they were created in, nor by packet id [MQTT-4.6.0-6].
func TestInflightGetAllKeepsOrder(t *testing.T) {
	cl, _, _ := newTestClient()
	ids := []uint16{9, 3, 7, 1, 8, 2, 6, 4, 5, 10}
	for _, id := range ids {
		cl.State.Inflight.Set(packets.Packet{PacketID: id, Created: 100})
	}
	cl.State.Inflight.Set(packets.Packet{PacketID: 7, Created: 100, Payload: []byte("updated")}) // keeps its place

	var got []uint16
	for _, pk := range cl.State.Inflight.GetAll(false) {
		got = append(got, pk.PacketID)
	}
	require.Equal(t, ids, got)

	cloned := cl.State.Inflight.Clone()
	cloned.Set(packets.Packet{PacketID: 11, Created: 1})
	got = nil
	for _, pk := range cloned.GetAll(false) {
		got = append(got, pk.PacketID)
	}
	require.Equal(t, append(ids, 11), got)
}

// Client and server number their packets independently (2.2.1): an
// acknowledgement of the client's message and the server's own message
// under the same id are both kept.
func TestInflightInboundAndOutbound(t *testing.T) {
	cl, _, _ := newTestClient()
	out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7}
	rec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 7}
	require.True(t, cl.State.Inflight.Set(out))
	require.True(t, cl.State.Inflight.Set(rec))
	require.Equal(t, 2, cl.State.Inflight.Len())
	require.Equal(t, int32(4), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
	require.Equal(t, int32(9), atomic.LoadInt32(&cl.State.Inflight.receiveQuota))

	got, ok := cl.State.Inflight.Get(7)
	require.True(t, ok)
	require.Equal(t, out, got)
	got, ok = cl.State.Inflight.GetInbound(7)
	require.True(t, ok)
	require.Equal(t, rec, got)

	require.True(t, cl.State.Inflight.DeleteInbound(7))
	require.Equal(t, int32(10), atomic.LoadInt32(&cl.State.Inflight.receiveQuota))
	_, ok = cl.State.Inflight.Get(7)
	require.True(t, ok)
	require.False(t, cl.State.Inflight.DeleteInbound(7))

	require.True(t, cl.State.Inflight.Delete(7))
	require.Equal(t, int32(5), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
	require.Equal(t, 0, cl.State.Inflight.Len())
}

// With the send quota used up, messages wait in order; each one released
// takes the quota again and stays in flight [MQTT-3.3.4-9] [MQTT-4.9.0-3].
func TestInflightEnqueueAndRelease(t *testing.T) {
	i := NewInflights()
	i.ResetSendQuota(2)
	for id := uint16(1); id <= 5; id++ {
		require.Equal(t, id <= 2, i.enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id}))
	}
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))

	var sent []uint16
	send := func(pk packets.Packet) bool { sent = append(sent, pk.PacketID); return true }
	i.releaseWaiting(send)
	require.Empty(t, sent)

	require.True(t, i.Delete(1)) // acknowledged
	i.releaseWaiting(send)
	require.Equal(t, []uint16{3}, sent)
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))

	// A message that was waiting gives back no quota when it goes.
	require.True(t, i.Delete(5))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))

	require.True(t, i.Delete(2))
	require.True(t, i.Delete(3))
	i.releaseWaiting(func(packets.Packet) bool { return false }) // the outbound queue is full
	require.Equal(t, int32(2), atomic.LoadInt32(&i.sendQuota))
	i.releaseWaiting(send)
	require.Equal(t, []uint16{3, 4}, sent)
	require.Equal(t, int32(1), atomic.LoadInt32(&i.sendQuota))
	require.Empty(t, i.GetAll(true))
	_, ok := i.Get(4)
	require.True(t, ok)

	// A new message while none waits and quota is left goes at once.
	require.True(t, i.enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 6}))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))
}

// The quotas of a new connection count the messages it inherits in flight.
func TestInflightResetQuotasCountsInflight(t *testing.T) {
	i := NewInflights()
	i.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1})
	i.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 1})
	require.True(t, i.enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2})) // no quota set: sent

	c := i.Clone()
	c.ResetSendQuota(3)
	c.ResetReceiveQuota(3)
	require.Equal(t, int32(3), atomic.LoadInt32(&c.maximumSendQuota))
	require.Equal(t, int32(1), atomic.LoadInt32(&c.sendQuota)) // 1 and 2 were sent
	require.Equal(t, int32(2), atomic.LoadInt32(&c.receiveQuota))
}

func TestInflightLen(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.State.Inflight.Set(packets.Packet{PacketID: 2})
	require.Equal(t, 1, cl.State.Inflight.Len())
}

func TestInflightClone(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.State.Inflight.Set(packets.Packet{PacketID: 2})
	require.Equal(t, 1, cl.State.Inflight.Len())

	cloned := cl.State.Inflight.Clone()
	require.NotNil(t, cloned)
	require.NotSame(t, cloned, cl.State.Inflight)
}

func TestInflightDelete(t *testing.T) {
	cl, _, _ := newTestClient()

	cl.State.Inflight.Set(packets.Packet{PacketID: 3})
	require.NotNil(t, cl.State.Inflight.internal[3])

	r := cl.State.Inflight.Delete(3)
	require.True(t, r)
	require.Equal(t, uint16(0), cl.State.Inflight.internal[3].pk.PacketID)

	_, ok := cl.State.Inflight.Get(3)
	require.False(t, ok)

	r = cl.State.Inflight.Delete(3)
	require.False(t, r)
}

func TestResetReceiveQuota(t *testing.T) {
	i := NewInflights()
	require.Equal(t, int32(0), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.receiveQuota))
	i.ResetReceiveQuota(6)
	require.Equal(t, int32(6), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(6), atomic.LoadInt32(&i.receiveQuota))
}

func TestReceiveQuota(t *testing.T) {
	i := NewInflights()
	i.receiveQuota = 4
	i.maximumReceiveQuota = 5
	require.Equal(t, int32(5), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(4), atomic.LoadInt32(&i.receiveQuota))

	// Return 1
	i.IncreaseReceiveQuota()
	require.Equal(t, int32(5), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(5), atomic.LoadInt32(&i.receiveQuota))

	// Try to go over max limit
	i.IncreaseReceiveQuota()
	require.Equal(t, int32(5), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(5), atomic.LoadInt32(&i.receiveQuota))

	// Reset to max 1
	i.ResetReceiveQuota(1)
	require.Equal(t, int32(1), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(1), atomic.LoadInt32(&i.receiveQuota))

	// Take 1
	i.DecreaseReceiveQuota()
	require.Equal(t, int32(1), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.receiveQuota))

	// Try to go below zero
	i.DecreaseReceiveQuota()
	require.Equal(t, int32(1), atomic.LoadInt32(&i.maximumReceiveQuota))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.receiveQuota))
}

func TestResetSendQuota(t *testing.T) {
	i := NewInflights()
	require.Equal(t, int32(0), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))
	i.ResetSendQuota(6)
	require.Equal(t, int32(6), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(6), atomic.LoadInt32(&i.sendQuota))
}

func TestSendQuota(t *testing.T) {
	i := NewInflights()
	i.sendQuota = 4
	i.maximumSendQuota = 5
	require.Equal(t, int32(5), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(4), atomic.LoadInt32(&i.sendQuota))

	// Return 1
	i.IncreaseSendQuota()
	require.Equal(t, int32(5), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(5), atomic.LoadInt32(&i.sendQuota))

	// Try to go over max limit
	i.IncreaseSendQuota()
	require.Equal(t, int32(5), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(5), atomic.LoadInt32(&i.sendQuota))

	// Reset to max 1
	i.ResetSendQuota(1)
	require.Equal(t, int32(1), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(1), atomic.LoadInt32(&i.sendQuota))

	// Take 1
	i.DecreaseSendQuota()
	require.Equal(t, int32(1), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))

	// Try to go below zero
	i.DecreaseSendQuota()
	require.Equal(t, int32(1), atomic.LoadInt32(&i.maximumSendQuota))
	require.Equal(t, int32(0), atomic.LoadInt32(&i.sendQuota))
}

func TestNextImmediate(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.State.Inflight.Set(packets.Packet{PacketID: 1, Created: 1})
	cl.State.Inflight.Set(packets.Packet{PacketID: 2, Created: 2})
	atomic.StoreInt32(&cl.State.Inflight.sendQuota, 0)
	cl.State.Inflight.enqueue(packets.Packet{PacketID: 3, Created: 3})
	cl.State.Inflight.enqueue(packets.Packet{PacketID: 4, Created: 4})
	cl.State.Inflight.Set(packets.Packet{PacketID: 5, Created: 5})

	pk, ok := cl.State.Inflight.NextImmediate()
	require.True(t, ok)
	require.Equal(t, packets.Packet{PacketID: 3, Created: 3}, pk)

	r := cl.State.Inflight.Delete(3)
	require.True(t, r)

	pk, ok = cl.State.Inflight.NextImmediate()
	require.True(t, ok)
	require.Equal(t, packets.Packet{PacketID: 4, Created: 4}, pk)

	r = cl.State.Inflight.Delete(4)
	require.True(t, r)

	_, ok = cl.State.Inflight.NextImmediate()
	require.False(t, ok)
}
