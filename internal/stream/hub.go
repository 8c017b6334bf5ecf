package stream

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
)

// DeviceLookup reads a device, for filters that select by its labels or
// profile. The registry is one.
type DeviceLookup interface {
	Device(ctx context.Context, tenant, id string) (*tether.Device, error)
}

// Options configure a [Hub]. Zero fields take the defaults in their
// comments.
type Options struct {
	// Devices looks up a device's labels and profile. Without it, filters
	// by labels or profile are refused.
	Devices DeviceLookup
	// Buffer is how many events each subscriber's queue holds (256).
	// When it is full the oldest event is dropped, so a subscriber that
	// catches up sees the newest ones.
	Buffer int
	// Queue is how many published events wait for the hub's dispatcher
	// (8192). When it is full an event is dropped for every subscriber
	// that could have wanted it.
	Queue int
	// CacheTTL is how long a device's labels and profile are trusted (30 s):
	// a device relabelled enters or leaves a label filter within it.
	CacheTTL time.Duration
	// CacheSize bounds the devices whose labels and profile are cached
	// (10,000).
	CacheSize int
	// MaxSubscribers bounds the subscriptions of the hub (1,000).
	MaxSubscribers int
	// MaxPerCaller bounds the subscriptions of one caller, as named by
	// [WithCaller] (32), and MaxPerTenant those of one tenant (500), so
	// that one API key, or one tenant, cannot take every slot of the node.
	MaxPerCaller int
	MaxPerTenant int
	// Recheck is how often the WebSocket and SSE handlers authenticate a
	// stream's caller again (30 s): a stream whose caller signed out, or
	// whose key or user was deleted or lost its role, ends within it.
	Recheck time.Duration
	// WriteTimeout is how long the WebSocket and SSE handlers wait for a
	// client to take one message before they close its connection (10 s).
	WriteTimeout time.Duration
	// PingInterval is how often a WebSocket client is pinged (30 s).
	PingInterval time.Duration
	// Heartbeat is how often an SSE client gets a comment line, so that
	// proxies keep the connection (15 s).
	Heartbeat time.Duration
	Logger    *slog.Logger
}

