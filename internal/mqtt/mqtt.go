// Package mqtt is Tether's MQTT 3.1.1 and 5.0 gateway, built on the
// mochi-mqtt broker. It authenticates devices (username = device ID,
// password = token), confines each to its own topic tree devices/<id>/…,
// and hands telemetry published on devices/<id>/telemetry to the ingest
// path, acknowledging a QoS 1 or 2 PUBLISH only once the bus has stored it.
//
// The broker stays a broker: a device's other publishes inside its own tree
// reach subscribers as usual.
package mqtt

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// Authenticator checks a device's credentials.
type Authenticator interface {
	AuthenticateDevice(ctx context.Context, deviceID, token string) (*tether.Device, error)
}

// Ingestor takes a device's telemetry and returns once it is durable.
type Ingestor interface {
	Accept(ctx context.Context, d *tether.Device, payload []byte) (int, error)
	Limits() telemetry.Limits
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
}

// Gateway is the MQTT server.
type Gateway struct {
	srv  *mochi.Server
	hook *hook
	addr string
}

// New builds the gateway and binds its listener, so that Addr is known
// before Serve.
func New(auth Authenticator, in Ingestor, o Options) (*Gateway, error) {
	if o.PublishTimeout == 0 {
		o.PublishTimeout = 10 * time.Second
	}
	caps := mochi.NewDefaultServerCapabilities()
	// Packets well over the payload limit are cut off by the broker
	// itself; those only a little over it reach the ingest path, which
	// refuses them with a reason the device can read.
	caps.MaximumPacketSize = uint32(in.Limits().MaxPayload + 64<<10)
	// A session outlives its connection by at most a day, so a device
	// cannot pin memory with sessions it never comes back to.
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60
	srv := mochi.New(&mochi.Options{
		InlineClient: true,
		Capabilities: caps,
		// The broker logs every client error, with whole packets, at
		// warn; Tether logs what matters itself.
		Logger: slog.New(minLevel{slog.LevelError, o.Logger.Handler()}).With("component", "mqtt"),
	})
	h := &hook{
		srv: srv, auth: auth, in: in, log: o.Logger, timeout: o.PublishTimeout,
		devices: map[string]*entry{},
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if err := srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("mqtt hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: o.Addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("mqtt listen on %s: %w", o.Addr, err)
	}
	return &Gateway{srv: srv, hook: h, addr: tcp.Address()}, nil
}

// Addr returns the address the gateway listens on.
func (g *Gateway) Addr() string { return g.addr }

// Serve starts accepting connections; it returns at once.
func (g *Gateway) Serve() error { return g.srv.Serve() }

// Disconnect cuts every connection of a device (deleted, or its token
// rotated).
func (g *Gateway) Disconnect(deviceID string) int { return g.hook.disconnect(deviceID) }

// Close stops the gateway gracefully: publishes that arrive from now on
// are not acknowledged (so the devices send them again), the ones already
// on their way to the bus finish and are acknowledged, then every client
// is disconnected.
func (g *Gateway) Close(ctx context.Context) error {
	g.hook.closing.Store(true)
	done := make(chan struct{})
	go func() { g.hook.inflight.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.New("mqtt: in-flight publishes did not finish in time")
	}
	g.hook.cancel()
	if cerr := g.srv.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// hook implements the broker's hooks that Tether needs.
type hook struct {
	mochi.HookBase
	srv     *mochi.Server
	auth    Authenticator
	in      Ingestor
	log     *slog.Logger
	timeout time.Duration

	ctx      context.Context
	cancel   context.CancelFunc
	closing  atomic.Bool
	inflight sync.WaitGroup

	// devices holds the authenticated devices with their live clients.
	// It is keyed by device ID (the client's username) rather than by
	// client, so that it stays bounded by the number of devices even for
	// clients the broker drops between authentication and session start
	// without an OnDisconnect; those are pruned on the device's next
	// connect.
	mu      sync.RWMutex
	devices map[string]*entry
}

type entry struct {
	device  *tether.Device
	clients map[*mochi.Client]struct{}
}

// ID names the hook.
func (h *hook) ID() string { return "tether" }

// Provides reports the events the hook handles.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
		mochi.OnPublish, mochi.OnDisconnect:
		return true
	}
	return false
}

// OnConnect authenticates the client. Authentication is done here rather
// than in OnConnectAuthenticate so that a refusal can answer "not
// authorized" (5.0: 0x87, 3.1.1: 0x05) as the issue asks; the broker's
// own refusal says "bad user name or password".
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	user, pass := string(cl.Properties.Username), string(pk.Connect.Password)
	d, err := h.authenticate(user, pass)
	if err != nil {
		return h.refuse(cl, user, err)
	}
	// Client IDs are scoped by device: the broker looks sessions up by
	// client ID alone, so without this a device that used another's client
	// ID would take over its connection and inherit its session.
	cl.ID = d.ID + ":" + cl.ID
	h.register(cl, d)
	// A rotation or deletion announced between the check above and the
	// registration found no connection to cut; checking again after
	// registering closes that window.
	if _, err := h.authenticate(user, pass); err != nil {
		h.unregister(cl)
		return h.refuse(cl, user, err)
	}
	return nil
}

func (h *hook) authenticate(user, pass string) (*tether.Device, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	d, err := h.auth.AuthenticateDevice(ctx, user, pass)
	if err == nil && d.ID != user {
		err = tether.Errorf(tether.EUNAUTHORIZED, "token of another device")
	}
	return d, err
}

