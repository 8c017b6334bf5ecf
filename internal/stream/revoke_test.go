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
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
	"github.com/tether-iot/tether/internal/testkit"
)

// serveRevocable serves a hub's endpoints with a's authentication.
func serveRevocable(t *testing.T, o stream.Options, a *testkit.Revocable) (*stream.Hub, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	h := stream.NewHub(o)
	mux.Handle("GET /api/v1/stream", h.WebSocket(a.Authenticate))
	mux.Handle("GET /api/v1/stream/sse", h.SSE(a.Authenticate))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(h.Close)
	return h, srv
}

func TestAStreamEndsWhenItsCallerMayNoLongerHaveIt(t *testing.T) {
	const recheck = 20 * time.Millisecond
	changes := []struct {
		name   string
		change func(a *testkit.Revocable)
		code   string
	}{
		{"the key deleted or the user signed out", func(a *testkit.Revocable) { a.Revoke("viewer") }, tether.EUNAUTHORIZED},
		{"the role taken away", func(a *testkit.Revocable) { a.Demote("viewer", "guest") }, tether.EFORBIDDEN},
	}
	for _, ch := range changes {
		t.Run("WebSocket: "+ch.name, func(t *testing.T) {
			a := testkit.NewRevocable(authenticate)
			h, srv := serveRevocable(t, stream.Options{Recheck: recheck}, a)
			c := dial(t, srv, "", "viewer")
			read(t, c)
			// A stream whose caller still may goes on across rechecks.
			time.Sleep(3 * recheck)
			h.Publish(event(stream.KindTelemetry, "d1", 1))
			if m := read(t, c); m.Type != "event" {
				t.Fatalf("got %+v, want the event", m)
			}
			ch.change(a)
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			defer cancel()
			_, _, err := c.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != stream.RevokedReason {
				t.Errorf("read after the change: %v, want close 1008 %q", err, stream.RevokedReason)
			}
			waitNoSubscribers(t, h)
		})
		t.Run("SSE: "+ch.name, func(t *testing.T) {
			a := testkit.NewRevocable(authenticate)
			h, srv := serveRevocable(t, stream.Options{Recheck: recheck, Heartbeat: time.Hour}, a)
			// The stream must end by itself, well before the request's deadline.
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/stream/sse", nil)
			req.Header.Set("Authorization", "Bearer viewer")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			lines := bufio.NewScanner(resp.Body)
			readSSE(t, lines) // ready
			ch.change(a)
			typ, _, data := readSSEData(t, lines)
			var p struct {
				Type, Title, Detail, Code string
				Status                    int
			}
			if err := json.Unmarshal([]byte(data), &p); err != nil {
				t.Fatalf("error event data %q: %v", data, err)
			}
			if typ != "error" || p.Code != ch.code || p.Status == 0 || !strings.Contains(p.Detail, stream.RevokedReason) {
				t.Errorf("event %q %+v, want an error event with code %s", typ, p, ch.code)
			}
			for lines.Scan() {
				t.Errorf("SSE line %q after the error event", lines.Text())
			}
			if err := lines.Err(); err != nil {
				t.Errorf("SSE stream ended with %v, want its end", err)
			}
			waitNoSubscribers(t, h)
		})
	}

	t.Run("a recheck that fails for the node's fault ends the stream with 1011", func(t *testing.T) {
		var broken atomic.Bool
		auth := func(r *http.Request) (*tether.Principal, error) {
			if broken.Load() {
				return nil, fmt.Errorf("the user store is down")
			}
			return authenticate(r)
		}
		mux := http.NewServeMux()
		h := stream.NewHub(stream.Options{Recheck: recheck})
		t.Cleanup(h.Close)
		mux.Handle("GET /api/v1/stream", h.WebSocket(auth))
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		c := dial(t, srv, "", "viewer")
		read(t, c)
		broken.Store(true)
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		_, _, err := c.Read(ctx)
		if s := websocket.CloseStatus(err); s != websocket.StatusInternalError {
			t.Errorf("read: %v, want close 1011", err)
		}
	})

	t.Run("the caller is authenticated once per interval, not per event", func(t *testing.T) {
		a := testkit.NewRevocable(authenticate)
		h, srv := serveRevocable(t, stream.Options{Recheck: time.Hour}, a)
		c := dial(t, srv, "", "viewer")
		read(t, c)
		for i := range 50 {
			h.Publish(event(stream.KindTelemetry, "d1", i))
			read(t, c)
		}
		if n := a.Calls(); n != 1 {
			t.Errorf("%d authentications, want 1 (the upgrade's)", n)
		}
	})
}

