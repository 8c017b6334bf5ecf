// Package coap is Tether's CoAP gateway (RFC 7252), over plain UDP and over
// DTLS, built on github.com/plgd-dev/go-coap/v3. It authenticates devices,
// hands telemetry to the ingest path, serves each device its own latest
// values and shadow, observable (RFC 7641), and is a command transport:
// a device observing /commands is notified of each command and replies
// with a POST. The shadow, command and presence services are optional
// ([Options]); without one its resources are not there.
//
// # Resources
//
//   - POST /telemetry: a telemetry payload, application/json (Content-Format
//     50, also when the option is absent) or application/cbor (60), which
//     [telemetry.CBORToJSON] converts to the same JSON first. A confirmable
//     request is answered 2.04 Changed only after the ingest path returned,
//     that is once the bus has stored the message (while it waits, a
//     retransmission is recognised as one and ignored). A non-confirmable request is handled
//     the same way and answered with a non-confirmable response, as RFC 7252
//     §5.2.3 advises (go-coap alone would answer it confirmable).
//   - GET /latest: the device's newest value of each key, as a JSON array of
//     {key, ts, value} (CBOR with Accept: 60, ts then being a tag 0 time).
//     Observe: 0 registers the requester, which is notified after storage
//     commits new telemetry of that device; Observe: 1, a Reset to a
//     notification, an unacknowledged notification, the end of the DTLS
//     session and [Gateway.Disconnect] deregister it. Responses carry an
//     ETag; a GET naming the current one is answered 2.03 Valid.
//   - GET /shadow[?name=<name>]: the device's shadow (the classic one, or
//     the named one), the whole [tether.Shadow] in JSON (CBOR with Accept:
//     60). Observe as for /latest; an observer is notified, with the whole
//     shadow, when [Gateway.ShadowChanged] announces a newer version whose
//     desired state differs from the one it was last sent, so a device's
//     own reported updates do not come back to it.
//   - POST /shadow[?name=<name>]: a [tether.ShadowUpdate] in JSON or CBOR
//     (converted to JSON as telemetry is) that may change state.reported
//     only (state.desired: 4.03); 2.04 with the shadow (format by Accept).
//     A stale version is 4.09 Conflict, a document over the shadow's
//     limits 4.13, an invalid one 4.00, each with the service's diagnostic.
//   - GET /commands with Observe: 0 makes the observer a command transport
//     ([Gateway.Deliver]): the response has no representation, the command
//     service is asked to offer the device's queued commands at once, and
//     each later notification is one command, {"id","name","params",
//     "one_way"} in JSON, confirmable; the command is reported delivered
//     when the device acknowledges it. Without Observe the response is the
//     pending commands as a JSON array, and they are reported delivered
//     once it is written. Observe: 1 deregisters and hands over nothing.
//   - POST /commands/<id>/reply: a [tether.CommandReply] in JSON or CBOR;
//     2.04 once recorded, 4.04 for a command the device does not have, 4.09
//     Conflict when the command is done already (its status in the
//     diagnostic; a 2.04 would tell a device whose reply came after a
//     timeout that it counted).
//   - GET /.well-known/core: the resources above in link format (RFC 6690).
//
// # Authentication
//
// On plain UDP every request carries the device token in the query:
// coap://host/telemetry?t=<device>.<secret>. Over DTLS with a pre-shared key
// the PSK identity is the device ID and the key is the device's PSK; no
// query is needed, and a t= given as well must name the same device (4.03
// otherwise). When the DTLS listener also has a certificate, a session
// opened with a certificate cipher suite authenticates each request with
// t= as on plain UDP. An unknown PSK identity fails the handshake exactly as
// a wrong key does, so a client learns nothing about which devices exist.
//
// # Responses
//
// A refusal carries a short human-readable diagnostic payload, without a
// Content-Format option as RFC 7252 §5.5.2 describes. The codes are mapped
// from Tether's error codes here and nowhere else:
//
//	4.00 Bad Request          a malformed option or query; a payload that breaks the payload
//	                          rules (malformed JSON or CBOR, no values, a bad ts, …)
//	4.01 Unauthorized         no credential, or a wrong one
//	4.03 Forbidden            t= names another device than the DTLS session's identity;
//	                          a shadow update with desired state
//	4.04 Not Found, 4.05 Method Not Allowed, 4.06 Not Acceptable (an Accept other than 50 or 60;
//	                          /commands is JSON only)
//	4.09 Conflict             a stale shadow version; a reply to a command that is done
//	4.13 Request Entity Too Large   with Size1 = the limit in bytes, when the body (the
//	                          reassembled block-wise body, or the Size1 the client announced)
//	                          is over the payload limit; also for too many points
//	4.15 Unsupported Content-Format
//	4.29 Too Many Requests    (RFC 8516) over the device's publish rate; Max-Age = seconds to wait
//	                          (every request of an authenticated device takes from that budget)
//	5.03 Service Unavailable  the bus did not store the message, the credential could not be
//	                          checked, or the gateway is shutting down; Max-Age = seconds to wait
//
// Every request of an authenticated device (POST /telemetry, GET /latest,
// GET and POST /shadow, GET /commands, a reply, an Observe registration or
// deregistration) is reported to presence as seen over "coap" and takes
// one message from the
// per-device budget the device shares with MQTT and HTTP (the ingest
// path's Allow, which counts a refusal), so that a device cannot flood the
// store with reads any more than with writes. A block-wise request body is
// charged once, when reassembled; the later blocks of a large response are
// served from go-coap's cache and are not charged. /.well-known/core names
// no device and is not charged. An Observe deregistration takes effect even
// when the request is answered 4.29.
//
// A payload that breaks the payload rules is 4.00 rather than 4.22
// Unprocessable Entity (the HTTP edge's 422): every CoAP client knows 4.00,
// and the diagnostic names the reason and the problem either way.
//
// # Block-wise transfers and limits
//
// Block1 (RFC 7959) reassembles large request bodies and Block2 splits large
// responses. The payload limit of the ingest path applies to the wire body: a
// block whose end, or an announced Size1, is past the limit is refused with
// 4.13 and Size1 before anything more is buffered, and a transfer is only
// started for a requester that authenticates on its first block. A CBOR
// body that converts to JSON over the limit is refused with 4.13 too.
// Everything a client can make the gateway hold is bounded: block-wise
// transfers per endpoint, plain-UDP endpoints, DTLS sessions (in all and per
// device), observations per device (the oldest is ended when a ninth
// registers).
//
// One caveat comes from go-coap: the plain-UDP server reads all endpoints in
// one loop and queues at most 16 requests per endpoint, so an endpoint that
// sends more than that while its requests wait for a slow bus holds up the
// others until they are done (at most the publish timeout each).
//
// # Notifications
//
// Notifications are confirmable, one at a time per observer; values stored
// while one is on its way are coalesced into the next, which carries the
// state at the time it is sent (RFC 7641 §4.5.2). A representation larger
// than one block is notified with its first block only, and the client
// fetches the rest with GET and Block2 (RFC 7959 §2.6). An observer whose
// endpoint stays silent for ten minutes is sent a notification of the
// current state, which both refreshes it and checks that it is still there
// (for /commands: the next command waiting, or no representation).
// Each per-device resource is an observable: a render function and a call
// to notify when it changes. /commands is the exception to coalescing:
// each command handed to an observer is a notification of its own, sent
// after the one before it was acknowledged, and always whole (its rest
// could not be fetched again with GET, which would return the pending
// list), so a command must fit in a datagram. A command whose notification
// is never acknowledged (or is reset) stays sent: the command service
// offers it again when the device observes /commands again.
package coap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// Authenticator checks a device's credentials.
type Authenticator interface {
	// AuthenticateDevice checks a device token "<deviceID>.<secret>";
	// deviceID "" means take it from the token. A failure is a tether
	// error with EUNAUTHORIZED.
	AuthenticateDevice(ctx context.Context, deviceID, token string) (*tether.Device, error)
	// DevicePSK returns the DTLS pre-shared key of a device (the PSK
	// identity is the device ID): EUNAUTHORIZED when the device is unknown
	// or has no PSK.
	DevicePSK(ctx context.Context, deviceID string) (*tether.Device, []byte, error)
}

