package conformance_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// How long a case waits for something that should happen, and how long it
// watches for something that should not. The second bounds how late a
// wrong delivery can come and still be caught; the brokers answer on
// loopback in well under a millisecond.
const (
	wait  = 5 * time.Second
	quiet = 300 * time.Millisecond
)

// client5 is an MQTT 5.0 client driven packet by packet: paho.golang's
// codec over a plain socket. Unlike paho.golang's Client it hands a case
// every PUBLISH exactly as sent (its topic alias unresolved, all its
// subscription identifiers) and acknowledges only when told to.
type client5 struct {
	t    *testing.T
	conn net.Conn
	wmu  sync.Mutex

	pubs chan received               // PUBLISH packets from the server
	ctrl chan *packets.ControlPacket // every other packet from the server
	done chan struct{}               // closed when the connection has ended
	err  error                       // why it ended; read after done

	// autoAck acknowledges every PUBLISH (and PUBREL) the server sends.
	autoAck atomic.Bool
	lastID  atomic.Uint32

	connack *packets.Connack
}

// received is a PUBLISH the server sent, with its bytes on the wire.
type received struct {
	*packets.Publish
	raw []byte
	at  time.Time
}

// opts5 adjusts a CONNECT before it is sent.
type opts5 func(*packets.Connect)

// connect5 connects a client and fails the test unless the server accepts
// it. The client acknowledges what it receives until told otherwise.
func connect5(t *testing.T, b broker, id string, opts ...opts5) *client5 {
	t.Helper()
	c, ack := dial5(t, b, id, opts...)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNECT %s: CONNACK reason %#x", id, ack.ReasonCode)
	}
	return c
}

// dial5 connects a client and returns the server's CONNACK, whatever its
// reason code.
func dial5(t *testing.T, b broker, id string, opts ...opts5) (*client5, *packets.Connack) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.addr(), wait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &client5{
		t: t, conn: conn,
		pubs: make(chan received, 1000),
		ctrl: make(chan *packets.ControlPacket, 100),
		done: make(chan struct{}),
	}
	c.autoAck.Store(true)
	t.Cleanup(func() { c.conn.Close() })
	go c.read()

	cp := packets.NewControlPacket(packets.CONNECT)
	cn := cp.Content.(*packets.Connect)
	cn.ClientID, cn.CleanStart, cn.KeepAlive = id, true, 60
	for _, o := range opts {
		o(cn)
	}
	c.send(cp)
	c.connack = c.next(packets.CONNACK).Content.(*packets.Connack)
	return c, c.connack
}

// Options for connect5.
func keepAlive(s uint16) opts5 { return func(c *packets.Connect) { c.KeepAlive = s } }

// resume asks to continue the session, kept for expiry seconds after the
// connection ends.
func resume(expiry uint32) opts5 {
	return func(c *packets.Connect) {
		c.CleanStart = false
		c.Properties.SessionExpiryInterval = &expiry
	}
}

// sessionExpiry starts a new session kept for expiry seconds after the
// connection ends.
func sessionExpiry(expiry uint32) opts5 {
	return func(c *packets.Connect) { c.Properties.SessionExpiryInterval = &expiry }
}

func receiveMaximum(n uint16) opts5 {
	return func(c *packets.Connect) { c.Properties.ReceiveMaximum = &n }
}

func clientMaxPacketSize(n uint32) opts5 {
	return func(c *packets.Connect) { c.Properties.MaximumPacketSize = &n }
}

func clientTopicAliasMaximum(n uint16) opts5 {
	return func(c *packets.Connect) { c.Properties.TopicAliasMaximum = &n }
}

// will sets a will message; delay is its Will Delay Interval in seconds.
func will5(topic, payload string, qos byte, retain bool, delay uint32) opts5 {
	return func(c *packets.Connect) {
		c.WillFlag, c.WillTopic, c.WillMessage, c.WillQOS, c.WillRetain = true, topic, []byte(payload), qos, retain
		c.WillProperties = &packets.Properties{}
		if delay > 0 {
			c.WillProperties.WillDelayInterval = &delay
		}
	}
}

// read hands every packet from the server to pubs or ctrl, acknowledging
// publishes when autoAck is on.
func (c *client5) read() {
	defer close(c.done)
	r := bufio.NewReader(c.conn)
	for {
		var raw bytes.Buffer
		cp, err := packets.ReadPacket(io.TeeReader(r, &raw))
		if err != nil {
			c.err = err
			return
		}
		switch p := cp.Content.(type) {
		case *packets.Publish:
			c.pubs <- received{Publish: p, raw: raw.Bytes(), at: time.Now()}
			if c.autoAck.Load() {
				c.ack(p)
			}
		case *packets.Pubrel:
			if c.autoAck.Load() {
				c.sendQuiet(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBCOMP},
					Content: &packets.Pubcomp{PacketID: p.PacketID, Properties: &packets.Properties{}}})
				continue
			}
			c.ctrl <- cp
		default:
			c.ctrl <- cp
		}
	}
}

