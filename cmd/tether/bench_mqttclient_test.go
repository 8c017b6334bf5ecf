package main_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// mqttClient is the load generator's MQTT 3.1.1 client: CONNECT, PUBLISH
// at QoS 0 and 1, SUBSCRIBE and PUBACK over one TCP connection, with no
// goroutine of its own. It is written here rather than taken from paho
// because the load runs on the same two cores as the broker it measures:
// paho spends several goroutines, channel hand-offs and a token per
// publish, and with 1,000 clients that cost would be measured as well.
// The same client drives Tether and Mosquitto.
type mqttClient struct {
	conn net.Conn
	r    *bufio.Reader
	in   []byte // the body of the last packet read
	out  []byte // packets being written
	id   uint16 // the last packet identifier used
}

// errRefused is a CONNACK with a non-zero return code.
var errRefused = errors.New("connection refused by the broker")

// mqttKeepAlive is short of Tether's longest allowed keep-alive and far
// longer than any run: a subscriber that only receives sends nothing for
// the whole run, and must not be cut for it.
const mqttKeepAlive = 600

// dialMQTT connects with a clean session; user and pass may be empty.
func dialMQTT(addr, clientID, user, pass string) (*mqttClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	c := &mqttClient{conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}
	flags := byte(0x02) // clean session
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, mqttKeepAlive >> 8, mqttKeepAlive & 0xff}
	body = appendMQTTString(body, clientID)
	if user != "" {
		body = appendMQTTString(body, user)
	}
	if pass != "" {
		body = appendMQTTString(body, pass)
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	c.out = appendMQTTLength(append(c.out[:0], 0x10), len(body))
	if _, err := conn.Write(append(c.out, body...)); err != nil {
		conn.Close()
		return nil, err
	}
	h, ack, err := c.read()
	if err == nil && (h != 0x20 || len(ack) != 2) {
		err = fmt.Errorf("expected CONNACK, got packet %#x", h)
	} else if err == nil && ack[1] != 0 {
		err = fmt.Errorf("%w: CONNACK return code %d", errRefused, ack[1])
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// Close closes the connection without a DISCONNECT.
func (c *mqttClient) Close() error { return c.conn.Close() }

// publish sends one PUBLISH and returns its packet identifier (0 at QoS 0).
func (c *mqttClient) publish(topic string, qos byte, payload []byte) (uint16, error) {
	var id uint16
	if qos > 0 {
		id = c.nextID()
	}
	c.out = appendPublish(c.out[:0], topic, qos, id, payload)
	_, err := c.conn.Write(c.out)
	return id, err
}

// nextID returns the next packet identifier (never 0).
func (c *mqttClient) nextID() uint16 {
	if c.id++; c.id == 0 {
		c.id = 1
	}
	return c.id
}

// waitAck reads until the PUBACK of packet id.
func (c *mqttClient) waitAck(id uint16) error {
	for {
		h, body, err := c.read()
		if err != nil {
			return err
		}
		if h>>4 == 4 && len(body) >= 2 && uint16(body[0])<<8|uint16(body[1]) == id {
			return nil
		}
	}
}

// subscribe subscribes to one filter and waits for the SUBACK.
func (c *mqttClient) subscribe(filter string, qos byte) error {
	c.out = appendMQTTLength(append(c.out[:0], 0x82), 2+2+len(filter)+1)
	c.out = append(c.out, 0, 1)
	c.out = append(appendMQTTString(c.out, filter), qos)
	if _, err := c.conn.Write(c.out); err != nil {
		return err
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		h, body, err := c.read()
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", filter, err)
		}
		if h>>4 == 9 {
			if len(body) != 3 || body[2] == 0x80 {
				return fmt.Errorf("subscribe %s: refused (SUBACK % x)", filter, body)
			}
			return nil
		}
	}
}

// receive reads PUBLISH packets until the connection ends, calling fn with
// each one's topic and payload (valid only during the call). Those of
// QoS 1 are acknowledged, in batches whenever no more input is buffered.
func (c *mqttClient) receive(fn func(topic, payload []byte)) error {
	c.out = c.out[:0]
	for {
		h, body, err := c.read()
		if err != nil {
			return err
		}
		if h>>4 != 3 || len(body) < 2 {
			continue
		}
		end := 2 + (int(body[0])<<8 | int(body[1]))
		if end > len(body) {
			return fmt.Errorf("malformed PUBLISH")
		}
		topic, payload := body[2:end], body[end:]
		if (h>>1)&3 > 0 {
			if len(payload) < 2 {
				return fmt.Errorf("malformed PUBLISH")
			}
			c.out = append(c.out, 0x40, 2, payload[0], payload[1])
			payload = payload[2:]
		}
		fn(topic, payload)
		if len(c.out) > 0 && (c.r.Buffered() == 0 || len(c.out) >= 4<<10) {
			if _, err := c.conn.Write(c.out); err != nil {
				return err
			}
			c.out = c.out[:0]
		}
	}
}

// read reads one packet: its first byte and its body, which is valid until
// the next read.
func (c *mqttClient) read() (byte, []byte, error) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for shift := 0; ; shift += 7 {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		if shift > 21 {
			return 0, nil, errors.New("malformed remaining length")
		}
		n |= int(b&0x7f) << shift
		if b < 0x80 {
			break
		}
	}
	if cap(c.in) < n {
		c.in = make([]byte, n)
	}
	c.in = c.in[:n]
	_, err = io.ReadFull(c.r, c.in)
	return h, c.in, err
}

func appendMQTTString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

func appendMQTTLength(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}
