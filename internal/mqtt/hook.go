package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/limit"
	"github.com/tether-iot/tether/internal/telemetry"
)

// anonPrefix scopes an anonymous client's ID inside the broker. '~' is
// not allowed in a device ID, so it can never be mistaken for a device's
// scope; nor can the scopes of provisioning clients ("~prov:<client id>")
// and applications ("~app:<tenant>:<client id>").
const (
	anonPrefix = "~anon:"
	provPrefix = "~prov:"
	appPrefix  = "~app:"
)

// The usernames of the clients that are not devices: a device registering
// itself with a provisioning key, and an application reading its
// tenant's events with an API key.
const (
	provisionUser = "$provision"
	appUser       = "$app"
)

// The top-level topics only their owners may use: a provisioning client
// its own $provision/<client id>/…, an application $events/<its tenant>/….
// Nobody else, lab-mode clients included, may read or write them: a
// provisioning answer carries the new device's token.
const (
	provisionTopic = "$provision"
	eventsTopic    = "$events"
)

// inlineID is the origin of the messages the gateway publishes itself
// (commands, shadow answers, events), by which it knows a command's PUBACK.
const inlineID = "~tether"

// refusedMark is put in front of a topic the broker would drop without a
// word (a PUBLISH to $SYS/…, which mochi ignores even at QoS 1, leaving
// the client waiting for an acknowledgement), so that OnPublish sees it
// and refuses it properly. MQTT topics cannot contain \x00, so no client
// can send it.
const refusedMark = "\x00"

// hook implements the broker's hooks that Tether needs.
type hook struct {
	mochi.HookBase
	srv  *mochi.Server
	auth Authenticator
	in   Ingestor
	log  *slog.Logger
	opts Options

	connects *limit.Keyed // per source address; nil is no limit
	notices  *limit.Keyed // policy notices per device on devices/<id>/errors
	retained *retainedIndex
	store    *store // nil without a StoreDir
	swept    atomic.Int64

	ctx      context.Context
	cancel   context.CancelFunc
	closing  atomic.Bool
	inflight sync.WaitGroup

	// The calls to the services made off the packet loops run in order
	// per device (see [queues]), under svcCtx, which outlives ctx so that
	// the disconnects at shutdown are still recorded.
	queues     *queues
	svcCtx     context.Context
	svcCancel  context.CancelFunc
	inline     *mochi.Client // publishes the gateway's own messages
	desired    *desiredIndex
	provisions *limit.Keyed // registrations per source address

	// devices holds the authenticated devices with their live clients.
	// It is keyed by device ID rather than by client, so that it stays
	// bounded by the number of devices even for clients the broker drops
	// between authentication and session start without an OnDisconnect;
	// those are pruned on the device's next connect.
	mu      sync.RWMutex
	devices map[string]*entry
	// seqs holds the newest presence sequence number of each device with
	// a connection here, so that its last connection's end is recorded
	// under it.
	seqs map[string]int64
	// provs holds the live provisioning clients by the client ID (the
	// device ID) they asked for: one at a time each.
	provs map[string]*provClient
}

type entry struct {
	device  *tether.Device
	clients map[*mochi.Client]*conn
}

// conn is what the gateway knows of one device connection.
type conn struct {
	hasWill bool // the client left a will at CONNECT
	present bool // its session was present at CONNECT (it resumed one)
	ready   bool // Commands.Ready was called for this connection
	seq     atomic.Int64
}