// ack acknowledges a PUBLISH from the server: PUBACK for QoS 1, PUBREC
// for QoS 2 (the PUBREL that follows is answered by read when autoAck is
// on, or by the case).
func (c *client5) ack(p *packets.Publish) {
	switch p.QoS {
	case 1:
		c.sendQuiet(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBACK},
			Content: &packets.Puback{PacketID: p.PacketID, Properties: &packets.Properties{}}})
	case 2:
		c.sendQuiet(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBREC},
			Content: &packets.Pubrec{PacketID: p.PacketID, Properties: &packets.Properties{}}})
	}
}

// sendQuiet writes a packet, ignoring a connection that has gone: read
// runs on after the case is over.
func (c *client5) sendQuiet(cp *packets.ControlPacket) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait))
	_, err := cp.WriteTo(c.conn)
	return err
}

// send writes a packet, failing the test if it cannot.
func (c *client5) send(cp *packets.ControlPacket) {
	c.t.Helper()
	if err := c.sendQuiet(cp); err != nil {
		c.t.Fatalf("send %s: %v", cp.PacketType(), err)
	}
}

// next returns the next packet other than PUBLISH, failing the test unless
// it has the type wanted.
func (c *client5) next(typ byte) *packets.ControlPacket {
	c.t.Helper()
	check := func(cp *packets.ControlPacket) *packets.ControlPacket {
		c.t.Helper()
		if cp.Type != typ {
			c.t.Fatalf("got %s, want %s", cp, packets.NewControlPacket(typ).PacketType())
		}
		return cp
	}
	select {
	case cp := <-c.ctrl:
		return check(cp)
	case <-c.done:
		// A packet read just before the end may still be queued: select
		// picks at random among the cases ready.
		select {
		case cp := <-c.ctrl:
			return check(cp)
		default:
		}
		c.t.Fatalf("connection closed while waiting for %s: %v", packets.NewControlPacket(typ).PacketType(), c.err)
	case <-time.After(wait):
		c.t.Fatalf("no %s within %v", packets.NewControlPacket(typ).PacketType(), wait)
	}
	return nil
}

func (c *client5) packetID() uint16 {
	for {
		if id := uint16(c.lastID.Add(1)); id != 0 {
			return id
		}
	}
}

// subscribe sends one SUBSCRIBE and returns the SUBACK's reason codes. A
// subscription identifier is sent when id > 0.
func (c *client5) subscribe(id int, subs ...packets.SubOptions) []byte {
	c.t.Helper()
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID, s.Subscriptions = c.packetID(), subs
	if id > 0 {
		s.Properties.SubscriptionIdentifier = &id
	}
	c.send(cp)
	reasons := c.next(packets.SUBACK).Content.(*packets.Suback).Reasons
	// The server may send the retained messages after the SUBACK (mochi
	// does); a message retained meanwhile by another client would then
	// arrive twice, live and retained.
	c.flush()
	return reasons
}

// sub subscribes to filters at a QoS, failing the test unless granted.
func (c *client5) sub(qos byte, filters ...string) {
	c.t.Helper()
	var subs []packets.SubOptions
	for _, f := range filters {
		subs = append(subs, packets.SubOptions{Topic: f, QoS: qos})
	}
	for i, r := range c.subscribe(0, subs...) {
		if r != qos {
			c.t.Fatalf("SUBACK for %s: %#x, want QoS %d granted", filters[i], r, qos)
		}
	}
}

// pub publishes a message and, for QoS 1 and 2, completes the exchange;
// it returns the reason code of the PUBACK or PUBREC. It returns once the
// server has passed the message on (see flush).
func (c *client5) pub(p *packets.Publish) byte {
	c.t.Helper()
	defer c.flush()
	return c.pubNoFlush(p)
}

// flush returns once the server has handled every packet the client sent
// before. A server may acknowledge a PUBLISH before it passes the message
// on (4.3.2 allows it; mochi does), so without this a case that publishes
// and then subscribes could see the message arrive as a live one too. A
// server handles a client's packets in order, so its PINGRESP comes after
// it has done with the PUBLISH before.
func (c *client5) flush() {
	c.t.Helper()
	c.send(packets.NewControlPacket(packets.PINGREQ))
	c.next(packets.PINGRESP)
}

