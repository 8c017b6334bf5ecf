// Package action runs what rules do with their results: store them as a
// derived series, republish them over MQTT or NATS, POST them to a
// webhook, send a device command, or signal an alert.
//
// Actions go through a durable outbox. [Runner.Enqueue] writes one row
// per result and action, all in one transaction, and returns; the
// [Runner.Run] workers claim due rows and run them, retrying a failure
// with exponential backoff (RetryBackoff, doubling, at most an hour) up to
// MaxAttempts, and move an action that failed for good to the dead
// letters with its last error. A failure that no retry can fix (a 4xx
// answer other than 408 and 429, an invalid action, a sink that is not
// configured) is dead-lettered at once. A worker claims a row for a lease
// (a minute, longer than any attempt may take), so whatever a crashed
// process left claimed or due is run by the next Runner on the store:
// delivery is at least once, and each delivery carries an ID that stays
// the same across its attempts (the webhook's X-Tether-Delivery header,
// [DeliveryID] for the sinks) so that a receiver can drop repeats.
//
// The actions of one rule may run in any order, and concurrently:
// workers run whatever is due.
package action

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/egress"
)

// Job is one row of the outbox: one action of one rule result; the store
// keeps the same domain type.
type Job = tether.ActionJob

// DeadLetter is an action that failed for good, with its last error. The
// action's webhook secret is never in what [Runner.DeadLetters] returns.
type DeadLetter = tether.ActionDeadLetter

// Store is the durable outbox. Rows are claimed for a lease; attempts is
// the claim's fencing token: Finish, Retry, DeadLetter and Release change
// the row only while its attempts are still those of the claim, and
// return an error otherwise.
type Store interface {
	EnqueueActions(ctx context.Context, jobs []Job) error
	ClaimActions(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Job, error)
	NextActionDue(ctx context.Context) (time.Time, bool, error)
	FinishAction(ctx context.Context, tenantID, id string, attempts int) error
	RetryAction(ctx context.Context, tenantID, id string, attempts int, next time.Time, lastErr string) error
	ReleaseAction(ctx context.Context, tenantID, id string, attempts int, at time.Time) error
	DeadLetterAction(ctx context.Context, tenantID, id string, attempts int, at time.Time, lastErr string) error
	ActionDeadLetters(ctx context.Context, tenantID, ruleID string, limit int) ([]DeadLetter, error)
}

// Sinks are where the actions other than webhooks go. Each is optional:
// an action whose sink is nil fails for good (it is dead-lettered) with
// an error saying so. A sink's error with a tether code that a retry
// cannot fix (EINVALID, ENOTFOUND, EFORBIDDEN, EUNAUTHORIZED, ETOOLARGE,
// EUNSUPPORTED, ECONFLICT) dead-letters the action at once; any other is
// retried. The context carries the delivery's ID ([DeliveryID]), for
// idempotency keys, and ends after ten seconds.
type Sinks struct {
	// Republish publishes on an MQTT topic of the tenant.
	Republish func(ctx context.Context, tenant, topic string, payload []byte) error
	// NATS publishes on a NATS subject, always under tether.<tenant>.rules.
	NATS func(ctx context.Context, subject string, payload []byte) error
	// Store stores values as a derived series of the device at t.
	Store func(ctx context.Context, tenant, deviceID string, t time.Time, values map[string]any) error
	// Command sends a device command through the command guardrails;
	// source is "rule:<rule id>".
	Command func(ctx context.Context, tenant, deviceID, name string, params json.RawMessage, source string) error
	// Alert signals an alert's condition; Enqueue's results always have
	// met = true (the engine signals met = false itself, for the keys
	// whose condition stopped).
	Alert func(ctx context.Context, tenant, ruleID, deviceID string, a tether.RuleAction, met bool, t time.Time, values map[string]any) error
	// HTTP is the webhooks' client. nil: a client that follows no
	// redirect (a redirect could lead from HTTPS to plain HTTP), so that a
	// 3xx answer is a failure.
	HTTP *http.Client
}

// Options tune a Runner.
type Options struct {
	Logger *slog.Logger     // nil: slog.Default()
	Now    func() time.Time // nil: time.Now
	// Workers is how many actions run at once (default 4).
	Workers int
	// PollInterval bounds how long an idle Runner waits before looking at
	// the outbox again (default 1s); it also wakes up when something is
	// enqueued through it and when the next known row is due, so this
	// matters only for rows other processes enqueue.
	PollInterval time.Duration
}

// Defaults of a RuleAction's retry policy, and the bounds Validate keeps.
const (
	DefaultMaxAttempts  = 5
	DefaultRetryBackoff = time.Second
	MaxMaxAttempts      = 100
	// maxBackoff caps the exponential backoff between two attempts.
	maxBackoff = time.Hour
	// lease is how long a claimed row stays claimed: longer than an
	// attempt may take (attemptTimeout), so that only a dead worker's rows
	// are claimed again.
	lease = time.Minute
	// attemptTimeout bounds one attempt of any action.
	attemptTimeout = 10 * time.Second
	// maxErrorLen bounds the error text stored with a row.
	maxErrorLen = 1000
)

