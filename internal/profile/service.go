// Package profile manages device profiles (device types): what a device's
// telemetry must look like, how often it reports and which commands it
// takes. [Service] validates and stores profiles and hands the hot paths
// a cached [Compiled] form; [Checker] quarantines the telemetry points
// that break their device's profile before they reach the bus.
package profile

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tether-iot/tether"
)

// Store keeps profiles. CreateProfile fails with ECONFLICT for an existing
// ID; PutProfile replaces or creates and keeps the stored CreatedAt;
// DeleteProfile fails with ECONFLICT while devices use the profile.
type Store interface {
	CreateProfile(ctx context.Context, p *tether.Profile) error
	PutProfile(ctx context.Context, p *tether.Profile) (created bool, err error)
	Profile(ctx context.Context, tenantID, id string) (*tether.Profile, error)
	Profiles(ctx context.Context, tenantID string) ([]*tether.Profile, error)
	DeleteProfile(ctx context.Context, tenantID, id string) error
}

// Options configure a Service.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// CacheTTL is how long a compiled profile is used before it is read
	// again; default 10 s. A change made through this Service is seen at
	// once on this node; the TTL bounds how long another node (sharing
	// the store) keeps the old version.
	CacheTTL time.Duration
}

// Limits of a profile, so that one profile cannot make every message of
// its devices slow or the cache large.
const (
	MaxNameLen       = 256
	MaxTelemetryKeys = 1000
	MaxKeyLen        = 256
	MaxUnitLen       = 64
	MaxCommands      = 256
	MaxRoles         = 32
)

// maxCached bounds the compiled profiles kept; beyond it the cache starts
// over. Profiles are few, so this is a guard, not a policy.
const maxCached = 10000

// Service validates, stores and compiles profiles.
type Service struct {
	st  Store
	log *slog.Logger
	now func() time.Time
	ttl time.Duration

	mu    sync.RWMutex
	cache map[cacheKey]*cacheEntry
}

type cacheKey struct{ tenant, id string }

// cacheEntry is a compiled profile, or the ENOTFOUND error of an ID with
// no profile, as read at a time. refreshing lets one caller read it again
// when it is out of date while the others go on with the old one.
type cacheEntry struct {
	c          *Compiled
	err        error
	at         time.Time
	refreshing atomic.Bool
}

// New returns a Service over st.
func New(st Store, o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 10 * time.Second
	}
	return &Service{st: st, log: o.Logger, now: o.Now, ttl: o.CacheTTL, cache: map[cacheKey]*cacheEntry{}}
}

// Create stores a new profile of the tenant and returns it as stored. It
// returns an EINVALID error naming the first problem of p, and ECONFLICT
// if the tenant has a profile with its ID.
func (s *Service) Create(ctx context.Context, tenant string, p tether.Profile) (*tether.Profile, error) {
	c, err := s.prepare(tenant, &p)
	if err != nil {
		return nil, err
	}
	p.CreatedAt = p.UpdatedAt
	if err := s.st.CreateProfile(ctx, &p); err != nil {
		return nil, err
	}
	s.remember(tenant, p.ID, c)
	return &p, nil
}

// Put stores p as the tenant's profile with its ID, replacing the one
// there (its creation time is kept) or creating it, and returns it as
// stored. Devices of the profile follow the new version at once on this
// node and within the cache TTL on others.
func (s *Service) Put(ctx context.Context, tenant string, p tether.Profile) (*tether.Profile, error) {
	c, err := s.prepare(tenant, &p)
	if err != nil {
		return nil, err
	}
	p.CreatedAt = time.Time{}
	if _, err := s.st.PutProfile(ctx, &p); err != nil {
		return nil, err
	}
	s.remember(tenant, p.ID, c)
	return &p, nil
}

// prepare validates and compiles p for tenant and sets its tenant and
// update time.
func (s *Service) prepare(tenant string, p *tether.Profile) (*Compiled, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	p.TenantID = tenant
	p.UpdatedAt = s.now().UTC()
	c, err := Compile(p)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Get returns a profile of the tenant, or an ENOTFOUND error.
func (s *Service) Get(ctx context.Context, tenant, id string) (*tether.Profile, error) {
	return s.st.Profile(ctx, tenant, id)
}

// List returns the tenant's profiles in ID order.
func (s *Service) List(ctx context.Context, tenant string) ([]*tether.Profile, error) {
	return s.st.Profiles(ctx, tenant)
}

// Delete deletes a profile of the tenant. It returns ECONFLICT while
// devices (or provisioning keys) use it, and ENOTFOUND if there is none.
func (s *Service) Delete(ctx context.Context, tenant, id string) error {
	if err := s.st.DeleteProfile(ctx, tenant, id); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.cache, cacheKey{tenant, id})
	s.mu.Unlock()
	return nil
}