// Ingestor takes a device's telemetry and returns once it is durable.
type Ingestor interface {
	// Accept returns once the bus stored the payload: a *telemetry.Error for
	// a refused payload, an error with tether code EUNAVAILABLE when the bus
	// failed (send again later).
	Accept(ctx context.Context, d *tether.Device, payload []byte) (points int, err error)
	// AcceptCBOR is Accept for a CBOR payload, converted to the same JSON.
	AcceptCBOR(ctx context.Context, d *tether.Device, payload []byte) (points int, err error)
	// Limits returns the payload limits; MaxPayload is in bytes.
	Limits() telemetry.Limits
	// Allow takes one message from the device's publish budget, shared by
	// all protocols; it is called for every request of an authenticated
	// device (telemetry before Accept, GET /latest, Observe registrations).
	Allow(d *tether.Device) (ok bool, retryAfter time.Duration)
}

// LatestReader reads the newest value of each key of a device.
type LatestReader interface {
	Latest(ctx context.Context, tenantID, deviceID string) ([]tether.Latest, error)
}

// Shadows reads and updates device shadows. Nil turns /shadow off.
type Shadows interface {
	// Get returns a shadow; one never written has version 0.
	Get(ctx context.Context, tenant, deviceID, name string) (*tether.Shadow, error)
	// Update applies a merge patch: EINVALID, ETOOLARGE, ECONFLICT (a
	// stale version), ENOTFOUND (no device).
	Update(ctx context.Context, tenant, deviceID, name string, u tether.ShadowUpdate) (*tether.Shadow, error)
}

