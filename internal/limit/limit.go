// Package limit holds Tether's guardrail against floods: a token bucket
// per key (a device ID, a source address), shared by every protocol so
// that a device gets one budget however it talks. Idle buckets are
// forgotten, so the memory it holds is bounded by the keys active within
// a few seconds, not by every key ever seen.
package limit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Keyed is a set of token buckets, one per key, each refilled at Rate per
// second up to Burst. The zero value is not usable; use New.
type Keyed struct {
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time

	denied atomic.Uint64
}

type bucket struct {
	lim    *rate.Limiter
	denied uint64
}

// New returns buckets refilled at perSecond up to burst tokens.
func New(perSecond float64, burst int) *Keyed {
	return &Keyed{rate: rate.Limit(perSecond), burst: burst, now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes one token from key's bucket and reports whether there was
// one. A refusal is counted.
func (k *Keyed) Allow(key string) bool {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweep(now)
	b := k.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(k.rate, k.burst)}
		k.buckets[key] = b
	}
	if b.lim.AllowN(now, 1) {
		return true
	}
	b.denied++
	k.denied.Add(1)
	return false
}

// Wait takes one token from key's bucket, waiting for it if need be, but
// only if it comes within most; otherwise (or if ctx ends first) it takes
// nothing, counts a refusal and returns false. It is backpressure for a
// sender that cannot be told "no" but can be slowed down.
func (k *Keyed) Wait(ctx context.Context, key string, most time.Duration) bool {
	now := k.now()
	k.mu.Lock()
	k.sweep(now)
	b := k.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(k.rate, k.burst)}
		k.buckets[key] = b
	}
	r := b.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if !r.OK() || d > most {
		r.CancelAt(now)
		b.denied++
		k.mu.Unlock()
		k.denied.Add(1)
		return false
	}
	k.mu.Unlock()
	if d == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		k.mu.Lock()
		r.CancelAt(k.now())
		b.denied++
		k.mu.Unlock()
		k.denied.Add(1)
		return false
	}
}

// RetryAfter returns how long until key's bucket has a token again.
func (k *Keyed) RetryAfter(key string) time.Duration {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key]
	if b == nil {
		return 0
	}
	r := b.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return d
}

// Denied returns how many Allow calls were refused over all keys.
func (k *Keyed) Denied() uint64 { return k.denied.Load() }

// sweep drops, at most once a second, the buckets that are full again:
// a new bucket for the same key starts full too, so nothing changes for
// the key except that its memory is freed.
func (k *Keyed) sweep(now time.Time) {
	if now.Sub(k.swept) < time.Second {
		return
	}
	k.swept = now
	for key, b := range k.buckets {
		if b.lim.TokensAt(now) >= float64(k.burst) {
			delete(k.buckets, key)
		}
	}
}
