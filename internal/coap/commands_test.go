package coap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether/internal/coap"
)

// wireCommand is a command as the device receives it.
type wireCommand struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params"`
	OneWay bool            `json:"one_way"`
}

func decodeCommand(t *testing.T, b string) wireCommand {
	t.Helper()
	var c wireCommand
	dec := json.NewDecoder(strings.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("not a command: %v: %q", err, b)
	}
	return c
}

// observeCommands observes /commands with go-coap's client, which
// acknowledges each confirmable notification, and returns the bodies it
// receives, the registration response's (empty) first.
func observeCommands(t *testing.T, cc *udpClient.Conn) <-chan string {
	t.Helper()
	got := make(chan string, 16)
	_, err := cc.Observe(ctx(t), "/commands", func(m *pool.Message) {
		b, _ := m.ReadBody()
		got <- string(b)
	}, query("t="+token))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func observeCommandsRequest(obs uint32, tok []byte) message.Message {
	return message.Message{
		Type: message.Confirmable, Code: codes.GET, Token: tok,
		Options: message.Options{
			{ID: message.Observe, Value: uintOption(obs)},
			{ID: message.URIPath, Value: []byte("commands")},
			{ID: message.URIQuery, Value: []byte("t=" + token)},
		},
	}
}

func TestObserveCommands(t *testing.T) {
	t.Run("registering offers the queued commands, which arrive in order and are delivered once acknowledged", func(t *testing.T) {
		e := start(t)
		e.commands.add(deviceID, "c1", "reboot", "")
		e.commands.add(otherID, "x1", "reboot", "")
		e.commands.add(deviceID, "c2", "set_led", `{"on":true}`)
		cc := dialUDP(t, e)
		got := observeCommands(t, cc)
		if b := next(t, got); b != "" {
			t.Fatalf("registration answered %q, want no representation", b)
		}
		first, second := decodeCommand(t, next(t, got)), decodeCommand(t, next(t, got))
		if first.ID != "c1" || first.Name != "reboot" || first.Params != nil || second.ID != "c2" || string(second.Params) != `{"on":true}` {
			t.Fatalf("notifications %+v, %+v", first, second)
		}
		if calls := e.commands.readyCalls(); len(calls) != 1 || calls[0].device != deviceID || calls[0].tenant != "default" || calls[0].resumed {
			t.Errorf("Ready calls %+v, want one for %s with resumed false", calls, deviceID)
		}
		eventually(t, "both delivered", func() bool { return slices.Equal(e.commands.deliveredIDs(), []string{"c1", "c2"}) })
		if s := e.commands.status(otherID, "x1"); s != "queued" {
			t.Errorf("another device's command is %s", s)
		}
	})
	t.Run("Deliver hands a new command to the observer and is false without one", func(t *testing.T) {
		e := start(t)
		if e.g.Deliver(e.commands.add(deviceID, "early", "reboot", "")) {
			t.Fatal("Deliver took a command without an observer")
		}
		cc := dialUDP(t, e)
		got := observeCommands(t, cc)
		next(t, got)
		if c := decodeCommand(t, next(t, got)); c.ID != "early" {
			t.Fatalf("queued command %+v", c)
		}
		cmd := e.commands.add(deviceID, "c9", "beep", `{"times":2}`)
		cmd.OneWay = true
		if !e.g.Deliver(cmd) {
			t.Fatal("Deliver did not take the command")
		}
		if c := decodeCommand(t, next(t, got)); c.ID != "c9" || c.Name != "beep" || !c.OneWay || string(c.Params) != `{"times":2}` {
			t.Fatalf("notification %+v", c)
		}
		eventually(t, "c9 delivered", func() bool { return slices.Contains(e.commands.deliveredIDs(), "c9") })
		other := e.commands.add(otherID, "o1", "beep", "")
		if e.g.Deliver(other) {
			t.Error("Deliver took another device's command")
		}
		other.DeviceID, other.TenantID = deviceID, "another-tenant"
		if e.g.Deliver(other) {
			t.Error("Deliver took the command of a device of another tenant")
		}
	})
	t.Run("a command is delivered only once the device acknowledges its notification", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		c.send(observeCommandsRequest(0, []byte{3}))
		r := c.must(5 * time.Second)
		if r.Code != codes.Content || !hasObserve(r) || len(r.Payload) != 0 {
			t.Fatalf("registration answered %v", r.String())
		}
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
		if !e.g.Deliver(e.commands.add(deviceID, "c1", "reboot", "")) {
			t.Fatal("Deliver did not take the command")
		}
		n := c.must(5 * time.Second)
		if n.Type != message.Confirmable || !hasObserve(n) || decodeCommand(t, string(n.Payload)).ID != "c1" {
			t.Fatalf("notification %v", n.String())
		}
		if cf, _ := n.Options.ContentFormat(); cf != message.AppJSON {
			t.Errorf("Content-Format %v", cf)
		}
		time.Sleep(200 * time.Millisecond)
		if d := e.commands.deliveredIDs(); len(d) != 0 {
			t.Fatalf("delivered %v before the acknowledgement", d)
		}
		c.send(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: n.MessageID})
		eventually(t, "c1 delivered", func() bool { return slices.Equal(e.commands.deliveredIDs(), []string{"c1"}) })
	})
	t.Run("a reset notification delivers nothing and ends the observation", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		c.send(observeCommandsRequest(0, []byte{4}))
		c.must(5 * time.Second)
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
		e.g.Deliver(e.commands.add(deviceID, "c1", "reboot", ""))
		n := c.must(5 * time.Second)
		c.send(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: n.MessageID})
		eventually(t, "the observation to end", func() bool { return e.g.Observers(deviceID) == 0 })
		if d := e.commands.deliveredIDs(); len(d) != 0 {
			t.Errorf("delivered %v", d)
		}
	})
	t.Run("deregistering with Observe 1 hands over no command", func(t *testing.T) {
		e := start(t)
		e.commands.add(deviceID, "c1", "reboot", "")
		c := dialRaw(t, e.g.Addr())
		c.send(observeCommandsRequest(1, []byte{5}))
		r := c.must(5 * time.Second)
		if r.Code != codes.Content || len(r.Payload) != 0 || hasObserve(r) {
			t.Fatalf("deregistration answered %v", r.String())
		}
		if d := e.commands.deliveredIDs(); len(d) != 0 {
			t.Errorf("delivered %v", d)
		}
	})
	t.Run("a silent observer is refreshed without a representation when no command waits", func(t *testing.T) {
		e := start(t, func(e *env) {
			e.before = func(g *coap.Gateway) { g.SetTimings(time.Second, time.Second, 2*time.Second) }
		})
		c := dialRaw(t, e.g.Addr())
		c.send(observeCommandsRequest(0, []byte{6}))
		c.must(5 * time.Second)
		n := c.must(5 * time.Second)
		if n.Type != message.Confirmable || !hasObserve(n) || len(n.Payload) != 0 || n.Options.HasOption(message.ContentFormat) {
			t.Fatalf("refresh %v", n.String())
		}
		c.send(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: n.MessageID})
		if e.g.Observers(deviceID) != 1 {
			t.Errorf("%d observers, want 1", e.g.Observers(deviceID))
		}
		if d := e.commands.deliveredIDs(); len(d) != 0 {
			t.Errorf("delivered %v", d)
		}
	})
	t.Run("Close stops Deliver", func(t *testing.T) {
		e := start(t)
		cc := dialUDP(t, e)
		got := observeCommands(t, cc)
		next(t, got)
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
		if err := e.g.Close(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if e.g.Deliver(e.commands.add(deviceID, "c1", "reboot", "")) {
			t.Error("a closed gateway took a command")
		}
	})
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(*env)
		method   codes.Code
		path     string
		opts     []message.Option
		cf       message.MediaType
		payload  string
		wantCode codes.Code
		wantDiag string
		check    func(t *testing.T, e *env, body string)
	}{
		{
			name: "GET /commands returns the pending commands in order and marks them delivered", method: codes.GET, path: "/commands",
			setup: func(e *env) {
				e.commands.add(deviceID, "c1", "reboot", "")
				e.commands.add(otherID, "x1", "reboot", "")
				e.commands.add(deviceID, "c2", "set_led", `{"on":true}`)
			},
			opts: []message.Option{query("t=" + token)}, wantCode: codes.Content,
			check: func(t *testing.T, e *env, body string) {
				if want := `[{"id":"c1","name":"reboot","one_way":false},{"id":"c2","name":"set_led","params":{"on":true},"one_way":false}]`; body != want {
					t.Errorf("body %s, want %s", body, want)
				}
				eventually(t, "delivered", func() bool { return slices.Equal(e.commands.deliveredIDs(), []string{"c1", "c2"}) })
			},
		},
		{
			name: "GET /commands without pending commands is an empty array", method: codes.GET, path: "/commands",
			opts: []message.Option{query("t=" + token)}, wantCode: codes.Content,
			check: func(t *testing.T, _ *env, body string) {
				if body != "[]" {
					t.Errorf("body %q", body)
				}
			},
		},
		{
			name: "GET /commands with Accept 60 is refused 4.06", method: codes.GET, path: "/commands",
			opts: []message.Option{query("t=" + token), acceptCBOR}, wantCode: codes.NotAcceptable, wantDiag: "application/json",
		},
		{
			name: "GET /commands over the budget is refused 4.29", setup: func(e *env) { e.in.deny = time.Second },
			method: codes.GET, path: "/commands", opts: []message.Option{query("t=" + token)},
			wantCode: codes.TooManyRequests, wantDiag: "publish rate",
		},
		{
			name: "a reply is recorded and answered 2.04", method: codes.POST, path: "/commands/c1/reply",
			setup: func(e *env) { e.commands.add(deviceID, "c1", "get_config", "") },
			opts:  []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload: `{"status":"succeeded","result":{"interval":30}}`, wantCode: codes.Changed,
			check: func(t *testing.T, e *env, _ string) {
				r, ok := e.commands.replyOf("c1")
				if !ok || r.Status != "succeeded" || string(r.Result) != `{"interval":30}` {
					t.Errorf("reply %+v %v", r, ok)
				}
			},
		},
		{
			name: "a CBOR reply is converted to JSON", method: codes.POST, path: "/commands/c1/reply",
			setup: func(e *env) { e.commands.add(deviceID, "c1", "get_config", "") },
			opts:  []message.Option{query("t=" + token)}, cf: message.AppCBOR,
			payload:  "\xa2\x66status\x66failed\x65error\x64busy", // {"status":"failed","error":"busy"}
			wantCode: codes.Changed,
			check: func(t *testing.T, e *env, _ string) {
				if r, ok := e.commands.replyOf("c1"); !ok || r.Status != "failed" || r.Error != "busy" {
					t.Errorf("reply %+v %v", r, ok)
				}
			},
		},
		{
			name: "a reply to an unknown command is refused 4.04", method: codes.POST, path: "/commands/nope/reply",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{}`,
			wantCode: codes.NotFound, wantDiag: "no command nope",
		},
		{
			name: "a reply to another device's command is refused 4.04", method: codes.POST, path: "/commands/x1/reply",
			setup: func(e *env) { e.commands.add(otherID, "x1", "reboot", "") },
			opts:  []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{}`,
			wantCode: codes.NotFound,
		},
		{
			name: "a second reply is refused 4.09 naming the command's status", method: codes.POST, path: "/commands/c1/reply",
			setup: func(e *env) {
				e.commands.add(deviceID, "c1", "reboot", "")
				e.commands.Reply(context.Background(), "default", deviceID, "c1", tetherReply("failed"))
			},
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"status":"succeeded"}`,
			wantCode: codes.Conflict, wantDiag: "already failed",
		},
		{
			name: "a reply the service finds invalid is refused 4.00", method: codes.POST, path: "/commands/c1/reply",
			setup: func(e *env) { e.commands.add(deviceID, "c1", "reboot", "") },
			opts:  []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"status":"maybe"}`,
			wantCode: codes.BadRequest, wantDiag: "succeeded or failed",
		},
		{
			name: "a reply with an unknown field is refused 4.00", method: codes.POST, path: "/commands/c1/reply",
			setup: func(e *env) { e.commands.add(deviceID, "c1", "reboot", "") },
			opts:  []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"sttus":"failed"}`,
			wantCode: codes.BadRequest, wantDiag: `unknown field "sttus"`,
		},
		{
			name: "a reply without a token is refused 4.01", method: codes.POST, path: "/commands/c1/reply",
			cf: message.AppJSON, payload: `{}`, wantCode: codes.Unauthorized,
		},
		{
			name: "GET of a reply path is refused 4.05", method: codes.GET, path: "/commands/c1/reply",
			opts: []message.Option{query("t=" + token)}, wantCode: codes.MethodNotAllowed, wantDiag: "POST",
		},
		{
			name: "another path under /commands is not found", method: codes.POST, path: "/commands/c1",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{}`, wantCode: codes.NotFound,
		},
		{
			name: "/commands is not found without a command service", setup: func(e *env) { e.noServices = true },
			method: codes.GET, path: "/commands", opts: []message.Option{query("t=" + token)}, wantCode: codes.NotFound,
		},
		{
			name: "a reply path is not found without a command service", setup: func(e *env) { e.noServices = true },
			method: codes.POST, path: "/commands/c1/reply", opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{}`,
			wantCode: codes.NotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, func(e *env) {
				if tt.setup != nil {
					tt.setup(e)
				}
			})
			resp := request(t, dialUDP(t, e), tt.method, tt.path, tt.cf, tt.payload, tt.opts...)
			b := body(t, resp)
			if resp.Code() != tt.wantCode {
				t.Fatalf("code %v %q, want %v", resp.Code(), b, tt.wantCode)
			}
			if !strings.Contains(b, tt.wantDiag) {
				t.Errorf("diagnostic %q does not contain %q", b, tt.wantDiag)
			}
			if tt.check != nil {
				tt.check(t, e, b)
			}
		})
	}
}

func TestCommandsOverDTLS(t *testing.T) {
	e := start(t)
	cc, err := dialDTLS(t, e, deviceID, pskKey)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	if _, err := cc.Observe(ctx(t), "/commands", func(m *pool.Message) {
		b, _ := m.ReadBody()
		got <- string(b)
	}); err != nil {
		t.Fatal(err)
	}
	next(t, got)
	eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
	e.g.Deliver(e.commands.add(deviceID, "c1", "reboot", ""))
	if c := decodeCommand(t, next(t, got)); c.ID != "c1" {
		t.Fatalf("notification %+v", c)
	}
	eventually(t, "c1 delivered", func() bool { return slices.Equal(e.commands.deliveredIDs(), []string{"c1"}) })
	resp, err := cc.Post(ctx(t), "/commands/c1/reply", message.AppJSON, bytes.NewReader([]byte(`{"result":"ok"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Changed {
		t.Fatalf("reply answered %v %q", resp.Code(), body(t, resp))
	}
	if s := e.commands.status(deviceID, "c1"); s != "succeeded" {
		t.Errorf("status %s", s)
	}
}
