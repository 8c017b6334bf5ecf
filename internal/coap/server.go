package coap

import (
	"context"
	"log/slog"
	"net"
	"regexp"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options/config"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"
)

// serverConfig is the go-coap option that sets up both servers: one type
// for both so that UDP and DTLS behave the same way.
type serverConfig struct{ g *Gateway }

// UDPServerApply configures the plain CoAP server.
func (c serverConfig) UDPServerApply(cfg *udpServer.Config) {
	c.common(&cfg.Common)
	cfg.Handler = c.g.handle
	cfg.RequestMonitor = c.g.monitor
	cfg.OnNewConn = c.g.onEndpoint
	cfg.CreateInactivityMonitor = func() udpClient.InactivityMonitor { return newIdleMonitor(c.g, c.g.timing.udpIdle) }
}

// DTLSServerApply configures the CoAP over DTLS server.
func (c serverConfig) DTLSServerApply(cfg *dtlsServer.Config) {
	c.common(&cfg.Common)
	cfg.Handler = c.g.handle
	cfg.RequestMonitor = c.g.monitor
	cfg.OnNewConn = c.g.onSession
	cfg.HandshakeTimeout = handshakeTimeout
	cfg.CreateInactivityMonitor = func() udpClient.InactivityMonitor { return newIdleMonitor(c.g, c.g.timing.dtlsIdle) }
}

func (c serverConfig) common(cfg *config.Common[*udpClient.Conn]) {
	cfg.Ctx = c.g.ctx
	cfg.Errors = c.g.libraryError
	cfg.BlockwiseEnable = true
	cfg.BlockwiseSZX = blockwise.SZX1024
	cfg.BlockwiseTransferTimeout = blockTransferTimeout
	cfg.BlockwiseReceivingMessagesCacheMaxEntries = blockTransfersPerEndpoint
	cfg.ProcessReceivedMessage = c.g.preprocess
	cfg.PeriodicRunner = c.g.periodic
}

// periodic runs go-coap's housekeeping (retransmissions, expired
// transfers, idle endpoints) every second until the gateway closes. The
// default sleeps four seconds between rounds and outlives Close by as much.
func (g *Gateway) periodic(f func(now time.Time) bool) {
	g.serving.Add(1)
	go func() {
		defer g.serving.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-g.ctx.Done():
				return
			case now := <-t.C:
				if !f(now) {
					return
				}
			}
		}
	}()
}

// queryInLog matches the queries go-coap prints when it describes a message
// in an error, which hold device tokens.
var queryInLog = regexp.MustCompile(`Queries: \[[^\]]*\]?`)

// libraryError logs go-coap's own errors (malformed datagrams, expired
// transfers, …) at debug, without the queries they may quote.
func (g *Gateway) libraryError(err error) {
	if !g.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	g.log.Debug("coap", "err", queryInLog.ReplaceAllString(err.Error(), "Queries: [redacted]"))
}

// monitor sees every message before go-coap does, in the server's read
// loop, so it must be quick. It takes the acknowledgements and resets of
// the gateway's own confirmable notifications.
func (g *Gateway) monitor(cc *udpClient.Conn, m *pool.Message) (drop bool, err error) {
	if m.Code() == codes.Empty && (m.Type() == message.Acknowledgement || m.Type() == message.Reset) {
		return g.obs.answered(cc, m.MessageID(), m.Type() == message.Reset), nil
	}
	return false, nil
}

// refusalKey marks a request that preprocess already refused.
type refusalKey struct{}

// preprocess runs before go-coap's block-wise layer buffers a request
// block, in the endpoint's own goroutine. It refuses, before anything is
// buffered, a block past the payload limit or with an announced Size1 over
// it, and the first block of a transfer from a requester that does not
// authenticate. A refused request reaches the handler stripped of its body
// and block options, with the refusal in its context, so that go-coap
// forwards it without buffering and the handler answers it.
func (g *Gateway) preprocess(req *pool.Message, cc *udpClient.Conn, next config.HandlerFunc[*udpClient.Conn]) {
	// Close waits for the requests being processed, until their responses
	// are written; those that arrive once it started are not waited for.
	if g.inflight.enter() {
		defer g.inflight.leave()
	}
	if hasBody(req.Code()) && (req.HasOption(message.Block1) || req.HasOption(message.Size1)) {
		if ref, refused := g.checkTransfer(req, cc); refused {
			req.Remove(message.Block1)
			req.Remove(message.Size1)
			req.SetBody(nil)
			req.SetContext(context.WithValue(req.Context(), refusalKey{}, ref))
		}
	}
	if req.Type() == message.NonConfirmable {
		// go-coap answers every request that is not confirmable with a
		// confirmable response, which RFC 7252 §5.2.3 allows but advises
		// against: a device that sends non-confirmable requests to save
		// power would have to acknowledge every response. The type is set
		// here, after go-coap chose it (and cached the response for
		// duplicates, which it replays non-confirmable anyway) and before
		// it writes the response.
		inner := next
		next = func(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
			inner(w, r)
			if m := w.Message(); m.IsModified() && m.Type() == message.Confirmable {
				m.SetType(message.NonConfirmable)
			}
		}
	}
	cc.ProcessReceivedMessageWithHandler(req, next)
}

