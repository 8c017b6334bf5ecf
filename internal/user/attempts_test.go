package user_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/user"
)

// gate holds the calls of the sign-ins whose context carries it at one
// point of the store until it is opened; arrived counts those held.
// Holding them at "read", the last read before the password check, makes
// every one see the user unlocked, as attempts made at once do; holding
// one at "attempt", inside its hash turn, keeps the turn taken.
type gate struct {
	at      string
	arrived sync.WaitGroup
	open    chan struct{}
	once    sync.Once
}

type gateKey struct{}

// newGate returns a gate that holds n calls, opened at the end of the
// test if not before.
func newGate(t *testing.T, at string, n int) *gate {
	g := &gate{at: at, open: make(chan struct{})}
	g.arrived.Add(n)
	t.Cleanup(g.release)
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// within returns what ch gives within 10 seconds, or fails the test.
func within(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer in 10 s", what)
		return nil
	}
}

func (g *gate) ctx() context.Context { return context.WithValue(context.Background(), gateKey{}, g) }

// gatedStore is the real store with gates, and a count of the calls a
// sign-in makes.
type gatedStore struct {
	*sqlite.DB
	calls atomic.Int64
}

var _ user.Store = (*gatedStore)(nil)

func (s *gatedStore) pass(ctx context.Context, at string) {
	if g, ok := ctx.Value(gateKey{}).(*gate); ok && g.at == at {
		g.arrived.Done()
		<-g.open
	}
}

func (s *gatedStore) UserByEmail(ctx context.Context, email string) (*tether.User, error) {
	s.calls.Add(1)
	u, err := s.DB.UserByEmail(ctx, email)
	if err == nil {
		s.pass(ctx, "read")
	}
	return u, err
}

func (s *gatedStore) UnknownLoginLock(ctx context.Context, email string) (*time.Time, error) {
	s.calls.Add(1)
	l, err := s.DB.UnknownLoginLock(ctx, email)
	s.pass(ctx, "read")
	return l, err
}

func (s *gatedStore) User(ctx context.Context, tenantID, id string) (*tether.User, error) {
	u, err := s.DB.User(ctx, tenantID, id)
	s.pass(ctx, "read")
	return u, err
}

func (s *gatedStore) RecordLoginAttempt(ctx context.Context, id string, now time.Time, count func(int, *time.Time) (int, *time.Time)) (*time.Time, error) {
	s.calls.Add(1)
	s.pass(ctx, "attempt")
	return s.DB.RecordLoginAttempt(ctx, id, now, count)
}

func (s *gatedStore) RecordUnknownLoginAttempt(ctx context.Context, email string, now time.Time, keep int, count func(int, *time.Time) (int, *time.Time)) (*time.Time, error) {
	s.calls.Add(1)
	s.pass(ctx, "attempt")
	return s.DB.RecordUnknownLoginAttempt(ctx, email, now, keep, count)
}

// newGatedEnv is newEnv with the service over a gated store; node
// returns another service over the same store, as another node runs.
func newGatedEnv(t *testing.T, o user.Options) (e *env, gs *gatedStore, node func() *user.Service) {
	t.Helper()
	e = newEnv(t, o)
	gs = &gatedStore{DB: e.db}
	if o.Params == (user.Params{}) {
		o.Params = cheap
	}
	o.Now = e.clock.Now
	e.svc = user.New(gs, o)
	return e, gs, func() *user.Service { return user.New(gs, o) }
}

func isLock(err error) bool {
	var l *user.LockedError
	return errors.As(err, &l) && tether.ErrorCode(err) == tether.ETOOMANY && l.RetryAfter() > 0
}

