package stream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
)

// callers are the test's API keys: the bearer token names the principal.
var callers = map[string]*tether.Principal{
	"viewer":   {TenantID: "acme", Kind: tether.PrincipalAPIKey, ID: "k1", Name: "viewer key", Role: tether.RoleViewer},
	"admin":    {TenantID: "acme", Kind: tether.PrincipalAPIKey, ID: "k2", Name: "admin key", Role: tether.RoleAdmin},
	"rolefree": {TenantID: "acme", Kind: tether.PrincipalAPIKey, ID: "k3", Name: "odd key", Role: "guest"},
}

func authenticate(r *http.Request) (*tether.Principal, error) {
	p := callers[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	if p == nil {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "missing or unknown API key")
	}
	return p, nil
}

// serveHub serves h's two endpoints on a real server. The hub closes
// first when the test ends, which ends the streams the server waits for.
func serveHub(t *testing.T, o stream.Options) (*stream.Hub, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	h := stream.NewHub(o)
	mux.Handle("GET /api/v1/stream", h.WebSocket(authenticate))
	mux.Handle("GET /api/v1/stream/sse", h.SSE(authenticate))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(h.Close)
	return h, srv
}

func dial(t *testing.T, srv *httptest.Server, query, key string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/api/v1/stream?"+query,
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// message is any message of a live stream.
type message struct {
	Type    string          `json:"type"`
	Kind    string          `json:"kind"`
	Device  string          `json:"device"`
	Time    time.Time       `json:"time"`
	Data    json.RawMessage `json:"data"`
	Dropped uint64          `json:"dropped"`
	Message string          `json:"message"`
}

func read(t *testing.T, c *websocket.Conn) message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("a %v message", typ)
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return m
}

func TestWebSocketStreamsTheEventsItsQuerySelects(t *testing.T) {
	h, srv := serveHub(t, stream.Options{})
	c := dial(t, srv, "kinds=telemetry,alert&devices=d1", "viewer")
	if m := read(t, c); m.Type != "ready" {
		t.Fatalf("first message %+v, want ready", m)
	}
	h.Publish(event(stream.KindTelemetry, "d2", 1))
	h.Publish(event(stream.KindPresence, "d1", 2))
	h.Publish(stream.Event{Kind: stream.KindTelemetry, TenantID: "globex", DeviceID: "d1", Data: json.RawMessage(`{"seq":3}`)})
	h.Publish(event(stream.KindTelemetry, "d1", 4))
	h.Publish(event(stream.KindAlert, "d1", 5))
	m := read(t, c)
	if m.Type != "event" || m.Kind != stream.KindTelemetry || m.Device != "d1" || !m.Time.Equal(time.Unix(4, 0)) || string(m.Data) != `{"seq":4}` {
		t.Errorf("got %+v, want d1's telemetry event 4", m)
	}
	if m := read(t, c); m.Kind != stream.KindAlert || string(m.Data) != `{"seq":5}` {
		t.Errorf("got %+v, want d1's alert 5", m)
	}
}