func hasBody(c codes.Code) bool {
	switch c {
	case codes.POST, codes.PUT, codes.FETCH, codes.PATCH, codes.IPATCH:
		return true
	}
	return false
}

// checkTransfer decides whether a request block may be buffered.
func (g *Gateway) checkTransfer(req *pool.Message, cc *udpClient.Conn) (refusal, bool) {
	var end int64
	first := false
	if v, err := req.GetOptionUint32(message.Block1); err == nil {
		szx, num, more, err := blockwise.DecodeBlockOption(v)
		if err != nil {
			return refusal{code: codes.BadRequest, msg: "the Block1 option is malformed", reason: "bad_block"}, true
		}
		size, err := req.BodySize()
		if err != nil {
			size = 0
		}
		end = num*szx.Size() + size
		first = num == 0 && more
	}
	if size1, err := req.GetOptionUint32(message.Size1); err == nil && int64(size1) > end {
		end = int64(size1)
	}
	if end > int64(g.maxPayload) {
		return g.tooLarge(end), true
	}
	if first {
		if _, err := g.authenticate(req.Context(), cc, req); err != nil {
			return g.authRefusal(err), true
		}
	}
	return refusal{}, false
}

// onEndpoint is called for each new plain-UDP endpoint (remote address and
// port): it bounds their number and drops an endpoint's observations with it.
func (g *Gateway) onEndpoint(cc *udpClient.Conn) {
	g.endpointsMu.Lock()
	g.endpoints++
	over := g.endpoints > maxEndpoints
	g.endpointsMu.Unlock()
	cc.AddOnClose(func() {
		g.endpointsMu.Lock()
		g.endpoints--
		g.endpointsMu.Unlock()
		g.obs.dropConn(cc)
	})
	if over {
		g.log.Debug("coap endpoint refused: too many endpoints", "remote", cc.RemoteAddr().String(), "max", maxEndpoints)
		_ = cc.Close()
	}
}

// onSession is called for each DTLS session once its handshake is done,
// before it serves a request.
func (g *Gateway) onSession(cc *udpClient.Conn) {
	identity := pskIdentity(cc)
	s := &session{cc: cc, identity: identity}
	evicted, ok := g.sessions.add(s)
	cc.AddOnClose(func() {
		g.sessions.remove(s)
		g.obs.dropConn(cc)
	})
	for _, old := range evicted {
		g.log.Debug("coap dtls session closed: the device has too many", "device", identity, "max", maxDTLSSessionsPerDevice)
		_ = old.cc.Close()
	}
	if !ok {
		g.log.Debug("coap dtls session refused: too many sessions", "remote", cc.RemoteAddr().String(), "max", maxDTLSSessions)
		_ = cc.Close()
		return
	}
	if identity == "" {
		// A certificate cipher suite: requests authenticate with t=.
		return
	}
	// The key was checked during the handshake; look the device up again
	// now that the session is registered, so that a deletion or a key
	// change announced in between cannot leave it open.
	ctx, cancel := context.WithTimeout(g.ctx, authTimeout)
	defer cancel()
	d, _, err := g.auth.DevicePSK(ctx, identity)
	if err != nil {
		g.log.Debug("coap dtls session closed: device gone", "device", identity, "err", err)
		g.sessions.remove(s)
		_ = cc.Close()
		return
	}
	g.sessions.setDevice(s, d)
}

// pskIdentity returns the PSK identity a DTLS session was opened with, ""
// for a certificate cipher suite.
func pskIdentity(cc *udpClient.Conn) string {
	nc, ok := cc.Session().(interface{ NetConn() net.Conn })
	if !ok {
		return ""
	}
	dc, ok := nc.NetConn().(*piondtls.Conn)
	if !ok {
		return ""
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return ""
	}
	return string(st.IdentityHint)
}

