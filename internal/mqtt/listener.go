package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsPath is the one HTTP path that upgrades to MQTT over WebSocket.
const wsPath = "/mqtt"

// listener is one of the gateway's sockets (TCP, TLS, WebSocket or secure
// WebSocket), all feeding the same broker. mochi's own listeners set no
// deadline before CONNECT (a socket that sends nothing, or never finishes
// its TLS handshake, is held forever), serve WebSocket on every path, bind
// a WebSocket address only in Serve, and hide the TLS peer certificates
// behind their own connection type; this one does all four differently.
//
// Every accepted socket gets a deadline of ConnectTimeout that nothing can
// push back (not the HTTP server, not the WebSocket upgrade, not the
// broker reading CONNECT) until the hook has authenticated the client and
// calls [releaseDeadline]; from then on the broker's keep-alive deadline
// rules.
type listener struct {
	id      string // mochi's listener ID, also the transport's name
	addr    string
	tls     *tls.Config // for "tls" and "wss"
	ws      bool
	timeout time.Duration
	log     *slog.Logger

	ln        net.Listener // the bound TCP socket
	http      *http.Server // for "ws" and "wss"
	establish listeners.EstablishFn

	mu     sync.Mutex
	conns  map[*deadlineConn]struct{} // every open socket, so Close can end the ones the broker does not know yet
	closed bool
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id, addr string, tlsConf *tls.Config, ws bool, timeout time.Duration, log *slog.Logger) *listener {
	return &listener{
		id: id, addr: addr, tls: tlsConf, ws: ws, timeout: timeout, log: log,
		conns: map[*deadlineConn]struct{}{},
	}
}

// Init binds the address, so that Address is known before Serve.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("mqtt %s listen on %s: %w", l.id, l.addr, err)
	}
	l.ln = ln
	if l.ws {
		l.http = l.newHTTPServer()
	}
	return nil
}

// ID returns the listener's ID.
func (l *listener) ID() string { return l.id }

// Address returns the bound address.
func (l *listener) Address() string { return l.ln.Addr().String() }

// Protocol returns the transport's name.
func (l *listener) Protocol() string { return l.id }

// Serve accepts connections and hands them to the broker; it returns when
// the listener is closed.
func (l *listener) Serve(establish listeners.EstablishFn) {
	if l.ws {
		l.serveWebSocket(establish)
		return
	}
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, most likely: wait and try again,
			// as net/http does, rather than stop listening for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt accept", "listener", l.id, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		dc := l.track(c)
		if dc == nil {
			continue
		}
		var conn net.Conn = dc
		if l.tls != nil {
			// The handshake happens on the broker's first read, under the
			// connect deadline.
			conn = tls.Server(dc, l.tls)
		}
		go func() {
			if err := establish(l.id, conn); err != nil {
				l.log.Debug("mqtt connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// newHTTPServer returns the server that upgrades requests on [wsPath]
// to MQTT over WebSocket.
func (l *listener) newHTTPServer() *http.Server {
	upgrader := &websocket.Upgrader{
		// The MQTT specification names "mqtt"; Mosquitto also accepts
		// the older "mqttv3.1".
		Subprotocols: []string{"mqtt", "mqttv3.1"},
		// Browsers send an Origin; devices and dashboards on any origin
		// are welcome, since a client is authorized by its MQTT
		// credentials and never by a cookie.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc(wsPath, func(w http.ResponseWriter, r *http.Request) {
		if !offersMQTT(r) {
			http.Error(w, `MQTT over WebSocket needs the subprotocol "mqtt"`, http.StatusBadRequest)
			return
		}
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader has answered
		}
		conn := &wsConn{Conn: c.NetConn(), ws: c}
		if r.TLS != nil {
			conn.certs = r.TLS.PeerCertificates
		}
		if err := l.establish(l.id, conn); err != nil {
			l.log.Debug("mqtt connection ended", "listener", l.id, "remote", r.RemoteAddr, "err", err)
		}
	})
	return &http.Server{
		Handler: mux,
		// Bounds the TLS handshake and the request headers; the connect
		// deadline bounds both anyway.
		ReadHeaderTimeout: l.timeout,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
}

func (l *listener) serveWebSocket(establish listeners.EstablishFn) {
	// Set before the server starts, read only by its handlers.
	l.establish = establish
	var ln net.Listener = &trackingListener{l}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	// After Close, Serve returns http.ErrServerClosed at once.
	if err := l.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Debug("mqtt websocket listener stopped", "listener", l.id, "err", err)
	}
}

// offersMQTT reports whether a WebSocket handshake offers an MQTT
// subprotocol, which the specification requires of a client.
func offersMQTT(r *http.Request) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == "mqtt" || p == "mqttv3.1" {
			return true
		}
	}
	return false
}

