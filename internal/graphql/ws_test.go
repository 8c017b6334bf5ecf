package graphql_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/graphql"
	"github.com/tether-iot/tether/internal/stream"
)

type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

type wsConn struct {
	t *testing.T
	c *websocket.Conn
}

// dial opens a graphql-transport-ws WebSocket to s with header.
func (s *server) dial(t *testing.T, h http.Header) *wsConn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(s.url, "http"), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &wsConn{t: t, c: c}
}

func (c *wsConn) send(id, typ string, payload any) {
	c.t.Helper()
	var raw json.RawMessage
	if payload != nil {
		raw, _ = json.Marshal(payload)
	}
	if err := c.c.WriteJSON(wsMsg{ID: id, Type: typ, Payload: raw}); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next message but a ping, which it answers.
func (c *wsConn) next() (wsMsg, error) {
	for {
		_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m wsMsg
		if err := c.c.ReadJSON(&m); err != nil {
			return m, err
		}
		if m.Type != "ping" {
			return m, nil
		}
		_ = c.c.WriteJSON(wsMsg{Type: "pong"})
	}
}

func (c *wsConn) expect(typ string) wsMsg {
	c.t.Helper()
	m, err := c.next()
	if err != nil || m.Type != typ {
		c.t.Fatalf("got %+v %s (%v), want %s", m, m.Payload, err, typ)
	}
	return m
}

// start authenticates as the viewer and subscribes with query as id 1.
func (c *wsConn) start(query string) {
	c.t.Helper()
	c.send("", "connection_init", map[string]string{"Authorization": "Bearer viewer-key"})
	c.expect("connection_ack")
	c.send("1", "subscribe", map[string]string{"query": query})
}

func telemetryEvent(device string, points string) fakeEvent {
	return fakeEvent{ev: stream.Event{Kind: stream.KindTelemetry, TenantID: tether.DefaultTenantID, DeviceID: device, Time: t0,
		Data: json.RawMessage(`{"points":[` + points + `]}`)}}
}

func TestSubscriptions(t *testing.T) {
	t.Run("telemetry: a lag notice comes first, then the points of the keys asked for", func(t *testing.T) {
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) { o.Stream = fs })
		c := s.dial(t, nil)
		c.start(`subscription { telemetry(deviceIds: ["d1"], keys: ["temp"], labels: [{key: "site", value: "lab"}]) { deviceId time points { key ts value } lagging dropped } }`)
		ev := telemetryEvent("d1", `{"key":"hum","ts":"2024-05-01T12:00:00Z","value":40},{"key":"temp","ts":"2024-05-01T12:00:00Z","value":21.5}`)
		ev.dropped = 3
		fs.feed <- ev
		if m := c.expect("next"); m.ID != "1" || !sameJSON(t, m.Payload, `{"data":{"telemetry":{"deviceId":null,"time":null,"points":[],"lagging":true,"dropped":3}}}`) {
			t.Errorf("lag = %s", m.Payload)
		}
		if m := c.expect("next"); !sameJSON(t, m.Payload, `{"data":{"telemetry":{"deviceId":"d1","time":"2024-05-01T12:00:00Z","points":[{"key":"temp","ts":"2024-05-01T12:00:00Z","value":21.5}],"lagging":false,"dropped":0}}}`) {
			t.Errorf("event = %s", m.Payload)
		}
		fs.mu.Lock()
		f := fs.filters[0]
		fs.mu.Unlock()
		if len(f.Kinds) != 1 || f.Kinds[0] != stream.KindTelemetry || len(f.Devices) != 1 || f.Devices[0] != "d1" || f.Labels["site"] != "lab" {
			t.Errorf("filter = %+v", f)
		}
	})

	t.Run("telemetry with none of the keys asked for is skipped", func(t *testing.T) {
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) { o.Stream = fs })
		c := s.dial(t, nil)
		c.start(`subscription { telemetry(keys: ["temp"]) { deviceId points { key } } }`)
		fs.feed <- telemetryEvent("d1", `{"key":"hum","ts":"2024-05-01T12:00:00Z","value":40}`)
		fs.feed <- telemetryEvent("d2", `{"key":"temp","ts":"2024-05-01T12:00:00Z","value":20}`)
		if m := c.expect("next"); !sameJSON(t, m.Payload, `{"data":{"telemetry":{"deviceId":"d2","points":[{"key":"temp"}]}}}`) {
			t.Errorf("event = %s", m.Payload)
		}
	})

	t.Run("events name their kind and carry the event's JSON", func(t *testing.T) {
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) { o.Stream = fs })
		c := s.dial(t, nil)
		c.start(`subscription { events(kinds: [PRESENCE, ALERT], profile: "thermo") { kind deviceId data lagging } }`)
		fs.feed <- fakeEvent{ev: stream.Event{Kind: stream.KindPresence, DeviceID: "d1", Time: t0, Data: json.RawMessage(`{"status":"online"}`)}}
		if m := c.expect("next"); !sameJSON(t, m.Payload, `{"data":{"events":{"kind":"PRESENCE","deviceId":"d1","data":{"status":"online"},"lagging":false}}}`) {
			t.Errorf("event = %s", m.Payload)
		}
		fs.mu.Lock()
		f := fs.filters[0]
		fs.mu.Unlock()
		if strings.Join(f.Kinds, ",") != "presence,alert" || f.Profile != "thermo" {
			t.Errorf("filter = %+v", f)
		}
	})

	t.Run("completing a subscription closes it at the stream", func(t *testing.T) {
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) { o.Stream = fs })
		c := s.dial(t, nil)
		c.start(`subscription { events { kind } }`)
		waitSubscribed(t, fs)
		c.send("1", "complete", nil)
		select {
		case <-fs.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the stream subscription was not closed")
		}
	})

	t.Run("closing the handler ends the sockets", func(t *testing.T) {
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) { o.Stream = fs })
		c := s.dial(t, nil)
		c.start(`subscription { events { kind } }`)
		waitSubscribed(t, fs)
		// The client reads as a real one does, answering the close.
		read := make(chan error, 1)
		go func() {
			for {
				if _, err := c.next(); err != nil {
					read <- err
					return
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.h.Close(ctx); err != nil {
			t.Fatal(err)
		}
		var ce *websocket.CloseError
		if err := <-read; !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
			t.Errorf("read after close: %v", err)
		}
		select {
		case <-fs.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the stream subscription was not closed")
		}
	})

	t.Run("without a stream, a subscription is unavailable", func(t *testing.T) {
		s := newServer(t, nil)
		c := s.dial(t, nil)
		c.start(`subscription { events { kind } }`)
		m, err := c.next()
		if err != nil || !strings.Contains(string(m.Payload), `"code":"unavailable"`) {
			t.Errorf("%+v %s %v", m, m.Payload, err)
		}
	})

	t.Run("a bad filter is refused by the stream's rules", func(t *testing.T) {
		s := newServer(t, func(o *graphql.Options) { o.Stream = newFakeStream() })
		c := s.dial(t, nil)
		ids := make([]string, 1001)
		for i := range ids {
			ids[i] = "d"
		}
		c.send("", "connection_init", map[string]string{"Authorization": "Bearer viewer-key"})
		c.expect("connection_ack")
		c.send("1", "subscribe", map[string]any{"query": `subscription($ids: [ID!]) { events(deviceIds: $ids) { kind } }`, "variables": map[string]any{"ids": ids}})
		m, err := c.next()
		if err != nil || !strings.Contains(string(m.Payload), "at most 1000") {
			t.Errorf("%+v %s %v", m, m.Payload, err)
		}
	})
}