func newHook(srv *mochi.Server, auth Authenticator, in Ingestor, o Options) *hook {
	h := &hook{
		srv: srv, auth: auth, in: in, log: o.Logger, opts: o,
		connects: newLimiter(float64(o.ConnectRatePerIP), 5*o.ConnectRatePerIP),
		notices:  limit.New(1, 1),
		retained: newRetainedIndex(maxRetainedPerDevice, maxRetainedAnonymous),
		devices:  map[string]*entry{},
		provs:    map[string]*provClient{},
		queues:   newQueues(),
		seqs:     map[string]int64{},
		inline:   srv.NewClient(nil, mochi.LocalListener, inlineID, true),
		desired:  newDesiredIndex(maxDesired),
		// Registrations are cheap to refuse but each one tried is a
		// guess at a key: a few a second per address is plenty for a
		// device that registers once.
		provisions: limit.New(1, 5),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.svcCtx, h.svcCancel = context.WithCancel(context.Background())
	return h
}

// stopServices ends the calls to the services still running.
func (h *hook) stopServices() { h.svcCancel() }

// ID names the hook.
func (h *hook) ID() string { return "tether" }

// Provides reports the events the hook handles.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPacketRead,
		mochi.OnPublish, mochi.OnDisconnect, mochi.OnSelectSubscribers, mochi.OnRetainMessage,
		mochi.OnRetainedExpired, mochi.OnWill, mochi.OnClientExpired, mochi.OnSysInfoTick:
		return true
	case mochi.OnSessionEstablish, mochi.OnSessionEstablished:
		return h.opts.Presence != nil || h.opts.Commands != nil
	case mochi.OnSubscribed, mochi.OnQosComplete:
		return h.opts.Commands != nil
	}
	return false
}

// owner is a device's identity for the sessions it leaves behind: the
// tenant, the ID and the creation time, so that a device deleted and then
// created again under the same ID (IDs are global, and may be chosen) is
// not the same owner. It is the client's username inside the broker,
// which mochi stores with the session; an anonymous client's is empty.
func owner(d *tether.Device) string {
	return d.TenantID + "/" + d.ID + "/" + strconv.FormatInt(d.CreatedAt.UnixNano(), 36)
}

// deviceOf returns the device a scoped client ID belongs to.
func deviceOf(clientID string) (string, bool) {
	if strings.HasPrefix(clientID, "~") {
		return "", false
	}
	i := strings.IndexByte(clientID, ':')
	if i <= 0 {
		return "", false
	}
	return clientID[:i], true
}

// OnConnect admits or refuses a client, in order: the connect rate of its
// address, its credentials, its keep-alive, its will, its device's
// connection limit. Authentication is done here rather than in
// OnConnectAuthenticate so that a refusal can answer "not authorized"
// (5.0: 0x87, 3.1.1: 0x05); the broker's own refusal says "bad user name
// or password". The usernames $provision and $app name the clients that
// are not devices (see identifyProvisioning and identifyApp); they may
// leave no will.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	v5 := cl.Properties.ProtocolVersion == 5
	user := string(pk.Connect.Username)
	if h.connects != nil && !h.connects.Allow(host(cl.Net.Remote)) {
		h.log.Debug("mqtt connect refused: connect rate", "remote", cl.Net.Remote)
		return h.refuseCode(cl, packets.ErrConnectionRateExceeded, packets.ErrServerUnavailable)
	}
	var (
		d   *tether.Device
		sp  *special
		err error
	)
	switch user {
	case provisionUser:
		sp, err = h.identifyProvisioning(cl, pk)
	case appUser:
		sp, err = h.identifyApp(cl, pk)
	default:
		d, err = h.identify(cl, pk)
	}
	if err != nil {
		if errors.Is(err, errBadClientID) {
			return h.refuseCode(cl, packets.ErrClientIdentifierNotValid, packets.ErrClientIdentifierNotValid)
		}
		return h.refuse(cl, user, err)
	}
	if most := h.opts.MaxKeepAlive; most > 0 && (pk.Connect.Keepalive == 0 || pk.Connect.Keepalive > most) {
		if !v5 {
			// 3.1.1 has no way to tell a client its keep-alive, so, as
			// Mosquitto (2.0.12 and later) does, refuse it with
			// "identifier rejected".
			h.log.Debug("mqtt connect refused: keep-alive", "keepalive", pk.Connect.Keepalive, "max", most, "remote", cl.Net.Remote)
			return h.refuseCode(cl, packets.ErrClientIdentifierNotValid, packets.ErrClientIdentifierNotValid)
		}
		// The broker sends this as Server Keep Alive in the CONNACK and
		// enforces it (1.5 times) from then on.
		cl.State.Keepalive, cl.State.ServerKeepalive = most, true
	}
	if pk.Connect.WillFlag && (sp != nil || !mayPublish(anonPrefix, d, pk.Connect.WillTopic)) {
		// A will is published by the broker without the publish checks,
		// so it is checked here, as Mosquitto does.
		h.log.Debug("mqtt connect refused: will topic", "remote", cl.Net.Remote)
		return h.refuse(cl, user, tether.Errorf(tether.EUNAUTHORIZED, "will topic not allowed"))
	}

	// Client IDs are scoped by owner: the broker looks sessions up by
	// client ID alone, so without this a device that used another's client
	// ID would take over its connection and inherit its session.
	switch {
	case sp != nil:
		cl.ID = sp.id
		cl.Properties.Username = []byte(sp.owner)
		if sp.key != "" {
			// A provisioning session never outlives its connection: it
			// exists for one answer, which carries a token.
			cl.Properties.Clean = true
			cl.Properties.Props.SessionExpiryInterval = 0
		}
	case d != nil:
		cl.ID = d.ID + ":" + cl.ID
		cl.Properties.Username = []byte(owner(d))
		h.clearRetainedOfOthers(d)
	default:
		cl.ID = anonPrefix + cl.ID
		cl.Properties.Username = nil
	}
	if err := h.claimSession(cl); err != nil {
		return h.refuseCode(cl, packets.ErrServerUnavailable, packets.ErrServerUnavailable)
	}
	if sp != nil && sp.key != "" && !h.registerProvisioning(cl, sp.key) {
		h.log.Debug("mqtt connect refused: provisioning client ID in use", "remote", cl.Net.Remote)
		return h.refuseCode(cl, packets.ErrServerBusy, packets.ErrServerUnavailable)
	}
	if d != nil {
		if !h.register(cl, d, &conn{hasWill: pk.Connect.WillFlag}) {
			h.log.Debug("mqtt connect refused: connections per device", "device", d.ID, "max", h.opts.MaxConnectionsPerDevice)
			return h.refuseCode(cl, packets.ErrQuotaExceeded, packets.ErrServerUnavailable)
		}
		// A rotation or deletion announced between the check above and
		// the registration found no connection to cut; checking again
		// after registering closes that window.
		if _, err := h.identify(cl, pk); err != nil {
			h.unregister(cl)
			return h.refuse(cl, user, err)
		}
	}
	releaseDeadline(cl.Net.Conn)
	return nil
}