// Commands is the device side of the command service. Nil turns
// /commands off. One that also implements [CommandReadier] is told when a
// device starts observing /commands.
type Commands interface {
	// Pending returns the device's commands not done yet, in order.
	Pending(ctx context.Context, tenant, deviceID string) ([]*tether.Command, error)
	// Delivered records that the device received a command.
	Delivered(ctx context.Context, tenant, deviceID, id string) error
	// Reply records the device's reply: ENOTFOUND, or ECONFLICT (with the
	// command) when the command is done already.
	Reply(ctx context.Context, tenant, deviceID, id string, r tether.CommandReply) (*tether.Command, error)
}

// CommandReadier is implemented by a [Commands] that wants to know when a
// device can take commands: it then offers the device's queued commands,
// through [Gateway.Deliver] among its transports.
type CommandReadier interface {
	Ready(ctx context.Context, tenant, deviceID string, resumed bool)
}

// Presence is told of every authenticated request. Nil: nobody is.
type Presence interface {
	// Seen must be cheap and must not block.
	Seen(d *tether.Device, transport string)
}

// Options configure a [Gateway].
type Options struct {
	// Addr is the UDP address of plain CoAP, like ":5683"; empty is off.
	Addr string
	// DTLSAddr is the UDP address of CoAP over DTLS, like ":5684"; empty
	// is off. Pre-shared keys are always offered; certificate cipher suites
	// too when Certificate is not nil.
	DTLSAddr string
	// Certificate returns the server certificate for DTLS. It is called for
	// every handshake, so the caller can reload the certificate; may be nil.
	Certificate func() (*tls.Certificate, error)
	Logger      *slog.Logger
	// PublishTimeout bounds how long a telemetry request waits for the
	// bus; default 10s.
	PublishTimeout time.Duration
	// Shadows, Commands and Presence are optional services; each one
	// that is nil turns its resources (or, for Presence, its calls) off.
	Shadows  Shadows
	Commands Commands
	Presence Presence
}

