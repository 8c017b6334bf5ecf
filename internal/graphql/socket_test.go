package graphql_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/graphql"
	"github.com/tether-iot/tether/internal/stream"
	"github.com/tether-iot/tether/internal/testkit"
)

// closed reads until the socket closes and returns its close frame.
func (c *wsConn) closed() *websocket.CloseError {
	c.t.Helper()
	for {
		m, err := c.next()
		if err == nil {
			if m.Type == "next" || m.Type == "error" {
				c.t.Logf("before the close: %s %s", m.Type, m.Payload)
			}
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("read: %v, want the socket closed", err)
		}
		return ce
	}
}

// createDevice runs createDevice for id as operation id over c and
// returns the first error's code ("" for none).
func (c *wsConn) createDevice(op, id string) string {
	c.t.Helper()
	c.send(op, "subscribe", map[string]string{"query": fmt.Sprintf(`mutation { createDevice(input: {id: %q}) { token } }`, id)})
	m := c.expect("next")
	var res testkit.GraphQLResult
	if err := json.Unmarshal(m.Payload, &res); err != nil {
		c.t.Fatal(err)
	}
	return res.Code()
}

func TestASocketEndsWhenItsCallerMayNoLongerCallTheAPI(t *testing.T) {
	t.Run("a key deleted while a socket authenticated by the upgrade is open: the next mutation is refused and the socket closed 4401", func(t *testing.T) {
		a := testkit.NewRevocable(authenticate)
		s := newServer(t, func(o *graphql.Options) { o.Authenticate = a.Authenticate })
		c := s.dial(t, http.Header{"Authorization": {"Bearer admin-key"}})
		c.send("", "connection_init", nil)
		c.expect("connection_ack")
		if code := c.createDevice("1", "d8"); code != "" {
			t.Fatalf("createDevice before the change: %s", code)
		}
		c.expect("complete")
		a.Revoke("admin-key")
		if code := c.createDevice("2", "d9"); code != tether.EUNAUTHORIZED {
			t.Errorf("createDevice after the key was deleted: code %q, want %s", code, tether.EUNAUTHORIZED)
		}
		if ce := c.closed(); ce.Code != 4401 {
			t.Errorf("close %d %q, want 4401", ce.Code, ce.Text)
		}
		s.mu.Lock()
		_, made := s.devices["d9"]
		s.mu.Unlock()
		if made {
			t.Error("the revoked caller's mutation ran")
		}
	})

	t.Run("a key deleted while a socket authenticated by connection_init is open: the socket closes 4401", func(t *testing.T) {
		a := testkit.NewRevocable(authenticate)
		s := newServer(t, func(o *graphql.Options) { o.Authenticate = a.Authenticate })
		c := s.dial(t, nil)
		c.send("", "connection_init", map[string]string{"Authorization": "Bearer admin-key"})
		c.expect("connection_ack")
		a.Revoke("admin-key")
		if code := c.createDevice("1", "d9"); code != tether.EUNAUTHORIZED {
			t.Errorf("createDevice: code %q, want %s", code, tether.EUNAUTHORIZED)
		}
		if ce := c.closed(); ce.Code != 4401 {
			t.Errorf("close %d %q, want 4401", ce.Code, ce.Text)
		}
	})

	t.Run("a demoted caller's operations run with its new role; one with no role left is closed 4403", func(t *testing.T) {
		a := testkit.NewRevocable(authenticate)
		s := newServer(t, func(o *graphql.Options) { o.Authenticate = a.Authenticate })
		c := s.dial(t, http.Header{"Authorization": {"Bearer admin-key"}})
		c.send("", "connection_init", nil)
		c.expect("connection_ack")
		a.Demote("admin-key", tether.RoleViewer)
		if code := c.createDevice("1", "d9"); code != tether.EFORBIDDEN {
			t.Errorf("createDevice as a viewer now: code %q, want %s", code, tether.EFORBIDDEN)
		}
		c.expect("complete")
		a.Demote("admin-key", "janitor")
		c.send("2", "subscribe", map[string]string{"query": `{ device(id: "d1") { id } }`})
		if m := c.expect("next"); !strings.Contains(string(m.Payload), tether.EFORBIDDEN) {
			t.Errorf("a query with no role: %s", m.Payload)
		}
		if ce := c.closed(); ce.Code != 4403 {
			t.Errorf("close %d %q, want 4403", ce.Code, ce.Text)
		}
	})

	for _, ch := range []struct {
		name   string
		change func(a *testkit.Revocable)
	}{
		{"signed out", func(a *testkit.Revocable) { a.Revoke("viewer-key") }},
		{"left with no role", func(a *testkit.Revocable) { a.Demote("viewer-key", "janitor") }},
	} {
		t.Run("a subscription's socket closes 1008 within the recheck interval once its caller is "+ch.name, func(t *testing.T) {
			a := testkit.NewRevocable(authenticate)
			fs := newFakeStream()
			s := newServer(t, func(o *graphql.Options) {
				o.Authenticate, o.Stream, o.Recheck = a.Authenticate, fs, 20*time.Millisecond
			})
			c := s.dial(t, http.Header{"Authorization": {"Bearer viewer-key"}})
			c.send("", "connection_init", nil)
			c.expect("connection_ack")
			c.send("1", "subscribe", map[string]string{"query": `subscription { events { kind } }`})
			waitSubscribed(t, fs)
			// The subscription goes on across rechecks while its caller may.
			time.Sleep(60 * time.Millisecond)
			fs.feed <- fakeEvent{ev: stream.Event{Kind: stream.KindPresence, DeviceID: "d1", Time: t0}}
			c.expect("next")
			ch.change(a)
			if ce := c.closed(); ce.Code != websocket.ClosePolicyViolation || ce.Text != stream.RevokedReason {
				t.Errorf("close %d %q, want 1008 %q", ce.Code, ce.Text, stream.RevokedReason)
			}
			select {
			case <-fs.closed:
			case <-time.After(5 * time.Second):
				t.Fatal("the stream subscription was not closed")
			}
		})
	}

	t.Run("an idle socket is not rechecked: its next operation is", func(t *testing.T) {
		a := testkit.NewRevocable(authenticate)
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) {
			o.Authenticate, o.Stream, o.Recheck = a.Authenticate, fs, 20*time.Millisecond
		})
		c := s.dial(t, http.Header{"Authorization": {"Bearer viewer-key"}})
		c.send("", "connection_init", nil)
		c.expect("connection_ack")
		time.Sleep(100 * time.Millisecond)
		idle := a.Calls()
		if idle != 1 {
			t.Errorf("%d authentications of an idle socket, want 1 (the upgrade's)", idle)
		}
	})
}