// identify authenticates a client: with its certificate if it presented
// one (a username, if given, must name the same device, and a password,
// if given, must be that device's token too), else with its token; with
// nothing at all it is anonymous, which only lab mode admits. A wrong
// credential is refused even in lab mode. It returns nil for an anonymous
// client.
func (h *hook) identify(cl *mochi.Client, pk packets.Packet) (*tether.Device, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	hasPass := pk.Connect.PasswordFlag || len(pk.Connect.Password) > 0
	var d *tether.Device
	if chain := peerCertificates(cl.Net.Conn); len(chain) > 0 {
		cd, err := h.auth.AuthenticateCertificate(ctx, chain)
		if err != nil {
			return nil, err
		}
		if user != "" && user != cd.ID {
			return nil, tether.Errorf(tether.EUNAUTHORIZED, "username names another device than the certificate")
		}
		if !hasPass {
			return cd, nil
		}
		user, d = cd.ID, cd
	}
	if user == "" && !hasPass {
		if h.opts.AllowAnonymous {
			return nil, nil
		}
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "credentials required")
	}
	td, err := h.auth.AuthenticateDevice(ctx, user, pass)
	if err != nil {
		return nil, err
	}
	if td.ID != user || (d != nil && td.ID != d.ID) {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "token of another device")
	}
	return td, nil
}

// refuse answers a failed authentication with CONNACK "not authorized", or
// "server unavailable" when the registry could not be asked.
func (h *hook) refuse(cl *mochi.Client, user string, err error) error {
	if tether.ErrorCode(err) != tether.EUNAUTHORIZED {
		h.log.Error("mqtt authenticate", "err", err)
		return h.refuseCode(cl, packets.ErrServerUnavailable, packets.ErrServerUnavailable)
	}
	h.log.Debug("mqtt connect refused", "username", truncate(user), "remote", cl.Net.Remote, "err", tether.ErrorMessage(err))
	// The broker maps 0x86 to 3.1.1's 0x05 "not authorized".
	return h.refuseCode(cl, packets.ErrNotAuthorized, packets.ErrBadUsernameOrPassword)
}

