package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/tether-iot/tether"
)

// Authenticator returns the caller of a request (the API's one
// authentication: API key or session cookie).
type Authenticator func(*http.Request) (*tether.Principal, error)

// WebSocket returns the handler of GET /api/v1/stream: a WebSocket of
// JSON text messages, first {"type":"ready"}, then {"type":"event",...}
// for each event the query selects (see [ParseQuery]) and
// {"type":"lagging","dropped":N,"message":"lagging, events dropped"}
// before an event when some were dropped because the client fell behind.
// Callers need the viewer role; a browser's Origin must be the API's own
// host. A client that takes no message for the write timeout, or answers
// no ping within it, is disconnected; clients are pinged every
// PingInterval. The caller is authenticated again every Recheck; a
// stream whose caller may no longer have it is closed with status 1008
// (policy violation) and the reason [RevokedReason].
func (h *Hub) WebSocket(auth Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := sameOrigin(r); err != nil {
			writeProblem(w, err)
			return
		}
		sub, p, ok := h.open(w, r, auth)
		if !ok {
			return
		}
		defer sub.Close()
		hj := &batchHijacker{ResponseWriter: w}
		c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			// Accept has answered the request.
			h.log.Debug("live stream: WebSocket handshake failed", "err", err)
			return
		}
		// Clients send nothing but control frames; CloseRead reads
		// those and ends ctx when the client closes or sends data.
		ctx, end := context.WithCancelCause(c.CloseRead(r.Context()))
		cancel := func() { end(nil) }
		defer cancel()
		ws := &wsSink{c: c, bc: hj.conn}
		var watchers sync.WaitGroup
		watchers.Go(func() { h.watch(ctx, cancel, ws) })
		watchers.Go(func() { h.recheck(ctx, end, sub, r, auth, p) })
		reason := h.serve(ctx, sub, ws, nil)
		sub.Close()
		cancel()
		watchers.Wait()
		switch {
		case ws.slow.Load():
			h.log.Info("live stream client disconnected: it took no message for the write timeout", "transport", "websocket", "caller", p.Name, "timeout", h.o.WriteTimeout)
		case ws.unanswered.Load():
			h.log.Info("live stream client disconnected: it answered no ping", "transport", "websocket", "caller", p.Name, "timeout", h.o.WriteTimeout)
		default:
			h.log.Debug("live stream ended", "transport", "websocket", "caller", p.Name, "reason", reason.text)
			_ = c.Close(reason.code, reason.text)
			return
		}
		// A client that takes nothing would take no close frame either.
		_ = c.CloseNow()
	})
}

// sink is a client's end of a stream.
type sink interface {
	// send sends one message of type typ ("ready", "event", "lagging";
	// "" for an SSE heartbeat). It may hold it back until flush.
	send(typ string, msg []byte) error
	// flush sends what send held back; serve calls it whenever the
	// client's queue is empty, so a run of events a client is due at once
	// costs one write to the network, not one each.
	flush() error
}

// wsSink writes a WebSocket's messages. Its writes have no deadline of
// their own, which would cost a timer per message: the watchdog ([Hub.watch])
// closes a connection whose write takes longer than the write timeout,
// and the write then fails.
type wsSink struct {
	c  *websocket.Conn
	bc *batchConn
	// writing is when the network write in progress began (Unix ns), 0
	// between writes.
	writing atomic.Int64
	// slow and unanswered say why the watchdog closed the connection.
	slow, unanswered atomic.Bool
}

func (w *wsSink) send(_ string, msg []byte) error {
	w.bc.hold()
	w.writing.Store(time.Now().UnixNano())
	err := w.c.Write(context.Background(), websocket.MessageText, msg)
	w.writing.Store(0)
	return w.failed(err)
}

func (w *wsSink) flush() error {
	w.writing.Store(time.Now().UnixNano())
	err := w.bc.release()
	w.writing.Store(0)
	return w.failed(err)
}