// Compiled returns the compiled profile of the tenant with the ID, from a
// cache that is read again after the cache TTL. The ID "" returns the
// permissive profile of a device without one. An ID with no profile
// returns an ENOTFOUND error (also cached, so that a device pointing at a
// missing profile does not cost a store read per message).
func (s *Service) Compiled(ctx context.Context, tenant, id string) (*Compiled, error) {
	if id == "" {
		return permissive, nil
	}
	k := cacheKey{tenant, id}
	s.mu.RLock()
	e := s.cache[k]
	s.mu.RUnlock()
	if e != nil && (s.now().Sub(e.at) < s.ttl || !e.refreshing.CompareAndSwap(false, true)) {
		// Fresh, or out of date and another caller is reading it again.
		return e.c, e.err
	}
	c, err := s.load(ctx, tenant, id)
	if err != nil && tether.ErrorCode(err) != tether.ENOTFOUND {
		// A failure of the store is not remembered: the next call tries
		// again, and until then an out-of-date version is better than
		// none.
		if e != nil {
			e.refreshing.Store(false)
			s.log.Warn("profile: read failed; using the cached version", "tenant", tenant, "profile", id, "err", err)
			return e.c, e.err
		}
		return nil, err
	}
	s.store(k, &cacheEntry{c: c, err: err, at: s.now()})
	return c, err
}

func (s *Service) load(ctx context.Context, tenant, id string) (*Compiled, error) {
	p, err := s.st.Profile(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	c, err := Compile(p)
	if err != nil {
		// It was valid when it was saved; this build reads it otherwise.
		return nil, fmt.Errorf("profile %s of tenant %s: %w", id, tenant, err)
	}
	return c, nil
}

// remember caches a profile this node just saved.
func (s *Service) remember(tenant, id string, c *Compiled) {
	s.store(cacheKey{tenant, id}, &cacheEntry{c: c, at: s.now()})
}

func (s *Service) store(k cacheKey, e *cacheEntry) {
	s.mu.Lock()
	if len(s.cache) >= maxCached {
		clear(s.cache)
	}
	s.cache[k] = e
	s.mu.Unlock()
}

// Validate checks a profile and returns an EINVALID error naming the
// first field that is wrong. It does not compile the command parameter
// schemas; [Compile] does.
func Validate(p *tether.Profile) error {
	if !tether.ValidID(p.ID) {
		return invalid("profile id %q must be 1 to 64 letters, digits, '-' or '_'", trunc(p.ID))
	}
	if len(p.Name) > MaxNameLen {
		return invalid("name is %d bytes; at most %d", len(p.Name), MaxNameLen)
	}
	if len(p.Telemetry) > MaxTelemetryKeys {
		return invalid("telemetry has %d keys; at most %d", len(p.Telemetry), MaxTelemetryKeys)
	}
	// In key order, so that the problem named is the same every time.
	for _, key := range slices.Sorted(maps.Keys(p.Telemetry)) {
		if err := validateKey(key, p.Telemetry[key]); err != nil {
			return err
		}
	}
	if p.ReportInterval < 0 {
		return invalid("report_interval %v is negative", time.Duration(p.ReportInterval))
	}
	if len(p.Commands) > MaxCommands {
		return invalid("%d commands; at most %d", len(p.Commands), MaxCommands)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Commands)) {
		def := p.Commands[name]
		if !tether.ValidID(name) {
			return invalid("command name %q must be 1 to 64 letters, digits, '-' or '_'", trunc(name))
		}
		if len(def.Roles) > MaxRoles {
			return invalid("command %q has %d roles; at most %d", name, len(def.Roles), MaxRoles)
		}
		for _, r := range def.Roles {
			if !tether.ValidID(r) {
				return invalid("command %q: role %q must be 1 to 64 letters, digits, '-' or '_'", name, trunc(r))
			}
		}
		if rl := def.RateLimit; rl != nil {
			if rl.Count <= 0 {
				return invalid("command %q: rate_limit.count must be at least 1", name)
			}
			if rl.Per <= 0 {
				return invalid("command %q: rate_limit.per must be a positive duration such as \"1h\"", name)
			}
		}
	}
	return nil
}

func validateKey(key string, k tether.KeySchema) error {
	if key == "" || len(key) > MaxKeyLen || !utf8.ValidString(key) {
		return invalid("telemetry key %q must be 1 to %d bytes of UTF-8", trunc(key), MaxKeyLen)
	}
	switch k.Type {
	case "", "number", "bool", "string":
	default:
		return invalid("telemetry key %q: type %q is not number, bool or string", key, trunc(k.Type))
	}
	if len(k.Unit) > MaxUnitLen {
		return invalid("telemetry key %q: unit is %d bytes; at most %d", key, len(k.Unit), MaxUnitLen)
	}
	numeric := k.Type == "" || k.Type == "number"
	for _, f := range []struct {
		name string
		v    *float64
	}{{"min", k.Min}, {"max", k.Max}, {"max_rate", k.MaxRate}} {
		if f.v == nil {
			continue
		}
		if !numeric {
			return invalid("telemetry key %q: %s applies to numbers, not to type %s", key, f.name, k.Type)
		}
		if math.IsNaN(*f.v) || math.IsInf(*f.v, 0) {
			return invalid("telemetry key %q: %s must be a finite number", key, f.name)
		}
	}
	if k.Min != nil && k.Max != nil && *k.Min > *k.Max {
		return invalid("telemetry key %q: min %g is above max %g", key, *k.Min, *k.Max)
	}
	if k.MaxRate != nil && *k.MaxRate <= 0 {
		return invalid("telemetry key %q: max_rate must be above 0 (a change per second)", key)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return tether.Errorf(tether.EINVALID, format, args...)
}

// trunc shortens s for an error message.
func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
