package mqtt

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Connack codes the tests expect.
const (
	v5NotAuthorized = 0x87
	v3NotAuthorized = 0x05
)

func TestAuthentication(t *testing.T) {
	p := pki()
	cases := []struct {
		name    string
		creds   creds
		lab     bool
		tlsOnly bool // a client certificate needs a TLS listener
		ok      bool
	}{
		{name: "a device with its token is accepted", creds: token("d1"), ok: true},
		{name: "a device with a wrong token is refused", creds: creds{user: "d1", pass: "d1.wrong"}},
		{name: "a token of another device is refused", creds: creds{user: "d1", pass: "d2.secret"}},
		{name: "a username without a password is refused", creds: creds{user: "d1"}},
		{name: "a client without credentials is refused outside lab mode", creds: creds{}},
		{name: "a client without credentials is accepted in lab mode", creds: creds{}, lab: true, ok: true},
		{name: "a wrong token is refused even in lab mode", creds: creds{user: "d1", pass: "nope"}, lab: true},
		{name: "a device with its certificate is accepted", creds: creds{cert: &p.d1}, tlsOnly: true, ok: true},
		{name: "a certificate with its device's username is accepted", creds: creds{user: "d1", cert: &p.d1}, tlsOnly: true, ok: true},
		{name: "a certificate with its device's token is accepted", creds: creds{user: "d1", pass: "d1.secret", cert: &p.d1}, tlsOnly: true, ok: true},
		{name: "a certificate with another device's username is refused", creds: creds{user: "d2", cert: &p.d1}, tlsOnly: true},
		{name: "a certificate with a wrong password is refused", creds: creds{user: "d1", pass: "nope", cert: &p.d1}, tlsOnly: true},
		{name: "an untrusted certificate is refused", creds: creds{cert: &p.untrusted}, tlsOnly: true},
		{name: "an untrusted certificate is refused even with the right token", creds: creds{user: "d1", pass: "d1.secret", cert: &p.untrusted}, tlsOnly: true},
		{name: "an untrusted certificate is refused even in lab mode", creds: creds{cert: &p.untrusted}, tlsOnly: true, lab: true},
	}
	for _, lab := range []bool{false, true} {
		tg := startGateway(t, func(o *Options) { o.AllowAnonymous = lab })
		for _, tc := range cases {
			if tc.lab != lab {
				continue
			}
			for _, tr := range transports {
				if tc.tlsOnly && (tr == "tcp" || tr == "ws") {
					continue
				}
				t.Run(tc.name+" over "+tr+" with 3.1.1", func(t *testing.T) {
					cl, code, err := tg.connect3(t, tr, tc.creds, opts3{})
					switch {
					case tc.ok && err != nil:
						t.Fatalf("refused: %v (return code %d)", err, code)
					case !tc.ok && err == nil:
						cl.Disconnect(0)
						t.Fatal("accepted")
					case !tc.ok && code != v3NotAuthorized:
						t.Fatalf("return code %d, want %d (not authorized)", code, v3NotAuthorized)
					}
				})
				t.Run(tc.name+" over "+tr+" with 5.0", func(t *testing.T) {
					_, ca, err := tg.connect5(t, tr, tc.creds, opts5{})
					switch {
					case tc.ok && err != nil:
						t.Fatalf("refused: %v (connack %+v)", err, ca)
					case !tc.ok && err == nil:
						t.Fatal("accepted")
					case !tc.ok && (ca == nil || ca.ReasonCode != v5NotAuthorized):
						t.Fatalf("connack %+v (%v), want reason code %#x (not authorized)", ca, err, v5NotAuthorized)
					}
				})
			}
		}
	}
}

func TestListeners(t *testing.T) {
	p := pki()
	tg := startGateway(t, func(o *Options) { o.AllowAnonymous = true })

	t.Run("the four listeners serve one broker", func(t *testing.T) {
		// A device subscribed over secure WebSocket with its certificate
		// receives what it publishes over plain TCP with its token, and
		// what it publishes over TLS and WebSocket with 5.0.
		sub := tg.mustConnect3(t, "wss", creds{cert: &p.d1}, opts3{})
		sub.subscribe(t, "devices/d1/#", 1)
		tg.mustConnect3(t, "tcp", token("d1"), opts3{}).publish(t, "devices/d1/a", 1, false, "from tcp")
		tg.mustConnect5(t, "ssl", creds{cert: &p.d1}, opts5{}).publish(t, "devices/d1/b", 1, false, "from tls")
		tg.mustConnect5(t, "ws", token("d1"), opts5{}).publish(t, "devices/d1/c", 1, false, "from ws")
		got := map[string]string{}
		for range 3 {
			m := receive(t, sub.msgs, "a message from another listener")
			got[m.Topic()] = string(m.Payload())
		}
		want := map[string]string{"devices/d1/a": "from tcp", "devices/d1/b": "from tls", "devices/d1/c": "from ws"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: got %q, want %q", k, got[k], v)
			}
		}
	})

	t.Run("websocket is served on /mqtt only", func(t *testing.T) {
		d := &websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		_, resp, err := d.Dial("ws://"+tg.WSAddr()+"/other", nil)
		if err == nil {
			t.Fatal("upgraded on /other")
		}
		if resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("response %v, want 404", resp)
		}
	})

	t.Run("websocket needs the mqtt subprotocol", func(t *testing.T) {
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		_, resp, err := d.Dial("ws://"+tg.WSAddr()+wsPath, nil)
		if err == nil {
			t.Fatal("upgraded without a subprotocol")
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("response %v, want 400", resp)
		}
	})

	t.Run("websocket answers with the mqtt subprotocol", func(t *testing.T) {
		d := &websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial("ws://"+tg.WSAddr()+wsPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" {
			t.Fatalf("subprotocol %q, want mqtt", got)
		}
	})

	t.Run("the accessors report the bound addresses", func(t *testing.T) {
		for name, addr := range map[string]string{"Addr": tg.Addr(), "TLSAddr": tg.TLSAddr(), "WSAddr": tg.WSAddr(), "WSSAddr": tg.WSSAddr()} {
			if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
				t.Errorf("%s() = %q", name, addr)
			}
		}
	})

	t.Run("a listener left empty is off", func(t *testing.T) {
		tcpOnly := startGateway(t, func(o *Options) { o.TLSAddr, o.WSAddr, o.WSSAddr, o.TLS = "", "", "", nil })
		if tcpOnly.TLSAddr() != "" || tcpOnly.WSAddr() != "" || tcpOnly.WSSAddr() != "" {
			t.Fatalf("addresses %q %q %q, want empty", tcpOnly.TLSAddr(), tcpOnly.WSAddr(), tcpOnly.WSSAddr())
		}
	})

	t.Run("a TLS listener without a TLS configuration is an error", func(t *testing.T) {
		_, err := New(newFakeAuth(p), newFakeIngest(), Options{TLSAddr: "127.0.0.1:0"})
		if err == nil {
			t.Fatal("New succeeded")
		}
	})
}
