// Package presence tracks whether each device is online, stale (connected
// but silent for longer than its profile's report interval) or offline,
// why, and since when, and publishes every change as an event.
//
// Each connection of a device gets the next presence sequence number,
// stored with its status, and a disconnect applies only to the connection
// with the stored number: a late disconnect of an older connection (a
// takeover, a slow keep-alive timeout) never overrides a newer connect.
// Messages only touch memory ([Service.Seen] is on every message's path);
// the store is written when a status changes.
package presence

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
)

// Store keeps each device's presence.
type Store interface {
	// ConnectPresence records a new connection held by node: the device's
	// seq grows by one and it is online with reason since at.
	ConnectPresence(ctx context.Context, tenantID, deviceID, transport, reason, node string, at time.Time) (*tether.Presence, error)
	// UpdatePresence sets status and reason, since at, only if the stored
	// seq is seq and the stored status one of from; it returns the stored
	// presence afterwards and whether it changed.
	UpdatePresence(ctx context.Context, tenantID, deviceID string, seq int64, from []string, status, reason string, at time.Time) (*tether.Presence, bool, error)
	// Presence returns a device's presence, or ENOTFOUND if it has none.
	Presence(ctx context.Context, tenantID, deviceID string) (*tether.Presence, error)
	// RecoverPresence marks the devices node left online or stale
	// offline with reason and returns them.
	RecoverPresence(ctx context.Context, node, reason string, at time.Time) ([]*tether.Presence, error)
}

// Profiles gives a device's compiled profile (for its report interval);
// id "" is the permissive one.
type Profiles interface {
	Compiled(ctx context.Context, tenant, id string) (*profile.Compiled, error)
}

// Events publishes presence events on the bus.
type Events interface {
	PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error
}

// Options tune a Service.
type Options struct {
	// Node names this process. Rows it leaves online when it stops are
	// marked offline by the next Recover of a process with the same name.
	Node   string
	Logger *slog.Logger
	Now    func() time.Time
	// Tick is how often Run looks for stale and silent devices; default
	// 1 second.
	Tick time.Duration
	// ConnectionlessTimeout is how long a device that uses only CoAP or
	// HTTP stays online after its last request; default 10 minutes.
	ConnectionlessTimeout time.Duration
}

const (
	shards = 64
	// lockStripes bounds the locks that order a device's presence writes
	// and events: a device uses the one its ID hashes to.
	lockStripes = 1024
	// queueSize bounds the status changes Seen hands to Run's worker;
	// beyond it Seen drops the change and the next tick or message makes
	// it again.
	queueSize = 4096
)

// Service tracks presence.
type Service struct {
	st       Store
	profiles Profiles
	events   Events
	o        Options
	log      *slog.Logger
	now      func() time.Time

	seed   maphash.Seed
	shards [shards]shard
	locks  [lockStripes]sync.Mutex
	work   chan job
}

// shard is part of the devices this node holds a connection of (or saw
// a connectionless request from), by device ID.
type shard struct {
	mu sync.Mutex
	m  map[string]*conn
}

// conn is a device this node tracks. Its fields after the first four are
// guarded by its shard's lock.
type conn struct {
	tenant, device, transport string
	connectionless            bool

	profile string
	// seq is the stored presence seq of this connection; 0 while a
	// connectionless device's first request is being recorded.
	seq int64
	// status is the stored status: online or stale.
	status string
	// since is when status began, lastSeen the last message (Unix ns).
	since, lastSeen int64
	// pending is set while a change of status is queued or being stored.
	pending bool
}

// job is a change of status for Run's worker.
type job struct {
	c *conn
	// seq is the connection's seq when the job was made; 0 asks to record
	// a connectionless device's first request.
	seq int64
}

// New returns a presence service over st.
func New(st Store, profiles Profiles, events Events, o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.ConnectionlessTimeout <= 0 {
		o.ConnectionlessTimeout = 10 * time.Minute
	}
	s := &Service{
		st: st, profiles: profiles, events: events, o: o, log: o.Logger,
		now:  func() time.Time { return o.Now().UTC() },
		seed: maphash.MakeSeed(), work: make(chan job, queueSize),
	}
	for i := range s.shards {
		s.shards[i].m = map[string]*conn{}
	}
	return s
}