// refuseCode sends a refusing CONNACK: v5 to a 5.0 client, v3 (a code the
// broker maps to a 3.1.1 return code) to the others.
func (h *hook) refuseCode(cl *mochi.Client, v5, v3 packets.Code) error {
	code := v5
	if cl.Properties.ProtocolVersion < 5 {
		code = v3
	}
	_ = h.srv.SendConnack(cl, code, false, nil)
	return code
}

// errSessionBusy refuses a connect while the session it would replace is
// still in use by another owner.
var errSessionBusy = errors.New("mqtt: the session under this client ID belongs to another owner and is still connected")

// claimSession clears the way for a client whose scoped ID names a
// session of another owner: a device deleted and created again under the
// same ID, whose old session came back from the store (or outlived a
// deletion no one told this gateway about). The old session is deleted
// rather than inherited. If it is still connected, it is cut and the new
// client refused this once: it can retry as soon as the old connection
// has wound down.
func (h *hook) claimSession(cl *mochi.Client) error {
	old, ok := h.srv.Clients.Get(cl.ID)
	if !ok || bytes.Equal(old.Properties.Username, cl.Properties.Username) {
		return nil
	}
	if !old.Closed() {
		_ = h.srv.DisconnectClient(old, packets.ErrNotAuthorized)
		return errSessionBusy
	}
	h.log.Info("mqtt session of a former owner deleted", "client", truncate(cl.ID))
	h.purge(old)
	return nil
}

// purge deletes a session that is not connected: its subscriptions, its
// messages, its stored state.
func (h *hook) purge(cl *mochi.Client) {
	h.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
	if h.store != nil {
		h.store.forget(cl.ID)
	}
	if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur == cl {
		h.srv.Clients.Delete(cl.ID)
	}
}

// register adds a client to its device's live clients, unless the device
// has as many as it may have. A client taking over a connection under the
// same client ID does not count: the broker is about to close the old one.
func (h *hook) register(cl *mochi.Client, d *tether.Device, c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.devices[d.ID]
	if e == nil {
		e = &entry{clients: map[*mochi.Client]*conn{}}
		h.devices[d.ID] = e
	}
	e.device = d
	live := 0
	for old := range e.clients {
		switch {
		case old.Closed():
			delete(e.clients, old)
		case old.ID != cl.ID:
			live++
		}
	}
	if most := h.opts.MaxConnectionsPerDevice; most > 0 && live >= most {
		if len(e.clients) == 0 {
			delete(h.devices, d.ID)
		}
		return false
	}
	e.clients[cl] = c
	return true
}

func (h *hook) unregister(cl *mochi.Client) {
	id, ok := deviceOf(cl.ID)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.devices[id]; e != nil {
		delete(e.clients, cl)
		if len(e.clients) == 0 {
			delete(h.devices, id)
		}
	}
}

// OnConnectAuthenticate accepts the clients OnConnect admitted, unless a
// device's connection was cut in between.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, _ packets.Packet) bool {
	if _, ok := deviceOf(cl.ID); ok {
		return h.device(cl) != nil
	}
	return strings.HasPrefix(cl.ID, anonPrefix) || strings.HasPrefix(cl.ID, provPrefix) || strings.HasPrefix(cl.ID, appPrefix)
}

// OnDisconnect forgets the client, and records why a device's connection
// ended.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	if strings.HasPrefix(cl.ID, provPrefix) {
		h.unregisterProvisioning(cl)
		return
	}
	if d, c := h.connOf(cl); d != nil {
		h.disconnected(cl, d, c, err)
	}
	h.unregister(cl)
}

// live returns the live clients of a device.
func (h *hook) live(deviceID string) []*mochi.Client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var cls []*mochi.Client
	if e := h.devices[deviceID]; e != nil {
		for cl := range e.clients {
			cls = append(cls, cl)
		}
	}
	return cls
}