// failed turns an error after the watchdog closed a slow client into
// [context.DeadlineExceeded].
func (w *wsSink) failed(err error) error {
	if err != nil && w.slow.Load() {
		return context.DeadlineExceeded
	}
	return err
}

// watch closes the connection when a write has taken longer than the
// write timeout, and pings the client every PingInterval, closing the
// connection when no pong comes within the write timeout. Pings run
// apart, so a ping stuck behind a stuck write does not stop the watch.
func (h *Hub) watch(ctx context.Context, cancel context.CancelFunc, w *wsSink) {
	t := time.NewTicker(min(h.o.PingInterval, h.o.WriteTimeout/4))
	defer t.Stop()
	var pings sync.WaitGroup
	defer pings.Wait()
	var pinging atomic.Bool
	lastPing := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if began := w.writing.Load(); began != 0 && now.UnixNano()-began > int64(h.o.WriteTimeout) {
				w.slow.Store(true)
				cancel()
				_ = w.c.CloseNow()
				return
			}
			if now.Sub(lastPing) < h.o.PingInterval || pinging.Load() {
				continue
			}
			lastPing = now
			pinging.Store(true)
			pings.Go(func() {
				defer pinging.Store(false)
				pctx, pcancel := context.WithTimeout(ctx, h.o.WriteTimeout)
				defer pcancel()
				if err := w.c.Ping(pctx); err != nil && ctx.Err() == nil {
					w.unanswered.Store(true)
					cancel()
					_ = w.c.CloseNow()
				}
			})
		}
	}
}

// maxBatch bounds what a batchConn holds back: beyond it, it writes.
const maxBatch = 64 << 10

// batchConn is a WebSocket's network connection, which can hold writes
// back and send them together.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
}

// hold holds back writes until release.
func (b *batchConn) hold() {
	b.mu.Lock()
	b.held = true
	b.mu.Unlock()
}

// release writes what was held back and stops holding.
func (b *batchConn) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held = false
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Write writes p or, while writes are held, adds it to the batch.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.held {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		return b.Conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= maxBatch {
		return len(p), b.flushLocked()
	}
	return len(p), nil
}

// batchHijacker hands the WebSocket library a batchConn when it hijacks
// the connection.
type batchHijacker struct {
	http.ResponseWriter
	conn *batchConn
}

func (h *batchHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The server has flushed the handshake's answer; its buffered
	// writer is empty and is replaced by one that writes through the
	// batchConn.
	h.conn = &batchConn{Conn: c}
	return h.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriter(h.conn)), nil
}

// SSE returns the handler of GET /api/v1/stream/sse: the same messages as
// [Hub.WebSocket] as Server-Sent Events, each with "event: <type>" and
// its JSON on one "data:" line, and a comment line every Heartbeat. A
// client that takes nothing for the write timeout is disconnected. The
// caller is authenticated again every Recheck; when it may no longer
// read the stream, an "error" event carries the problem (as the REST API
// would answer it, code unauthorized or forbidden) and the stream ends.
func (h *Hub) SSE(auth Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, p, ok := h.open(w, r, auth)
		if !ok {
			return
		}
		defer sub.Close()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		// nginx buffers responses unless told not to.
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		s := &sseSink{w: w, rc: http.NewResponseController(w), timeout: h.o.WriteTimeout}
		ctx, end := context.WithCancelCause(r.Context())
		defer end(nil)
		var rechecked sync.WaitGroup
		rechecked.Go(func() { h.recheck(ctx, end, sub, r, auth, p) })
		reason := h.serve(ctx, sub, s, time.NewTicker(h.o.Heartbeat))
		end(nil)
		rechecked.Wait()
		switch {
		case reason.slow:
			h.log.Info("live stream client disconnected: it took no message for the write timeout", "transport", "sse", "caller", p.Name, "timeout", h.o.WriteTimeout)
			return
		case reason.err != nil:
			// The client is told why, as an error event with the
			// problem the REST API would answer, and the stream ends.
			b, _ := json.Marshal(problemOf(reason.err))
			if s.send("error", b) == nil {
				_ = s.flush()
			}
		}
		h.log.Debug("live stream ended", "transport", "sse", "caller", p.Name, "reason", reason.text)
	})
}