func (o *Options) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Buffer, 256)
	def(&o.Queue, 8192)
	def(&o.CacheSize, 10000)
	def(&o.MaxSubscribers, 1000)
	def(&o.MaxPerCaller, 32)
	def(&o.MaxPerTenant, 500)
	defDur(&o.CacheTTL, 30*time.Second)
	defDur(&o.WriteTimeout, 10*time.Second)
	defDur(&o.PingInterval, 30*time.Second)
	defDur(&o.Heartbeat, 15*time.Second)
	defDur(&o.Recheck, 30*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// maxFilterDevices bounds the device IDs one filter may name.
const maxFilterDevices = 1000

// lookupTimeout bounds one device lookup of the dispatcher.
const lookupTimeout = 2 * time.Second

// Hub fans events out to subscribers. [Hub.Publish] never blocks: it
// hands the event to one dispatcher goroutine through a bounded queue,
// and the dispatcher filters it (looking devices up through a cache when
// a filter needs labels or a profile) and puts it on each matching
// subscriber's bounded queue, dropping that subscriber's oldest event
// when the queue is full. A slow subscriber therefore loses events and is
// told how many; it never slows the publisher or the other subscribers.
type Hub struct {
	o     Options
	log   *slog.Logger
	queue chan Event
	now   func() time.Time

	mu      sync.RWMutex
	tenants map[string]*tenantSubs // replaced, never changed, so the dispatcher reads it without the lock
	count   int
	callers map[string]int // subscriptions by caller (see WithCaller)
	closed  bool

	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when the dispatcher returns

	published, delivered, dropped atomic.Uint64

	// cache is the dispatcher's alone.
	cache map[deviceKey]cachedDevice
}

// tenantSubs are the subscriptions of one tenant and how many want each
// kind.
type tenantSubs struct {
	subs  []*subscription
	kinds [numKinds]int
}

// Stats are a hub's counters since it started.
type Stats struct {
	Subscribers int `json:"subscribers"`
	// Published counts events published while someone could want them.
	Published uint64 `json:"published"`
	// Delivered counts events put on subscribers' queues (one per
	// subscriber); Dropped those dropped for lagging subscribers.
	Delivered uint64 `json:"delivered"`
	Dropped   uint64 `json:"dropped"`
}

// NewHub returns a running hub; Close stops it.
func NewHub(o Options) *Hub {
	o.setDefaults()
	h := &Hub{
		o: o, log: o.Logger, queue: make(chan Event, o.Queue), now: time.Now,
		tenants: map[string]*tenantSubs{}, callers: map[string]int{},
		done: make(chan struct{}), stopped: make(chan struct{}),
		cache: map[deviceKey]cachedDevice{},
	}
	go h.dispatch()
	return h
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	n := h.count
	h.mu.RUnlock()
	return Stats{Subscribers: n, Published: h.published.Load(), Delivered: h.delivered.Load(), Dropped: h.dropped.Load()}
}

// Wants reports whether a subscriber of tenant wants events of kind, so
// that a publisher can skip the work of building events nobody reads.
func (h *Hub) Wants(tenant, kind string) bool {
	k := kindIndex(kind)
	if k < 0 {
		return false
	}
	h.mu.RLock()
	ts := h.tenants[tenant]
	h.mu.RUnlock()
	return ts != nil && ts.kinds[k] > 0
}

// Publish offers an event to the subscribers of its tenant. It never
// blocks; when the dispatcher is that far behind, the event is dropped
// for every subscriber that could have wanted it, and each is told.
func (h *Hub) Publish(ev Event) {
	k := kindIndex(ev.Kind)
	if k < 0 {
		return
	}
	h.mu.RLock()
	ts := h.tenants[ev.TenantID]
	h.mu.RUnlock()
	if ts == nil || ts.kinds[k] == 0 {
		return
	}
	h.published.Add(1)
	select {
	case h.queue <- ev:
	default:
		for _, s := range ts.subs {
			if s.m.matchEvent(k, ev.DeviceID) {
				s.lag(1)
			}
		}
	}
}

// callerKey is the context key of [WithCaller].
type callerKey struct{}

// WithCaller returns ctx naming the caller on whose behalf
// [Hub.Subscribe] is called, so that the hub counts the subscription
// against the caller's MaxPerCaller. A subscription of a ctx without a
// caller counts only against the tenant's and the node's limits.
func WithCaller(ctx context.Context, p *tether.Principal) context.Context {
	if p == nil {
		return ctx
	}
	return context.WithValue(ctx, callerKey{}, p.TenantID+"/"+p.Source())
}

func callerOf(ctx context.Context) string {
	c, _ := ctx.Value(callerKey{}).(string)
	return c
}

// Subscribe starts a subscription of tenant's events that f selects. It
// ends when ctx is done or it is closed. It is refused with ETOOMANY when
// the node, the tenant or the caller (see [WithCaller]) has as many
// subscriptions as the hub allows.
func (h *Hub) Subscribe(ctx context.Context, tenant string, f Filter) (Subscription, error) {
	s, err := h.subscribe(ctx, tenant, f)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (h *Hub) subscribe(ctx context.Context, tenant string, f Filter) (*subscription, error) {
	m, err := compile(f)
	if err != nil {
		return nil, err
	}
	if m.needsDevice() && h.o.Devices == nil {
		return nil, tether.Errorf(tether.EUNAVAILABLE, "this node cannot filter live events by labels or profile")
	}
	caller := callerOf(ctx)
	s := &subscription{h: h, tenant: tenant, caller: caller, m: m, ring: make([]item, h.o.Buffer), ready: make(chan struct{}, 1)}
	h.mu.Lock()
	old := h.tenants[tenant]
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, tether.Errorf(tether.EUNAVAILABLE, "the node is shutting down")
	case caller != "" && h.callers[caller] >= h.o.MaxPerCaller:
		h.mu.Unlock()
		return nil, tether.Errorf(tether.ETOOMANY, "you already have %d live streams and subscriptions open, the most one caller may; close one first", h.o.MaxPerCaller)
	case old != nil && len(old.subs) >= h.o.MaxPerTenant:
		h.mu.Unlock()
		return nil, tether.Errorf(tether.ETOOMANY, "your tenant already has %d live streams and subscriptions open, the most one tenant may; close one first", h.o.MaxPerTenant)
	case h.count >= h.o.MaxSubscribers:
		h.mu.Unlock()
		return nil, tether.Errorf(tether.ETOOMANY, "this node already serves %d live streams; try again later", h.o.MaxSubscribers)
	}
	h.count++
	if caller != "" {
		h.callers[caller]++
	}
	next := &tenantSubs{}
	if old != nil {
		*next = *old
	}
	next.subs = append(slices.Clip(next.subs), s)
	m.addKinds(&next.kinds, 1)
	h.setTenant(tenant, next)
	h.mu.Unlock()
	stop := context.AfterFunc(ctx, s.Close)
	s.mu.Lock()
	s.stop = stop
	s.mu.Unlock()
	return s, nil
}

// setTenant replaces the tenant's subscriptions in a copy of the map, so
// that readers holding the old one are unaffected. The caller holds h.mu.
func (h *Hub) setTenant(tenant string, ts *tenantSubs) {
	next := make(map[string]*tenantSubs, len(h.tenants)+1)
	for k, v := range h.tenants {
		next[k] = v
	}
	if ts == nil || len(ts.subs) == 0 {
		delete(next, tenant)
	} else {
		next[tenant] = ts
	}
	h.tenants = next
}

// remove takes s out of the hub; it reports whether s was in it.
func (h *Hub) remove(s *subscription) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.tenants[s.tenant]
	if old == nil {
		return false
	}
	i := slices.Index(old.subs, s)
	if i < 0 {
		return false
	}
	next := &tenantSubs{kinds: old.kinds, subs: slices.Delete(slices.Clone(old.subs), i, i+1)}
	s.m.addKinds(&next.kinds, -1)
	h.setTenant(s.tenant, next)
	h.count--
	if s.caller != "" {
		if h.callers[s.caller]--; h.callers[s.caller] <= 0 {
			delete(h.callers, s.caller)
		}
	}
	return true
}