func (h *hook) disconnect(deviceID string) int {
	victims := h.live(deviceID)
	for _, cl := range victims {
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	return len(victims)
}

// forget cuts a deleted device's connections and deletes its sessions and
// retained messages.
func (h *hook) forget(deviceID string) int {
	n := h.disconnect(deviceID)
	// Let the cut connections wind down (their OnDisconnect unregisters
	// them), so that none writes its session back after the purge.
	for deadline := time.Now().Add(time.Second); len(h.live(deviceID)) > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	for id, cl := range h.srv.Clients.GetAll() {
		if dev, ok := deviceOf(id); ok && dev == deviceID && cl.Closed() {
			h.purge(cl)
		}
	}
	h.clearRetained(deviceID)
	return n
}

// clearRetainedOfOthers deletes the retained messages in a device's tree
// that a former owner of its ID left (see [owner]).
func (h *hook) clearRetainedOfOthers(d *tether.Device) {
	if o := h.retained.owner(d.ID); o != "" && o != owner(d) {
		h.log.Info("mqtt retained messages of a former owner deleted", "device", d.ID)
		h.clearRetained(d.ID)
	}
}

func (h *hook) clearRetained(deviceID string) {
	for _, topic := range h.retained.drop(deviceID) {
		h.srv.Topics.RetainMessage(packets.Packet{TopicName: topic})
		if h.store != nil {
			h.store.deleteRetained(topic)
		}
	}
}

// device returns the device a live client authenticated as, or nil.
func (h *hook) device(cl *mochi.Client) *tether.Device {
	d, _ := h.connOf(cl)
	return d
}

// connOf returns the device a live client authenticated as, with what
// the gateway knows of its connection, or nil.
func (h *hook) connOf(cl *mochi.Client) (*tether.Device, *conn) {
	id, ok := deviceOf(cl.ID)
	if !ok {
		return nil, nil
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if e := h.devices[id]; e != nil {
		if c, ok := e.clients[cl]; ok {
			return e.device, c
		}
	}
	return nil, nil
}

// mayPublish reports whether the client with a scoped ID, a device's (d)
// or not (d nil), may publish on a topic: a device in its own tree, a
// provisioning client on $provision/<its client id>, an application
// nowhere, an anonymous client outside devices/, $provision and $events;
// nobody on $SYS.
func mayPublish(clientID string, d *tether.Device, topic string) bool {
	// $SYS is the broker's; other $ topics are anyone's, as in Mosquitto
	// (and no wildcard matches them), except the gateway's own.
	if topic == "" || strings.EqualFold(firstLevel(topic), "$SYS") || strings.HasPrefix(topic, refusedMark) {
		return false
	}
	switch {
	case d != nil:
		return strings.HasPrefix(topic, "devices/"+d.ID+"/")
	case strings.HasPrefix(clientID, provPrefix):
		return topic == provisionTopic+"/"+clientID[len(provPrefix):]
	case strings.HasPrefix(clientID, appPrefix):
		return false
	}
	return !reserved(firstLevel(topic))
}

// reserved reports whether a first topic level is outside an anonymous
// client's reach.
func reserved(first string) bool {
	return first == "devices" || first == provisionTopic || first == eventsTopic
}

// mayRead reports whether the client with a scoped ID may subscribe to a
// filter, or receive a message on a topic: a device in its own tree, a
// provisioning client under $provision/<its client id>/, an application
// under $events/<its tenant>/, an anonymous client outside devices/,
// $provision and $events ($SYS included, read-only). A shared
// subscription is judged by its filter. A filter such as # or +/x is
// allowed to an anonymous client, which still never receives a message
// under devices/: this is also checked for every message delivered.
func mayRead(clientID, filter string) bool {
	if len(filter) > 7 && strings.EqualFold(filter[:7], "$share/") {
		if _, f, ok := strings.Cut(filter[7:], "/"); ok {
			filter = f
		}
	}
	switch {
	case strings.HasPrefix(clientID, anonPrefix):
		return !reserved(firstLevel(filter))
	case strings.HasPrefix(clientID, provPrefix):
		return strings.HasPrefix(filter, provisionTopic+"/"+clientID[len(provPrefix):]+"/")
	case strings.HasPrefix(clientID, appPrefix):
		tenant, _, ok := strings.Cut(clientID[len(appPrefix):], ":")
		return ok && strings.HasPrefix(filter, eventsTopic+"/"+tenant+"/")
	}
	dev, ok := deviceOf(clientID)
	return ok && strings.HasPrefix(filter, "devices/"+dev+"/")
}

// startsWithWildcard reports whether a filter (shared or not) starts with
// + or #.
func startsWithWildcard(filter string) bool {
	if len(filter) > 7 && strings.EqualFold(filter[:7], "$share/") {
		_, filter, _ = strings.Cut(filter[7:], "/")
	}
	return strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")
}

func firstLevel(topic string) string {
	first, _, _ := strings.Cut(topic, "/")
	return first
}

// OnACLCheck decides subscriptions and deliveries (topic is a filter for
// the first, a topic name for the second). Publishes are decided in
// OnPublish instead, where a refusal can be answered as Mosquitto does,
// where the broker would disconnect a 3.1.1 client.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if write || cl.Net.Inline {
		return true
	}
	return mayRead(cl.ID, topic)
}