// refuse answers a failed authentication with CONNACK "not authorized", or
// "server unavailable" when the registry could not be asked.
func (h *hook) refuse(cl *mochi.Client, user string, err error) error {
	if tether.ErrorCode(err) != tether.EUNAUTHORIZED {
		h.log.Error("mqtt authenticate", "err", err)
		_ = h.srv.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		return packets.ErrServerUnavailable
	}
	h.log.Debug("mqtt connect refused", "username", truncate(user), "remote", cl.Net.Remote)
	code := packets.ErrNotAuthorized
	if cl.Properties.ProtocolVersion < 5 {
		// The broker maps this one to 3.1.1's 0x05 "not authorized".
		code = packets.ErrBadUsernameOrPassword
	}
	_ = h.srv.SendConnack(cl, code, false, nil)
	return code
}

func (h *hook) register(cl *mochi.Client, d *tether.Device) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.devices[d.ID]
	if e == nil {
		e = &entry{clients: map[*mochi.Client]struct{}{}}
		h.devices[d.ID] = e
	}
	e.device = d
	for old := range e.clients {
		if old.Closed() {
			delete(e.clients, old)
		}
	}
	e.clients[cl] = struct{}{}
}

func (h *hook) unregister(cl *mochi.Client) {
	id := string(cl.Properties.Username)
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.devices[id]; e != nil {
		delete(e.clients, cl)
		if len(e.clients) == 0 {
			delete(h.devices, id)
		}
	}
}

// OnConnectAuthenticate accepts the clients OnConnect authenticated.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, _ packets.Packet) bool {
	return h.device(cl) != nil
}

// OnDisconnect forgets the client.
func (h *hook) OnDisconnect(cl *mochi.Client, _ error, _ bool) { h.unregister(cl) }

func (h *hook) disconnect(deviceID string) int {
	h.mu.RLock()
	var victims []*mochi.Client
	if e := h.devices[deviceID]; e != nil {
		for cl := range e.clients {
			victims = append(victims, cl)
		}
	}
	h.mu.RUnlock()
	for _, cl := range victims {
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	return len(victims)
}

// device returns the device a client authenticated as, or nil.
func (h *hook) device(cl *mochi.Client) *tether.Device {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if e := h.devices[string(cl.Properties.Username)]; e != nil {
		if _, ok := e.clients[cl]; ok {
			return e.device
		}
	}
	return nil
}

// OnACLCheck confines a device to devices/<its id>/… for both publish
// and subscribe (topic is then a filter).
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, _ bool) bool {
	d := h.device(cl)
	return d != nil && strings.HasPrefix(topic, "devices/"+d.ID+"/")
}

// OnPublish hands telemetry to the ingest path and blocks this client's
// packet loop until the bus has it: the broker sends PUBACK (or PUBREC)
// only after this returns without error.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	d := h.device(cl)
	if d == nil || pk.TopicName != "devices/"+d.ID+"/telemetry" {
		return pk, nil
	}
	h.inflight.Add(1)
	defer h.inflight.Done()
	if h.closing.Load() {
		// Not acknowledged: the device sends it again to the next server.
		return pk, packets.ErrRejectPacket
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()
	_, err := h.in.Accept(ctx, d, pk.Payload)
	if err == nil {
		return pk, nil
	}
	v5 := cl.Properties.ProtocolVersion == 5
	var bad *telemetry.Error
	if errors.As(err, &bad) {
		h.tellDevice(d, pk.TopicName, bad)
		if v5 && pk.FixedHeader.Qos > 0 {
			return h.nack(cl, pk, packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: truncateReason(bad.Message)})
		}
		// 3.1.1 has no negative PUBACK: acknowledge (so the device does
		// not resend a message that can never be accepted) and keep it
		// from subscribers; the device reads why on its errors topic.
		return pk, packets.CodeSuccessIgnore
	}
	// The bus could not store it: never acknowledge.
	if v5 && pk.FixedHeader.Qos > 0 {
		return h.nack(cl, pk, packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "the message could not be stored; send it again"})
	}
	if pk.FixedHeader.Qos > 0 {
		// A 3.1.1 client resends unacknowledged messages when it
		// reconnects, so close the connection rather than leave it waiting.
		cl.Stop(err)
	}
	return pk, packets.ErrRejectPacket
}

// nack refuses an MQTT 5 publish with a reason code. For QoS 1 the broker
// sends the PUBACK; it would send a PUBACK for QoS 2 too, which the
// protocol does not allow, so a QoS 2 refusal is answered with a PUBREC
// here (a PUBREC with an error code ends the exchange).
func (h *hook) nack(cl *mochi.Client, pk packets.Packet, code packets.Code) (packets.Packet, error) {
	if pk.FixedHeader.Qos < 2 {
		return pk, code
	}
	err := cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: code.Reason},
	})
	if err != nil {
		h.log.Debug("mqtt pubrec", "err", err)
	}
	return pk, packets.ErrRejectPacket
}

// tellDevice publishes why a message was refused on devices/<id>/errors.
func (h *hook) tellDevice(d *tether.Device, topic string, e *telemetry.Error) {
	body, _ := json.Marshal(map[string]string{"topic": topic, "reason": e.Reason, "error": e.Message})
	if err := h.srv.Publish("devices/"+d.ID+"/errors", body, false, 0); err != nil {
		h.log.Debug("publish device error", "device", d.ID, "err", err)
	}
}

// truncateReason keeps a reason string well inside what MQTT allows.
func truncateReason(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
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