// The statuses a change may start from.
var (
	online = []string{tether.PresenceOnline}
	stale  = []string{tether.PresenceStale}
	live   = []string{tether.PresenceOnline, tether.PresenceStale}
)

// connectionless reports whether a transport has no connection whose end
// says the device went away.
func connectionless(transport string) bool { return transport == "coap" || transport == "http" }

func (s *Service) hash(id string) uint64 { return maphash.String(s.seed, id) }

func (s *Service) shard(id string) *shard { return &s.shards[s.hash(id)%shards] }

// lock returns the lock that orders a device's presence writes and
// events.
func (s *Service) lock(id string) *sync.Mutex { return &s.locks[(s.hash(id)/shards)%lockStripes] }

// Connected records a new connection of a device over transport and
// returns its seq, which the caller passes to Disconnected when the
// connection ends.
func (s *Service) Connected(ctx context.Context, d *tether.Device, transport string) (int64, error) {
	mu := s.lock(d.ID)
	mu.Lock()
	defer mu.Unlock()
	now := s.now()
	p, err := s.st.ConnectPresence(ctx, d.TenantID, d.ID, transport, tether.ReasonConnected, s.o.Node, now)
	if err != nil {
		return 0, err
	}
	sh := s.shard(d.ID)
	sh.mu.Lock()
	if cur := sh.m[d.ID]; cur == nil || cur.seq < p.Seq {
		sh.m[d.ID] = &conn{
			tenant: d.TenantID, device: d.ID, transport: transport, connectionless: connectionless(transport),
			profile: d.ProfileID, seq: p.Seq, status: tether.PresenceOnline,
			since: now.UnixNano(), lastSeen: now.UnixNano(),
		}
	}
	sh.mu.Unlock()
	s.publish(ctx, p)
	return p.Seq, nil
}

// Disconnected records the end of the connection with seq: the device is
// offline with reason, unless a newer connection (a greater seq) is
// stored or it is offline already.
func (s *Service) Disconnected(ctx context.Context, d *tether.Device, seq int64, reason string) error {
	mu := s.lock(d.ID)
	mu.Lock()
	defer mu.Unlock()
	p, changed, err := s.st.UpdatePresence(ctx, d.TenantID, d.ID, seq, live, tether.PresenceOffline, reason, s.now())
	if err != nil {
		return err
	}
	sh := s.shard(d.ID)
	sh.mu.Lock()
	if cur := sh.m[d.ID]; cur != nil && cur.seq == seq {
		delete(sh.m, d.ID)
	}
	sh.mu.Unlock()
	if changed {
		s.publish(ctx, p)
	}
	return nil
}

// Seen records a message of a device. It only touches memory unless the
// status changes: a stale device is online again, and a device that uses
// CoAP or HTTP (and has no connection) is online from its first request.
// The change is stored by Run's worker, so Seen never waits for the
// store.
func (s *Service) Seen(d *tether.Device, transport string) {
	now := s.now().UnixNano()
	sh := s.shard(d.ID)
	sh.mu.Lock()
	c := sh.m[d.ID]
	if c == nil {
		if !connectionless(transport) {
			sh.mu.Unlock()
			return
		}
		c = &conn{
			tenant: d.TenantID, device: d.ID, transport: transport, connectionless: true,
			profile: d.ProfileID, lastSeen: now, pending: true,
		}
		sh.m[d.ID] = c
		sh.mu.Unlock()
		s.enqueue(job{c: c})
		return
	}
	c.lastSeen = now
	c.profile = d.ProfileID
	wake := c.status == tether.PresenceStale && !c.pending
	if wake {
		c.pending = true
	}
	seq := c.seq
	sh.mu.Unlock()
	if wake {
		s.enqueue(job{c: c, seq: seq})
	}
}