// OnSelectSubscribers removes, from each shared subscription group, the
// members who may not receive the message, so that the broker picks one
// who may. It also keeps $ topics from shared subscriptions that start
// with a wildcard, as the specification requires of every subscription
// ([MQTT-4.7.2-1]) and mochi does only for unshared ones.
func (h *hook) OnSelectSubscribers(subs *mochi.Subscribers, pk packets.Packet) *mochi.Subscribers {
	dollar := strings.HasPrefix(pk.TopicName, "$")
	for group, members := range subs.Shared {
		for id, sub := range members {
			if !mayRead(id, pk.TopicName) || dollar && startsWithWildcard(sub.Filter) {
				delete(members, id)
			}
		}
		if len(members) == 0 {
			delete(subs.Shared, group)
		}
	}
	return subs
}

// OnPacketRead marks a PUBLISH to $SYS, which the broker would drop
// without acknowledging it, so that OnPublish refuses it.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && len(pk.TopicName) >= 4 && strings.EqualFold(pk.TopicName[:4], mochi.SysPrefix) {
		pk.TopicName = refusedMark + pk.TopicName
	}
	return pk, nil
}

// OnPublish admits a client's PUBLISH: the device's publish budget first,
// then the topic, then the retained bound; telemetry then goes to the
// ingest path, blocking this client's packet loop until the bus has it:
// the broker sends PUBACK (or PUBREC) only after this returns without
// error.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	var d *tether.Device
	if _, ok := deviceOf(cl.ID); ok {
		if d = h.device(cl); d == nil {
			return pk, packets.ErrRejectPacket // its connection is being cut
		}
		if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			// 3.1.1 cannot hear "no", and acknowledging a message that
			// is then dropped would tell the device it was kept: slow the
			// device down instead, and if even that is not enough, close
			// the connection unacknowledged (it resends on reconnect).
			if !h.in.Throttle(h.ctx, d, throttleMost) {
				h.notify(d, pk.TopicName, "rate_limited", "publish rate exceeded; connection closed, send again after reconnecting", time.Second)
				cl.Stop(errRateLimited)
				return pk, packets.ErrRejectPacket
			}
		} else if ok, retry := h.in.Allow(d); !ok {
			return h.overBudget(cl, d, pk, retry)
		}
	}
	if !mayPublish(cl.ID, d, pk.TopicName) {
		h.log.Debug("mqtt publish refused", "client", truncate(cl.ID), "topic", truncate(strings.TrimPrefix(pk.TopicName, refusedMark)))
		return h.refusePublish(cl, pk, packets.ErrNotAuthorized)
	}
	if pk.FixedHeader.Retain && len(pk.Payload) > 0 && !h.retained.admit(pk.TopicName) {
		reason := "too many retained topics; delete one by publishing an empty retained message to it"
		if d != nil {
			h.notify(d, pk.TopicName, "retained_limit", reason, 0)
		}
		return h.refusePublish(cl, pk, packets.Code{Code: packets.ErrQuotaExceeded.Code, Reason: reason})
	}
	if strings.HasPrefix(cl.ID, provPrefix) {
		return h.provision(cl, pk)
	}
	if d == nil {
		return pk, nil
	}
	// The device's requests to the services, each answered in this
	// client's packet loop like telemetry: the PUBACK follows the answer.
	rest := pk.TopicName[len("devices/")+len(d.ID)+1:]
	shadow, isShadow := h.shadowTopic(rest)
	command, isReply := h.replyTopic(rest)
	if rest != "telemetry" && !isShadow && !isReply {
		if f := h.opts.OnDeviceMessage; f != nil {
			// Another topic of the device's tree, for rules that read
			// MQTT topics; f must not block this packet loop.
			f(d, pk.TopicName, pk.Payload)
		}
		return pk, nil
	}
	h.inflight.Add(1)
	defer h.inflight.Done()
	if h.closing.Load() {
		// Not acknowledged: the device sends it again to the next server.
		return pk, packets.ErrRejectPacket
	}
	switch {
	case isShadow:
		return h.shadowRequest(cl, d, pk, shadow)
	case isReply:
		return h.commandReply(cl, d, pk, command)
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.PublishTimeout)
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

