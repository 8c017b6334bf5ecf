package coap

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// observable is a per-device resource that a device may observe (RFC 7641):
// GET /latest, GET /shadow and GET /commands. A resource becomes observable
// by rendering its representation for a device; whoever changes it calls
// observations.changed with the device (or, for a shadow and for commands,
// the more precise shadowChanged and deliver).
type observable struct {
	name string
	// render returns the representation for a view of the resource: the
	// response to a GET, or a notification of v.obs. It returns errSkip
	// when a notification has nothing new to say.
	render func(ctx context.Context, v view) ([]byte, error)
	// next, when set, renders notifications instead of render: the next
	// item the observer is owed (nil body: the resource's empty state),
	// and what to do once the client acknowledged it.
	next func(o *observer) (body []byte, acked func())
	// whole makes notifications go in one datagram, never as a first
	// block: the rest of a notification that next took from a queue could
	// not be fetched again with GET.
	whole bool
}

// view is what a representation is rendered for.
type view struct {
	device *tether.Device
	format message.MediaType
	// param is the resource's parameter: the shadow name ("" is the
	// classic shadow).
	param string
	// obs is the observer being notified or registered; nil for a plain
	// GET.
	obs *observer
}

// errSkip tells notify that a notification has nothing new to say.
var errSkip = errors.New("nothing new to notify")

// observer is one observation: an endpoint (a plain-UDP remote address or a
// DTLS session) observing one resource of one device under a token.
type observer struct {
	cc     *udpClient.Conn
	token  string
	device *tether.Device
	res    *observable
	format message.MediaType
	szx    blockwise.SZX // the block size of notifications
	param  string        // see view.param

	// Guarded by observations.mu.
	seq     uint32 // the last Observe sequence number sent
	ready   bool   // the registration has been answered
	dirty   bool   // the resource changed since the last notification
	running bool   // a goroutine is notifying
	gone    bool   // removed; removed is closed

	// A /shadow observer: the newest shadow announced and not yet
	// notified, and the version and desired state last sent (sent says
	// whether anything was), so that only a change of desired is notified.
	shadow      *tether.Shadow
	sent        bool
	sentVersion int64
	sentDesired string
	// A /commands observer: the commands handed to it and not yet sent.
	queue []queuedCommand

	// removed is closed when the observer is removed, which ends a
	// notification on its way.
	removed chan struct{}
}

func newObserver(cc *udpClient.Conn, token string, d *tether.Device, res *observable, format message.MediaType, szx blockwise.SZX) *observer {
	return &observer{cc: cc, token: token, device: d, res: res, format: format, szx: szx, removed: make(chan struct{})}
}

type ackKey struct {
	cc  *udpClient.Conn
	mid int32
}

// observations holds every observer and sends their notifications.
type observations struct {
	g *Gateway

	mu       sync.Mutex
	closed   bool
	byConn   map[*udpClient.Conn]map[string]*observer // by token
	byDevice map[string][]*observer                   // oldest first
	// acks are the confirmable notifications waiting for an
	// acknowledgement (false) or a reset (true).
	acks map[ackKey]chan bool

	running sync.WaitGroup
}

func newObservations(g *Gateway) *observations {
	return &observations{
		g:        g,
		byConn:   map[*udpClient.Conn]map[string]*observer{},
		byDevice: map[string][]*observer{},
		acks:     map[ackKey]chan bool{},
	}
}

// register adds an observer, or replaces the one with the same endpoint and
// token (RFC 7641 §4.1), and returns it with the Observe value of the
// response to the registration. The observer is notified only once ready is
// called, after that response is sent. When the device already has
// maxObserversPerDevice observers, its oldest is removed and returned.
func (s *observations) register(o *observer) (seq uint32, evicted *observer, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, nil, false
	}
	if old := s.byConn[o.cc][o.token]; old != nil {
		// A client orders notifications by their sequence numbers, so
		// the replacement continues the old one's.
		o.seq = old.seq
		s.removeLocked(old)
	}
	id := o.device.ID
	if list := s.byDevice[id]; len(list) >= maxObserversPerDevice {
		evicted = list[0]
		s.removeLocked(evicted)
	}
	o.seq = nextSeq(o.seq)
	tokens := s.byConn[o.cc]
	if tokens == nil {
		tokens = map[string]*observer{}
		s.byConn[o.cc] = tokens
	}
	tokens[o.token] = o
	s.byDevice[id] = append(s.byDevice[id], o)
	return o.seq, evicted, true
}