// Close ends every subscription (their Next returns ErrClosed) and stops
// the dispatcher.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	tenants := h.tenants
	h.tenants = map[string]*tenantSubs{}
	h.count = 0
	clear(h.callers)
	h.mu.Unlock()
	for _, ts := range tenants {
		for _, s := range ts.subs {
			s.Close()
		}
	}
	close(h.done)
	<-h.stopped
}

// dispatch delivers queued events until the hub closes.
func (h *Hub) dispatch() {
	defer close(h.stopped)
	for {
		select {
		case ev := <-h.queue:
			h.deliver(ev)
		case <-h.done:
			return
		}
	}
}

// deliver puts ev on the queue of every subscription that wants it.
func (h *Hub) deliver(ev Event) {
	h.mu.RLock()
	ts := h.tenants[ev.TenantID]
	h.mu.RUnlock()
	if ts == nil {
		return
	}
	k := kindIndex(ev.Kind)
	var (
		wire   []byte
		dev    *deviceInfo
		looked bool
	)
	for _, s := range ts.subs {
		if !s.m.matchEvent(k, ev.DeviceID) {
			continue
		}
		if s.m.needsDevice() {
			if !looked {
				dev, looked = h.device(ev.TenantID, ev.DeviceID), true
			}
			if !s.m.matchDevice(dev) {
				continue
			}
		}
		if wire == nil {
			var err error
			if wire, err = encodeEvent(ev); err != nil {
				h.log.Warn("live event not encodable; dropped", "kind", ev.Kind, "device", ev.DeviceID, "err", err)
				return
			}
		}
		s.push(item{ev: ev, wire: wire})
	}
}

// deviceKey names a device across tenants.
type deviceKey struct{ tenant, id string }

// deviceInfo is what filters read of a device.
type deviceInfo struct {
	labels  map[string]string
	profile string
}

type cachedDevice struct {
	info    *deviceInfo // nil: no such device
	expires time.Time
}