// waitSubscribed waits for the resolver to have subscribed to fs.
func waitSubscribed(t *testing.T, fs *fakeStream) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fs.mu.Lock()
		n := len(fs.filters)
		fs.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no subscription")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebSocketAuthentication(t *testing.T) {
	cases := []struct {
		name    string
		header  http.Header
		payload any
		tokenFn bool // use Options.AuthenticateToken
		wantAck bool
		role    string
	}{
		{name: "a key in connection_init authenticates", payload: map[string]string{"Authorization": "Bearer operator-key"}, wantAck: true, role: "OPERATOR"},
		{name: "a key without the Bearer prefix is taken as it is", payload: map[string]string{"authorization": "viewer-key"}, wantAck: true, role: "VIEWER"},
		{name: "the upgrade's header authenticates without a payload", header: http.Header{"Authorization": {"Bearer admin-key"}}, wantAck: true, role: "ADMIN"},
		{name: "the payload wins over the header", header: http.Header{"Authorization": {"Bearer admin-key"}},
			payload: map[string]string{"Authorization": "Bearer viewer-key"}, wantAck: true, role: "VIEWER"},
		{name: "AuthenticateToken, when given, checks the payload's key", payload: map[string]string{"Authorization": "Bearer magic"}, tokenFn: true, wantAck: true, role: "OPERATOR"},
		{name: "no credentials are refused", payload: map[string]string{}},
		{name: "a wrong key is refused", payload: map[string]string{"Authorization": "Bearer wrong"}},
		{name: "a wrong key in the header and none in the payload is refused", header: http.Header{"Authorization": {"Bearer wrong"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, func(o *graphql.Options) {
				if c.tokenFn {
					o.AuthenticateToken = func(_ context.Context, token string) (*tether.Principal, error) {
						if token == "magic" {
							return keys["operator-key"], nil
						}
						return nil, tether.Errorf(tether.EUNAUTHORIZED, "no")
					}
				}
			})
			conn := s.dial(t, c.header)
			conn.send("", "connection_init", c.payload)
			m, err := conn.next()
			if !c.wantAck {
				for err == nil && m.Type != "connection_ack" {
					m, err = conn.next()
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != 4403 {
					t.Errorf("got %+v, %v; want a close with 4403", m, err)
				}
				return
			}
			if err != nil || m.Type != "connection_ack" {
				t.Fatalf("got %+v, %v", m, err)
			}
			conn.send("q", "subscribe", map[string]string{"query": `{ viewer { role } }`})
			if m := conn.expect("next"); !strings.Contains(string(m.Payload), `"role":"`+c.role+`"`) {
				t.Errorf("next = %s", m.Payload)
			}
		})
	}
}
