package mqtt

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
)

// CONNACK codes the tests expect.
const (
	v5QuotaExceeded          = 0x97
	v5ConnectionRateExceeded = 0x9F
	v3ServerUnavailable      = 0x03
	v3IdentifierRejected     = 0x02
)

func TestConnectionsPerDevice(t *testing.T) {
	tg := startGateway(t, func(o *Options) { o.MaxConnectionsPerDevice = 2 })

	a := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "a"})
	tg.mustConnect3(t, "ws", token("d1"), opts3{id: "b"})

	t.Run("a device's connection over the limit is refused", func(t *testing.T) {
		if _, ca, err := tg.connect5(t, "tcp", token("d1"), opts5{id: "c"}); err == nil || ca.ReasonCode != v5QuotaExceeded {
			t.Errorf("5.0: %v, connack %+v; want reason code %#x", err, ca, v5QuotaExceeded)
		}
		if _, code, err := tg.connect3(t, "tcp", token("d1"), opts3{id: "c"}); err == nil || code != v3ServerUnavailable {
			t.Errorf("3.1.1: %v, return code %d; want %d", err, code, v3ServerUnavailable)
		}
	})

	t.Run("another device has its own limit", func(t *testing.T) {
		tg.mustConnect5(t, "tcp", token("d2"), opts5{id: "c"})
	})

	t.Run("a reused client ID takes the connection over and is not counted", func(t *testing.T) {
		a2 := tg.mustConnect5(t, "ssl", token("d1"), opts5{id: "a"})
		d := receive(t, a.gone, "the DISCONNECT of the connection taken over")
		if d.ReasonCode != 0x8E {
			t.Errorf("DISCONNECT reason %#x, want 0x8e (session taken over)", d.ReasonCode)
		}
		if _, ca, err := tg.connect5(t, "tcp", token("d1"), opts5{id: "c"}); err == nil || ca.ReasonCode != v5QuotaExceeded {
			t.Errorf("after the takeover, a third connection: %v, connack %+v; want refused", err, ca)
		}
		// The device's own client ID is scoped, so another device's "a"
		// is another session.
		tg.mustConnect5(t, "tcp", token("d2"), opts5{id: "a"})
		nothing(t, a2.gone, "a DISCONNECT of the device's connection")
	})

	t.Run("a closed connection frees its place", func(t *testing.T) {
		x := tg.mustConnect5(t, "tcp", token("d2"), opts5{id: "x"})
		tg.mustConnect5(t, "tcp", token("d2"), opts5{id: "y"})
		if _, ca, err := tg.connect5(t, "tcp", token("d2"), opts5{id: "z"}); err == nil {
			t.Fatalf("third connection of d2 accepted (%+v)", ca)
		}
		_ = x.Disconnect(&paho5.Disconnect{})
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, _, err := tg.connect5(t, "tcp", token("d2"), opts5{id: "z"})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still refused after a disconnect: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestConnectRatePerIP(t *testing.T) {
	for _, v := range []string{"3.1.1", "5.0"} {
		t.Run("connects over the rate of an address are refused with "+v, func(t *testing.T) {
			// One a second, bursts of five.
			tg := startGateway(t, func(o *Options) { o.ConnectRatePerIP = 1; o.AllowAnonymous = true })
			for i := range 5 {
				if _, _, err := tg.connect3(t, "tcp", creds{}, opts3{}); err != nil {
					t.Fatalf("connect %d of the burst refused: %v", i+1, err)
				}
			}
			if v == "5.0" {
				_, ca, err := tg.connect5(t, "ws", creds{}, opts5{})
				if err == nil || ca.ReasonCode != v5ConnectionRateExceeded {
					t.Fatalf("sixth connect: %v, connack %+v; want reason code %#x", err, ca, v5ConnectionRateExceeded)
				}
			} else {
				_, code, err := tg.connect3(t, "ws", creds{}, opts3{})
				if err == nil || code != v3ServerUnavailable {
					t.Fatalf("sixth connect: %v, return code %d; want %d", err, code, v3ServerUnavailable)
				}
			}
		})
	}
}

func TestKeepAlive(t *testing.T) {
	tg := startGateway(t, func(o *Options) { o.MaxKeepAlive = 30 })
	for _, tc := range []struct {
		name      string
		keepAlive uint16
		server    uint16 // the Server Keep Alive expected in the CONNACK; 0 for none
	}{
		{"a 5.0 client asking for no keep-alive gets the maximum", 0, 30},
		{"a 5.0 client asking for more than the maximum gets the maximum", 60, 30},
		{"a 5.0 client asking for the maximum keeps it", 30, 0},
		{"a 5.0 client asking for less keeps it", 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connectRaw(t, tg.Addr(), tc.keepAlive, token("d1"))
			var got uint16
			if c.connack.Properties != nil && c.connack.Properties.ServerKeepAlive != nil {
				got = *c.connack.Properties.ServerKeepAlive
			}
			if c.connack.ReasonCode != 0 || got != tc.server {
				t.Fatalf("CONNACK reason %#x, server keep-alive %d; want success, %d", c.connack.ReasonCode, got, tc.server)
			}
		})
	}
	for _, tc := range []struct {
		name      string
		keepAlive time.Duration
		ok        bool
	}{
		{"a 3.1.1 client asking for no keep-alive is refused", 0, false},
		{"a 3.1.1 client asking for more than the maximum is refused", time.Minute, false},
		{"a 3.1.1 client asking for the maximum is accepted", 30 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka := tc.keepAlive
			if ka == 0 {
				ka = -1 // paho sends 0
			}
			_, code, err := tg.connect3(t, "tcp", token("d1"), opts3{keepAlive: ka})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (err == nil || code != v3IdentifierRejected):
				t.Fatalf("%v, return code %d; want %d (identifier rejected)", err, code, v3IdentifierRejected)
			}
		})
	}

	t.Run("a client silent past one and a half keep-alives is disconnected", func(t *testing.T) {
		short := startGateway(t, func(o *Options) { o.MaxKeepAlive = 1 })
		c := connectRaw(t, short.Addr(), 0, token("d1"))
		start := time.Now()
		if err := c.waitClosed(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < time.Second {
			t.Fatalf("closed after %v, before the keep-alive", took)
		}
	})
}

