// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight holds a client's QoS 1 and 2 messages whose exchange has not
// finished, in two maps keyed on packet id: outbound messages, which the
// server sent (or will send) to the client under the server's own packet
// ids, and inbound acknowledgements, which the server sent for the client's
// QoS 2 messages under the client's packet ids. Client and server number
// their packets independently (2.2.1), so the same id may be in both.
//
// A packet's type says which map it belongs to: PUBLISH and PUBREL are
// outbound, PUBACK, PUBREC and PUBCOMP inbound.
//
// Every message keeps the order it was added in, which is the order it is
// sent and resent in [MQTT-4.6.0-5] [MQTT-4.6.0-6]. An outbound
// message added while the client's receive maximum is used up waits, in
// order, until an acknowledgement makes room for it [MQTT-3.3.4-9].
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]inflightEntry // outbound messages, by the server's packet id
	inbound             map[uint16]inflightEntry // acknowledgements of the client's messages, by its packet id
	queue               []waitingEntry           // outbound messages waiting for send quota, oldest first (may hold stale entries)
	seq                 uint64                   // the sequence number of the last message added
	receiveQuota        int32                    // remaining inbound qos quota for flow control
	sendQuota           int32                    // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                    // maximum allowed receive quota
	maximumSendQuota    int32                    // maximum allowed send quota
}

// inflightEntry is a message in flight with the order it was added in.
type inflightEntry struct {
	pk      packets.Packet
	seq     uint64
	waiting bool // outbound, not sent yet: waiting for send quota
}

// waitingEntry names a waiting message; seq tells it from a later message
// under the same packet id.
type waitingEntry struct {
	id  uint16
	seq uint64
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]inflightEntry{},
		inbound:  map[uint16]inflightEntry{},
	}
}

// isInbound reports whether an in-flight packet of this type belongs to
// an exchange the client began.
func isInbound(packetType byte) bool {
	return packetType == packets.Puback || packetType == packets.Pubrec || packetType == packets.Pubcomp
}

// Set adds or updates an inflight packet by packet id, in the map its type
// belongs to. An update keeps the message's place in the order. Returns
// true if the packet was new. A new outbound message counts as sent, and a
// new inbound acknowledgement as received, against the quotas.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	if isInbound(m.FixedHeader.Type) {
		if e, ok := i.inbound[m.PacketID]; ok {
			e.pk = m
			i.inbound[m.PacketID] = e
			return false
		}
		i.seq++
		i.inbound[m.PacketID] = inflightEntry{pk: m, seq: i.seq}
		i.DecreaseReceiveQuota()
		return true
	}

	if e, ok := i.internal[m.PacketID]; ok {
		e.pk = m
		i.internal[m.PacketID] = e
		return false
	}
	i.seq++
	i.internal[m.PacketID] = inflightEntry{pk: m, seq: i.seq}
	i.DecreaseSendQuota()
	return true
}

// enqueue adds a new outbound message and reports whether it may be sent
// now: there is send quota for it, and no earlier message is waiting. If
// not, it waits for [Inflight.releaseWaiting].
func (i *Inflight) enqueue(m packets.Packet) (send bool) {
	i.Lock()
	defer i.Unlock()

	i.seq++
	e := inflightEntry{pk: m, seq: i.seq}
	if atomic.LoadInt32(&i.maximumSendQuota) > 0 && (atomic.LoadInt32(&i.sendQuota) == 0 || i.waitingLen() > 0) {
		e.waiting = true
		i.internal[m.PacketID] = e
		i.queue = append(i.queue, waitingEntry{id: m.PacketID, seq: e.seq})
		return false
	}

	i.internal[m.PacketID] = e
	i.DecreaseSendQuota()
	return true
}

// waitingLen drops stale entries from the front of the queue and returns
// its length. Called with i locked.
func (i *Inflight) waitingLen() int {
	for len(i.queue) > 0 {
		w := i.queue[0]
		if e, ok := i.internal[w.id]; ok && e.seq == w.seq && e.waiting {
			break
		}
		i.queue = i.queue[1:]
	}
	if len(i.queue) == 0 {
		i.queue = nil
	}
	return len(i.queue)
}

// hasWaiting reports whether any outbound message may be waiting for send
// quota (or the queue holds only stale entries): a cheap test before
// [Inflight.releaseWaiting], which takes the write lock.
func (i *Inflight) hasWaiting() bool {
	i.RLock()
	defer i.RUnlock()
	return len(i.queue) > 0
}

