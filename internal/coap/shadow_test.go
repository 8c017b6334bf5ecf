package coap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// noCF leaves the Content-Format option out of a request.
const noCF = message.MediaType(65535)

// request sends one request and returns its response.
func request(t *testing.T, cc *udpClient.Conn, method codes.Code, path string, cf message.MediaType, payload string, opts ...message.Option) *pool.Message {
	t.Helper()
	req := cc.AcquireMessage(ctx(t))
	tok, _ := cc.GetToken()
	req.SetCode(method)
	req.SetToken(tok)
	req.ResetOptionsTo(opts)
	if err := req.SetPath(path); err != nil {
		t.Fatal(err)
	}
	if payload != "" {
		req.SetBody(bytes.NewReader([]byte(payload)))
		if cf != noCF {
			req.SetContentFormat(cf)
		}
	}
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatalf("%v %s: %v", method, path, err)
	}
	return resp
}

func decodeShadow(t *testing.T, b string) tether.Shadow {
	t.Helper()
	var sh tether.Shadow
	if err := json.Unmarshal([]byte(b), &sh); err != nil {
		t.Fatalf("not a shadow: %v: %s", err, b)
	}
	return sh
}

var acceptCBOR = message.Option{ID: message.Accept, Value: []byte{60}}

func TestShadow(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(*env)
		method   codes.Code
		path     string
		opts     []message.Option
		cf       message.MediaType
		payload  string
		wantCode codes.Code
		wantDiag string // in a refusal's diagnostic
		check    func(t *testing.T, e *env, resp *pool.Message, body string)
	}{
		{
			name: "GET /shadow returns the device's classic shadow as JSON", method: codes.GET, path: "/shadow",
			setup:    func(e *env) { e.shadows.setDesired(deviceID, "", "led", "on") },
			opts:     []message.Option{query("t=" + token)},
			wantCode: codes.Content,
			check: func(t *testing.T, _ *env, resp *pool.Message, body string) {
				sh := decodeShadow(t, body)
				if sh.DeviceID != deviceID || sh.Name != "" || sh.Version != 1 || sh.State.Desired["led"] != "on" {
					t.Errorf("shadow %s", body)
				}
				if cf, _ := resp.ContentFormat(); cf != message.AppJSON {
					t.Errorf("Content-Format %v", cf)
				}
				if maxAge(resp) != 0 {
					t.Errorf("Max-Age %d, want 0", maxAge(resp))
				}
			},
		},
		{
			name: "GET /shadow?name= returns that named shadow", method: codes.GET, path: "/shadow",
			setup:    func(e *env) { e.shadows.setDesired(deviceID, "pump", "rpm", 1200.0) },
			opts:     []message.Option{query("name=pump"), query("t=" + token)},
			wantCode: codes.Content,
			check: func(t *testing.T, _ *env, _ *pool.Message, body string) {
				if sh := decodeShadow(t, body); sh.Name != "pump" || sh.State.Desired["rpm"] != 1200.0 {
					t.Errorf("shadow %s", body)
				}
			},
		},
		{
			name: "GET /shadow with Accept 60 returns CBOR", method: codes.GET, path: "/shadow",
			setup:    func(e *env) { e.shadows.setDesired(deviceID, "", "led", "on") },
			opts:     []message.Option{query("t=" + token), acceptCBOR},
			wantCode: codes.Content,
			check: func(t *testing.T, _ *env, resp *pool.Message, body string) {
				if cf, _ := resp.ContentFormat(); cf != message.AppCBOR {
					t.Fatalf("Content-Format %v", cf)
				}
				var sh struct {
					DeviceID string `cbor:"device_id"`
					Version  int64  `cbor:"version"`
					State    struct {
						Desired map[string]any `cbor:"desired"`
					} `cbor:"state"`
				}
				if err := cbor.Unmarshal([]byte(body), &sh); err != nil {
					t.Fatal(err)
				}
				if sh.DeviceID != deviceID || sh.Version != 1 || sh.State.Desired["led"] != "on" {
					t.Errorf("shadow %+v", sh)
				}
			},
		},
		{
			name: "GET /shadow with a name that is not an ID is refused 4.00", method: codes.GET, path: "/shadow",
			opts:     []message.Option{query("name=no/such"), query("t=" + token)},
			wantCode: codes.BadRequest, wantDiag: "not a shadow name",
		},
		{
			name: "GET /shadow with another query parameter is refused 4.00 naming both it understands", method: codes.GET, path: "/shadow",
			opts:     []message.Option{query("nmae=pump"), query("t=" + token)},
			wantCode: codes.BadRequest, wantDiag: `"nmae"; only t=<device token> and name= are understood`,
		},
		{
			name: "GET /shadow without a token is refused 4.01", method: codes.GET, path: "/shadow",
			wantCode: codes.Unauthorized, wantDiag: "t=<device>.<secret>",
		},
		{
			name: "POST /shadow with reported state is answered 2.04 with the shadow", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"temp":21.5}},"client_token":"c1"}`,
			wantCode: codes.Changed,
			check: func(t *testing.T, e *env, _ *pool.Message, body string) {
				if sh := decodeShadow(t, body); sh.Version != 1 || sh.State.Reported["temp"] != 21.5 {
					t.Errorf("shadow %s", body)
				}
				calls := e.shadows.calls()
				if len(calls) != 1 || calls[0].device != deviceID || calls[0].tenant != "default" || calls[0].name != "" || calls[0].update.ClientToken != "c1" {
					t.Errorf("updates %+v", calls)
				}
			},
		},
		{
			name: "POST /shadow?name= updates that named shadow", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token), query("name=pump")}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"rpm":900}}}`,
			wantCode: codes.Changed,
			check: func(t *testing.T, e *env, _ *pool.Message, body string) {
				if sh := decodeShadow(t, body); sh.Name != "pump" || sh.State.Reported["rpm"] != 900.0 {
					t.Errorf("shadow %s", body)
				}
			},
		},
		{
			name: "POST /shadow in CBOR is converted and answered in CBOR with Accept 60", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token), acceptCBOR}, cf: message.AppCBOR,
			payload:  "\xa1\x65state\xa1\x68reported\xa1\x64temp\xf9\x4d\x60", // {"state":{"reported":{"temp":21.5}}}
			wantCode: codes.Changed,
			check: func(t *testing.T, e *env, resp *pool.Message, body string) {
				if cf, _ := resp.ContentFormat(); cf != message.AppCBOR {
					t.Errorf("Content-Format %v", cf)
				}
				if calls := e.shadows.calls(); len(calls) != 1 || calls[0].update.State.Reported["temp"] != 21.5 {
					t.Errorf("updates %+v", calls)
				}
			},
		},
		{
			name: "POST /shadow with desired state is refused 4.03", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"desired":{"led":"off"},"reported":{"temp":1}}}`,
			wantCode: codes.Forbidden, wantDiag: "state.reported only",
			check: func(t *testing.T, e *env, _ *pool.Message, _ string) {
				if calls := e.shadows.calls(); len(calls) != 0 {
					t.Errorf("the service was called: %+v", calls)
				}
			},
		},
		{
			name: "POST /shadow with a stale version is refused 4.09 naming the current one", method: codes.POST, path: "/shadow",
			setup: func(e *env) {
				e.shadows.setDesired(deviceID, "", "led", "on")
				e.shadows.setDesired(deviceID, "", "led", "off")
			},
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"temp":1}},"version":1}`,
			wantCode: codes.Conflict, wantDiag: "the shadow is at version 2",
		},
		{
			name: "POST /shadow over the shadow's size limit is refused 4.13", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"blob":"` + strings.Repeat("x", 300) + `"}}}`,
			wantCode: codes.RequestEntityTooLarge, wantDiag: "at most 256",
		},
		{
			name: "POST /shadow the service finds invalid is refused 4.00", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"bad":1}}}`,
			wantCode: codes.BadRequest, wantDiag: "state.reported.bad",
		},
		{
			name: "POST /shadow with an unknown field is refused 4.00", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reproted":{"temp":1}}}`,
			wantCode: codes.BadRequest, wantDiag: `unknown field "reproted"`,
		},
		{
			name: "POST /shadow with malformed JSON is refused 4.00", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":`,
			wantCode: codes.BadRequest, wantDiag: "not a shadow update",
		},
		{
			name: "POST /shadow with malformed CBOR is refused 4.00", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppCBOR,
			payload:  "\xa1\x65sta",
			wantCode: codes.BadRequest, wantDiag: "malformed_cbor",
		},
		{
			name: "POST /shadow as text/plain is refused 4.15", method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.TextPlain,
			payload:  `temp=1`,
			wantCode: codes.UnsupportedMediaType, wantDiag: "Content-Format 0",
		},
		{
			name: "PUT /shadow is refused 4.05", method: codes.PUT, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"temp":1}}}`,
			wantCode: codes.MethodNotAllowed, wantDiag: "GET and POST",
		},
		{
			name: "POST /shadow over the device's budget is refused 4.29", setup: func(e *env) { e.in.deny = time.Second },
			method: codes.POST, path: "/shadow",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON,
			payload:  `{"state":{"reported":{"temp":1}}}`,
			wantCode: codes.TooManyRequests, wantDiag: "publish rate",
		},
		{
			name: "GET /shadow over the device's budget is refused 4.29", setup: func(e *env) { e.in.deny = time.Second },
			method: codes.GET, path: "/shadow", opts: []message.Option{query("t=" + token)},
			wantCode: codes.TooManyRequests, wantDiag: "publish rate",
		},
		{
			name: "/shadow is not found without a shadow service", setup: func(e *env) { e.noServices = true },
			method: codes.GET, path: "/shadow", opts: []message.Option{query("t=" + token)},
			wantCode: codes.NotFound, wantDiag: ".well-known/core",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, func(e *env) {
				if tt.setup != nil {
					tt.setup(e)
				}
			})
			cc := dialUDP(t, e)
			resp := request(t, cc, tt.method, tt.path, tt.cf, tt.payload, tt.opts...)
			b := body(t, resp)
			if resp.Code() != tt.wantCode {
				t.Fatalf("code %v %q, want %v", resp.Code(), b, tt.wantCode)
			}
			if !strings.Contains(b, tt.wantDiag) {
				t.Errorf("diagnostic %q does not contain %q", b, tt.wantDiag)
			}
			if tt.check != nil {
				tt.check(t, e, resp, b)
			}
		})
	}
}

// observeShadow observes a shadow with go-coap's client and returns the
// bodies it receives, the registration response's first.
func observeShadow(t *testing.T, e *env, cc *udpClient.Conn, opts ...message.Option) <-chan string {
	t.Helper()
	got := make(chan string, 16)
	_, err := cc.Observe(ctx(t), "/shadow", func(m *pool.Message) {
		b, _ := m.ReadBody()
		got <- string(b)
	}, append(opts, query("t="+token))...)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func next(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case b := <-got:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
		return ""
	}
}

func quiet(t *testing.T, got <-chan string, d time.Duration) {
	t.Helper()
	select {
	case b := <-got:
		t.Fatalf("unexpected notification %s", b)
	case <-time.After(d):
	}
}

func TestObserveShadow(t *testing.T) {
	t.Run("an observer is notified with the whole shadow when desired changes, not when reported does", func(t *testing.T) {
		e := start(t)
		cc := dialUDP(t, e)
		got := observeShadow(t, e, cc)
		if sh := decodeShadow(t, next(t, got)); sh.Version != 0 {
			t.Fatalf("registration answered with version %d", sh.Version)
		}
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })

		e.g.ShadowChanged(e.shadows.setDesired(deviceID, "", "led", "on"))
		sh := decodeShadow(t, next(t, got))
		if sh.Version != 1 || sh.State.Desired["led"] != "on" {
			t.Fatalf("notification %+v", sh)
		}
		// The device's own report changes the version, not desired.
		resp := request(t, cc, codes.POST, "/shadow", message.AppJSON, `{"state":{"reported":{"led":"on"}}}`, query("t="+token))
		if resp.Code() != codes.Changed {
			t.Fatalf("POST: %v", resp.Code())
		}
		reported := decodeShadow(t, body(t, resp))
		e.g.ShadowChanged(&reported)
		quiet(t, got, 300*time.Millisecond)

		e.g.ShadowChanged(e.shadows.setDesired(deviceID, "", "led", "off"))
		if sh := decodeShadow(t, next(t, got)); sh.Version != 3 || sh.State.Desired["led"] != "off" || sh.State.Reported["led"] != "on" {
			t.Fatalf("notification %+v", sh)
		}
	})
	t.Run("an older version announced late is not notified", func(t *testing.T) {
		e := start(t)
		v1 := e.shadows.setDesired(deviceID, "", "led", "on")
		v2 := e.shadows.setDesired(deviceID, "", "led", "off")
		cc := dialUDP(t, e)
		got := observeShadow(t, e, cc)
		if sh := decodeShadow(t, next(t, got)); sh.Version != 2 {
			t.Fatalf("registration answered with version %d", sh.Version)
		}
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
		e.g.ShadowChanged(v1)
		e.g.ShadowChanged(v2)
		quiet(t, got, 300*time.Millisecond)
	})
	t.Run("an observer of a named shadow hears only of that shadow and that device", func(t *testing.T) {
		e := start(t)
		cc := dialUDP(t, e)
		got := observeShadow(t, e, cc, query("name=pump"))
		if sh := decodeShadow(t, next(t, got)); sh.Name != "pump" {
			t.Fatalf("registration answered with %+v", sh)
		}
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
		e.g.ShadowChanged(e.shadows.setDesired(deviceID, "", "led", "on"))
		e.g.ShadowChanged(e.shadows.setDesired(otherID, "pump", "rpm", 1.0))
		other := e.shadows.setDesired(deviceID, "pump", "rpm", 2.0)
		other.TenantID = "another-tenant"
		e.g.ShadowChanged(other)
		quiet(t, got, 300*time.Millisecond)
		e.g.ShadowChanged(e.shadows.setDesired(deviceID, "pump", "rpm", 3.0))
		if sh := decodeShadow(t, next(t, got)); sh.Name != "pump" || sh.State.Desired["rpm"] != 3.0 {
			t.Fatalf("notification %+v", sh)
		}
	})
	t.Run("notifications are confirmable with increasing Observe numbers", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		c.send(message.Message{
			Type: message.Confirmable, Code: codes.GET, Token: []byte{7},
			Options: message.Options{
				{ID: message.Observe, Value: uintOption(0)},
				{ID: message.URIPath, Value: []byte("shadow")},
				{ID: message.URIQuery, Value: []byte("t=" + token)},
			},
		})
		r := c.must(5 * time.Second)
		last, err := r.Options.Observe()
		if r.Code != codes.Content || err != nil {
			t.Fatalf("registration answered %v", r.String())
		}
		for i := range 3 {
			e.g.ShadowChanged(e.shadows.setDesired(deviceID, "", "n", float64(i)))
			n := c.must(5 * time.Second)
			seq, err := n.Options.Observe()
			if err != nil || seq <= last || n.Type != message.Confirmable || !bytes.Equal(n.Token, []byte{7}) {
				t.Fatalf("notification %d: %v", i, n.String())
			}
			if sh := decodeShadow(t, string(n.Payload)); sh.State.Desired["n"] != float64(i) {
				t.Fatalf("notification %d: %s", i, n.Payload)
			}
			last = seq
			c.send(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: n.MessageID})
		}
	})
	t.Run("ShadowChanged without a shadow service does nothing", func(t *testing.T) {
		e := start(t, func(e *env) { e.noServices = true })
		e.g.ShadowChanged(&tether.Shadow{TenantID: "default", DeviceID: deviceID, Version: 1})
	})
}

func TestPresenceSeesEveryAuthenticatedRequest(t *testing.T) {
	e := start(t)
	cc := dialUDP(t, e)
	for _, r := range []struct {
		method  codes.Code
		path    string
		payload string
	}{
		{codes.POST, "/telemetry", `{"temp":1}`},
		{codes.GET, "/latest", ""},
		{codes.GET, "/shadow", ""},
		{codes.POST, "/shadow", `{"state":{"reported":{"temp":1}}}`},
		{codes.GET, "/commands", ""},
	} {
		if resp := request(t, cc, r.method, r.path, message.AppJSON, r.payload, query("t="+token)); resp.Code() >= codes.BadRequest {
			t.Fatalf("%v %s: %v", r.method, r.path, resp.Code())
		}
	}
	// Not authenticated: not seen.
	request(t, cc, codes.GET, "/shadow", noCF, "", query("t=sensor-1.wrong"))
	if n := e.presence.count(deviceID + "/coap"); n != 5 {
		t.Errorf("Seen %d times, want 5", n)
	}
	e.in.mu.Lock()
	allowed := e.in.allowed
	e.in.mu.Unlock()
	if allowed != 5 {
		t.Errorf("the budget was asked %d times, want 5", allowed)
	}
}

func TestDiscoveryListsShadowAndCommands(t *testing.T) {
	for _, tt := range []struct {
		name       string
		noServices bool
		want       bool
	}{
		{"with the services, /shadow and /commands are listed as observable", false, true},
		{"without them, they are not", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, func(e *env) { e.noServices = tt.noServices })
			resp, err := dialUDP(t, e).Get(context.Background(), "/.well-known/core")
			if err != nil {
				t.Fatal(err)
			}
			b := body(t, resp)
			for _, link := range []string{`</shadow>;rt="tether.shadow";ct="50 60";obs`, `</commands>;rt="tether.commands";ct=50;obs`} {
				if strings.Contains(b, link) != tt.want {
					t.Errorf("%q in %q: %v, want %v", link, b, !tt.want, tt.want)
				}
			}
		})
	}
}