// refusePublish refuses a PUBLISH the way Mosquitto does: 5.0 QoS 1 or 2
// with the reason code in the PUBACK or PUBREC; 3.1.1, which has no
// negative acknowledgement, acknowledged and dropped; QoS 0 dropped.
func (h *hook) refusePublish(cl *mochi.Client, pk packets.Packet, code packets.Code) (packets.Packet, error) {
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion == 5:
		return h.nack(cl, pk, code)
	default:
		return pk, packets.CodeSuccessIgnore
	}
}

// throttleMost is the longest an MQTT 3.1.1 QoS 1 or 2 publish over its
// device's rate is held back before its connection is closed instead.
const throttleMost = 2 * time.Second

var errRateLimited = errors.New("publish rate exceeded")

// overBudget refuses a PUBLISH over the device's publish rate: 5.0 QoS 1
// or 2 with "quota exceeded" and when to retry; QoS 0 is dropped, and the
// device told on its errors topic, at most once a second.
func (h *hook) overBudget(cl *mochi.Client, d *tether.Device, pk packets.Packet, retry time.Duration) (packets.Packet, error) {
	retry = max(retry.Round(time.Millisecond), time.Millisecond)
	reason := "publish rate exceeded; retry in " + retry.String()
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return h.nack(cl, pk, packets.Code{Code: packets.ErrQuotaExceeded.Code, Reason: reason})
	}
	h.notify(d, pk.TopicName, "rate_limited", reason, retry)
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
	h.publishNotice(d, map[string]any{"topic": topic, "reason": e.Reason, "error": e.Message})
}

// notify tells a device on its errors topic why a message was refused by
// a policy (rate, retained bound), at most once a second, so that the
// notices cannot flood either.
func (h *hook) notify(d *tether.Device, topic, reason, msg string, retry time.Duration) {
	if !h.notices.Allow(d.ID) {
		return
	}
	n := map[string]any{"topic": strings.TrimPrefix(topic, refusedMark), "reason": reason, "error": msg}
	if retry > 0 {
		n["retry_after_ms"] = retry.Milliseconds()
	}
	h.publishNotice(d, n)
}

func (h *hook) publishNotice(d *tether.Device, n map[string]any) {
	body, _ := json.Marshal(n)
	if err := h.srv.Publish("devices/"+d.ID+"/errors", body, false, 0); err != nil {
		h.log.Debug("publish device error", "device", d.ID, "err", err)
	}
}

// OnRetainMessage keeps the retained index up to date.
func (h *hook) OnRetainMessage(cl *mochi.Client, pk packets.Packet, _ int64) {
	h.retained.set(pk.TopicName, string(cl.Properties.Username), len(pk.Payload) > 0)
}

// OnRetainedExpired keeps the retained index up to date.
func (h *hook) OnRetainedExpired(topic string) { h.retained.set(topic, "", false) }

// OnWill keeps a will within the retained bound: over it, the will is
// still published, but not retained.
func (h *hook) OnWill(_ *mochi.Client, w mochi.Will) (mochi.Will, error) {
	if w.Retain && len(w.Payload) > 0 && !h.retained.admit(w.TopicName) {
		w.Retain = false
	}
	return w, nil
}