// releaseWaiting passes waiting messages, oldest first, to send while
// there is send quota for them, counting each as sent. A message send
// refuses stays waiting, and so do the ones after it. send is called with
// the inflight map locked, so that messages released by two goroutines at
// once keep their order; it must not block or call back into the map.
func (i *Inflight) releaseWaiting(send func(pk packets.Packet) bool) {
	i.Lock()
	defer i.Unlock()

	for i.waitingLen() > 0 && atomic.LoadInt32(&i.sendQuota) > 0 {
		w := i.queue[0]
		e := i.internal[w.id]
		i.DecreaseSendQuota() // before it can reach the client and be acknowledged
		if !send(e.pk) {
			i.IncreaseSendQuota()
			return
		}
		e.waiting = false
		i.internal[w.id] = e
		i.queue = i.queue[1:]
	}
}

// Get returns an outbound inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if e, ok := i.internal[id]; ok {
		return e.pk, true
	}

	return packets.Packet{}, false
}

// GetInbound returns the acknowledgement of an inbound message by the
// client's packet id.
func (i *Inflight) GetInbound(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if e, ok := i.inbound[id]; ok {
		return e.pk, true
	}

	return packets.Packet{}, false
}

// Len returns the number of inflight messages, inbound and outbound.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal) + len(i.inbound)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
// The quotas are not copied: the new connection sets its own.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	for k, v := range i.inbound {
		c.inbound[k] = v
	}
	c.queue = append([]waitingEntry(nil), i.queue...)
	c.seq = i.seq
	return c
}

// GetAll returns all the inflight messages, inbound and outbound, in the
// order they were added; if immediate is true, only the outbound messages
// waiting for send quota.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	return i.collect(func(e inflightEntry) bool { return !immediate || e.waiting })
}

// getSent returns the inflight messages that are not waiting for send
// quota, in the order they were added.
func (i *Inflight) getSent() []packets.Packet {
	return i.collect(func(e inflightEntry) bool { return !e.waiting })
}

func (i *Inflight) collect(keep func(e inflightEntry) bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	es := make([]inflightEntry, 0, len(i.internal)+len(i.inbound))
	for _, e := range i.internal {
		if keep(e) {
			es = append(es, e)
		}
	}
	for _, e := range i.inbound {
		if keep(e) {
			es = append(es, e)
		}
	}

	sort.Slice(es, func(a, b int) bool { return es[a].seq < es[b].seq })
	m := make([]packets.Packet, len(es))
	for k, e := range es {
		m[k] = e.pk
	}
	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()

	if i.waitingLen() > 0 {
		return i.internal[i.queue[0].id].pk, true
	}

	return packets.Packet{}, false
}

// Delete removes an outbound in-flight message from the map. Returns true
// if the message existed. A message that had been sent gives its send
// quota back.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	e, ok := i.internal[id]
	if !ok {
		return false
	}
	delete(i.internal, id)
	if !e.waiting {
		i.IncreaseSendQuota()
	}

	return true
}

// DeleteInbound removes the acknowledgement of an inbound message from
// the map and gives its receive quota back. Returns true if it existed.
func (i *Inflight) DeleteInbound(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	if _, ok := i.inbound[id]; !ok {
		return false
	}
	delete(i.inbound, id)
	i.IncreaseReceiveQuota()

	return true
}

// deletePacket removes an in-flight packet from the map its type belongs
// to.
func (i *Inflight) deletePacket(pk packets.Packet) bool {
	if isInbound(pk.FixedHeader.Type) {
		return i.DeleteInbound(pk.PacketID)
	}
	return i.Delete(pk.PacketID)
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota sets the maximum receive quota, and the remaining
// quota to it less the inbound messages in flight.
func (i *Inflight) ResetReceiveQuota(n int32) {
	i.RLock()
	used := int32(len(i.inbound))
	i.RUnlock()
	atomic.StoreInt32(&i.receiveQuota, max(n-used, 0))
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota sets the maximum send quota, and the remaining quota to
// it less the outbound messages sent and not yet acknowledged.
func (i *Inflight) ResetSendQuota(n int32) {
	i.RLock()
	var used int32
	for _, e := range i.internal {
		if !e.waiting {
			used++
		}
	}
	i.RUnlock()
	atomic.StoreInt32(&i.sendQuota, max(n-used, 0))
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
