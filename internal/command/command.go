// Package command sends commands (RPCs) to devices and keeps each one
// until it is done: it checks every command against the guardrails
// (profile, role, parameters, rate limits, circuit breaker, confirmation)
// and stores it, offers it to the device's live connection in order,
// follows it through sent, delivered and the device's reply, and expires
// or times it out. Everything is in the store, so a restart loses and
// duplicates nothing: queued commands are offered again when the device
// is next ready, and replies to any command not yet done are accepted.
//
// Every change of a command is stored first (with its history), then
// published as an event on the bus, then the callers waiting for it are
// woken.
package command

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
)

// Store keeps commands. Every method is one transaction.
type Store interface {
	// CreateCommand stores c as its device's next command (its seq set by
	// the store), unless the device has a command with c's idempotency
	// key, which it returns with created false. admit runs inside the
	// same write transaction, before the insert, and may change c.
	CreateCommand(ctx context.Context, c *tether.Command, admit func(Guard) error) (cmd *tether.Command, created bool, err error)
	Command(ctx context.Context, tenantID, deviceID, id string) (*tether.Command, error)
	CommandByKey(ctx context.Context, tenantID, deviceID, key string) (*tether.Command, error)
	Commands(ctx context.Context, tenantID, deviceID, status string, after int64, limit int) ([]*tether.Command, error)
	// OpenCommands returns the device's commands that are not done, in
	// seq order.
	OpenCommands(ctx context.Context, tenantID, deviceID string) ([]*tether.Command, error)
	// UpdateCommand calls fn with the stored command inside a write
	// transaction and stores what fn made of it if fn reports a change.
	UpdateCommand(ctx context.Context, tenantID, deviceID, id string, fn func(*tether.Command) (bool, error)) (*tether.Command, bool, error)
	// DueCommands returns commands past their expiry or timeout.
	DueCommands(ctx context.Context, now time.Time, limit int) ([]*tether.Command, error)
}

// Guard answers what the guardrails ask about a device's earlier
// commands, inside the transaction that stores the new one, so that the
// counts and the insert are atomic. It is an alias of an interface
// literal so that the store can spell the same type without importing
// this package.
type Guard = interface {
	// CountCommands counts the device's commands created after since
	// that were not rejected; name "" counts every name.
	CountCommands(name string, since time.Time) (int, error)
	// FinishedCommands returns the ID, status and UpdatedAt (only those) of
	// the device's n most recently finished commands (succeeded, failed
	// or expired), newest first.
	FinishedCommands(n int) ([]*tether.Command, error)
	// OpenCommands counts the device's commands created at or after since
	// that are not done.
	OpenCommands(since time.Time) (int, error)
}

// Devices finds the device a command is for.
type Devices interface {
	Device(ctx context.Context, tenant, id string) (*tether.Device, error)
}

// Profiles gives a device's compiled profile; id "" is the permissive
// one.
type Profiles interface {
	Compiled(ctx context.Context, tenant, id string) (*profile.Compiled, error)
}

// Events publishes command events on the bus.
type Events interface {
	PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error
}

// Transport is a gateway that can hand a command to a device's live
// connection.
type Transport interface {
	// Deliver hands cmd to a live connection of its device and reports
	// whether it did. It must not block for long and must not call
	// [Service.Ready] (which holds the device's delivery lock while it
	// calls Deliver).
	Deliver(cmd *tether.Command) bool
}

// Options tune a Service. Zero values take the defaults.
type Options struct {
	// DeviceRate caps the commands of all names to one device; default 60
	// per minute. A negative Count turns the limit off.
	DeviceRate tether.Rate
	// BreakerFailures is how many failed or expired commands in a row
	// open a device's circuit; default 5, negative turns it off.
	BreakerFailures int
	// BreakerCooldown is how long an open circuit refuses commands before
	// it lets one through to try; default 1 minute.
	BreakerCooldown time.Duration
	// DefaultTTL ends a command not delivered by then; default 24 hours.
	DefaultTTL time.Duration
	// DefaultTimeout is how long a device has to reply to a two-way
	// command once it is sent; default 30 seconds.
	DefaultTimeout time.Duration
	Logger         *slog.Logger
	Now            func() time.Time
}