// TestLockoutOfAttemptsAtOnce checks what Login promises of attempts made
// at once: of those since the last sign-in or lock, at most MaxFailures
// have their password checked, on any number of nodes; every later one is
// refused with the lock, even one that read the user before the lock was
// set, and even with the right password. Without counting an attempt
// before its check, in the transaction that reads the lock, every attempt
// of a burst would be checked.
func TestLockoutOfAttemptsAtOnce(t *testing.T) {
	for _, known := range []bool{true, false} {
		email := map[bool]string{true: "alice@example.com", false: "nobody@example.com"}[known]
		name := map[bool]string{true: "a user", false: "an unknown address"}[known]

		t.Run("of 60 wrong passwords for "+name+" at once, on two nodes, 5 are checked and 55 locked out", func(t *testing.T) {
			const n = 60
			e, _, node := newGatedEnv(t, user.Options{MaxHashQueue: n})
			if known {
				e.create(t, email, tether.RoleViewer)
			}
			nodes := []*user.Service{e.svc, node()}
			g := newGate(t, "read", n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { _, _, _, errs[i] = nodes[i%2].Login(g.ctx(), email, "a wrong password") })
			}
			g.arrived.Wait() // every one has read the address unlocked
			g.release()
			wg.Wait()
			checked, locked := 0, 0
			for _, err := range errs {
				switch {
				case tether.ErrorCode(err) == tether.EUNAUTHORIZED:
					checked++
				case isLock(err):
					locked++
				default:
					t.Errorf("unexpected answer %v", err)
				}
			}
			if checked != user.DefaultMaxFailures || locked != n-user.DefaultMaxFailures {
				t.Errorf("%d checked, %d locked out; want %d and %d", checked, locked, user.DefaultMaxFailures, n-user.DefaultMaxFailures)
			}
		})

		t.Run("a sign-in with "+name+" that read it before the lock is refused after it, right password and all", func(t *testing.T) {
			e, _, _ := newGatedEnv(t, user.Options{})
			if known {
				e.create(t, email, tether.RoleViewer)
			}
			g := newGate(t, "read", 1)
			held := make(chan error, 1)
			go func() { _, _, _, err := e.svc.Login(g.ctx(), email, password); held <- err }()
			g.arrived.Wait()
			for range user.DefaultMaxFailures {
				_, _, _, err := e.svc.Login(context.Background(), email, "a wrong password")
				wantCode(t, err, tether.EUNAUTHORIZED)
			}
			g.release()
			if err := <-held; !isLock(err) {
				t.Errorf("the held sign-in: %v; want the lock", err)
			}
		})
	}

	t.Run("a password change that read the user before the lock is refused after it", func(t *testing.T) {
		e, _, _ := newGatedEnv(t, user.Options{})
		alice := e.create(t, "alice@example.com", tether.RoleViewer)
		s, _ := e.login(t, "alice@example.com", password)
		g := newGate(t, "read", 1)
		held := make(chan error, 1)
		go func() { held <- e.svc.ChangePassword(g.ctx(), principal(alice, s), password, "another good password") }()
		g.arrived.Wait()
		for range user.DefaultMaxFailures {
			_, _, _, err := e.svc.Login(context.Background(), "alice@example.com", "a wrong password")
			wantCode(t, err, tether.EUNAUTHORIZED)
		}
		g.release()
		if err := <-held; !isLock(err) {
			t.Errorf("the held change: %v; want the lock", err)
		}
	})

	t.Run("an attempt refused for want of a hash turn is not counted", func(t *testing.T) {
		e, _, _ := newGatedEnv(t, user.Options{MaxConcurrentHashes: 1, MaxHashQueue: 1, HashWait: time.Minute})
		e.create(t, "alice@example.com", tether.RoleViewer)
		g := newGate(t, "attempt", 1)
		held := make(chan error, 1)
		go func() { _, _, _, err := e.svc.Login(g.ctx(), "alice@example.com", "a wrong password"); held <- err }()
		g.arrived.Wait()
		// Of these, one waits in the queue and the others are refused at
		// once: twice as many as would lock, were they counted.
		n := 2*user.DefaultMaxFailures + 1
		errs := make(chan error, n)
		for range n {
			go func() {
				_, _, _, err := e.svc.Login(context.Background(), "alice@example.com", "a wrong password")
				errs <- err
			}()
		}
		for range n - 1 {
			if err := within(t, errs, "a sign-in beyond the queue"); tether.ErrorCode(err) != tether.ETOOMANY || isLock(err) {
				t.Fatalf("%v; want a refusal for want of a turn", err)
			}
		}
		g.release()
		wantCode(t, <-held, tether.EUNAUTHORIZED)
		wantCode(t, <-errs, tether.EUNAUTHORIZED)
		e.login(t, "alice@example.com", password)
	})
}