// nextSeq returns the Observe sequence number after seq: 24 bits, which
// wrap around (RFC 7641 §4.4).
func nextSeq(seq uint32) uint32 { return (seq + 1) & 0xffffff }

// ready lets notifications of o go out: its registration was answered.
func (s *observations) ready(o *observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o.ready = true
	if o.dirty {
		s.kickLocked(o)
	}
}

// deregister removes the observer of an endpoint and token, if any.
func (s *observations) deregister(cc *udpClient.Conn, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.byConn[cc][token]; o != nil {
		s.removeLocked(o)
	}
}

// remove removes one observer.
func (s *observations) remove(o *observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(o)
}

func (s *observations) removeLocked(o *observer) {
	if o.gone {
		return
	}
	o.gone = true
	close(o.removed)
	if tokens := s.byConn[o.cc]; tokens[o.token] == o {
		delete(tokens, o.token)
		if len(tokens) == 0 {
			delete(s.byConn, o.cc)
		}
	}
	id := o.device.ID
	list := s.byDevice[id]
	for i, x := range list {
		if x == o {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byDevice, id)
	} else {
		s.byDevice[id] = list
	}
}

// changed notifies the observers of a device's resource. It does not block.
func (s *observations) changed(deviceID string, res *observable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.byDevice[deviceID] {
		if o.res == res {
			s.kickLocked(o)
		}
	}
}

// shadowChanged notifies the observers of a device's shadow of that name
// whose last notification (or registration response) carried another
// desired state; desired is the canonical JSON of sh's desired state. It
// does not block.
func (s *observations) shadowChanged(sh *tether.Shadow, res *observable, desired string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.byDevice[sh.DeviceID] {
		if o.res != res || o.param != sh.Name || o.device.TenantID != sh.TenantID {
			continue
		}
		if o.sent && (sh.Version <= o.sentVersion || desired == o.sentDesired) {
			continue
		}
		if o.shadow == nil || sh.Version > o.shadow.Version {
			o.shadow = sh
		}
		s.kickLocked(o)
	}
}

// takeShadow returns the shadow announced to o since its last
// notification, if any; stale is true when one was announced but is not
// newer than what o was sent.
func (s *observations) takeShadow(o *observer) (sh *tether.Shadow, stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, o.shadow = o.shadow, nil
	if sh != nil && o.sent && sh.Version <= o.sentVersion {
		return nil, true
	}
	return sh, false
}

// sentShadow records the shadow o is being sent.
func (s *observations) sentShadow(o *observer, sh *tether.Shadow, desired string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.sent && sh.Version < o.sentVersion {
		return
	}
	o.sent, o.sentVersion, o.sentDesired = true, sh.Version, desired
}

// deliver hands a command to the newest observer of the device's commands
// resource and reports whether there is one. A command it holds already
// is not queued twice.
func (s *observations) deliver(q queuedCommand, tenant, deviceID string, res *observable) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	list := s.byDevice[deviceID]
	for i := len(list) - 1; i >= 0; i-- {
		o := list[i]
		if o.res != res || o.device.TenantID != tenant {
			continue
		}
		for _, x := range o.queue {
			if x.id == q.id {
				return true
			}
		}
		o.queue = append(o.queue, q)
		s.kickLocked(o)
		return true
	}
	return false
}

// popCommand takes the next command queued for o.
func (s *observations) popCommand(o *observer) (queuedCommand, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(o.queue) == 0 {
		return queuedCommand{}, false
	}
	q := o.queue[0]
	o.queue = o.queue[1:]
	return q, true
}

// goTracked runs f in a goroutine that Close waits for, unless the
// observations are closed.
func (s *observations) goTracked(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		f()
	}()
	return true
}