// rawClient is a 5.0 connection driven packet by packet, which sends
// nothing (no PINGREQ) unless told to.
type rawClient struct {
	net.Conn
	connack *packets.Connack
}

func connectRaw(t *testing.T, addr string, keepAlive uint16, c creds) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cp := &packets.Connect{
		ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: "raw", KeepAlive: keepAlive, CleanStart: true,
		Username: c.user, UsernameFlag: c.user != "", Password: []byte(c.pass), PasswordFlag: c.pass != "",
		Properties: &packets.Properties{},
	}
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	pk, err := packets.ReadPacket(conn)
	if err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	ca, ok := pk.Content.(*packets.Connack)
	if !ok {
		t.Fatalf("got %v, want CONNACK", pk)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &rawClient{Conn: conn, connack: ca}
}

// waitClosed reads until the server closes the connection, or fails after
// limit.
func waitClosed(c net.Conn, limit time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(limit))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errors.New("the connection is still open")
		}
		return nil // EOF, reset, or a TLS or WebSocket close
	}
}

func (c *rawClient) waitClosed(limit time.Duration) error { return waitClosed(c.Conn, limit) }

func TestConnectTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tg := startGateway(t, func(o *Options) { o.ConnectTimeout = timeout })
	p := pki()

	closedInTime := func(t *testing.T, c net.Conn) {
		t.Helper()
		start := time.Now()
		if err := waitClosed(c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < timeout/2 || took > 3*time.Second {
			t.Fatalf("closed after %v, want about %v", took, timeout)
		}
	}
	dialTCP := func(t *testing.T, addr string) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("a TCP socket that sends nothing is closed", func(t *testing.T) {
		closedInTime(t, dialTCP(t, tg.Addr()))
	})
	t.Run("a socket that never starts its TLS handshake is closed", func(t *testing.T) {
		closedInTime(t, dialTCP(t, tg.TLSAddr()))
	})
	t.Run("a TLS connection that never sends CONNECT is closed", func(t *testing.T) {
		c, err := tls.Dial("tcp", tg.TLSAddr(), p.clientTLS(&p.d1))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedInTime(t, c)
	})
	t.Run("a socket that never asks for the WebSocket upgrade is closed", func(t *testing.T) {
		closedInTime(t, dialTCP(t, tg.WSAddr()))
	})
	t.Run("a socket that never starts the TLS handshake for WSS is closed", func(t *testing.T) {
		closedInTime(t, dialTCP(t, tg.WSSAddr()))
	})
	t.Run("a WebSocket that never sends CONNECT is closed", func(t *testing.T) {
		d := &websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: p.clientTLS(nil)}
		for _, url := range []string{tg.url("ws"), tg.url("wss")} {
			c, _, err := d.Dial(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			closedInTime(t, &wsConn{Conn: c.NetConn(), ws: c})
			c.Close()
		}
	})
	t.Run("a CONNECT dripped a byte at a time is cut at the timeout", func(t *testing.T) {
		c := dialTCP(t, tg.Addr())
		var buf bytes.Buffer
		cp := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 4, ClientID: "slow", KeepAlive: 30, CleanStart: true}
		_, _ = cp.WriteTo(&buf)
		start := time.Now()
		for _, b := range buf.Bytes() {
			if _, err := c.Write([]byte{b}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := waitClosed(c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("closed after %v", took)
		}
	})
	t.Run("an authenticated client outlives the connect timeout", func(t *testing.T) {
		for _, tr := range transports {
			c := tg.mustConnect5(t, tr, token("d1"), opts5{keepAlive: 30})
			time.Sleep(2 * timeout)
			if code, _ := c.publish(t, "devices/d1/x", 1, false, "still here"); code != 0 {
				t.Fatalf("%s: PUBACK %#x", tr, code)
			}
		}
	})
}

func TestPublishRate(t *testing.T) {
	tg := startGateway(t, nil)
	tg.in.setBudget(3)

	t.Run("a 5.0 device over its publish rate gets quota exceeded", func(t *testing.T) {
		sub := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		sub.subscribe(t, "devices/d1/#", 1)
		pub := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		for i := range 3 {
			if code, _ := pub.publish(t, "devices/d1/x", 1, false, "ok"); code != 0 {
				t.Fatalf("publish %d within the budget: %#x", i+1, code)
			}
		}
		calls := tg.in.calls.Load()
		before := tg.in.acceptedCount()
		code, reason := pub.publish(t, "devices/d1/telemetry", 1, false, `{"t":1}`)
		if code != quotaExceeded || !strings.Contains(reason, "rate") {
			t.Errorf("QoS 1 over the rate: PUBACK %#x %q, want %#x with a reason", code, reason, quotaExceeded)
		}
		if code, _ := pub.publish(t, "devices/d1/x", 2, false, "x"); code != quotaExceeded {
			t.Errorf("QoS 2 over the rate: PUBREC %#x, want %#x", code, quotaExceeded)
		}
		pub.publish(t, "devices/d1/x", 0, false, "dropped")
		for range 3 {
			receive(t, sub.msgs, "a message within the budget")
		}
		// The QoS 0 publish was dropped: what arrives now is the notice
		// on the errors topic (QoS 0 has no acknowledgement to carry it).
		if m := receive(t, sub.msgs, "the notice"); m.Topic != "devices/d1/errors" {
			t.Fatalf("got a message on %s", m.Topic)
		}
		nothing(t, sub.msgs, "messages over the budget")
		if got := tg.in.calls.Load() - calls; got != 3 {
			t.Errorf("Allow called %d times for 3 publishes", got)
		}
		if tg.in.acceptedCount() != before {
			t.Error("telemetry over the rate was ingested")
		}
	})

	t.Run("a 3.1.1 device over its publish rate is cut off unacknowledged, not acknowledged and dropped", func(t *testing.T) {
		sub := tg.mustConnect3(t, "tcp", token("d2"), opts3{})
		sub.subscribe(t, "devices/d2/#", 1)
		pub := tg.mustConnect3(t, "tcp", token("d2"), opts3{})
		for range 3 {
			pub.publish(t, "devices/d2/x", 1, false, "ok")
		}
		refused := tg.in.refused.Load()
		tok := pub.Publish("devices/d2/x", 1, false, "over")
		tok.WaitTimeout(2 * time.Second)
		if tok.Error() == nil && pub.IsConnectionOpen() {
			t.Error("the publish over the rate was acknowledged")
		}
		if got := tg.in.refused.Load() - refused; got != 1 {
			t.Errorf("%d refusals counted, want 1", got)
		}
		var notices []map[string]any
		for range 4 {
			m := receive(t, sub.msgs, "three messages and a notice")
			if m.Topic() == "devices/d2/errors" {
				var n map[string]any
				if err := json.Unmarshal(m.Payload(), &n); err != nil {
					t.Fatal(err)
				}
				notices = append(notices, n)
			} else if string(m.Payload()) != "ok" {
				t.Errorf("received %q on %s", m.Payload(), m.Topic())
			}
		}
		if len(notices) != 1 || notices[0]["reason"] != "rate_limited" {
			t.Fatalf("notices %v, want one rate_limited notice", notices)
		}
	})
}

func TestRetainedBound(t *testing.T) {
	tg := startGateway(t, func(o *Options) { o.AllowAnonymous = true })
	tg.hook.retained.setBounds(2, 2)

	retainedOn := func(t *testing.T, filter string) map[string]string {
		t.Helper()
		c := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		if filter[0] == 'd' {
			c = tg.mustConnect5(t, "tcp", token(strings.Split(filter, "/")[1]), opts5{})
		}
		c.subscribe(t, filter, 1)
		got := map[string]string{}
		for {
			select {
			case m := <-c.msgs:
				// A live message (a late fan-out of an earlier publish)
				// is not a retained one.
				if m.Retain {
					got[m.Topic] = string(m.Payload)
				}
			case <-time.After(300 * time.Millisecond):
				return got
			}
		}
	}

	t.Run("a device's new retained topic over the bound is refused", func(t *testing.T) {
		d5 := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		d3 := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		d5.publish(t, "devices/d1/r1", 1, true, "1")
		d3.publish(t, "devices/d1/r2", 1, true, "2")
		code, reason := d5.publish(t, "devices/d1/r3", 1, true, "3")
		if code != quotaExceeded || !strings.Contains(reason, "retained") {
			t.Errorf("5.0 PUBACK %#x %q, want %#x with a reason", code, reason, quotaExceeded)
		}
		d3.publish(t, "devices/d1/r4", 1, true, "4") // acknowledged, not retained
		if code, _ := d5.publish(t, "devices/d1/r1", 1, true, "1 again"); code != 0 {
			t.Errorf("replacing a retained topic: PUBACK %#x", code)
		}
		if got := retainedOn(t, "devices/d1/#"); len(got) != 2 || got["devices/d1/r1"] != "1 again" || got["devices/d1/r2"] != "2" {
			t.Fatalf("retained %v", got)
		}
		// An empty retained message deletes, and makes room.
		d3.publish(t, "devices/d1/r2", 1, true, "")
		if code, _ := d5.publish(t, "devices/d1/r3", 1, true, "3"); code != 0 {
			t.Errorf("after a delete: PUBACK %#x", code)
		}
		if got := retainedOn(t, "devices/d1/#"); len(got) != 2 || got["devices/d1/r3"] != "3" {
			t.Fatalf("retained %v", got)
		}
	})

	t.Run("another device has its own bound", func(t *testing.T) {
		d := tg.mustConnect5(t, "tcp", token("d2"), opts5{})
		for _, r := range []string{"a", "b"} {
			if code, _ := d.publish(t, "devices/d2/"+r, 1, true, r); code != 0 {
				t.Fatalf("PUBACK %#x", code)
			}
		}
	})

	t.Run("anonymous clients share one bound", func(t *testing.T) {
		tg.mustConnect3(t, "tcp", creds{}, opts3{}).publish(t, "lab/a", 1, true, "a")
		tg.mustConnect3(t, "tcp", creds{}, opts3{}).publish(t, "lab/b", 1, true, "b")
		for _, topic := range []string{"lab/c", "$lab/c"} {
			if code, _ := tg.mustConnect5(t, "tcp", creds{}, opts5{}).publish(t, topic, 1, true, "c"); code != quotaExceeded {
				t.Errorf("%s: PUBACK %#x, want %#x", topic, code, quotaExceeded)
			}
		}
		if got := retainedOn(t, "lab/#"); len(got) != 2 {
			t.Fatalf("retained %v", got)
		}
	})
}