// Bounds and timings. They are constants rather than options until a
// deployment needs to change one.
const (
	// maxObserversPerDevice bounds the observations of one device, over
	// all its endpoints and resources; a new one ends the oldest.
	maxObserversPerDevice = 8
	// maxDTLSSessionsPerDevice bounds a device's DTLS sessions; a new one
	// closes the oldest (a device that rebooted or changed address does
	// not wait for its old session to time out).
	maxDTLSSessionsPerDevice = 8
	// maxDTLSSessions and maxEndpoints bound the DTLS sessions and the
	// plain-UDP endpoints (remote address and port) held at once.
	maxDTLSSessions = 10000
	maxEndpoints    = 50000
	// udpIdle and dtlsIdle end the state of an endpoint or a DTLS session
	// without observations after that long without a message from it.
	// udpIdle is longer than the time a client retransmits a confirmable
	// request (45 s), so a retransmission is still recognised as one.
	udpIdle  = 2 * time.Minute
	dtlsIdle = 10 * time.Minute
	// observeRefresh is how long an observing endpoint may stay silent
	// before it is sent the current state as a confirmable notification;
	// observeMaxAge (seconds) is the Max-Age of /latest for an observer,
	// longer than observeRefresh so a client never finds it stale.
	observeRefresh = 10 * time.Minute
	observeMaxAge  = 15 * 60
	// busRetryAfter is the Max-Age (seconds) of a 5.03.
	busRetryAfter = 5
	// authTimeout bounds a credential check, renderTimeout the reading of
	// a representation.
	authTimeout   = 5 * time.Second
	renderTimeout = 5 * time.Second
	// blockTransferTimeout bounds a whole block-wise transfer, and how long
	// a large response is kept for a client fetching it block by block.
	blockTransferTimeout = time.Minute
	// blockTransfersPerEndpoint bounds the transfers one endpoint
	// reassembles at once.
	blockTransfersPerEndpoint = 2
	// handshakeTimeout bounds a DTLS handshake.
	handshakeTimeout = 10 * time.Second
	// ackTimeout and maxRetransmit are RFC 7252's ACK_TIMEOUT and
	// MAX_RETRANSMIT, for confirmable notifications.
	ackTimeout    = 2 * time.Second
	maxRetransmit = 4
)

// Cipher suites of the DTLS listener. pion offers no PSK suite unless told
// to. Each list has the suite RFC 7252 §9.1.3 makes mandatory (the CCM_8
// ones) besides the AEAD suites common clients prefer; no CBC suites.
var (
	pskSuites = []piondtls.CipherSuiteID{
		piondtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
		piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
		piondtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
		piondtls.TLS_PSK_WITH_AES_128_CCM,
		piondtls.TLS_PSK_WITH_AES_128_CCM_8,
		piondtls.TLS_PSK_WITH_AES_256_CCM_8,
	}
	certificateSuites = []piondtls.CipherSuiteID{
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		piondtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		piondtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		piondtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	}
)

// Gateway is the CoAP server.
type Gateway struct {
	auth       Authenticator
	in         Ingestor
	latest     LatestReader
	log        *slog.Logger
	timeout    time.Duration
	maxPayload int

	udpListener  *coapNet.UDPConn
	dtlsListener *coapNet.DTLSListener
	udpServer    *udpServer.Server
	dtlsServer   *dtlsServer.Server
	serving      sync.WaitGroup

	// ctx ends notifications and credential checks at Close; acceptCtx
	// ends in-flight publishes only once Close stopped waiting for them.
	ctx          context.Context
	cancel       context.CancelFunc
	acceptCtx    context.Context
	acceptCancel context.CancelFunc
	// closing makes telemetry requests answer 5.03; inflight counts the
	// requests being processed, which Close waits for.
	closing  atomic.Bool
	inflight gate

	obs      *observations
	sessions *sessions
	// latestRes, shadowRes and commandsRes are the observables behind
	// GET /latest, /shadow and /commands.
	latestRes   *observable
	shadowRes   *observable
	commandsRes *observable

	shadows  Shadows
	commands Commands
	presence Presence

	endpointsMu sync.Mutex
	endpoints   int

	// timing holds the durations tests shorten.
	timing timing
}