func TestOneSocketCannotTakeEveryStream(t *testing.T) {
	t.Run("a socket runs at most MaxSocketOperations at once", func(t *testing.T) {
		fs := newFakeStream()
		s := newServer(t, func(o *graphql.Options) { o.Stream, o.MaxSocketOperations = fs, 2 })
		c := s.dial(t, nil)
		c.start(`subscription { events { kind } }`)
		c.send("2", "subscribe", map[string]string{"query": `subscription { events { kind } }`})
		waitFor(t, func() bool {
			fs.mu.Lock()
			defer fs.mu.Unlock()
			return len(fs.filters) == 2
		})
		c.send("3", "subscribe", map[string]string{"query": `subscription { events { kind } }`})
		m := c.expect("next")
		if m.ID != "3" || !strings.Contains(string(m.Payload), tether.ETOOMANY) {
			t.Fatalf("the third operation: %+v %s, want too_many", m, m.Payload)
		}
		c.expect("complete")
		c.send("1", "complete", nil)
		<-fs.closed
		if m := c.expect("complete"); m.ID != "1" {
			t.Fatalf("got %+v, want the first one's complete", m)
		}
		// The first one's place is free again; the answer to a query
		// shows it (the next operation would be refused otherwise).
		deadline := time.Now().Add(5 * time.Second)
		for {
			c.send("4", "subscribe", map[string]string{"query": `{ device(id: "d1") { id } }`})
			m := c.expect("next")
			c.expect("complete")
			if !strings.Contains(string(m.Payload), tether.ETOOMANY) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the completed subscription's place was not freed")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	t.Run("the hub counts a caller's subscriptions over all its sockets", func(t *testing.T) {
		hub := stream.NewHub(stream.Options{MaxPerCaller: 3})
		t.Cleanup(hub.Close)
		s := newServer(t, func(o *graphql.Options) { o.Stream = hub })
		viewer := s.dial(t, nil)
		viewer.start(`subscription { events { kind } }`)
		viewer.send("2", "subscribe", map[string]string{"query": `subscription { events { kind } }`})
		other := s.dial(t, nil)
		other.start(`subscription { events { kind } }`)
		waitFor(t, func() bool { return hub.Stats().Subscribers == 3 })
		other.send("2", "subscribe", map[string]string{"query": `subscription { events { kind } }`})
		if m := other.expect("next"); m.ID != "2" || !strings.Contains(string(m.Payload), tether.ETOOMANY) {
			t.Errorf("the viewer's fourth subscription: %+v %s, want too_many", m, m.Payload)
		}
		// Another caller of the tenant still subscribes.
		admin := s.dial(t, nil)
		admin.send("", "connection_init", map[string]string{"Authorization": "Bearer admin-key"})
		admin.expect("connection_ack")
		admin.send("1", "subscribe", map[string]string{"query": `subscription { events { kind } }`})
		waitFor(t, func() bool { return hub.Stats().Subscribers == 4 })
	})
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