func (c *client5) pubNoFlush(p *packets.Publish) byte {
	c.t.Helper()
	if p.Properties == nil {
		p.Properties = &packets.Properties{}
	}
	if p.QoS > 0 && p.PacketID == 0 {
		p.PacketID = c.packetID()
	}
	c.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH}, Content: p})
	switch p.QoS {
	case 1:
		return c.next(packets.PUBACK).Content.(*packets.Puback).ReasonCode
	case 2:
		rec := c.next(packets.PUBREC).Content.(*packets.Pubrec)
		if rec.ReasonCode >= 0x80 {
			return rec.ReasonCode
		}
		c.pubrel(p.PacketID)
		if comp := c.next(packets.PUBCOMP).Content.(*packets.Pubcomp); comp.ReasonCode != 0 {
			c.t.Fatalf("PUBCOMP reason %#x", comp.ReasonCode)
		}
		return rec.ReasonCode
	}
	return 0
}

func (c *client5) pubrel(id uint16) {
	c.t.Helper()
	cp := packets.NewControlPacket(packets.PUBREL)
	cp.Content.(*packets.Pubrel).PacketID = id
	c.send(cp)
}

// publish publishes a payload with no properties.
func (c *client5) publish(topic string, qos byte, retain bool, payload string) {
	c.t.Helper()
	if rc := c.pub(&packets.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)}); rc >= 0x80 {
		c.t.Fatalf("publish to %s: reason %#x", topic, rc)
	}
}

// expect returns the next PUBLISH, failing the test if none comes.
func (c *client5) expect() received {
	c.t.Helper()
	select {
	case r := <-c.pubs:
		return r
	case <-time.After(wait):
		c.t.Fatalf("no PUBLISH within %v", wait)
	}
	return received{}
}

// expectNone fails the test if a PUBLISH arrives within d.
func (c *client5) expectNone(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.pubs:
		c.t.Fatalf("unexpected PUBLISH to %q (%q, QoS %d, retain %t)", r.Topic, r.Payload, r.QoS, r.Retain)
	case <-time.After(d):
	}
}

// disconnect sends DISCONNECT with a reason code and closes the socket.
func (c *client5) disconnect(reason byte) {
	c.t.Helper()
	cp := packets.NewControlPacket(packets.DISCONNECT)
	cp.Content.(*packets.Disconnect).ReasonCode = reason
	c.send(cp)
	c.closed()
	c.conn.Close()
}

// drop closes the socket without a DISCONNECT: an abnormal disconnect.
func (c *client5) drop() { c.conn.Close() }

// closed waits until the server has closed the connection and returns
// the DISCONNECT it sent before, or nil.
func (c *client5) closed() *packets.Disconnect {
	c.t.Helper()
	return c.closedWithin(wait)
}

// closedWithin is closed with a deadline of its own.
func (c *client5) closedWithin(within time.Duration) *packets.Disconnect {
	c.t.Helper()
	var d *packets.Disconnect
	timeout := time.After(within)
	for {
		select {
		case cp := <-c.ctrl:
			if p, ok := cp.Content.(*packets.Disconnect); ok {
				d = p
			}
		case <-c.done:
			// Packets read just before the end may still be queued.
			for {
				select {
				case cp := <-c.ctrl:
					if p, ok := cp.Content.(*packets.Disconnect); ok {
						d = p
					}
				default:
					return d
				}
			}
		case <-timeout:
			c.t.Fatalf("the server did not close the connection within %v", within)
		}
	}
}

// subscriptionIDs returns every Subscription Identifier of a PUBLISH. The
// codec keeps only the last one; the specification allows several.
func (r received) subscriptionIDs() []int {
	b := r.raw
	// Fixed header: type and flags, then the remaining length.
	b = b[1:]
	_, n := uvarint(b)
	b = b[n:]
	topicLen := int(binary.BigEndian.Uint16(b))
	b = b[2+topicLen:]
	if r.QoS > 0 {
		b = b[2:]
	}
	propLen, n := uvarint(b)
	props := b[n : n+propLen]
	var ids []int
	for len(props) > 0 {
		id := props[0]
		props = props[1:]
		switch id {
		case packets.PropPayloadFormat:
			props = props[1:]
		case packets.PropMessageExpiry:
			props = props[4:]
		case packets.PropTopicAlias:
			props = props[2:]
		case packets.PropContentType, packets.PropResponseTopic, packets.PropCorrelationData:
			props = props[2+int(binary.BigEndian.Uint16(props)):]
		case packets.PropUser:
			for range 2 {
				props = props[2+int(binary.BigEndian.Uint16(props)):]
			}
		case packets.PropSubscriptionIdentifier:
			v, n := uvarint(props)
			ids = append(ids, v)
			props = props[n:]
		default:
			panic(errors.New("unknown PUBLISH property"))
		}
	}
	return ids
}

// uvarint decodes an MQTT variable byte integer and its length.
func uvarint(b []byte) (int, int) {
	v, mul := 0, 1
	for i, c := range b {
		v += int(c&0x7f) * mul
		if c&0x80 == 0 {
			return v, i + 1
		}
		mul *= 128
	}
	panic("truncated variable byte integer")
}
