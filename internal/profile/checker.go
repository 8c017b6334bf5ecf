package profile

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
)

// LatestReader returns the newest stored value of each key of a device:
// what the Checker starts from for a device it has not seen yet.
type LatestReader interface {
	Latest(ctx context.Context, tenant, device string) ([]tether.Latest, error)
}

// DefaultMaxDevices is how many devices a Checker remembers the previous
// points of. A device it forgot is read again from the store when it next
// sends, so the bound costs a store read, never a wrong verdict.
const DefaultMaxDevices = 100_000

// Checker quarantines the telemetry points that break their device's
// profile: a value of the wrong type, below the key's min, above its max,
// or further from the key's previous accepted point than max_rate allows
// in the time between them (an impossible jump). It remembers each
// device's previous accepted point of every key with a max_rate, in
// memory, starting from the store's latest values the first time it sees
// the device.
//
// A quarantined point never becomes the previous point: one rogue reading
// must not make the next true one look like a jump. Because the allowed
// change grows with the time since the last accepted point, a key whose
// value really did jump is accepted again once enough time has passed.
type Checker struct {
	profiles *Service
	latest   LatestReader
	log      *slog.Logger
	max      int

	mu sync.Mutex
	// The devices' states in two generations: a device is looked up in
	// cur, then in old (and moved to cur); when cur holds max/2 devices,
	// old is dropped and cur becomes old. So at most max devices are
	// kept, and those that send are kept longest.
	cur, old map[string]*deviceState

	// logged is when a failure to read a profile was last logged (unix
	// ns): at most once a minute, as it fails for every message.
	logged atomic.Int64
}

// deviceState is what the Checker remembers of one device.
type deviceState struct {
	mu sync.Mutex
	// profile is the profile the state was built under; a device moved
	// to another profile starts again.
	profile string
	seeded  bool
	last    map[string]lastPoint
}

// lastPoint is a key's previous accepted point.
type lastPoint struct {
	t int64 // Unix nanoseconds
	v float64
}

// NewChecker returns a Checker of the profiles of s that seeds its memory
// of a device from latest.
func NewChecker(s *Service, latest LatestReader) *Checker {
	return &Checker{profiles: s, latest: latest, log: s.log, max: DefaultMaxDevices,
		cur: map[string]*deviceState{}, old: map[string]*deviceState{}}
}

// Check sets the Quarantine reason of each point of pts that breaks the
// profile of d, the device that sent them. A device without a profile
// returns at once. If the profile cannot be read, nothing is quarantined
// (the points are stored as they are, rather than lost or held back) and
// the failure is logged.
func (c *Checker) Check(ctx context.Context, d *tether.Device, pts []tether.Point) {
	if d.ProfileID == "" || len(pts) == 0 {
		return
	}
	prof, err := c.profiles.Compiled(ctx, d.TenantID, d.ProfileID)
	if err != nil {
		now := time.Now().UnixNano()
		if last := c.logged.Load(); now-last >= int64(time.Minute) && c.logged.CompareAndSwap(last, now) {
			c.log.Warn("profile: cannot check telemetry; storing it unchecked", "tenant", d.TenantID,
				"device", d.ID, "profile", d.ProfileID, "err", err)
		}
		return
	}
	if len(prof.keys) == 0 {
		return
	}
	var st *deviceState
	for i := range pts {
		p := &pts[i]
		r := prof.keys[p.Key]
		if r == nil || p.Quarantine != "" {
			continue
		}
		if p.Quarantine = r.static(p); p.Quarantine != "" || r.rate == 0 || p.Kind != tether.KindNumber {
			continue
		}
		if st == nil {
			st = c.state(ctx, d, prof) // locked until the loop ends
		}
		t := p.Time.UnixNano()
		if prev, ok := st.last[p.Key]; ok {
			// |Δv| > rate·|Δt|, written without a division so that two
			// points at the same time with different values are a jump.
			dt := math.Abs(float64(t-prev.t)) / float64(time.Second)
			if math.Abs(p.Num-prev.v) > r.rate*dt {
				p.Quarantine = tether.QuarantineJump
				continue
			}
			if t < prev.t {
				// An older point (sent late) that fits is accepted, but
				// the newer one stays what the next is measured from.
				continue
			}
		}
		st.last[p.Key] = lastPoint{t: t, v: p.Num}
	}
	if st != nil {
		st.mu.Unlock()
	}
}

// static returns why p breaks the key's type or bounds, or "".
func (r *keyRule) static(p *tether.Point) string {
	switch {
	case r.kind != 0 && p.Kind != r.kind:
		return tether.QuarantineType
	case p.Kind != tether.KindNumber:
		return ""
	case p.Num < r.min:
		return tether.QuarantineBelowMin
	case p.Num > r.max:
		return tether.QuarantineAboveMax
	}
	return ""
}

// state returns d's state, locked, seeded from the store if it is new.
func (c *Checker) state(ctx context.Context, d *tether.Device, prof *Compiled) *deviceState {
	c.mu.Lock()
	st := c.cur[d.ID]
	if st == nil {
		st = c.old[d.ID]
		if st != nil {
			delete(c.old, d.ID)
		} else {
			st = &deviceState{}
		}
		if len(c.cur) >= max(c.max/2, 1) {
			c.old, c.cur = c.cur, make(map[string]*deviceState, len(c.cur))
		}
		c.cur[d.ID] = st
	}
	c.mu.Unlock()

	st.mu.Lock()
	if st.profile != d.ProfileID {
		st.profile, st.seeded, st.last = d.ProfileID, false, nil
	}
	if st.last == nil {
		st.last = map[string]lastPoint{}
	}
	if !st.seeded {
		c.seed(ctx, d, prof, st)
	}
	return st
}

// seed fills a new state with the stored latest value of each key with a
// max_rate. The store holds only accepted points, so its latest values
// are what the next point is measured from. A device the store does not
// know (deleted meanwhile) starts empty; another failure is tried again
// with the device's next message.
func (c *Checker) seed(ctx context.Context, d *tether.Device, prof *Compiled, st *deviceState) {
	if !prof.rated {
		st.seeded = true
		return
	}
	ls, err := c.latest.Latest(ctx, d.TenantID, d.ID)
	if err != nil {
		if tether.ErrorCode(err) == tether.ENOTFOUND {
			st.seeded = true
		}
		return
	}
	st.seeded = true
	for _, l := range ls {
		r := prof.keys[l.Key]
		v, ok := l.Value.(float64)
		if r == nil || r.rate == 0 || !ok {
			continue
		}
		// A point this Checker accepted since is newer than the store's.
		if old, ok := st.last[l.Key]; ok && old.t >= l.Time.UnixNano() {
			continue
		}
		st.last[l.Key] = lastPoint{t: l.Time.UnixNano(), v: v}
	}
}

// Forget drops what the Checker remembers of a device: call it when the
// device is deleted (a new device with its ID starts afresh) or its
// profile changes.
func (c *Checker) Forget(deviceID string) {
	c.mu.Lock()
	delete(c.cur, deviceID)
	delete(c.old, deviceID)
	c.mu.Unlock()
}

// Devices returns how many devices the Checker remembers.
func (c *Checker) Devices() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}