// enqueue hands j to the worker, or forgets it if the queue is full.
func (s *Service) enqueue(j job) {
	select {
	case s.work <- j:
		return
	default:
	}
	sh := s.shard(j.c.device)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	j.c.pending = false
	if j.seq == 0 && sh.m[j.c.device] == j.c {
		delete(sh.m, j.c.device) // the next request tries again
	}
}

// Get returns a device's presence; a device that never connected is
// offline with reason never_connected.
func (s *Service) Get(ctx context.Context, tenant, deviceID string) (*tether.Presence, error) {
	p, err := s.st.Presence(ctx, tenant, deviceID)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return &tether.Presence{TenantID: tenant, DeviceID: deviceID, Status: tether.PresenceOffline, Reason: tether.ReasonNeverConnected}, nil
	}
	return p, err
}

// Recover marks offline, with reason server_shutdown, the devices this
// node left online or stale when it stopped: their connections ended
// with it. Call it at start, before the gateways take connections.
func (s *Service) Recover(ctx context.Context) error {
	ps, err := s.st.RecoverPresence(ctx, s.o.Node, tether.ReasonServerShutdown, s.now())
	if err != nil {
		return err
	}
	for _, p := range ps {
		s.publish(ctx, p)
	}
	if len(ps) > 0 {
		s.log.Info("presence recovered", "node", s.o.Node, "offline", len(ps))
	}
	return nil
}

// Run stores the changes Seen makes and, every tick, marks stale the
// devices silent for longer than their profile's report interval, and
// offline those that use only CoAP or HTTP and were silent for the
// connectionless timeout. It returns when ctx ends.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case j := <-s.work:
				s.do(ctx, j)
			}
		}
	})
	t := time.NewTicker(s.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.tick(ctx)
		}
	}
}

// do stores the change a job asks for.
func (s *Service) do(ctx context.Context, j job) {
	if j.seq != 0 {
		s.apply(ctx, j.c, j.seq, stale, tether.PresenceOnline, tether.ReasonActivity)
		return
	}
	// A connectionless device's first request: a new "connection".
	c := j.c
	mu := s.lock(c.device)
	mu.Lock()
	defer mu.Unlock()
	sh := s.shard(c.device)
	sh.mu.Lock()
	current := sh.m[c.device] == c
	sh.mu.Unlock()
	if !current {
		return // a connection replaced it meanwhile
	}
	now := s.now()
	p, err := s.st.ConnectPresence(ctx, c.tenant, c.device, c.transport, tether.ReasonActivity, s.o.Node, now)
	sh.mu.Lock()
	if err != nil {
		if sh.m[c.device] == c {
			delete(sh.m, c.device)
		}
		sh.mu.Unlock()
		if tether.ErrorCode(err) != tether.ENOTFOUND && ctx.Err() == nil {
			s.log.Warn("presence not stored", "tenant", c.tenant, "device", c.device, "err", err)
		}
		return
	}
	c.seq, c.status, c.since, c.pending = p.Seq, tether.PresenceOnline, now.UnixNano(), false
	sh.mu.Unlock()
	s.publish(ctx, p)
}

// apply moves the connection c with seq from one of the statuses from to
// status to,
// in the store and in memory, and publishes the change.
func (s *Service) apply(ctx context.Context, c *conn, seq int64, from []string, to, reason string) {
	mu := s.lock(c.device)
	mu.Lock()
	defer mu.Unlock()
	now := s.now()
	p, changed, err := s.st.UpdatePresence(ctx, c.tenant, c.device, seq, from, to, reason, now)
	sh := s.shard(c.device)
	sh.mu.Lock()
	c.pending = false
	switch {
	case err != nil:
		sh.mu.Unlock()
		if ctx.Err() == nil {
			s.log.Warn("presence not stored", "tenant", c.tenant, "device", c.device, "err", err)
		}
		return
	case sh.m[c.device] != c || c.seq != seq:
	case changed && to == tether.PresenceOffline, !changed && (p == nil || p.Seq != seq):
		// Offline, or the stored presence belongs to a newer connection
		// (of another node, or a device deleted): stop tracking it here.
		delete(sh.m, c.device)
	case changed:
		c.status, c.since = to, now.UnixNano()
	case p.Status == tether.PresenceOnline || p.Status == tether.PresenceStale:
		c.status = p.Status
	default:
		delete(sh.m, c.device)
	}
	sh.mu.Unlock()
	if changed {
		s.publish(ctx, p)
	}
}