// readSSEData reads one event of an SSE stream with its raw data.
func readSSEData(t *testing.T, lines *bufio.Scanner) (typ string, heartbeat bool, data string) {
	t.Helper()
	for lines.Scan() {
		line := lines.Text()
		switch {
		case line == ": heartbeat":
			heartbeat = true
		case strings.HasPrefix(line, "event: "):
			typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && typ != "":
			return typ, heartbeat, data
		}
	}
	t.Fatalf("the stream ended: %v", lines.Err())
	return "", false, ""
}

func TestOneCallerCannotTakeEveryStream(t *testing.T) {
	t.Run("the hub counts a caller's subscriptions against its limit", func(t *testing.T) {
		h := newHub(t, stream.Options{MaxPerCaller: 2})
		viewer := stream.WithCaller(t.Context(), callers["viewer"])
		var subs []stream.Subscription
		for range 2 {
			s, err := h.Subscribe(viewer, "acme", stream.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			subs = append(subs, s)
		}
		_, err := h.Subscribe(viewer, "acme", stream.Filter{})
		if tether.ErrorCode(err) != tether.ETOOMANY || !strings.Contains(tether.ErrorMessage(err), "one caller") {
			t.Errorf("the viewer's third subscription: %v, want ETOOMANY naming the caller's limit", err)
		}
		// Another caller of the tenant is not held back.
		admin := subscribeCtx(t, h, stream.WithCaller(t.Context(), callers["admin"]), "acme")
		admin.Close()
		// Closing one frees its place.
		subs[0].Close()
		subscribeCtx(t, h, viewer, "acme")
		subs[1].Close()
	})

	t.Run("the hub counts a tenant's subscriptions against its limit", func(t *testing.T) {
		h := newHub(t, stream.Options{MaxPerTenant: 2})
		subscribe(t, h, "acme", stream.Filter{})
		s := subscribe(t, h, "acme", stream.Filter{})
		if _, err := h.Subscribe(t.Context(), "acme", stream.Filter{}); tether.ErrorCode(err) != tether.ETOOMANY || !strings.Contains(tether.ErrorMessage(err), "tenant") {
			t.Errorf("acme's third subscription: %v, want ETOOMANY naming the tenant's limit", err)
		}
		subscribe(t, h, "globex", stream.Filter{})
		s.Close()
		subscribe(t, h, "acme", stream.Filter{})
	})

	t.Run("a viewer's streams over the limit are refused with 429; an admin still gets one", func(t *testing.T) {
		_, srv := serveHub(t, stream.Options{MaxPerCaller: 3})
		for range 2 {
			read(t, dial(t, srv, "", "viewer"))
		}
		resp := getSSE(t, srv, "", "viewer")
		readSSE(t, bufio.NewScanner(resp.Body))
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/v1/stream/sse", nil)
		req.Header.Set("Authorization", "Bearer viewer")
		refused, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer refused.Body.Close()
		var p struct{ Code, Detail string }
		_ = json.NewDecoder(refused.Body).Decode(&p)
		if refused.StatusCode != http.StatusTooManyRequests || p.Code != tether.ETOOMANY || p.Detail == "" {
			t.Errorf("the viewer's fourth stream: %d %+v, want 429 too_many", refused.StatusCode, p)
		}
		getSSE(t, srv, "", "admin")
	})
}

func subscribeCtx(t *testing.T, h *stream.Hub, ctx context.Context, tenant string) stream.Subscription {
	t.Helper()
	s, err := h.Subscribe(ctx, tenant, stream.Filter{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}