// Limits of a request.
const (
	maxKeyLen    = 256
	maxSourceLen = 256
	// sweepBatch is how many due commands the sweeper reads at a time.
	sweepBatch = 500
	// waitPoll is how often Wait reads the command again even without
	// being woken, for a command another node changed.
	waitPoll = time.Second
	// lockStripes is the number of delivery locks; a device uses the one
	// its ID hashes to, so the locks stay bounded however many devices
	// there are, and two devices share one only by chance.
	lockStripes = 1024
)

// Service sends commands and follows them to the end.
type Service struct {
	store    Store
	devices  Devices
	profiles Profiles
	events   Events
	o        Options
	log      *slog.Logger
	now      func() time.Time

	tmu        sync.RWMutex
	transports []Transport

	seed  maphash.Seed
	locks [lockStripes]sync.Mutex

	wmu     sync.Mutex
	waiters map[string]*waiters
}

// waiters are the callers of Wait on one command: ch is closed when the
// command changes.
type waiters struct {
	ch chan struct{}
	n  int
}

// New returns a command service over st.
func New(st Store, devices Devices, profiles Profiles, events Events, o Options) *Service {
	if o.DeviceRate == (tether.Rate{}) {
		o.DeviceRate = tether.Rate{Count: 60, Per: tether.Duration(time.Minute)}
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = 5
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = time.Minute
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = 24 * time.Hour
	}
	if o.DefaultTimeout <= 0 {
		o.DefaultTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{
		store: st, devices: devices, profiles: profiles, events: events, o: o,
		log: o.Logger, now: func() time.Time { return o.Now().UTC() },
		seed: maphash.MakeSeed(), waiters: map[string]*waiters{},
	}
}

// Send checks a command against the guardrails and stores it, then
// offers it to the device if it is queued. The checks, in order:
//
//   - the device exists (ENOTFOUND; nothing is stored);
//   - a command with the same idempotency key to the device: that one is
//     returned, unchanged, with created false and no error;
//   - the device's profile knows the command (EINVALID);
//   - the sender's role may send it: one of the command's roles, or admin
//     (EFORBIDDEN);
//   - its parameters meet the command's schema (EINVALID);
//   - the command's own rate limit and the per-device one (ETOOMANY),
//     counted in the store in the transaction that stores the command,
//     so that no number of concurrent calls gets more through;
//   - the device's circuit breaker (EUNAVAILABLE).
//
// A command that fails a check is stored as rejected, with the reason,
// and returned together with the coded error. One that passes is queued,
// or awaiting confirmation if its definition asks for it.
func (s *Service) Send(ctx context.Context, tenant, deviceID string, r tether.CommandRequest) (cmd *tether.Command, created bool, err error) {
	if err := checkRequest(r); err != nil {
		return nil, false, err
	}
	d, err := s.devices.Device(ctx, tenant, deviceID)
	if err != nil {
		return nil, false, err
	}
	// The store checks the key again atomically; this read only saves the
	// profile lookup and the write transaction for a repeat.
	if r.IdempotencyKey != "" {
		c, err := s.store.CommandByKey(ctx, tenant, deviceID, r.IdempotencyKey)
		if err == nil {
			return c, false, nil
		}
		if tether.ErrorCode(err) != tether.ENOTFOUND {
			return nil, false, fmt.Errorf("send %s to %s: %w", r.Name, deviceID, err)
		}
	}
	prof, err := s.profiles.Compiled(ctx, tenant, d.ProfileID)
	if err != nil {
		// Not %w: the caller must not read a missing profile as a missing
		// device.
		return nil, false, fmt.Errorf("send %s to %s: profile %q: %v", r.Name, deviceID, d.ProfileID, err)
	}

	now := s.now()
	c := &tether.Command{
		TenantID: tenant, DeviceID: deviceID, ID: "c_" + randomID(),
		Name: r.Name, Params: r.Params, OneWay: r.OneWay,
		Status: tether.CommandQueued, IdempotencyKey: r.IdempotencyKey, Source: r.Source,
		Timeout:   tether.Duration(orDefault(r.Timeout, s.o.DefaultTimeout)),
		ExpiresAt: now.Add(orDefault(r.TTL, s.o.DefaultTTL)),
		CreatedAt: now, UpdatedAt: now,
	}
	if len(c.Params) > 0 && !json.Valid(c.Params) {
		c.Params = nil // refused below; kept out of the stored command, which is JSON
	}
	var refusal *tether.Error
	def, known := prof.Command(r.Name)
	switch {
	case !known:
		refusal = tether.Errorf(tether.EINVALID, "unknown command %q for the device's profile %q", r.Name, d.ProfileID)
	case !allowed(def.Roles, r.Role):
		refusal = tether.Errorf(tether.EFORBIDDEN, "role %q may not send command %q", r.Role, r.Name)
	default:
		if err := prof.CheckParams(r.Name, r.Params); err != nil {
			refusal = asError(err, tether.EINVALID)
		}
	}
	if refusal == nil && def.Confirm {
		c.Status = tether.CommandAwaitingConfirmation
	}
	c.History = []tether.CommandTransition{{Status: c.Status, At: now}}

	// The device's lock is held from the insert to the event, so that no
	// offer can send the command, and announce that, before its creation
	// is announced.
	mu := s.lock(tenant, deviceID)
	mu.Lock()
	c, created, err = s.store.CreateCommand(ctx, c, func(g Guard) error {
		if refusal == nil {
			var err error
			if refusal, err = s.admit(g, c, def); err != nil {
				return err
			}
		}
		if refusal != nil {
			c.Status, c.Reason = tether.CommandRejected, refusal.Message
			c.History = []tether.CommandTransition{{Status: c.Status, Reason: c.Reason, At: now}}
		}
		return nil
	})
	if err == nil && created {
		s.announce(ctx, c)
	}
	mu.Unlock()
	if err != nil {
		return nil, false, fmt.Errorf("send %s to %s: %w", r.Name, deviceID, err)
	}
	if !created {
		return c, false, nil
	}
	if refusal != nil {
		s.log.Debug("command rejected", "tenant", tenant, "device", deviceID, "command", c.ID, "name", c.Name, "reason", c.Reason)
		return c, true, refusal
	}
	if c.Status == tether.CommandQueued {
		s.offer(ctx, tenant, deviceID, false)
	}
	return c, true, nil
}

// admit applies the guardrails that count earlier commands: the rate
// limits, then the circuit breaker. It runs in the store's transaction.
func (s *Service) admit(g Guard, c *tether.Command, def tether.CommandDef) (*tether.Error, error) {
	if rl := def.RateLimit; rl != nil && rl.Per > 0 {
		n, err := g.CountCommands(c.Name, c.CreatedAt.Add(-time.Duration(rl.Per)))
		if err != nil {
			return nil, err
		}
		if n >= rl.Count {
			return tether.Errorf(tether.ETOOMANY, "rate limit: at most %d %q commands per %s to a device",
				rl.Count, c.Name, time.Duration(rl.Per)), nil
		}
	}
	if rl := s.o.DeviceRate; rl.Count >= 0 && rl.Per > 0 {
		n, err := g.CountCommands("", c.CreatedAt.Add(-time.Duration(rl.Per)))
		if err != nil {
			return nil, err
		}
		if n >= rl.Count {
			return tether.Errorf(tether.ETOOMANY, "rate limit: at most %d commands per %s to a device",
				rl.Count, time.Duration(rl.Per)), nil
		}
	}
	if n := s.o.BreakerFailures; n > 0 {
		last, err := g.FinishedCommands(n)
		if err != nil {
			return nil, err
		}
		if len(last) < n || slices.ContainsFunc(last, func(c *tether.Command) bool { return c.Status == tether.CommandSucceeded }) {
			return nil, nil
		}
		failedAt := last[0].UpdatedAt
		if wait := failedAt.Add(s.o.BreakerCooldown).Sub(c.CreatedAt); wait > 0 {
			return tether.Errorf(tether.EUNAVAILABLE, "circuit open: the device's last %d commands failed; try again in %s",
				n, wait.Round(time.Second)), nil
		}
		// Half open: one command goes through to try the device; the
		// circuit closes if it succeeds and opens again if it fails.
		open, err := g.OpenCommands(failedAt)
		if err != nil {
			return nil, err
		}
		if open > 0 {
			return tether.Errorf(tether.EUNAVAILABLE, "circuit open: the device's last %d commands failed and a trial command is under way", n), nil
		}
	}
	return nil, nil
}

// checkRequest refuses a malformed request, which is not a guardrail's
// refusal and is not stored.
func checkRequest(r tether.CommandRequest) error {
	switch {
	case !tether.ValidID(r.Name):
		return tether.Errorf(tether.EINVALID, "command name %q must be 1 to 64 letters, digits, '-' or '_'", truncate(r.Name))
	case r.Timeout < 0 || r.TTL < 0:
		return tether.Errorf(tether.EINVALID, "timeout and ttl must not be negative")
	case len(r.IdempotencyKey) > maxKeyLen:
		return tether.Errorf(tether.EINVALID, "idempotency key is %d bytes; at most %d", len(r.IdempotencyKey), maxKeyLen)
	case len(r.Source) > maxSourceLen:
		return tether.Errorf(tether.EINVALID, "source is %d bytes; at most %d", len(r.Source), maxSourceLen)
	}
	return nil
}

// allowed reports whether role may send a command with roles: one of
// them, or admin, who may send anything. No roles means admin only.
func allowed(roles []string, role string) bool {
	return role == tether.RoleAdmin || slices.Contains(roles, role)
}

// Confirm approves a command awaiting confirmation, which queues it. It
// returns an ECONFLICT error for a command in any other status.
func (s *Service) Confirm(ctx context.Context, tenant, deviceID, id, by string) (*tether.Command, error) {
	now := s.now()
	c, _, err := s.update(ctx, tenant, deviceID, id, func(c *tether.Command) (bool, error) {
		if c.Status != tether.CommandAwaitingConfirmation {
			return false, tether.Errorf(tether.ECONFLICT, "command %q is %s, not awaiting confirmation", c.ID, c.Status)
		}
		if !now.Before(c.ExpiresAt) {
			return false, tether.Errorf(tether.ECONFLICT, "command %q has expired", c.ID)
		}
		c.ConfirmedBy = by
		transition(c, tether.CommandQueued, "confirmed", now)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	s.offer(ctx, tenant, deviceID, false)
	return c, nil
}

// Get returns a command of a device.
func (s *Service) Get(ctx context.Context, tenant, deviceID, id string) (*tether.Command, error) {
	return s.store.Command(ctx, tenant, deviceID, id)
}

// List returns a page of a device's commands in seq order. It returns an
// ENOTFOUND error if the device does not exist.
func (s *Service) List(ctx context.Context, tenant, deviceID string, f tether.CommandFilter) ([]*tether.Command, error) {
	switch f.Status {
	case "", tether.CommandAwaitingConfirmation, tether.CommandQueued, tether.CommandSent, tether.CommandDelivered,
		tether.CommandSucceeded, tether.CommandFailed, tether.CommandExpired, tether.CommandRejected:
	default:
		return nil, tether.Errorf(tether.EINVALID, "unknown command status %q", truncate(f.Status))
	}
	if _, err := s.devices.Device(ctx, tenant, deviceID); err != nil {
		return nil, err
	}
	return s.store.Commands(ctx, tenant, deviceID, f.Status, f.After, f.Limit)
}

// Wait returns the command once it is done, or its current state when
// ctx ends (with a nil error).
func (s *Service) Wait(ctx context.Context, tenant, deviceID, id string) (*tether.Command, error) {
	key := waitKey(tenant, deviceID, id)
	poll := time.NewTimer(waitPoll)
	defer poll.Stop()
	for {
		// Watch before reading, so that a change between the read and the
		// select still wakes this caller.
		ch := s.watch(key)
		c, err := s.store.Command(ctx, tenant, deviceID, id)
		if err != nil || tether.CommandDone(c.Status) {
			s.unwatch(key, ch)
			if err != nil && ctx.Err() != nil {
				return s.store.Command(context.WithoutCancel(ctx), tenant, deviceID, id)
			}
			return c, err
		}
		select {
		case <-ch:
		case <-poll.C:
			s.unwatch(key, ch)
			poll.Reset(waitPoll)
		case <-ctx.Done():
			s.unwatch(key, ch)
			return s.store.Command(context.WithoutCancel(ctx), tenant, deviceID, id)
		}
	}
}

func waitKey(tenant, deviceID, id string) string { return tenant + "/" + deviceID + "/" + id }

func (s *Service) watch(key string) chan struct{} {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	w := s.waiters[key]
	if w == nil {
		w = &waiters{ch: make(chan struct{})}
		s.waiters[key] = w
	}
	w.n++
	return w.ch
}

func (s *Service) unwatch(key string, ch chan struct{}) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if w := s.waiters[key]; w != nil && w.ch == ch {
		if w.n--; w.n == 0 {
			delete(s.waiters, key)
		}
	}
}

// wake wakes the callers waiting for a command.
func (s *Service) wake(c *tether.Command) {
	key := waitKey(c.TenantID, c.DeviceID, c.ID)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if w := s.waiters[key]; w != nil {
		close(w.ch)
		delete(s.waiters, key)
	}
}

// AddTransport adds a gateway that delivers commands.
func (s *Service) AddTransport(t Transport) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	s.transports = append(slices.Clip(s.transports), t)
}

func (s *Service) transportList() []Transport {
	s.tmu.RLock()
	defer s.tmu.RUnlock()
	return s.transports
}

// Ready tells the service that a device can take commands now: its
// queued commands are offered in seq order, and with resumed false (a
// new session, which holds none of the commands sent before) also those
// sent but not delivered, each to the transports in turn until one takes
// it. It stops at the first command none takes. A command taken is
// marked sent.
func (s *Service) Ready(ctx context.Context, tenant, deviceID string, resumed bool) {
	s.offer(ctx, tenant, deviceID, !resumed)
}

// offer offers a device's commands as Ready describes, holding the
// device's delivery lock so that two offers cannot interleave and deliver
// out of order.
func (s *Service) offer(ctx context.Context, tenant, deviceID string, resend bool) {
	ts := s.transportList()
	if len(ts) == 0 {
		return
	}
	mu := s.lock(tenant, deviceID)
	mu.Lock()
	defer mu.Unlock()
	cs, err := s.store.OpenCommands(ctx, tenant, deviceID)
	if err != nil {
		s.log.Warn("commands not offered", "tenant", tenant, "device", deviceID, "err", err)
		return
	}
	now := s.now()
	for _, c := range cs {
		switch {
		case c.Status == tether.CommandQueued, c.Status == tether.CommandSent && resend:
		default:
			continue
		}
		if !now.Before(c.ExpiresAt) {
			continue // the sweeper expires it
		}
		if !deliver(ts, c) {
			return
		}
		// Marked after the transport took it: a crash in between offers
		// it again after the restart rather than losing it. The mark is
		// not cancelled with the caller: the command has gone.
		if c.Status == tether.CommandQueued {
			if _, _, err := s.updateLocked(context.WithoutCancel(ctx), tenant, deviceID, c.ID, func(c *tether.Command) (bool, error) {
				if c.Status != tether.CommandQueued {
					return false, nil
				}
				transition(c, tether.CommandSent, "", s.now())
				return true, nil
			}); err != nil {
				s.log.Warn("command not marked sent", "tenant", tenant, "device", deviceID, "command", c.ID, "err", err)
			}
		}
	}
}

// deliver offers c to each transport in turn until one takes it.
func deliver(ts []Transport, c *tether.Command) bool {
	for _, t := range ts {
		if t.Deliver(c) {
			return true
		}
	}
	return false
}

// lock returns the delivery lock of a device.
func (s *Service) lock(tenant, deviceID string) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(tenant)
	h.WriteByte('/')
	h.WriteString(deviceID)
	return &s.locks[h.Sum64()%lockStripes]
}