// trackingListener gives the HTTP server sockets under the connect
// deadline.
type trackingListener struct{ l *listener }

func (t *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := t.l.ln.Accept()
		if err != nil {
			return nil, err
		}
		if dc := t.l.track(c); dc != nil {
			return dc, nil
		}
	}
}

func (t *trackingListener) Close() error   { return t.l.ln.Close() }
func (t *trackingListener) Addr() net.Addr { return t.l.ln.Addr() }

// track puts a new socket under the connect deadline and remembers it;
// it returns nil (and closes the socket) once the listener is closed.
func (l *listener) track(c net.Conn) *deadlineConn {
	limit := time.Now().Add(l.timeout)
	dc := &deadlineConn{Conn: c, l: l, limit: limit}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = c.Close()
		return nil
	}
	l.conns[dc] = struct{}{}
	l.mu.Unlock()
	_ = c.SetDeadline(limit)
	return dc
}

func (l *listener) forget(dc *deadlineConn) {
	l.mu.Lock()
	delete(l.conns, dc)
	l.mu.Unlock()
}

// Close stops accepting, lets the broker disconnect its clients on this
// listener (with DISCONNECT where the protocol has one), then closes every
// socket still open: those that had not finished CONNECT, which the broker
// does not know and would otherwise wait for.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	if l.http != nil {
		_ = l.http.Close()
	}
	_ = l.ln.Close()
	closeClients(l.id)
	l.mu.Lock()
	rest := make([]*deadlineConn, 0, len(l.conns))
	for dc := range l.conns {
		rest = append(rest, dc)
	}
	l.mu.Unlock()
	for _, dc := range rest {
		_ = dc.Close()
	}
}

// deadlineConn is an accepted socket whose deadlines cannot be set past
// its connect limit until it is released.
type deadlineConn struct {
	net.Conn
	l    *listener
	once sync.Once

	mu    sync.Mutex
	limit time.Time // zero once released
}

func (c *deadlineConn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		return c.limit
	}
	return t
}

// SetDeadline sets the read and write deadlines, no later than the
// connect limit while there is one.
func (c *deadlineConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.clamp(t)) }

// SetReadDeadline sets the read deadline, no later than the connect limit
// while there is one.
func (c *deadlineConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

// SetWriteDeadline sets the write deadline, no later than the connect
// limit while there is one.
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

// Close closes the socket and forgets it.
func (c *deadlineConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.forget(c) })
	return err
}

func (c *deadlineConn) release() {
	c.mu.Lock()
	c.limit = time.Time{}
	c.mu.Unlock()
}

// releaseDeadline lifts the connect limit of an authenticated client's
// socket, whatever it is wrapped in.
func releaseDeadline(c net.Conn) {
	for c != nil {
		switch v := c.(type) {
		case *deadlineConn:
			v.release()
			return
		case *tls.Conn:
			c = v.NetConn()
		case *wsConn:
			c = v.Conn
		default:
			return
		}
	}
}

// peerCertificates returns the certificate chain a client presented in
// its TLS handshake (leaf first), or nil.
func peerCertificates(c net.Conn) []*x509.Certificate {
	switch v := c.(type) {
	case *tls.Conn:
		return v.ConnectionState().PeerCertificates
	case *wsConn:
		return v.certs
	}
	return nil
}

// wsConn carries MQTT over WebSocket binary messages as a net.Conn. The
// embedded Conn is the socket under the WebSocket (for addresses and
// deadlines); reads and writes go through the WebSocket framing. The
// broker serializes writes to a client, as gorilla/websocket requires.
type wsConn struct {
	net.Conn
	ws    *websocket.Conn
	r     io.Reader // the message being read, if any
	certs []*x509.Certificate
}

// errNotBinary is the error for a text WebSocket message, which MQTT does
// not allow.
var errNotBinary = errors.New("websocket: MQTT travels in binary messages")

// Read reads from the current binary message, moving to the next one when
// it is used up.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the socket under the WebSocket.
func (c *wsConn) Close() error { return c.ws.Close() }