// Runner enqueues rule results' actions and runs them. It is safe for
// concurrent use.
type Runner struct {
	st      Store
	sinks   Sinks
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
	workers int
	poll    time.Duration
	wake    chan struct{}

	mu    sync.Mutex
	stats map[ruleKey]*counters
}

type ruleKey struct{ tenant, rule string }

type counters struct{ ok, failed uint64 }

// New returns a Runner of the outbox in st. Nothing runs until Run.
func New(st Store, sinks Sinks, o Options) *Runner {
	r := &Runner{
		st: st, sinks: sinks, client: sinks.HTTP, log: o.Logger, now: o.Now,
		workers: o.Workers, poll: o.PollInterval,
		wake:  make(chan struct{}, 1),
		stats: make(map[ruleKey]*counters),
	}
	if r.client == nil {
		r.client = egress.Client(attemptTimeout)
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.workers <= 0 {
		r.workers = 4
	}
	if r.poll <= 0 {
		r.poll = time.Second
	}
	return r
}

// Enqueue records the actions of rule's results durably, one outbox row
// per result and action, in one transaction, and returns; Run's workers
// run them. The rows take the tenant, rule ID and version from rule and
// a snapshot of its actions, so that editing the rule later changes
// nothing about results already enqueued. A result's values travel as
// JSON: numbers arrive as float64, times as strings, and NaN and ±Inf
// (which JSON cannot carry; time_to_threshold's "never" is +Inf) as null.
func (r *Runner) Enqueue(ctx context.Context, rule *tether.Rule, results []tether.RuleResult) error {
	if rule == nil || len(rule.Actions) == 0 || len(results) == 0 {
		return nil
	}
	actions := make([]json.RawMessage, len(rule.Actions))
	for i, a := range rule.Actions {
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("enqueue actions of rule %s: action %d: %w", rule.ID, i, err)
		}
		actions[i] = b
	}
	now := r.now()
	jobs := make([]Job, 0, len(results)*len(actions))
	for _, res := range results {
		res.TenantID, res.RuleID, res.RuleVersion = rule.TenantID, rule.ID, rule.Version
		b, err := marshalResult(res)
		if err != nil {
			return fmt.Errorf("enqueue actions of rule %s: %w", rule.ID, err)
		}
		for i, a := range actions {
			jobs = append(jobs, Job{
				ID: newID(), TenantID: rule.TenantID, RuleID: rule.ID, RuleVersion: rule.Version,
				DeviceID: res.DeviceID, Index: i, Action: a, Result: b, NextAttemptAt: now, CreatedAt: now,
			})
		}
	}
	if err := r.st.EnqueueActions(ctx, jobs); err != nil {
		return fmt.Errorf("enqueue actions of rule %s: %w", rule.ID, err)
	}
	r.signal()
	return nil
}

