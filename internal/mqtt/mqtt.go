// Package mqtt is Tether's MQTT 3.1.1 and 5.0 gateway, built on the
// mochi-mqtt broker. One broker serves four listeners (TCP, TLS,
// WebSocket and secure WebSocket on the path /mqtt), with the same
// sessions on all of them.
//
// A device authenticates with a token (username = device ID, password =
// token) or, on a TLS listener, with a client certificate that the
// [Authenticator] verifies. It is confined to its own topic tree
// devices/<id>/…, and telemetry it publishes on devices/<id>/telemetry goes
// to the ingest path: a QoS 1 or 2 PUBLISH is acknowledged only once the
// bus has stored it. Other publishes inside its tree reach subscribers as
// usual. In lab mode ([Options].AllowAnonymous) a client without any
// credential may use every topic outside devices/, and never reads one
// inside it; $SYS is the server's, read-only.
//
// With the services in [Options], a device also keeps its shadow
// (devices/<id>/shadow[/name/<name>]/update and /get, answered on
// …/accepted or …/rejected, and …/delta when its desired state changes,
// see [Gateway.ShadowChanged]), takes commands (the gateway is the
// command service's transport, [Gateway.Deliver]; the device replies on
// devices/<id>/commands/<command id>/reply) and has its presence recorded,
// with why each connection ended. Two kinds of clients are not devices: a
// device registering itself connects with the username $provision, a
// provisioning key as password and the device ID it wants as client ID,
// publishes on $provision/<client id> and reads its credentials on
// $provision/<client id>/accepted; an application connects with the
// username $app and an API key, and reads its tenant's events on
// $events/<tenant>/<kind>/<device> ([Gateway.PublishEvent]). Nobody else
// reads or writes $provision or $events.
//
// The gateway guards itself: connects per source address, connections per
// device, the keep-alive a client may ask for, the time a socket may take
// to authenticate, each device's publish budget (shared with the other
// protocols through the [Ingestor]) and the number of retained messages.
// With [Options].StoreDir, persistent sessions (subscriptions, queued and
// in-flight messages) and retained messages survive a restart.
//
// Inside the broker a client ID is scoped by its owner, "<device>:<client
// id>" for a device and "~anon:<client id>" for an anonymous client
// ("~prov:<client id>" and "~app:<tenant>:<client id>" for the others),
// because the broker finds sessions by client ID alone; and a client's
// username is its owner's identity (tenant, device ID and creation time),
// stored with its session, so that a session restored from the store is
// resumed only by the device that left it, not by a device created later
// under the same ID.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/limit"
	"github.com/tether-iot/tether/internal/telemetry"
)

// Authenticator checks a device's credentials.
type Authenticator interface {
	AuthenticateDevice(ctx context.Context, deviceID, token string) (*tether.Device, error)
	// AuthenticateCertificate returns the device a TLS client certificate
	// chain authenticates. chain[0] is the client's leaf certificate as
	// presented in the TLS handshake; the implementation verifies the
	// chain, expiry and revocation. EUNAUTHORIZED on failure.
	AuthenticateCertificate(ctx context.Context, chain []*x509.Certificate) (*tether.Device, error)
}

// Ingestor takes a device's telemetry and returns once it is durable.
type Ingestor interface {
	Accept(ctx context.Context, d *tether.Device, payload []byte) (int, error)
	Limits() telemetry.Limits
	// Allow takes one message from the device's publish budget (and
	// counts a refusal itself).
	Allow(d *tether.Device) (ok bool, retryAfter time.Duration)
	// Throttle waits up to most for the device's next token, for a
	// publish that cannot be refused (3.1.1 QoS 1 or 2).
	Throttle(ctx context.Context, d *tether.Device, most time.Duration) bool
}

