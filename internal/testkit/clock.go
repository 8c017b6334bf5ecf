package testkit

import (
	"sync"
	"time"
)

// Clock is a fake clock for a service's Options.Now: it moves when told
// (Add), and, if made Ticking, by a step on every reading. It is safe for
// concurrent use.
type Clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Ticking makes every reading move the clock on by step first, so that
// successive readings differ; it returns c.
func (c *Clock) Ticking(step time.Duration) *Clock {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.step = step
	return c
}

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