// idleMonitor ends an endpoint's or a DTLS session's state once it has been
// silent for its idle time, unless it observes something: then every
// observeRefresh it is sent the current state as a confirmable
// notification, which ends the observation if nobody acknowledges it.
type idleMonitor struct {
	g    *Gateway
	idle time.Duration
	last atomic.Int64
}

func newIdleMonitor(g *Gateway, idle time.Duration) *idleMonitor {
	m := &idleMonitor{g: g, idle: idle}
	m.Notify()
	return m
}

// Notify records activity.
func (m *idleMonitor) Notify() { m.last.Store(time.Now().UnixNano()) }

// CheckInactivity is called every few seconds.
func (m *idleMonitor) CheckInactivity(now time.Time, cc *udpClient.Conn) {
	silent := time.Duration(now.UnixNano() - m.last.Load())
	if m.g.obs.observing(cc) {
		if silent >= m.g.timing.observeRefresh {
			m.g.obs.refresh(cc)
			m.Notify()
		}
		return
	}
	if silent >= m.idle {
		_ = cc.Close()
	}
}

// handle dispatches a request to its resource.
func (g *Gateway) handle(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if r.Code() < codes.GET || r.Code() > 31 {
		return // not a request
	}
	defer func() {
		if p := recover(); p != nil {
			g.log.Error("coap handler panic", "panic", p)
			g.reply(w, r, nil, refusal{code: codes.InternalServerError, msg: "internal error", reason: "panic"})
		}
	}()
	if ref, ok := r.Context().Value(refusalKey{}).(refusal); ok {
		g.reply(w, r, nil, ref)
		return
	}
	path, err := r.Path()
	if err != nil {
		path = "/"
	}
	switch path {
	case "/telemetry":
		if r.Code() != codes.POST {
			g.reply(w, r, nil, refusal{code: codes.MethodNotAllowed, msg: "/telemetry takes POST", reason: "method"})
			return
		}
		g.postTelemetry(w, r)
	case "/latest":
		if r.Code() != codes.GET {
			g.reply(w, r, nil, refusal{code: codes.MethodNotAllowed, msg: "/latest takes GET", reason: "method"})
			return
		}
		g.getLatest(w, r)
	case "/.well-known/core":
		if r.Code() != codes.GET {
			g.reply(w, r, nil, refusal{code: codes.MethodNotAllowed, msg: "/.well-known/core takes GET", reason: "method"})
			return
		}
		g.discovery(w)
	case "/shadow":
		switch {
		case g.shadows == nil:
			g.notFound(w, r)
		case r.Code() == codes.GET:
			g.getShadow(w, r)
		case r.Code() == codes.POST:
			g.postShadow(w, r)
		default:
			g.reply(w, r, nil, refusal{code: codes.MethodNotAllowed, msg: "/shadow takes GET and POST", reason: "method"})
		}
	case "/commands":
		switch {
		case g.commands == nil:
			g.notFound(w, r)
		case r.Code() == codes.GET:
			g.getCommands(w, r)
		default:
			g.reply(w, r, nil, refusal{code: codes.MethodNotAllowed, msg: "/commands takes GET (Observe: each notification is a command)", reason: "method"})
		}
	default:
		if id, ok := replyPath(path); ok && g.commands != nil {
			if r.Code() != codes.POST {
				g.reply(w, r, nil, refusal{code: codes.MethodNotAllowed, msg: "/commands/<id>/reply takes POST", reason: "method"})
				return
			}
			g.postReply(w, r, id)
			return
		}
		g.notFound(w, r)
	}
}

func (g *Gateway) notFound(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	g.reply(w, r, nil, refusal{code: codes.NotFound, msg: "no such resource; see /.well-known/core", reason: "not_found"})
}

// Links of the resources (RFC 6690): telemetry and latest always, shadow
// and commands when their services are set.
const (
	linkFormat = `</telemetry>;rt="tether.telemetry";ct="50 60",` +
		`</latest>;rt="tether.latest";ct="50 60";obs`
	shadowLink   = `,</shadow>;rt="tether.shadow";ct="50 60";obs`
	commandsLink = `,</commands>;rt="tether.commands";ct=50;obs`
)

func (g *Gateway) discovery(w *responsewriter.ResponseWriter[*udpClient.Conn]) {
	links := linkFormat
	if g.shadows != nil {
		links += shadowLink
	}
	if g.commands != nil {
		links += commandsLink
	}
	_ = w.SetResponse(codes.Content, message.AppLinkFormat, bytesReader([]byte(links)))
}