// Options configure a [Gateway].
type Options struct {
	// Listen addresses; an empty one is off. TLSAddr and WSSAddr need TLS.
	Addr, WSAddr, TLSAddr, WSSAddr string
	// TLS is the server side of MQTTS and WSS. Client certificates are
	// requested, not verified: the Authenticator verifies them, since the
	// trusted CAs are per tenant and change at run time.
	TLS *tls.Config

	Logger *slog.Logger
	// PublishTimeout bounds how long a PUBLISH waits for the bus.
	PublishTimeout time.Duration

	// AllowAnonymous lets clients without credentials connect and use
	// any topic outside devices/ (lab mode).
	AllowAnonymous bool
	// MaxKeepAlive is the longest keep-alive a client may have, seconds.
	MaxKeepAlive uint16
	// MaxConnectionsPerDevice bounds a device's simultaneous connections.
	MaxConnectionsPerDevice int
	// ConnectRatePerIP is the connects per second allowed from one source
	// address (bursts of five seconds' worth); 0 means no limit.
	ConnectRatePerIP int
	// ConnectTimeout closes a connection that has not authenticated by then.
	ConnectTimeout time.Duration
	// StoreDir holds sessions, queued messages and retained messages
	// across restarts; empty keeps them in memory only.
	StoreDir string

	// The services behind the device features; each nil one turns its
	// feature off (its topics are then ordinary topics of the device's
	// tree, or refused).
	//
	// Shadows answers devices/<id>/shadow[/name/<n>]/update and /get.
	Shadows Shadows
	// Commands hears when a device can take commands, their PUBACKs and
	// the device's replies on devices/<id>/commands/<cid>/reply.
	Commands Commands
	// Presence records each device connection and why it ended.
	Presence Presence
	// Provisioner registers clients that connect with the username
	// $provision and a provisioning key as password.
	Provisioner Provisioner
	// Apps authenticates clients that connect with the username $app and
	// an API key as password, to read $events/<tenant>/#.
	Apps Apps
	// OnDeviceMessage, if set, sees every message a device publishes on
	// its tree other than its telemetry and its service requests (shadow,
	// command replies), for the rules that read MQTT topics. It is called
	// in the client's packet loop and must not block.
	OnDeviceMessage func(d *tether.Device, topic string, payload []byte)
}

// Bounds on retained messages, so that a runaway device (or lab client)
// cannot fill the memory: retained topics per device tree, and in all
// outside devices/ together.
const (
	maxRetainedPerDevice = 100
	maxRetainedAnonymous = 10_000
)

// sessionExpiry is the longest a session outlives its connection, so that
// a device cannot pin memory with sessions it never comes back to.
const sessionExpiry = 24 * 60 * 60

// Gateway is the MQTT server.
type Gateway struct {
	srv       *mochi.Server
	hook      *hook
	listeners map[string]*listener // by ID: tcp, tls, ws, wss
	closed    atomic.Bool
}

// New builds the gateway, opens its store and binds its listeners, so
// that the addresses are known before Serve.
func New(auth Authenticator, in Ingestor, o Options) (*Gateway, error) {
	if o.PublishTimeout == 0 {
		o.PublishTimeout = 10 * time.Second
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if (o.TLSAddr != "" || o.WSSAddr != "") && o.TLS == nil {
		return nil, errors.New("mqtt: the TLS and WSS listeners need a TLS configuration")
	}
	caps := mochi.NewDefaultServerCapabilities()
	// Packets well over the payload limit are cut off by the broker
	// itself; those only a little over it reach the ingest path, which
	// refuses them with a reason the device can read.
	caps.MaximumPacketSize = uint32(in.Limits().MaxPayload + 64<<10)
	caps.MaximumSessionExpiryInterval = sessionExpiry
	// mochi's default (a day) deletes every retained message a day after
	// it was published, and stamps every message it delivers with a
	// Message Expiry Interval the publisher never set. Retained messages
	// are bounded in number instead; queued messages go with their
	// session; a publisher's own expiry is still honoured.
	caps.MaximumMessageExpiryInterval = 0
	// mochi copies a PUBLISH's properties (user properties included) into
	// the PUBACK it answers with; Mosquitto does not.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// Topic aliases a 5.0 client may use, announced in CONNACK: Mosquitto's
	// default (max_topic_alias 10). mochi's default, 65535, would let each
	// connection hold that many topics.
	caps.TopicAliasMaximum = 10
	srv := mochi.New(&mochi.Options{
		InlineClient: true,
		Capabilities: caps,
		// The broker logs every client error, with whole packets, at
		// warn; Tether logs what matters itself.
		Logger: slog.New(minLevel{slog.LevelError, o.Logger.Handler()}).With("component", "mqtt"),
	})
	h := newHook(srv, auth, in, o)
	if err := srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("mqtt hook: %w", err)
	}
	g := &Gateway{srv: srv, hook: h, listeners: map[string]*listener{}}
	if o.StoreDir != "" {
		st, err := openStore(o.StoreDir, srv, caps.MaximumSessionExpiryInterval, o.Logger, h.retained.load)
		if err != nil {
			return nil, err
		}
		if err := srv.AddHook(st, nil); err != nil {
			_ = st.Stop()
			return nil, fmt.Errorf("mqtt store hook: %w", err)
		}
		h.store = st
	}
	var tlsConf *tls.Config
	if o.TLS != nil {
		tlsConf = o.TLS.Clone()
		if tlsConf.ClientAuth == tls.NoClientCert {
			tlsConf.ClientAuth = tls.RequestClientCert
		}
	}
	for _, l := range []struct {
		id, addr string
		tls      *tls.Config
		ws       bool
	}{
		{"tcp", o.Addr, nil, false},
		{"tls", o.TLSAddr, tlsConf, false},
		{"ws", o.WSAddr, nil, true},
		{"wss", o.WSSAddr, tlsConf, true},
	} {
		if l.addr == "" {
			continue
		}
		ln := newListener(l.id, l.addr, l.tls, l.ws, o.ConnectTimeout, o.Logger)
		if err := srv.AddListener(ln); err != nil {
			g.abandon()
			return nil, err
		}
		g.listeners[l.id] = ln
	}
	return g, nil
}

