package limit

import (
	"context"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newAt(c *clock, perSecond float64, burst int) *Keyed {
	k := New(perSecond, burst)
	k.now = c.now
	return k
}

func TestKeyed(t *testing.T) {
	t.Run("a key gets its burst and then is refused", func(t *testing.T) {
		c := &clock{time.Unix(1000, 0)}
		k := newAt(c, 10, 3)
		for i := range 3 {
			if !k.Allow("a") {
				t.Fatalf("Allow #%d refused within the burst", i+1)
			}
		}
		if k.Allow("a") {
			t.Fatal("Allow past the burst was allowed")
		}
		if got := k.Denied(); got != 1 {
			t.Errorf("Denied() = %d, want 1", got)
		}
		if got := k.RetryAfter("a"); got != 100*time.Millisecond {
			t.Errorf("RetryAfter = %v, want 100ms at 10/s", got)
		}
	})
	t.Run("keys have separate buckets", func(t *testing.T) {
		c := &clock{time.Unix(1000, 0)}
		k := newAt(c, 1, 1)
		if !k.Allow("a") || !k.Allow("b") {
			t.Fatal("the first message of each key was refused")
		}
		if k.Allow("a") {
			t.Fatal("a's second message was allowed")
		}
	})
	t.Run("tokens come back at the rate", func(t *testing.T) {
		c := &clock{time.Unix(1000, 0)}
		k := newAt(c, 10, 1)
		k.Allow("a")
		if k.Allow("a") {
			t.Fatal("allowed with an empty bucket")
		}
		c.t = c.t.Add(100 * time.Millisecond)
		if !k.Allow("a") {
			t.Fatal("refused after a refill period")
		}
	})
	t.Run("Wait takes a token that comes soon enough and refuses one that does not", func(t *testing.T) {
		c := &clock{time.Unix(1000, 0)}
		k := newAt(c, 100, 1) // a token every 10ms
		if !k.Wait(context.Background(), "a", 0) {
			t.Fatal("the burst token was refused")
		}
		if k.Wait(context.Background(), "a", time.Millisecond) {
			t.Fatal("a token 10ms away was taken with 1ms allowed")
		}
		if !k.Wait(context.Background(), "a", time.Second) {
			t.Fatal("a token 10ms away was refused with 1s allowed")
		}
		if got := k.Denied(); got != 1 {
			t.Errorf("Denied() = %d, want 1", got)
		}
	})
	t.Run("full buckets are forgotten", func(t *testing.T) {
		c := &clock{time.Unix(1000, 0)}
		k := newAt(c, 10, 2)
		for _, key := range []string{"a", "b", "c"} {
			k.Allow(key)
		}
		c.t = c.t.Add(2 * time.Second)
		k.Allow("d")
		k.mu.Lock()
		n := len(k.buckets)
		k.mu.Unlock()
		if n != 1 {
			t.Errorf("%d buckets kept, want only the new key's", n)
		}
	})
}
