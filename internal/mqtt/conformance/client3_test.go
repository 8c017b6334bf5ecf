package conformance_test

import (
	"bufio"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// client3 is an MQTT 3.1.1 client: paho.mqtt.golang, with every message
// it receives (on any subscription, or queued in its session) collected
// in order.
type client3 struct {
	paho.Client
	t    *testing.T
	msgs chan paho.Message

	mu   sync.Mutex
	conn net.Conn // the socket, so that a case can cut it
}

// opts3 adjusts a client's options.
type opts3 func(*paho.ClientOptions)

// persistent keeps the client's session after it disconnects.
func persistent(o *paho.ClientOptions) { o.SetCleanSession(false) }

func will3(topic, payload string, qos byte, retain bool) opts3 {
	return func(o *paho.ClientOptions) { o.SetWill(topic, payload, qos, retain) }
}

// connect3 connects a client, failing the test unless the server accepts.
func connect3(t *testing.T, b broker, id string, opts ...opts3) *client3 {
	t.Helper()
	c, tok := dial3(t, b, id, opts...)
	if err := tok.Error(); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

// dial3 connects a client and returns the token of the attempt, whatever
// its outcome.
func dial3(t *testing.T, b broker, id string, opts ...opts3) (*client3, *paho.ConnectToken) {
	t.Helper()
	c := &client3{t: t, msgs: make(chan paho.Message, 1000)}
	o := paho.NewClientOptions().
		AddBroker("tcp://" + b.addr()).
		SetClientID(id).
		SetProtocolVersion(4).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(wait).
		SetWriteTimeout(wait).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.msgs <- m }).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, wait)
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
			return conn, err
		})
	for _, f := range opts {
		f(o)
	}
	c.Client = paho.NewClient(o)
	tok := c.Connect().(*paho.ConnectToken)
	if !tok.WaitTimeout(2 * wait) {
		t.Fatalf("connect %s: no answer within %v", id, 2*wait)
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(0)
		}
	})
	return c, tok
}

// sub subscribes to a filter; messages go to c.msgs.
func (c *client3) sub(qos byte, filters ...string) {
	c.t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = qos
	}
	tok := c.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		c.t.Fatalf("subscribe %v: %v", filters, tok.Error())
	}
	for f, got := range tok.(*paho.SubscribeToken).Result() {
		if got != qos {
			c.t.Fatalf("SUBACK for %s: %#x, want QoS %d granted", f, got, qos)
		}
	}
	c.flush()
}

// flush returns once the server has handled every packet the client sent
// before (see client5.flush), with an UNSUBSCRIBE of a filter never
// subscribed to: paho.mqtt.golang sends PINGREQ only on its own schedule.
func (c *client3) flush() {
	c.t.Helper()
	if tok := c.Unsubscribe("conformance/flush"); !tok.WaitTimeout(wait) || tok.Error() != nil {
		c.t.Fatalf("unsubscribe (to flush): %v", tok.Error())
	}
}

// publish publishes, waits until the exchange for its QoS is complete
// and then until the server has passed the message on (see flush).
func (c *client3) publish(topic string, qos byte, retain bool, payload string) {
	c.t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		c.t.Fatalf("publish to %s: completed %t, %v", topic, tok.WaitTimeout(0), tok.Error())
	}
	c.flush()
}

// expect returns the next message, failing the test if none comes.
func (c *client3) expect() paho.Message {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait):
		c.t.Fatalf("no message within %v", wait)
	}
	return nil
}

// expectNone fails the test if a message arrives within d.
func (c *client3) expectNone(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("unexpected message on %q (%q, QoS %d, retain %t)", m.Topic(), m.Payload(), m.Qos(), m.Retained())
	case <-time.After(d):
	}
}

// disconnect sends DISCONNECT and closes the connection.
func (c *client3) disconnect() { c.Disconnect(250) }

// drop closes the socket without DISCONNECT: an abnormal disconnect.
func (c *client3) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.Close()
}

// raw3 is an MQTT 3.1.1 connection driven packet by packet with
// paho.mqtt.golang's codec, for what the client would not do: stay
// silent past its keep-alive, send a PUBLISH twice.
type raw3 struct {
	t    *testing.T
	conn net.Conn
	in   chan packets.ControlPacket
	done chan struct{}
	err  error
}

// dialRaw3 sends a CONNECT and returns the connection with the CONNACK.
func dialRaw3(t *testing.T, b broker, cn *packets.ConnectPacket) (*raw3, *packets.ConnackPacket) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.addr(), wait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &raw3{t: t, conn: conn, in: make(chan packets.ControlPacket, 100), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		r := bufio.NewReader(conn)
		for {
			cp, err := packets.ReadPacket(r)
			if err != nil {
				c.err = err
				return
			}
			c.in <- cp
		}
	}()
	c.send(cn)
	ack, ok := c.next().(*packets.ConnackPacket)
	if !ok {
		t.Fatalf("want CONNACK, got %v", ack)
	}
	return c, ack
}

// connectPacket3 returns a CONNECT for a clean session.
func connectPacket3(id string, keepAlive uint16) *packets.ConnectPacket {
	cn := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cn.ProtocolName, cn.ProtocolVersion = "MQTT", 4
	cn.ClientIdentifier, cn.CleanSession, cn.Keepalive = id, true, keepAlive
	return cn
}

func (c *raw3) send(p packets.ControlPacket) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait))
	if err := p.Write(c.conn); err != nil {
		c.t.Fatalf("send %s: %v", p, err)
	}
}

// next returns the next packet from the server.
func (c *raw3) next() packets.ControlPacket {
	c.t.Helper()
	select {
	case p := <-c.in:
		return p
	case <-c.done:
		// A packet read just before the end may still be queued: select
		// picks at random among the cases ready.
		select {
		case p := <-c.in:
			return p
		default:
		}
		c.t.Fatalf("connection closed: %v", c.err)
	case <-time.After(wait):
		c.t.Fatalf("no packet within %v", wait)
	}
	return nil
}

// closed waits until the server closes the connection.
func (c *raw3) closed() {
	c.t.Helper()
	c.closedWithin(wait)
}

// closedWithin is closed with a deadline of its own.
func (c *raw3) closedWithin(within time.Duration) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(within):
		c.t.Fatalf("the server did not close the connection within %v", within)
	}
}