// OnClientExpired deletes an expired session's subscriptions and
// messages: the broker only forgets the client, and its subscriptions
// would stay in the topic index (and deliver to a later client under the
// same ID, which never subscribed).
func (h *hook) OnClientExpired(cl *mochi.Client) {
	h.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
}

// OnSysInfoTick, every second on the broker's housekeeping loop, expires
// (every ten) the sessions restored from the store that no one resumed in
// time: the broker would count their expiry from the restart.
func (h *hook) OnSysInfoTick(*system.Info) {
	if h.store == nil {
		return
	}
	now := time.Now().Unix()
	if last := h.swept.Load(); now-last < 10 {
		return
	}
	h.swept.Store(now)
	for _, id := range h.store.expiredRestored(now) {
		if cl, ok := h.srv.Clients.Get(id); ok && cl.Net.Conn == nil {
			h.purge(cl)
		}
	}
}

// host returns the address part of host:port.
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
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

// retainedIndex knows which retained topics each device tree (and the
// anonymous space outside devices/) holds, to bound them, and who
// published them last, to delete them when the device ID changes hands.
type retainedIndex struct {
	perDevice, anonymous int

	mu    sync.Mutex
	trees map[string]*retainedTree // by device ID; "" is outside devices/
}

type retainedTree struct {
	owner  string
	topics map[string]struct{}
}

func newRetainedIndex(perDevice, anonymous int) *retainedIndex {
	return &retainedIndex{perDevice: perDevice, anonymous: anonymous, trees: map[string]*retainedTree{}}
}

// setBounds changes the bounds (for tests).
func (x *retainedIndex) setBounds(perDevice, anonymous int) {
	x.mu.Lock()
	x.perDevice, x.anonymous = perDevice, anonymous
	x.mu.Unlock()
}

// treeOf returns the tree a topic counts in; false for $SYS and topics
// directly under devices/, which no client can publish. Other $ topics
// are the anonymous clients' and count with theirs.
func treeOf(topic string) (string, bool) {
	if topic == "" || strings.HasPrefix(topic, refusedMark) || strings.EqualFold(firstLevel(topic), "$SYS") {
		return "", false
	}
	if rest, ok := strings.CutPrefix(topic, "devices/"); ok {
		id, _, ok := strings.Cut(rest, "/")
		return id, ok && id != ""
	}
	if firstLevel(topic) == "devices" {
		return "", false
	}
	return "", true
}

// admit reports whether a retained message may be stored on a topic: a
// topic already retained always may (it is replaced), a new one if its
// tree is under its bound.
func (x *retainedIndex) admit(topic string) bool {
	key, ok := treeOf(topic)
	if !ok {
		return true
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.trees[key]
	if t == nil {
		return true
	}
	if _, ok := t.topics[topic]; ok {
		return true
	}
	bound := x.perDevice
	if key == "" {
		bound = x.anonymous
	}
	return len(t.topics) < bound
}

// set records that a topic has a retained message (present) or not.
func (x *retainedIndex) set(topic, owner string, present bool) {
	key, ok := treeOf(topic)
	if !ok {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.trees[key]
	if !present {
		if t != nil {
			delete(t.topics, topic)
			if len(t.topics) == 0 {
				delete(x.trees, key)
			}
		}
		return
	}
	if t == nil {
		t = &retainedTree{topics: map[string]struct{}{}}
		x.trees[key] = t
	}
	t.topics[topic] = struct{}{}
	if key != "" && owner != "" {
		t.owner = owner
	}
}

// load records a retained message read from the store at start.
func (x *retainedIndex) load(topic, owner string) { x.set(topic, owner, true) }

// owner returns who last published a retained message in a device's tree.
func (x *retainedIndex) owner(deviceID string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	if t := x.trees[deviceID]; t != nil {
		return t.owner
	}
	return ""
}

// drop forgets a device tree and returns its topics.
func (x *retainedIndex) drop(deviceID string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.trees[deviceID]
	if t == nil || deviceID == "" {
		return nil
	}
	delete(x.trees, deviceID)
	topics := make([]string, 0, len(t.topics))
	for topic := range t.topics {
		topics = append(topics, topic)
	}
	return topics
}