// TestHashQueue checks that a sign-in beyond MaxHashQueue waiting ones is
// refused at once, with a time to retry, rather than after HashWait.
func TestHashQueue(t *testing.T) {
	e, _, _ := newGatedEnv(t, user.Options{MaxConcurrentHashes: 1, MaxHashQueue: 1, HashWait: time.Minute})
	e.create(t, "alice@example.com", tether.RoleViewer)
	g := newGate(t, "attempt", 1)
	held := make(chan error, 1)
	go func() { _, _, _, err := e.svc.Login(g.ctx(), "alice@example.com", password); held <- err }()
	g.arrived.Wait() // it has the only turn

	errs := make(chan error, 2)
	for range 2 {
		go func() { _, _, _, err := e.svc.Login(context.Background(), "alice@example.com", password); errs <- err }()
	}
	// HashWait is a minute: an answer now is a refusal at once.
	err := within(t, errs, "a sign-in beyond the queue")
	wantCode(t, err, tether.ETOOMANY)
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(err, &ra) || ra.RetryAfter() != time.Second || isLock(err) || !strings.Contains(err.Error(), "too many sign-ins at once") {
		t.Errorf("%v is not a refusal to retry in a second", err)
	}
	g.release()
	if err := <-held; err != nil {
		t.Errorf("the sign-in with the turn: %v", err)
	}
	if err := <-errs; err != nil {
		t.Errorf("the queued sign-in: %v", err)
	}
}

// TestLoginRefusesWhatIsNoAddress checks that a sign-in with what no
// user's address can be, or with a password over the limit, gets the
// answer a wrong password gets without reaching the store: a megabyte
// "address" would otherwise be kept as a failed sign-in for a week.
func TestLoginRefusesWhatIsNoAddress(t *testing.T) {
	ctx := context.Background()
	e, gs, _ := newGatedEnv(t, user.Options{})
	e.create(t, "alice@example.com", tether.RoleViewer)
	_, _, _, wrong := e.svc.Login(ctx, "alice@example.com", "a wrong password")
	wantCode(t, wrong, tether.EUNAUTHORIZED)

	long := strings.Repeat("a", 243) + "@example.com" // 255 bytes
	for name, c := range map[string]struct{ email, password string }{
		"a megabyte address":      {strings.Repeat("a", 1<<20) + "@example.com", password},
		"an address of 255 bytes": {long, password},
		"no @":                    {"alice.example.com", password},
		"a display name":          {"Alice <alice@example.com>", password},
		"a password of 257 bytes": {"alice@example.com", strings.Repeat("p", user.MaxPasswordBytes+1)},
	} {
		t.Run(name, func(t *testing.T) {
			before := gs.calls.Load()
			_, _, _, err := e.svc.Login(ctx, c.email, c.password)
			wantCode(t, err, tether.EUNAUTHORIZED)
			if err.Error() != wrong.Error() {
				t.Errorf("%v; want %v", err, wrong)
			}
			if n := gs.calls.Load() - before; n != 0 {
				t.Errorf("%d calls of the store", n)
			}
		})
	}
	t.Run("an address of 254 bytes is looked up", func(t *testing.T) {
		before := gs.calls.Load()
		_, _, _, err := e.svc.Login(ctx, long[1:], password)
		wantCode(t, err, tether.EUNAUTHORIZED)
		if gs.calls.Load() == before {
			t.Error("the store was not asked")
		}
	})
}