func TestStreamsRefuseBeforeStreaming(t *testing.T) {
	_, srv := serveHub(t, stream.Options{})
	tests := []struct {
		name, path, key, origin string
		status                  int
		code                    string
	}{
		{"a WebSocket without a key", "/api/v1/stream", "", "", http.StatusUnauthorized, tether.EUNAUTHORIZED},
		{"SSE without a key", "/api/v1/stream/sse", "", "", http.StatusUnauthorized, tether.EUNAUTHORIZED},
		{"a key with no known role", "/api/v1/stream/sse", "rolefree", "", http.StatusForbidden, tether.EFORBIDDEN},
		{"an unknown kind", "/api/v1/stream?kinds=weather", "viewer", "", http.StatusBadRequest, tether.EINVALID},
		{"SSE with an unknown parameter", "/api/v1/stream/sse?device=d1", "viewer", "", http.StatusBadRequest, tether.EINVALID},
		{"a WebSocket from another site's page", "/api/v1/stream", "viewer", "https://evil.example", http.StatusForbidden, tether.EFORBIDDEN},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused with a problem", func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tt.path, nil)
			if tt.key != "" {
				req.Header.Set("Authorization", "Bearer "+tt.key)
			}
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p struct {
				Type, Title, Detail, Code string
				Status                    int
			}
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
				p.Status != tt.status || p.Code != tt.code || p.Detail == "" || p.Type != "about:blank" {
				t.Errorf("%d %s %+v", resp.StatusCode, resp.Header.Get("Content-Type"), p)
			}
			if tt.status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		})
	}
	t.Run("a WebSocket from the API's own origin is accepted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/api/v1/stream",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer admin"}, "Origin": {srv.URL}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if m := read(t, c); m.Type != "ready" {
			t.Errorf("%+v", m)
		}
	})
}

// bigEvent is an event of about 16 KiB, so that a few hundred fill a
// socket's buffers.
func bigEvent(seq int) stream.Event {
	ev := event(stream.KindTelemetry, "d1", seq)
	ev.Data = json.RawMessage(fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq, strings.Repeat("x", 16<<10)))
	return ev
}

func TestASlowWebSocketClientIsToldWhatItLost(t *testing.T) {
	h, srv := serveHub(t, stream.Options{Buffer: 16})
	c := dial(t, srv, "", "viewer")
	read(t, c) // ready
	// 32 MiB: more than the sockets' buffers hold while the client reads
	// nothing (Linux's defaults let them grow to about 4 MiB each way).
	const n = 2000
	for i := range n {
		h.Publish(bigEvent(i))
	}
	var got, dropped, lagging uint64
	last := -1
	for got+dropped < n {
		m := read(t, c)
		switch m.Type {
		case "lagging":
			if m.Dropped == 0 || m.Message != stream.LaggingMessage {
				t.Fatalf("lagging message %+v", m)
			}
			lagging++
			dropped += m.Dropped
		case "event":
			var v struct{ Seq int }
			_ = json.Unmarshal(m.Data, &v)
			if v.Seq <= last {
				t.Fatalf("event %d after %d", v.Seq, last)
			}
			last = v.Seq
			got++
		default:
			t.Fatalf("message %+v", m)
		}
	}
	if got+dropped != n || lagging == 0 || last != n-1 {
		t.Errorf("received %d, told of %d dropped in %d lagging messages, last event %d; want all %d accounted for, some dropped, the newest received",
			got, dropped, lagging, last, n)
	}
}

// waitNoSubscribers waits until the hub's streams have all ended.
func waitNoSubscribers(t *testing.T, h *stream.Hub) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for h.Stats().Subscribers > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open", h.Stats().Subscribers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAWebSocketClientThatTakesNothingIsDisconnected(t *testing.T) {
	t.Run("when events are waiting for it", func(t *testing.T) {
		h, srv := serveHub(t, stream.Options{WriteTimeout: 300 * time.Millisecond, PingInterval: time.Hour})
		c := dial(t, srv, "", "viewer")
		read(t, c)
		for i := range 2000 {
			h.Publish(bigEvent(i))
		}
		waitNoSubscribers(t, h)
		// What the buffers held can still be read, then the connection ends.
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				if ctx.Err() != nil {
					t.Fatalf("the connection is still open: %v", err)
				}
				break
			}
		}
	})
	t.Run("when it answers no ping", func(t *testing.T) {
		h, srv := serveHub(t, stream.Options{WriteTimeout: 200 * time.Millisecond, PingInterval: 50 * time.Millisecond})
		c := dial(t, srv, "", "viewer")
		read(t, c)
		// The client reads nothing more, so it answers no ping.
		waitNoSubscribers(t, h)
	})
	t.Run("but not while it reads and answers pings", func(t *testing.T) {
		h, srv := serveHub(t, stream.Options{WriteTimeout: 2 * time.Second, PingInterval: 20 * time.Millisecond})
		c := dial(t, srv, "", "viewer")
		read(t, c)
		got := make(chan message, 1)
		go func() {
			var m message
			_, b, err := c.Read(t.Context())
			if err == nil {
				_ = json.Unmarshal(b, &m)
			}
			got <- m
		}()
		// Ten ping intervals pass with the client in Read, which answers.
		time.Sleep(200 * time.Millisecond)
		h.Publish(event(stream.KindAlert, "d1", 7))
		if m := <-got; m.Type != "event" || string(m.Data) != `{"seq":7}` {
			t.Errorf("got %+v after the pings, want the event", m)
		}
	})
}