// timing is the durations of a gateway: the constants of the same names,
// except in tests.
type timing struct {
	udpIdle, dtlsIdle, observeRefresh, ackTimeout time.Duration
}

// New builds the gateway and binds its sockets, so that the addresses are
// known before Serve.
func New(auth Authenticator, in Ingestor, latest LatestReader, o Options) (*Gateway, error) {
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		auth: auth, in: in, latest: latest, timeout: o.PublishTimeout,
		shadows: o.Shadows, commands: o.Commands, presence: o.Presence,
		log:        o.Logger,
		maxPayload: in.Limits().MaxPayload,
		sessions:   newSessions(),
		timing:     timing{udpIdle: udpIdle, dtlsIdle: dtlsIdle, observeRefresh: observeRefresh, ackTimeout: ackTimeout},
	}
	if g.maxPayload <= 0 {
		g.maxPayload = telemetry.DefaultLimits().MaxPayload
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.acceptCtx, g.acceptCancel = context.WithCancel(context.Background())
	g.inflight.init()
	g.obs = newObservations(g)
	g.latestRes = &observable{name: "latest", render: g.renderLatest}
	g.shadowRes = &observable{name: "shadow", render: g.renderShadow}
	g.commandsRes = &observable{name: "commands", next: g.nextCommand, whole: true}

	if o.Addr != "" {
		l, err := coapNet.NewListenUDP("udp", o.Addr)
		if err != nil {
			g.cancel()
			g.acceptCancel()
			return nil, fmt.Errorf("coap listen on %s: %w", o.Addr, err)
		}
		g.udpListener = l
		g.udpServer = udp.NewServer(serverConfig{g: g})
	}
	if o.DTLSAddr != "" {
		suites := pskSuites
		if o.Certificate != nil {
			suites = append(suites, certificateSuites...)
		}
		opts := []piondtls.ServerOption{
			piondtls.WithPSK(g.psk),
			piondtls.WithCipherSuites(suites...),
			piondtls.WithExtendedMasterSecret(piondtls.RequestExtendedMasterSecret),
		}
		if o.Certificate != nil {
			get := o.Certificate
			opts = append(opts, piondtls.WithGetCertificate(func(*piondtls.ClientHelloInfo) (*tls.Certificate, error) {
				c, err := get()
				if err != nil {
					return nil, fmt.Errorf("coap dtls certificate: %w", err)
				}
				return c, nil
			}))
		}
		l, err := coapNet.NewDTLSListener("udp", o.DTLSAddr, coapNet.NewDTLSServerOptions(opts...))
		if err != nil {
			g.closeListeners()
			g.cancel()
			g.acceptCancel()
			return nil, fmt.Errorf("coap dtls listen on %s: %w", o.DTLSAddr, err)
		}
		g.dtlsListener = l
		g.dtlsServer = dtls.NewServer(serverConfig{g: g})
	}
	return g, nil
}

// Addr returns the bound UDP address, or "" when plain CoAP is off.
func (g *Gateway) Addr() string {
	if g.udpListener == nil {
		return ""
	}
	return g.udpListener.LocalAddr().String()
}

// DTLSAddr returns the bound DTLS address, or "" when DTLS is off.
func (g *Gateway) DTLSAddr() string {
	if g.dtlsListener == nil {
		return ""
	}
	return g.dtlsListener.Addr().String()
}