// refresh sends the observers of an endpoint the current state.
func (s *observations) refresh(cc *udpClient.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.byConn[cc] {
		s.kickLocked(o)
	}
}

// observing reports whether an endpoint observes anything.
func (s *observations) observing(cc *udpClient.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byConn[cc]) > 0
}

// count returns how many observers a device has.
func (s *observations) count(deviceID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byDevice[deviceID])
}

// dropConn removes the observers of an endpoint that is gone.
func (s *observations) dropConn(cc *udpClient.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.byConn[cc] {
		s.removeLocked(o)
	}
}

// removeDevice removes and returns a device's observers.
func (s *observations) removeDevice(deviceID string) []*observer {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := append([]*observer(nil), s.byDevice[deviceID]...)
	for _, o := range list {
		s.removeLocked(o)
	}
	return list
}

// closeAll removes every observer, telling each the observation ended, and
// starts no more notifications.
func (s *observations) closeAll() {
	s.mu.Lock()
	s.closed = true
	var all []*observer
	for _, tokens := range s.byConn {
		for _, o := range tokens {
			all = append(all, o)
		}
	}
	for _, o := range all {
		s.removeLocked(o)
	}
	s.mu.Unlock()
	for _, o := range all {
		s.g.endObservation(o, unavailable("observation ended: the server is shutting down; register again later"))
	}
}

// wait returns once no notification is being sent.
func (s *observations) wait() { s.running.Wait() }

// kickLocked marks o changed and starts notifying it unless that is under
// way: values stored meanwhile are coalesced into the next notification.
func (s *observations) kickLocked(o *observer) {
	if o.gone {
		return
	}
	o.dirty = true
	if !o.ready || o.running || s.closed {
		return
	}
	o.running = true
	s.running.Add(1)
	go s.run(o)
}

// run notifies o until it is up to date.
func (s *observations) run(o *observer) {
	defer s.running.Done()
	for {
		s.mu.Lock()
		if o.gone || !o.dirty || s.closed {
			o.running = false
			s.mu.Unlock()
			return
		}
		o.dirty = false
		o.seq = nextSeq(o.seq)
		seq := o.seq
		s.mu.Unlock()
		if err := s.g.notify(o, seq); err != nil {
			s.mu.Lock()
			o.running = false
			s.removeLocked(o)
			s.mu.Unlock()
			s.g.log.Debug("coap observation ended", "device", o.device.ID, "resource", o.res.name, "remote", o.cc.RemoteAddr().String(), "reason", err)
			return
		}
		s.mu.Lock()
		if len(o.queue) > 0 {
			// One notification per queued item, each acknowledged
			// before the next goes.
			o.dirty = true
		}
		s.mu.Unlock()
	}
}

// expectAnswer registers a confirmable notification's message ID.
func (s *observations) expectAnswer(cc *udpClient.Conn, mid int32) chan bool {
	ch := make(chan bool, 1)
	s.mu.Lock()
	s.acks[ackKey{cc, mid}] = ch
	s.mu.Unlock()
	return ch
}

func (s *observations) forgetAnswer(cc *udpClient.Conn, mid int32) {
	s.mu.Lock()
	delete(s.acks, ackKey{cc, mid})
	s.mu.Unlock()
}

// answered takes an acknowledgement or a reset from an endpoint and
// reports whether it answered a notification.
func (s *observations) answered(cc *udpClient.Conn, mid int32, reset bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.acks[ackKey{cc, mid}]
	if ch == nil {
		return false
	}
	select {
	case ch <- reset:
	default:
	}
	return true
}

var (
	errReset   = errors.New("the client reset the notification")
	errNoAck   = errors.New("the notification was not acknowledged")
	errGone    = errors.New("the endpoint is gone")
	errRemoved = errors.New("the observation was removed")
)