// Pending returns a device's commands to pull (over HTTP or CoAP): those
// queued, sent or delivered and not expired, in seq order.
func (s *Service) Pending(ctx context.Context, tenant, deviceID string) ([]*tether.Command, error) {
	cs, err := s.store.OpenCommands(ctx, tenant, deviceID)
	if err != nil {
		return nil, err
	}
	now := s.now()
	return slices.DeleteFunc(cs, func(c *tether.Command) bool {
		switch c.Status {
		case tether.CommandQueued, tether.CommandSent:
			return !now.Before(c.ExpiresAt)
		case tether.CommandDelivered:
			return false
		}
		return true
	}), nil
}

// Delivered records that the device received a command. A one-way
// command is then done (succeeded). It is a no-op for a command already
// delivered or further along.
func (s *Service) Delivered(ctx context.Context, tenant, deviceID, id string) error {
	now := s.now()
	_, _, err := s.update(ctx, tenant, deviceID, id, func(c *tether.Command) (bool, error) {
		switch c.Status {
		case tether.CommandQueued:
			// Pulled, or taken by a transport before it was marked sent.
			transition(c, tether.CommandSent, "", now)
		case tether.CommandSent:
		default:
			return false, nil
		}
		transition(c, tether.CommandDelivered, "", now)
		if c.OneWay {
			transition(c, tether.CommandSucceeded, "", now)
		}
		return true, nil
	})
	return err
}