// sseSink writes Server-Sent Events into the response, whose buffer
// holds them back until flush.
type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

func (s *sseSink) send(typ string, msg []byte) error {
	// Every write may reach the network (the response's buffer writes
	// when full), so every one has the deadline. Not every
	// ResponseWriter can set one; the server's can.
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if typ == "" {
		s.buf = append(s.buf[:0], ": heartbeat\n\n"...)
	} else {
		s.buf = append(append(append(s.buf[:0], "event: "...), typ...), "\ndata: "...)
		s.buf = append(append(s.buf, msg...), "\n\n"...)
	}
	_, err := s.w.Write(s.buf)
	return s.failed(err)
}

func (s *sseSink) flush() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	return s.failed(s.rc.Flush())
}

func (s *sseSink) failed(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// endReason is why a stream ended, as a WebSocket close.
type endReason struct {
	code websocket.StatusCode
	text string
	// slow is set when the client took no message for the write timeout;
	// err when the server ended the stream because its caller may no
	// longer have it.
	slow bool
	err  error
}

// RevokedReason is the close reason of a WebSocket stream, or GraphQL
// WebSocket, whose caller signed out, whose API key or user was deleted,
// or whose role no longer allows it.
const RevokedReason = "signed out or credential revoked"

// ended is the cause of a stream's context when the server ends it.
type ended struct{ reason endReason }

func (e *ended) Error() string { return e.reason.text }

// authorize authenticates r's caller and checks that it may read live
// streams.
func authorize(r *http.Request, auth Authenticator) (*tether.Principal, error) {
	p, err := auth(r)
	if err == nil && !tether.RoleAtLeast(p.Role, tether.RoleViewer) {
		err = tether.Errorf(tether.EFORBIDDEN, "%s has role %s; live streams need %s", p.Name, p.Role, tether.RoleViewer)
	}
	return p, err
}

// recheck authenticates the caller of a stream again every Recheck, as
// the request it opened the stream with, until ctx ends. When the caller
// may no longer read it (signed out, key or user deleted, role below
// viewer) it ends ctx with an [ended] cause and closes sub, so that serve
// returns the reason. A check that fails for the node's own fault (the
// user store is down) ends the stream too, with status 1011: without a
// check the server cannot tell that the caller still may.
func (h *Hub) recheck(ctx context.Context, end context.CancelCauseFunc, sub *subscription, r *http.Request, auth Authenticator, was *tether.Principal) {
	t := time.NewTicker(h.o.Recheck)
	defer t.Stop()
	r = r.WithContext(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err := authorize(r, auth)
		if err == nil && (p.TenantID != was.TenantID || p.Kind != was.Kind || p.ID != was.ID) {
			err = tether.Errorf(tether.EUNAUTHORIZED, "the credentials now name another caller")
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		var reason endReason
		switch code := tether.ErrorCode(err); code {
		case tether.EUNAUTHORIZED, tether.EFORBIDDEN:
			h.log.Info("live stream closed: its caller may no longer read it", "caller", was.Name, "err", err)
			reason = endReason{code: websocket.StatusPolicyViolation, text: RevokedReason,
				err: tether.Errorf(code, "%s: %s", RevokedReason, tether.ErrorMessage(err))}
		default:
			h.log.Warn("live stream closed: its caller could not be authenticated again", "caller", was.Name, "err", err)
			reason = endReason{code: websocket.StatusInternalError, text: "the credentials could not be checked again; reconnect"}
			reason.err = tether.Errorf(tether.EUNAVAILABLE, "%s", reason.text)
		}
		end(&ended{reason})
		sub.Close()
		return
	}
}

// serve sends the ready message, then every event of sub, until the
// client goes, falls too far behind, or the hub closes. heartbeat, if not
// nil, ticks when an SSE heartbeat is due.
func (h *Hub) serve(ctx context.Context, sub *subscription, out sink, heartbeat *time.Ticker) endReason {
	var beat <-chan time.Time
	if heartbeat != nil {
		defer heartbeat.Stop()
		beat = heartbeat.C
	}
	gone := func() endReason {
		if e := (*ended)(nil); errors.As(context.Cause(ctx), &e) {
			return e.reason
		}
		return endReason{code: websocket.StatusNormalClosure, text: "client gone"}
	}
	failed := func(err error) endReason {
		if errors.Is(err, context.DeadlineExceeded) {
			return endReason{code: websocket.StatusPolicyViolation, text: "too slow: took no message for " + h.o.WriteTimeout.String(), slow: true}
		}
		return gone()
	}
	if err := out.send("ready", readyMessage); err != nil {
		return failed(err)
	}
	for {
		it, dropped, ok, closed := sub.take()
		if !ok {
			if err := out.flush(); err != nil {
				return failed(err)
			}
		}
		switch {
		case closed:
			if ctx.Err() != nil {
				return gone()
			}
			return endReason{code: websocket.StatusGoingAway, text: "the server is shutting down"}
		case !ok:
			select {
			case <-sub.ready:
			case <-beat:
				if err := out.send("", nil); err != nil {
					return failed(err)
				}
			case <-ctx.Done():
				return gone()
			}
			continue
		}
		if dropped > 0 {
			if err := out.send("lagging", encodeLagging(dropped)); err != nil {
				return failed(err)
			}
		}
		if err := out.send("event", it.wire); err != nil {
			return failed(err)
		}
	}
}

// open authenticates and authorizes the caller, reads the filter and
// subscribes; on failure it has answered with a problem.
func (h *Hub) open(w http.ResponseWriter, r *http.Request, auth Authenticator) (*subscription, *tether.Principal, bool) {
	p, err := authorize(r, auth)
	if err != nil {
		if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
		}
		writeProblem(w, err)
		return nil, nil, false
	}
	f, err := ParseQuery(r.URL.Query())
	if err != nil {
		writeProblem(w, err)
		return nil, nil, false
	}
	// The subscription lives as long as the request; the handler closes
	// it sooner when the stream ends. It counts against the caller's
	// limit.
	sub, err := h.subscribe(WithCaller(r.Context(), p), p.TenantID, f)
	if err != nil {
		writeProblem(w, err)
		return nil, nil, false
	}
	return sub, p, true
}

// sameOrigin refuses a browser's request from another site: a WebSocket
// is not subject to the same-origin policy, and the session cookie would
// go with it.
func sameOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || !strings.EqualFold(u.Host, r.Host) {
		return tether.Errorf(tether.EFORBIDDEN, "origin %q may not open a live stream of %s", origin, r.Host)
	}
	return nil
}

// statuses maps error codes to HTTP statuses as the REST API does.
var statuses = map[string]int{
	tether.EINVALID:      http.StatusBadRequest,
	tether.EUNAUTHORIZED: http.StatusUnauthorized,
	tether.EFORBIDDEN:    http.StatusForbidden,
	tether.ETOOMANY:      http.StatusTooManyRequests,
	tether.EUNAVAILABLE:  http.StatusServiceUnavailable,
	tether.ENOTFOUND:     http.StatusNotFound,
}

// problem is an RFC 9457 problem details body, of the REST API's shape.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

func problemOf(err error) problem {
	code := tether.ErrorCode(err)
	status, ok := statuses[code]
	if !ok {
		code, status = tether.EINTERNAL, http.StatusInternalServerError
	}
	return problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: tether.ErrorMessage(err), Code: code}
}

func writeProblem(w http.ResponseWriter, err error) {
	p := problemOf(err)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