// notify sends o the current representation of its resource (or the next
// item it is owed) as a confirmable notification and waits for its
// acknowledgement, resending it as RFC 7252 §4.2 says; only an
// acknowledgement runs the item's acked. An error ends the observation.
func (g *Gateway) notify(o *observer, seq uint32) error {
	var body []byte
	var acked func()
	if o.res.next != nil {
		body, acked = o.res.next(o)
	} else {
		ctx, cancel := context.WithTimeout(g.ctx, renderTimeout)
		var err error
		body, err = o.res.render(ctx, view{device: o.device, format: o.format, param: o.param, obs: o})
		cancel()
		switch {
		case errors.Is(err, errSkip):
			return nil
		case err != nil:
			if g.ctx.Err() != nil {
				return errGone
			}
			// The store could not be read: skip this notification, the
			// next change or refresh sends the state again.
			g.log.Debug("coap notification skipped", "device", o.device.ID, "resource", o.res.name, "err", err)
			return nil
		}
	}
	cc := o.cc
	msg := cc.AcquireMessage(g.ctx)
	defer cc.ReleaseMessage(msg)
	msg.SetCode(codes.Content)
	msg.SetToken(message.Token(o.token))
	msg.SetObserve(seq)
	if body == nil {
		// The empty state (no command waiting): no representation.
		msg.SetOptionUint32(message.MaxAge, observeMaxAge)
	} else {
		setRepresentation(msg, body, o.format, observeMaxAge)
	}
	if block := int(o.szx.Size()); len(body) > block && !o.res.whole {
		// The first block only; the client fetches the rest with GET and
		// Block2 (RFC 7959 §2.6).
		v, err := blockwise.EncodeBlockOption(o.szx, 0, true)
		if err != nil {
			return fmt.Errorf("encode block option: %w", err)
		}
		msg.SetOptionUint32(message.Block2, v)
		msg.SetOptionUint32(message.Size2, uint32(len(body)))
		msg.SetBody(bytesReader(body[:block]))
	}
	msg.SetType(message.Confirmable)
	mid := cc.GetMessageID()
	msg.SetMessageID(mid)
	answer := g.obs.expectAnswer(cc, mid)
	defer g.obs.forgetAnswer(cc, mid)
	timeout := g.timing.ackTimeout + time.Duration(rand.Int64N(int64(g.timing.ackTimeout/2)+1))
	for try := 0; ; try++ {
		if err := cc.Session().WriteMessage(msg); err != nil {
			return fmt.Errorf("send notification: %w", err)
		}
		t := time.NewTimer(timeout)
		select {
		case reset := <-answer:
			t.Stop()
			if reset {
				return errReset
			}
			if acked != nil {
				acked()
			}
			return nil
		case <-t.C:
			if try == maxRetransmit {
				return errNoAck
			}
			timeout *= 2
		case <-cc.Context().Done():
			t.Stop()
			return errGone
		case <-o.removed:
			t.Stop()
			return errRemoved
		case <-g.ctx.Done():
			t.Stop()
			return errGone
		}
	}
}

// setRepresentation sets the body of a /latest-like response with its
// Content-Format, ETag (so a client fetching it block by block notices a
// change) and Max-Age.
func setRepresentation(m *pool.Message, body []byte, format message.MediaType, maxAge uint32) {
	m.SetContentFormat(format)
	m.SetOptionBytes(message.ETag, etag(body))
	m.SetOptionUint32(message.MaxAge, maxAge)
	m.SetBody(bytesReader(body))
}

// etag is an entity tag for a representation.
func etag(body []byte) []byte {
	sum := sha256.Sum256(body)
	return sum[:8]
}

// endObservation tells an observer its observation ended, with a final
// non-confirmable response without Observe (RFC 7641 §3.2). Best effort.
func (g *Gateway) endObservation(o *observer, ref refusal) {
	cc := o.cc
	if cc.Context().Err() != nil {
		return
	}
	msg := cc.AcquireMessage(context.Background())
	defer cc.ReleaseMessage(msg)
	msg.SetCode(ref.code)
	msg.SetToken(message.Token(o.token))
	setRefusalOptions(msg, ref)
	msg.SetType(message.NonConfirmable)
	msg.SetMessageID(cc.GetMessageID())
	if err := cc.Session().WriteMessage(msg); err != nil {
		g.log.Debug("coap final notification", "device", o.device.ID, "err", err)
	}
}