// Serve starts serving; it returns at once.
func (g *Gateway) Serve() error {
	if g.udpServer != nil {
		g.serving.Add(1)
		go func() {
			defer g.serving.Done()
			if err := g.udpServer.Serve(g.udpListener); err != nil && !errors.Is(err, net.ErrClosed) {
				g.log.Error("coap serve", "err", err)
			}
		}()
	}
	if g.dtlsServer != nil {
		g.serving.Add(1)
		go func() {
			defer g.serving.Done()
			if err := g.dtlsServer.Serve(g.dtlsListener); err != nil && !errors.Is(err, net.ErrClosed) {
				g.log.Error("coap dtls serve", "err", err)
			}
		}()
	}
	return nil
}

// Close stops the gateway gracefully: telemetry that arrives from now on is
// answered 5.03 (so the device sends it again later), requests already
// being processed, those on their way to the bus among them, finish and are
// answered (bounded by ctx), observers are told the observation ended, then
// the sockets are closed.
func (g *Gateway) Close(ctx context.Context) error {
	g.closing.Store(true)
	var err error
	select {
	case <-g.inflight.close():
	case <-ctx.Done():
		err = errors.New("coap: in-flight publishes did not finish in time")
	}
	g.acceptCancel()
	g.obs.closeAll()
	g.cancel()
	if g.udpServer != nil {
		g.udpServer.Stop()
	}
	if g.dtlsServer != nil {
		g.dtlsServer.Stop()
	}
	g.closeListeners()
	done := make(chan struct{})
	go func() {
		g.serving.Wait()
		g.obs.wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = errors.New("coap: the servers did not stop in time")
		}
	}
	return err
}

func (g *Gateway) closeListeners() {
	if g.udpListener != nil {
		_ = g.udpListener.Close()
	}
	if g.dtlsListener != nil {
		_ = g.dtlsListener.Close()
	}
}

// Stored is called after storage committed telemetry: the observers of
// those devices' /latest are notified. It does not block.
func (g *Gateway) Stored(msgs []tether.Message) {
	var last string
	for _, m := range msgs {
		// Batches are often runs of one device; skip the repeats cheaply.
		if m.DeviceID == last {
			continue
		}
		last = m.DeviceID
		g.obs.changed(m.DeviceID, g.latestRes)
	}
}

// Disconnect ends a device's DTLS sessions and observations (the device
// was deleted or its credentials changed) and returns how many sessions and
// observations it ended. An observer on plain UDP is told with a final 4.01.
func (g *Gateway) Disconnect(deviceID string) int {
	ended := g.obs.removeDevice(deviceID)
	for _, o := range ended {
		// A DTLS session of the device itself is closed below, which tells
		// the client; any other observer is told here.
		if s := g.sessions.get(o.cc); s == nil || s.identity != deviceID {
			g.endObservation(o, refusal{code: codes.Unauthorized, msg: "observation ended: the device was deleted or its credentials changed", reason: "disconnected"})
		}
	}
	closed := g.sessions.removeDevice(deviceID)
	for _, s := range closed {
		_ = s.cc.Close()
	}
	if n := len(ended) + len(closed); n > 0 {
		g.log.Debug("coap device disconnected", "device", deviceID, "observations", len(ended), "dtls_sessions", len(closed))
	}
	return len(ended) + len(closed)
}

// gate counts requests being processed and, once closed, admits no more. Unlike a sync.WaitGroup it may be entered while Close waits.
type gate struct {
	mu      sync.Mutex
	n       int
	closed  bool
	drained chan struct{}
}

func (g *gate) init() { g.drained = make(chan struct{}) }

// enter admits one request, or reports false once the gate is closed.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closed && g.n == 0 {
		close(g.drained)
	}
}

// close admits no more requests and returns a channel closed once those
// admitted have left.
func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		if g.n == 0 {
			close(g.drained)
		}
	}
	return g.drained
}