// device returns a device's labels and profile, from the cache or looked
// up; nil if there is no such device (or it could not be read).
func (h *Hub) device(tenant, id string) *deviceInfo {
	k := deviceKey{tenant, id}
	now := h.now()
	if c, ok := h.cache[k]; ok && now.Before(c.expires) {
		return c.info
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	d, err := h.o.Devices.Device(ctx, tenant, id)
	cancel()
	ttl := h.o.CacheTTL
	var info *deviceInfo
	switch {
	case err == nil:
		info = &deviceInfo{labels: d.Labels, profile: d.ProfileID}
	case tether.ErrorCode(err) == tether.ENOTFOUND:
	default:
		// Try again soon, but not for every event of the device.
		ttl = min(ttl, time.Second)
		h.log.Warn("live stream: device lookup failed; its events skip label and profile filters for now", "device", id, "err", err)
	}
	if len(h.cache) >= h.o.CacheSize {
		h.evict(now)
	}
	h.cache[k] = cachedDevice{info: info, expires: now.Add(ttl)}
	return info
}

// evict makes room in the cache: expired entries go first, then
// arbitrary ones (map order) down to three quarters of the bound.
func (h *Hub) evict(now time.Time) {
	for k, c := range h.cache {
		if !now.Before(c.expires) {
			delete(h.cache, k)
		}
	}
	for k := range h.cache {
		if len(h.cache) < h.o.CacheSize*3/4 {
			break
		}
		delete(h.cache, k)
	}
}

// wire messages: the JSON a client receives.
type wireEvent struct {
	Type   string          `json:"type"`
	Kind   string          `json:"kind"`
	Device string          `json:"device"`
	Time   time.Time       `json:"time"`
	Data   json.RawMessage `json:"data"`
}

type wireLagging struct {
	Type    string `json:"type"`
	Dropped uint64 `json:"dropped"`
	Message string `json:"message"`
}

// LaggingMessage is the text of the message that tells a client events
// were dropped for it.
const LaggingMessage = "lagging, events dropped"

func encodeEvent(ev Event) ([]byte, error) {
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return json.Marshal(wireEvent{Type: "event", Kind: ev.Kind, Device: ev.DeviceID, Time: ev.Time, Data: data})
}

func encodeLagging(n uint64) []byte {
	b, _ := json.Marshal(wireLagging{Type: "lagging", Dropped: n, Message: LaggingMessage})
	return b
}

var readyMessage = []byte(`{"type":"ready"}`)

// item is a queued event with its wire encoding, shared by every
// subscriber it goes to.
type item struct {
	ev   Event
	wire []byte
}

// subscription is one subscriber's ring of events.
type subscription struct {
	h      *Hub
	tenant string
	caller string // "" if the subscriber named none
	m      matcher
	ready  chan struct{}

	mu      sync.Mutex
	stop    func() bool // stops the context's AfterFunc
	ring    []item
	head, n int
	dropped uint64
	closed  bool
}

var _ Subscription = (*subscription)(nil)

// push queues it, dropping the oldest event if the ring is full.
func (s *subscription) push(it item) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.n == len(s.ring) {
		s.ring[s.head] = item{}
		s.head = (s.head + 1) % len(s.ring)
		s.n--
		s.dropped++
		s.h.dropped.Add(1)
	}
	s.ring[(s.head+s.n)%len(s.ring)] = it
	s.n++
	s.mu.Unlock()
	s.h.delivered.Add(1)
	s.wake()
}

// lag counts n events dropped before reaching the ring.
func (s *subscription) lag(n uint64) {
	s.mu.Lock()
	if !s.closed {
		s.dropped += n
		s.h.dropped.Add(n)
	}
	s.mu.Unlock()
}

func (s *subscription) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// take returns the oldest queued event, if there is one, and the events
// dropped before it; closed reports a closed subscription with nothing
// left.
func (s *subscription) take() (it item, dropped uint64, ok, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return item{}, 0, false, s.closed
	}
	it = s.ring[s.head]
	s.ring[s.head] = item{}
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	dropped, s.dropped = s.dropped, 0
	return it, dropped, true, false
}

// next waits for the next event.
func (s *subscription) next(ctx context.Context) (item, uint64, error) {
	for {
		it, dropped, ok, closed := s.take()
		switch {
		case ok:
			return it, dropped, nil
		case closed:
			return item{}, 0, ErrClosed
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return item{}, 0, ctx.Err()
		}
	}
}

// Next implements [Subscription].
func (s *subscription) Next(ctx context.Context) (Event, uint64, error) {
	it, dropped, err := s.next(ctx)
	return it.ev, dropped, err
}

// Close implements [Subscription]. Events still queued are discarded.
func (s *subscription) Close() {
	s.h.remove(s)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	clear(s.ring)
	s.n = 0
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.wake()
}