// abandon releases what New took when it cannot finish.
func (g *Gateway) abandon() {
	for _, l := range g.listeners {
		_ = l.ln.Close()
	}
	if g.hook.store != nil {
		_ = g.hook.store.Stop()
	}
}

func (g *Gateway) address(id string) string {
	if l := g.listeners[id]; l != nil {
		return l.Address()
	}
	return ""
}

// Addr returns the address of the TCP listener, or "" when it is off.
func (g *Gateway) Addr() string { return g.address("tcp") }

// TLSAddr returns the address of the TLS listener, or "" when it is off.
func (g *Gateway) TLSAddr() string { return g.address("tls") }

// WSAddr returns the address of the WebSocket listener, or "" when it is
// off.
func (g *Gateway) WSAddr() string { return g.address("ws") }

// WSSAddr returns the address of the secure WebSocket listener, or "" when
// it is off.
func (g *Gateway) WSSAddr() string { return g.address("wss") }

// Serve loads the stored state, if any, and starts accepting connections;
// it returns at once.
func (g *Gateway) Serve() error {
	if err := g.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt serve: %w", err)
	}
	return nil
}

// Disconnect cuts every connection of a device (its token rotated, or a
// certificate revoked); its sessions stay, for when it comes back.
func (g *Gateway) Disconnect(deviceID string) int { return g.hook.disconnect(deviceID) }

// Forget cuts every connection of a deleted device and deletes its
// sessions (with their queued messages) and its retained messages, so
// that nothing of it reaches a device created later under the same ID.
// It returns the number of connections cut.
func (g *Gateway) Forget(deviceID string) int { return g.hook.forget(deviceID) }

// Close stops the gateway gracefully: publishes that arrive from now on
// are not acknowledged (so the devices send them again), the ones already
// on their way to the bus finish and are acknowledged, then every client
// is disconnected and, with a store, the state is flushed to disk and the
// store closed; last, the presence service hears of each disconnect
// (server_shutdown) and the command service of the last acknowledgements.
func (g *Gateway) Close(ctx context.Context) error {
	if g.closed.Swap(true) {
		return nil
	}
	g.hook.closing.Store(true)
	done := make(chan struct{})
	go func() { g.hook.inflight.Wait(); close(done) }()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, errors.New("mqtt: in-flight publishes did not finish in time"))
	}
	g.hook.cancel()
	closed := make(chan struct{})
	go func() {
		// mochi's Close disconnects the clients listener by listener,
		// waits for their goroutines and stops the hooks (the store
		// flushes and closes then). It returns no error of its own.
		_ = g.srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-ctx.Done():
		errs = append(errs, errors.New("mqtt: the broker did not stop in time"))
	}
	// The clients' disconnects (server_shutdown) and acknowledgements are
	// still on their way to the services.
	if err := g.hook.queues.drain(ctx); err != nil {
		errs = append(errs, errors.New("mqtt: presence and command updates did not finish in time"))
	}
	g.hook.stopServices()
	return errors.Join(errs...)
}

// minLevel drops records below a level.
type minLevel struct {
	min slog.Level
	slog.Handler
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.min, h.Handler.WithAttrs(as)}
}

func (h minLevel) WithGroup(g string) slog.Handler { return minLevel{h.min, h.Handler.WithGroup(g)} }

// newLimiter returns a keyed token bucket, or nil for no limit.
func newLimiter(perSecond float64, burst int) *limit.Keyed {
	if perSecond <= 0 {
		return nil
	}
	return limit.New(perSecond, burst)
}
