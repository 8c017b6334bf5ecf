package engine

import (
	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/anomaly"
)

// keyState is what a program keeps for one key: the state of each
// stateful call site, created on first use, and for a window's group key
// the device of its latest input (the `device` of the window's result).
type keyState struct {
	key string
	// dev is the device of the key's latest input, devEnv its `device`
	// variable, built once per device change.
	dev    *tether.Device
	devEnv map[string]any
	fns    []anomaly.State // by index in Query.Stateful; nil until used
	// met is whether the key's last evaluation gave a result (kept only
	// for rules with alert actions).
	met bool

	prev, next *keyState // least recently used order, newest at head
}

// keyCache holds the key states of one program, at most max of them: a
// new key beyond that evicts the least recently used one, so a rule's
// memory is bounded however many devices or group values it sees.
type keyCache struct {
	m          map[string]*keyState
	head, tail *keyState
	max        int
	nfns       int
	evicted    uint64
}

func newKeyCache(max, nfns int) *keyCache {
	return &keyCache{m: map[string]*keyState{}, max: max, nfns: nfns}
}

// get returns key's state, creating it (and evicting the oldest if full).
func (c *keyCache) get(key string) *keyState {
	if s, ok := c.m[key]; ok {
		c.moveToFront(s)
		return s
	}
	if len(c.m) >= c.max && c.tail != nil {
		old := c.tail
		c.unlink(old)
		delete(c.m, old.key)
		c.evicted++
	}
	s := &keyState{key: key, fns: make([]anomaly.State, c.nfns)}
	c.m[key] = s
	c.pushFront(s)
	return s
}

// peek returns key's state without creating it or changing the order.
func (c *keyCache) peek(key string) *keyState { return c.m[key] }

func (c *keyCache) moveToFront(s *keyState) {
	if c.head == s {
		return
	}
	c.unlink(s)
	c.pushFront(s)
}

func (c *keyCache) pushFront(s *keyState) {
	s.prev, s.next = nil, c.head
	if c.head != nil {
		c.head.prev = s
	}
	c.head = s
	if c.tail == nil {
		c.tail = s
	}
}

func (c *keyCache) unlink(s *keyState) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		c.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		c.tail = s.prev
	}
	s.prev, s.next = nil, nil
}

// oldestFirst returns the states from least to most recently used, the
// order that restores the same cache when each is added with get.
func (c *keyCache) oldestFirst() []*keyState {
	out := make([]*keyState, 0, len(c.m))
	for s := c.tail; s != nil; s = s.prev {
		out = append(out, s)
	}
	return out
}

// setDevice records d as the key's latest device.
func (s *keyState) setDevice(d *tether.Device) {
	if d == nil || s.dev == d {
		return
	}
	s.dev, s.devEnv = d, deviceEnv(d)
}