// signal wakes Run up, if it is waiting.
func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run works the outbox until ctx ends, including what a crashed process
// left in it, and returns once its running attempts have ended. An
// attempt cut short by ctx is handed back to the outbox uncounted.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	// done has room for every running attempt, so that none blocks on it
	// once Run has stopped reading.
	done := make(chan struct{}, r.workers)
	running := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if running < r.workers {
			jobs, err := r.st.ClaimActions(ctx, r.now(), lease, r.workers-running)
			for _, j := range jobs {
				running++
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.attempt(ctx, j)
					done <- struct{}{}
				}()
			}
			switch {
			case err != nil:
				if ctx.Err() == nil {
					r.log.Error("rule actions: claim", "err", err)
				}
				resetTimer(timer, r.poll)
			case running < r.workers:
				// Everything due is claimed: wait for the next row.
				resetTimer(timer, r.untilNextDue(ctx))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-done:
			running--
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// untilNextDue returns how long to wait for the outbox's next due row,
// at most the poll interval.
func (r *Runner) untilNextDue(ctx context.Context) time.Duration {
	next, ok, err := r.st.NextActionDue(ctx)
	if err != nil || !ok {
		return r.poll
	}
	return min(max(next.Sub(r.now()), 0), r.poll)
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// attempt runs a claimed job once and records the outcome.
func (r *Runner) attempt(ctx context.Context, j Job) {
	// The outcome is recorded even when ctx has ended.
	wctx := context.WithoutCancel(ctx)
	var (
		a   tether.RuleAction
		res tether.RuleResult
		err error
	)
	if err = json.Unmarshal(j.Action, &a); err != nil {
		err = permanent(fmt.Errorf("stored action: %w", err))
	} else if err = json.Unmarshal(j.Result, &res); err != nil {
		err = permanent(fmt.Errorf("stored result: %w", err))
	} else {
		err = r.run(ctx, j.ID, a, res)
	}
	log := r.log.With("tenant", j.TenantID, "rule", j.RuleID, "action", j.Index, "type", a.Type, "delivery", j.ID, "attempt", j.Attempts)
	var (
		serr    error
		outcome = 0 // 1 ok, -1 failed for good
	)
	switch {
	case err == nil:
		outcome = 1
		serr = r.st.FinishAction(wctx, j.TenantID, j.ID, j.Attempts)
	case ctx.Err() != nil:
		// Stopping: not the action's fault.
		serr = r.st.ReleaseAction(wctx, j.TenantID, j.ID, j.Attempts, r.now())
	case isPermanent(err) || j.Attempts >= maxAttempts(a):
		outcome = -1
		log.Warn("rule action failed for good", "err", err)
		serr = r.st.DeadLetterAction(wctx, j.TenantID, j.ID, j.Attempts, r.now(), truncate(err.Error()))
	default:
		next := r.now().Add(Backoff(a, j.Attempts))
		log.Info("rule action failed; will retry", "err", err, "next", next)
		serr = r.st.RetryAction(wctx, j.TenantID, j.ID, j.Attempts, next, truncate(err.Error()))
		r.signal() // so that Run plans its wait for this row
	}
	// Counted once the outcome is stored (or failed to be), so that a
	// counted failure is in the dead letters.
	if outcome != 0 {
		r.count(j, outcome > 0)
	}
	if serr != nil {
		// The claim's lease ends and the row is claimed again: at least once.
		log.Error("rule action: record the outcome", "err", serr)
	}
}

// run runs one attempt of action a on res, with the attempt's timeout.
func (r *Runner) run(ctx context.Context, id string, a tether.RuleAction, res tether.RuleResult) error {
	p, err := plan(a, res)
	if err != nil {
		return permanent(err)
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, deliveryKey{}, id), attemptTimeout)
	defer cancel()
	return r.deliver(ctx, id, p)
}

// count adds an outcome to the job's rule's counters.
func (r *Runner) count(j Job, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := ruleKey{j.TenantID, j.RuleID}
	c := r.stats[k]
	if c == nil {
		c = &counters{}
		r.stats[k] = c
	}
	if ok {
		c.ok++
	} else {
		c.failed++
	}
}

// Stats returns how many of a rule's actions this Runner has run
// successfully and how many failed for good (dead-lettered) since it
// started; failed attempts that were retried are not counted.
func (r *Runner) Stats(tenant, ruleID string) (ok, failed uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.stats[ruleKey{tenant, ruleID}]; c != nil {
		return c.ok, c.failed
	}
	return 0, 0
}

// DeadLetters returns a tenant's dead letters of one rule (of all if
// ruleID is ""), newest first, at most limit (the store's default if 0).
// Webhook secrets are removed from the actions.
func (r *Runner) DeadLetters(ctx context.Context, tenant, ruleID string, limit int) ([]DeadLetter, error) {
	dls, err := r.st.ActionDeadLetters(ctx, tenant, ruleID, limit)
	if err != nil {
		return nil, fmt.Errorf("dead letters of rule %s: %w", ruleID, err)
	}
	for i := range dls {
		var a tether.RuleAction
		if err := json.Unmarshal(dls[i].Action, &a); err != nil {
			dls[i].Action = json.RawMessage(`{}`) // never pass on what might hold a secret
			continue
		}
		a.Secret = ""
		if b, err := json.Marshal(a); err == nil {
			dls[i].Action = b
		}
	}
	return dls, nil
}

// Backoff returns how long to wait after a's attempt number attempts (1
// for the first) failed: RetryBackoff (default 1s) doubled for each
// attempt after the first, at most an hour.
func Backoff(a tether.RuleAction, attempts int) time.Duration {
	d := time.Duration(a.RetryBackoff)
	if d <= 0 {
		d = DefaultRetryBackoff
	}
	for i := 1; i < attempts && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

func maxAttempts(a tether.RuleAction) int {
	if a.MaxAttempts <= 0 {
		return DefaultMaxAttempts
	}
	return a.MaxAttempts
}

type deliveryKey struct{}

// DeliveryID returns the delivery ID a sink is called for: the same for
// every attempt of one action of one result, so a sink can use it as an
// idempotency key (a command's, a NATS Nats-Msg-Id).
func DeliveryID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(deliveryKey{}).(string)
	return id, ok
}

// permanentError marks a failure no retry can fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// isPermanent reports whether err is a failure no retry can fix: marked
// so, or a tether error of a code that says the input is wrong.
func isPermanent(err error) bool {
	if errors.As(err, new(permanentError)) {
		return true
	}
	var te *tether.Error
	if !errors.As(err, &te) {
		return false
	}
	switch te.Code {
	case tether.EINVALID, tether.ENOTFOUND, tether.EFORBIDDEN, tether.EUNAUTHORIZED,
		tether.ETOOLARGE, tether.EUNSUPPORTED, tether.ECONFLICT:
		return true
	}
	return false
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random delivery ID.
func newID() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return idEncoding.EncodeToString(b)
}

func truncate(s string) string {
	if len(s) > maxErrorLen {
		return s[:maxErrorLen] + "…"
	}
	return s
}
