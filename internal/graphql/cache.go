package graphql

import (
	"context"
	"fmt"
	"sync"
)

// requestCache remembers what one operation's fields read (a device, its
// latest values, its presence, a profile), so that a query that reaches
// the same thing from many places (the device of each of a hundred
// alerts, a profile of many devices) reads it once. It lives only as long
// as the operation, so it is never stale for longer than a query runs.
type requestCache struct {
	mu sync.Mutex
	m  map[cacheKey]*cacheEntry
}

type cacheKey struct{ kind, id string }

type cacheEntry struct {
	done chan struct{}
	val  any
	err  error
}

type cacheCtxKey struct{}

func withCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, cacheCtxKey{}, &requestCache{m: map[cacheKey]*cacheEntry{}})
}

// cached returns load's result for (kind, id), calling load at most once
// per operation; concurrent callers wait for the first.
func cached[T any](ctx context.Context, kind, id string, load func() (T, error)) (T, error) {
	c, _ := ctx.Value(cacheCtxKey{}).(*requestCache)
	if c == nil {
		return load()
	}
	k := cacheKey{kind, id}
	c.mu.Lock()
	e, ok := c.m[k]
	if !ok {
		e = &cacheEntry{done: make(chan struct{})}
		c.m[k] = e
	}
	c.mu.Unlock()
	if ok {
		select {
		case <-e.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	} else {
		func() {
			defer close(e.done)
			// If load panics, the callers waiting get this error.
			e.err = fmt.Errorf("graphql: reading %s %s failed", kind, id)
			e.val, e.err = load()
		}()
	}
	v, _ := e.val.(T)
	return v, e.err
}