// candidate is a tracked connection the tick may change.
type candidate struct {
	c       *conn
	seq     int64
	profile string
	silent  time.Duration
	// to is the change decided under the shard lock; "" leaves it to the
	// profile's report interval (online → stale).
	to string
}

// tick looks at every tracked connection once.
func (s *Service) tick(ctx context.Context) {
	now := s.now().UnixNano()
	var cands []candidate
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, c := range sh.m {
			if c.pending || c.seq == 0 {
				continue
			}
			silent := time.Duration(now - c.lastSeen)
			switch {
			case c.connectionless && silent >= s.o.ConnectionlessTimeout:
				c.pending = true
				cands = append(cands, candidate{c: c, seq: c.seq, silent: silent, to: tether.PresenceOffline})
			case c.status == tether.PresenceStale && c.lastSeen > c.since:
				// Activity whose change Seen could not queue.
				c.pending = true
				cands = append(cands, candidate{c: c, seq: c.seq, to: tether.PresenceOnline})
			case c.status == tether.PresenceOnline:
				cands = append(cands, candidate{c: c, seq: c.seq, profile: c.profile, silent: silent})
			}
		}
		sh.mu.Unlock()
	}
	intervals := map[string]time.Duration{} // by tenant/profile, read once a tick
	for _, k := range cands {
		if ctx.Err() != nil {
			return
		}
		switch k.to {
		case tether.PresenceOffline:
			s.apply(ctx, k.c, k.seq, live, tether.PresenceOffline, tether.ReasonSilent)
		case tether.PresenceOnline:
			s.apply(ctx, k.c, k.seq, stale, tether.PresenceOnline, tether.ReasonActivity)
		default:
			iv, ok := intervals[k.c.tenant+"/"+k.profile]
			if !ok {
				iv = s.interval(ctx, k.c.tenant, k.profile)
				intervals[k.c.tenant+"/"+k.profile] = iv
			}
			if iv <= 0 || k.silent <= iv {
				continue
			}
			if !s.claim(k.c, k.seq, now-int64(iv)) {
				continue
			}
			s.apply(ctx, k.c, k.seq, online, tether.PresenceStale, tether.ReasonSilent)
		}
	}
}

// claim marks c pending if it is still the connection with seq, online,
// not pending and silent since before (Unix ns), and reports whether it
// did: a message may have come since the tick looked.
func (s *Service) claim(c *conn, seq, before int64) bool {
	sh := s.shard(c.device)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.pending || c.seq != seq || c.status != tether.PresenceOnline || sh.m[c.device] != c || c.lastSeen >= before {
		return false
	}
	c.pending = true
	return true
}

// interval returns the report interval of a profile, 0 (never stale) if
// it cannot be read.
func (s *Service) interval(ctx context.Context, tenant, id string) time.Duration {
	if s.profiles == nil {
		return 0
	}
	p, err := s.profiles.Compiled(ctx, tenant, id)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("profile not read for presence", "tenant", tenant, "profile", id, "err", err)
		}
		return 0
	}
	return p.ReportInterval()
}

// publish publishes a stored presence.
func (s *Service) publish(ctx context.Context, p *tether.Presence) {
	if s.events == nil {
		return
	}
	b, err := json.Marshal(p)
	if err == nil {
		err = s.events.PublishEvent(context.WithoutCancel(ctx), p.TenantID, tether.EventPresence, p.DeviceID, b)
	}
	if err != nil {
		s.log.Warn("presence event not published", "tenant", p.TenantID, "device", p.DeviceID, "status", p.Status, "err", err)
	}
}