func TestClosingTheHubTellsClientsTheServerIsGoingAway(t *testing.T) {
	h, srv := serveHub(t, stream.Options{Heartbeat: time.Hour})
	c := dial(t, srv, "", "viewer")
	read(t, c)
	resp := getSSE(t, srv, "", "viewer")
	lines := bufio.NewScanner(resp.Body)
	readSSE(t, lines) // ready
	h.Close()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("WebSocket read after the hub closed: %v, want close status going away", err)
	}
	for lines.Scan() {
		t.Errorf("SSE line %q after the hub closed", lines.Text())
	}
	if err := lines.Err(); err != nil {
		t.Errorf("SSE stream ended with %v, want its end", err)
	}
}

func getSSE(t *testing.T, srv *httptest.Server, query, key string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/v1/stream/sse?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// readSSE reads one event (its type and data) or heartbeat (type
// "heartbeat") from an SSE stream.
func readSSE(t *testing.T, lines *bufio.Scanner) (typ string, m message) {
	t.Helper()
	var data string
	for lines.Scan() {
		line := lines.Text()
		switch {
		case line == "" && (typ != "" || data != ""):
			if data != "" {
				if err := json.Unmarshal([]byte(data), &m); err != nil {
					t.Fatalf("data %s: %v", data, err)
				}
			}
			return typ, m
		case line == ": heartbeat":
			return "heartbeat", m
		case strings.HasPrefix(line, "event: "):
			typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if data != "" {
				t.Fatalf("a second data line %q", line)
			}
			data = strings.TrimPrefix(line, "data: ")
		case line == "":
		default:
			t.Fatalf("line %q", line)
		}
	}
	t.Fatalf("the stream ended: %v", lines.Err())
	return "", m
}

func TestSSEStreamsEventsAndHeartbeats(t *testing.T) {
	h, srv := serveHub(t, stream.Options{Heartbeat: 50 * time.Millisecond})
	resp := getSSE(t, srv, "kinds=shadow", "viewer")
	if resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	if typ, m := readSSE(t, lines); typ != "ready" || m.Type != "ready" {
		t.Fatalf("first %s %+v, want ready", typ, m)
	}
	h.Publish(event(stream.KindTelemetry, "d1", 1))
	h.Publish(stream.Event{Kind: stream.KindShadow, TenantID: "acme", DeviceID: "d1", Data: json.RawMessage("{\n  \"reported\": {\"on\": true}\n}")})
	heartbeats := 0
	for {
		typ, m := readSSE(t, lines)
		if typ == "heartbeat" {
			heartbeats++
			continue
		}
		if typ != "event" || m.Kind != stream.KindShadow || string(m.Data) != `{"reported":{"on":true}}` {
			t.Fatalf("%s %+v, want the shadow event on one data line", typ, m)
		}
		break
	}
	for heartbeats < 2 {
		if typ, m := readSSE(t, lines); typ != "heartbeat" {
			t.Fatalf("%s %+v, want a heartbeat", typ, m)
		}
		heartbeats++
	}
	if err := errors.Join(resp.Body.Close()); err != nil {
		t.Error(err)
	}
	waitNoSubscribers(t, h)
}