// Reply records a device's reply to a command: succeeded (the default)
// or failed. A command already done is returned as it is with an
// ECONFLICT error.
func (s *Service) Reply(ctx context.Context, tenant, deviceID, id string, r tether.CommandReply) (*tether.Command, error) {
	status, reason := r.Status, ""
	switch status {
	case "", tether.CommandSucceeded:
		status = tether.CommandSucceeded
	case tether.CommandFailed:
		reason = r.Error
		if reason == "" {
			reason = "the device reported a failure"
		}
		reason = truncate(reason)
	default:
		return nil, tether.Errorf(tether.EINVALID, "reply status %q: want succeeded or failed", truncate(r.Status))
	}
	if len(r.Result) > 0 && !json.Valid(r.Result) {
		return nil, tether.Errorf(tether.EINVALID, "reply result is not valid JSON")
	}
	now := s.now()
	var done *tether.Command
	c, _, err := s.update(ctx, tenant, deviceID, id, func(c *tether.Command) (bool, error) {
		switch {
		case tether.CommandDone(c.Status):
			done = c
			return false, nil
		case c.Status == tether.CommandAwaitingConfirmation:
			return false, tether.Errorf(tether.ECONFLICT, "command %q was not sent", c.ID)
		}
		// A reply that overtakes the transport's acknowledgement (an MQTT
		// client replies before it sends the PUBACK), or comes for a
		// command pulled before it was marked sent, still proves the
		// steps before it, so the history has them.
		if c.Status == tether.CommandQueued {
			transition(c, tether.CommandSent, "", now)
		}
		if c.Status == tether.CommandSent {
			transition(c, tether.CommandDelivered, "", now)
		}
		c.Result = r.Result
		transition(c, status, reason, now)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if done != nil {
		return done, tether.Errorf(tether.ECONFLICT, "command %q is %s already", done.ID, done.Status)
	}
	return c, nil
}

// Run expires commands past their TTL and fails those past their timeout,
// every second until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.Sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep expires the commands past their TTL and fails with reason
// "timeout" the two-way ones that got no reply within their timeout, once.
func (s *Service) Sweep(ctx context.Context) {
	now := s.now()
	for {
		due, err := s.store.DueCommands(ctx, now, sweepBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("command sweep failed", "err", err)
			}
			return
		}
		changed := 0
		for _, d := range due {
			_, ok, err := s.update(ctx, d.TenantID, d.DeviceID, d.ID, func(c *tether.Command) (bool, error) {
				return due1(c, now), nil
			})
			switch {
			case err == nil:
				if ok {
					changed++
				}
			case ctx.Err() != nil:
				return
			default:
				s.log.Warn("command not swept", "tenant", d.TenantID, "device", d.DeviceID, "command", d.ID, "err", err)
			}
		}
		// A full batch may have more behind it; one that changed nothing
		// would only be read again.
		if len(due) < sweepBatch || changed == 0 {
			return
		}
	}
}

// due1 moves c to expired or failed if it is due at now, and reports
// whether it did.
func due1(c *tether.Command, now time.Time) bool {
	switch c.Status {
	case tether.CommandSent, tether.CommandDelivered:
		if sent, ok := sentAt(c); ok && !c.OneWay && !now.Before(sent.Add(time.Duration(c.Timeout))) {
			transition(c, tether.CommandFailed, "timeout", now)
			return true
		}
	}
	switch c.Status {
	case tether.CommandAwaitingConfirmation, tether.CommandQueued, tether.CommandSent:
		if !now.Before(c.ExpiresAt) {
			transition(c, tether.CommandExpired, "ttl", now)
			return true
		}
	}
	return false
}

// sentAt returns the time c was (last) sent.
func sentAt(c *tether.Command) (time.Time, bool) {
	for i := len(c.History) - 1; i >= 0; i-- {
		if c.History[i].Status == tether.CommandSent {
			return c.History[i].At, true
		}
	}
	return time.Time{}, false
}

// update changes a command through fn, holding the device's delivery lock
// so that its events go out in the order the changes were stored.
func (s *Service) update(ctx context.Context, tenant, deviceID, id string, fn func(*tether.Command) (bool, error)) (*tether.Command, bool, error) {
	mu := s.lock(tenant, deviceID)
	mu.Lock()
	defer mu.Unlock()
	return s.updateLocked(ctx, tenant, deviceID, id, fn)
}

// updateLocked is update for a caller holding the device's lock: it
// stores the change, then publishes it, then wakes the waiters.
func (s *Service) updateLocked(ctx context.Context, tenant, deviceID, id string, fn func(*tether.Command) (bool, error)) (*tether.Command, bool, error) {
	c, changed, err := s.store.UpdateCommand(ctx, tenant, deviceID, id, fn)
	if err != nil {
		return nil, false, err
	}
	if changed {
		s.announce(ctx, c)
	}
	return c, changed, nil
}

// announce publishes a stored change of c and wakes its waiters. The
// caller holds the device's lock.
func (s *Service) announce(ctx context.Context, c *tether.Command) {
	if s.events != nil {
		b, err := json.Marshal(c)
		if err == nil {
			err = s.events.PublishEvent(context.WithoutCancel(ctx), c.TenantID, tether.EventCommand, c.DeviceID, b)
		}
		if err != nil {
			// The store holds the change; only the event is lost.
			s.log.Warn("command event not published", "tenant", c.TenantID, "device", c.DeviceID,
				"command", c.ID, "status", c.Status, "err", err)
		}
	}
	s.wake(c)
}

// transition moves c to status.
func transition(c *tether.Command, status, reason string, at time.Time) {
	c.Status, c.Reason, c.UpdatedAt = status, reason, at
	c.History = append(c.History, tether.CommandTransition{Status: status, Reason: reason, At: at})
}

// asError returns err as a *tether.Error, with code if it carries none.
func asError(err error, code string) *tether.Error {
	var te *tether.Error
	if errors.As(err, &te) {
		return te
	}
	return tether.Errorf(code, "%v", err)
}

// orDefault returns d, or def if d is 0.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func randomID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return idEncoding.EncodeToString(b)
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
