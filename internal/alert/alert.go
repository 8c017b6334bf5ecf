// Package alert keeps the alerts rules raise: one alert per identity
// (rule, device, type) that repeats update instead of multiplying, raised
// only after its condition has held for a minimum duration and cleared
// only after it has been false for a while (hysteresis, so a value
// hovering at a threshold raises one alert, not one per crossing), and
// followed through active, acknowledged and cleared with who and when.
// Every change of status is published on the bus and sent to the
// tenant's notification channels (signed webhooks, e-mail over SMTP),
// each with a rate limit.
//
// The pending condition of an identity (true since T, not yet raised;
// false since T, not yet cleared) is in the store with its alert, and
// both change in one transaction per signal, so a restart loses neither.
// Notifications are sent in the background and are best effort: the
// alert itself is durable and on the bus; a notification the rate limit
// or a full queue refuses is counted, not sent, and one that fails is
// counted and logged, not retried.
package alert

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/egress"
)

// The alert types are the domain package's, shared with the store and
// the APIs: an identity, its pending condition, what the store keeps of
// it, and a notification channel.
type (
	Key     = tether.AlertKey
	Pending = tether.AlertPending
	State   = tether.AlertState
	Channel = tether.AlertChannel
)

// Store keeps alerts, their identities' pending conditions and the
// notification channels. Every method is one transaction.
type Store interface {
	// UpdateAlertState calls fn with the identity's state inside a write
	// transaction and stores what fn left in it if fn reports a change.
	UpdateAlertState(ctx context.Context, k Key, fn func(*State) (bool, error)) (State, error)
	// DueAlertPending returns identities, of any tenant, whose pending
	// condition is due at or before t.
	DueAlertPending(ctx context.Context, t time.Time, limit int) ([]Key, error)
	Alert(ctx context.Context, tenantID, id string) (*tether.Alert, error)
	Alerts(ctx context.Context, tenantID, status, deviceID, ruleID, after string, limit int) ([]*tether.Alert, error)
	// UpdateAlert calls fn with the stored alert inside a write
	// transaction and stores what fn made of it if fn reports a change.
	UpdateAlert(ctx context.Context, tenantID, id string, fn func(*tether.Alert) (bool, error)) (*tether.Alert, bool, error)

	CreateAlertChannel(ctx context.Context, tenantID string, c Channel, at time.Time, max int) error
	AlertChannels(ctx context.Context, tenantID string) ([]Channel, error)
	DeleteAlertChannel(ctx context.Context, tenantID, id string) error
}

// Events publishes alert events on the bus.
type Events interface {
	PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error
}

// Options tune a Service. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// SweepInterval is how often Run settles pending conditions that no
	// signal settled; default 5 seconds.
	SweepInterval time.Duration
	// SweepGrace is how long past its due time a pending condition waits
	// for a signal before Run settles it: room for results that arrive
	// late (a window's allowed lateness); default 1 minute.
	SweepGrace time.Duration
	// Workers send notifications; default 4.
	Workers int
	// HTTPClient posts webhooks; default a client with a 10 s timeout.
	HTTPClient *http.Client
}

// Severities, in rising order.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

var severityRank = map[string]int{SeverityInfo: 1, SeverityWarning: 2, SeverityCritical: 3}

// Defaults and bounds.
const (
	// DefaultType is the type of an alert whose action names none.
	DefaultType = "alert"
	// DefaultSeverity is the severity of an alert whose action names none.
	DefaultSeverity = SeverityWarning
	// MaxChannels bounds a tenant's notification channels.
	MaxChannels = 100
	// DefaultRatePerMinute is a channel's rate limit when it sets none.
	DefaultRatePerMinute = 10
	// MaxRatePerMinute bounds a channel's rate limit.
	MaxRatePerMinute = 1000
	// maxTo bounds an e-mail channel's recipients.
	maxTo = 20
	// queueSize bounds the notifications waiting for a worker.
	queueSize = 1024
	// sweepBatch is how many due conditions a sweep reads at a time.
	sweepBatch = 500
	// maxValues bounds the JSON of an alert's values.
	maxValues = 16 << 10
)

// Service keeps alerts and sends their notifications.
type Service struct {
	store  Store
	events Events
	o      Options
	log    *slog.Logger
	now    func() time.Time
	http   *http.Client

	// queues are the workers', one each: a channel's notifications
	// always go through the same one, so they arrive in the order they
	// happened (a clear never before its raise).
	queues []chan job

	mu    sync.Mutex
	chans map[chanKey]*chanState
}

// New returns an alert service over st. Notifications wait in a queue
// until [Service.Run] sends them.
func New(st Store, events Events, o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
	}
	if o.SweepGrace <= 0 {
		o.SweepGrace = time.Minute
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	client := o.HTTPClient
	if client == nil {
		client = egress.Client(webhookTimeout)
	}
	svc := &Service{
		store: st, events: events, o: o, log: o.Logger, now: func() time.Time { return o.Now().UTC() },
		http: client, chans: map[chanKey]*chanState{},
	}
	for range o.Workers {
		svc.queues = append(svc.queues, make(chan job, max(1, queueSize/o.Workers)))
	}
	return svc
}

// Run sends notifications and settles, every SweepInterval, the pending
// conditions no signal settled, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, q := range s.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-q:
					s.deliver(ctx, j)
				}
			}
		}()
	}
	tick := time.NewTicker(s.o.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			if _, err := s.Sweep(ctx, s.now().Add(-s.o.SweepGrace)); err != nil && ctx.Err() == nil {
				s.log.Error("alert sweep", "err", err)
			}
		}
	}
}

// Signal reports the condition of the alert identity (ruleID, deviceID,
// a.AlertType) at time t: met true while it holds. The condition must
// hold continuously for a.MinDuration before an alert is raised, and be
// false continuously for a.ClearAfter before the open alert is cleared;
// a signal of the other value in between restarts the wait. So a value
// flapping around a threshold faster than ClearAfter keeps one alert
// raised instead of raising many. While an alert is open (active or
// acknowledged), each met signal counts as a repeat: Count, LastSeenAt
// and Values follow it.
//
// It returns the alert if it changed (raised, repeated or cleared), else
// nil. Raising and clearing are published on the bus and notified.
func (s *Service) Signal(ctx context.Context, tenant, ruleID, deviceID string, a tether.RuleAction, met bool, t time.Time, values map[string]any) (*tether.Alert, error) {
	if err := checkAction(&a); err != nil {
		return nil, err
	}
	if tenant == "" || ruleID == "" {
		return nil, tether.Errorf(tether.EINVALID, "signal: an alert needs a tenant and a rule")
	}
	if b, err := json.Marshal(values); err != nil || len(b) > maxValues {
		return nil, tether.Errorf(tether.EINVALID, "signal: the values are not JSON, or over %d bytes", maxValues)
	}
	t = t.UTC()
	k := Key{TenantID: tenant, RuleID: ruleID, DeviceID: deviceID, Type: a.AlertType}
	var (
		changed *tether.Alert
		event   string
	)
	_, err := s.store.UpdateAlertState(ctx, k, func(st *State) (bool, error) {
		changed, event = nil, ""
		if met {
			return s.met(k, st, a, t, values, &changed, &event), nil
		}
		return s.notMet(k, st, a, t, &changed, &event), nil
	})
	if err != nil {
		return nil, fmt.Errorf("signal alert %s/%s/%s: %w", ruleID, deviceID, a.AlertType, err)
	}
	if event != "" {
		s.announce(ctx, event, changed)
	}
	return changed, nil
}

// met applies a met signal to the state and reports whether it changed.
func (s *Service) met(k Key, st *State, a tether.RuleAction, t time.Time, values map[string]any, changed **tether.Alert, event *string) bool {
	if al := st.Alert; al != nil {
		// A repeat: a pending clear is off.
		al.Count++
		if t.After(al.LastSeenAt) {
			al.LastSeenAt = t
		}
		if values != nil {
			al.Values = values
		}
		al.Severity = a.Severity
		st.Pending = nil
		*changed = al
		return true
	}
	p := st.Pending
	if p == nil || !p.Met {
		p = &Pending{Met: true, Since: t, Due: t.Add(time.Duration(a.MinDuration))}
		st.Pending = p
	}
	// An out-of-order signal earlier than the condition's start moves the
	// start back: the condition held since then.
	if t.Before(p.Since) {
		p.Since, p.Due = t, t.Add(time.Duration(a.MinDuration))
	}
	if t.After(p.Last) {
		p.Last = t
	}
	p.Action, p.Values = a, values
	if t.Before(p.Due) {
		return true
	}
	*changed = s.raise(k, p, t)
	*event = "raised"
	st.Alert, st.Pending = *changed, nil
	return true
}

// notMet applies a signal of the condition not met and reports whether
// the state changed.
func (s *Service) notMet(k Key, st *State, a tether.RuleAction, t time.Time, changed **tether.Alert, event *string) bool {
	if st.Alert == nil {
		// The condition broke before it held long enough, or a pending
		// clear outlived its alert (cleared by hand): nothing is pending.
		if st.Pending == nil {
			return false
		}
		st.Pending = nil
		return true
	}
	p := st.Pending
	if p == nil || p.Met {
		p = &Pending{Met: false, Since: t, Last: t, Due: t.Add(time.Duration(a.ClearAfter)), Action: a}
		st.Pending = p
	}
	if t.After(p.Last) {
		p.Last = t
	}
	if t.Before(p.Due) {
		return true
	}
	*changed = clearAlert(st.Alert, p.Due, "rule:"+k.RuleID)
	*event = "cleared"
	st.Pending = nil
	return true
}

// raise returns the new alert of a pending condition that held long
// enough, raised at its due time and last seen at seen.
func (s *Service) raise(k Key, p *Pending, seen time.Time) *tether.Alert {
	if seen.Before(p.Due) {
		seen = p.Due
	}
	return &tether.Alert{
		TenantID: k.TenantID, ID: newID(s.now()), RuleID: k.RuleID, DeviceID: k.DeviceID, Type: k.Type,
		Severity: p.Action.Severity, Status: tether.AlertActive, Message: message(k, p.Action.Severity),
		Values: p.Values, Count: 1, RaisedAt: p.Due, LastSeenAt: seen,
	}
}

func clearAlert(a *tether.Alert, at time.Time, by string) *tether.Alert {
	a.Status, a.ClearedAt, a.ClearedBy = tether.AlertCleared, &at, by
	return a
}

func message(k Key, severity string) string {
	m := fmt.Sprintf("%s alert %q of rule %s", severity, k.Type, k.RuleID)
	if k.DeviceID != "" {
		m += " on device " + k.DeviceID
	}
	return m
}

// Sweep settles the pending conditions due at or before t that no signal
// settled: a condition met since Since with no signal since is taken to
// hold still (the rule engine signals when a condition stops), so the
// alert is raised at its due time; likewise a clear. Run calls it with
// now minus SweepGrace. It returns how many alerts it raised or cleared.
func (s *Service) Sweep(ctx context.Context, t time.Time) (int, error) {
	n := 0
	for {
		keys, err := s.store.DueAlertPending(ctx, t, sweepBatch)
		if err != nil {
			return n, fmt.Errorf("sweep alerts: %w", err)
		}
		for _, k := range keys {
			var (
				changed *tether.Alert
				event   string
			)
			_, err := s.store.UpdateAlertState(ctx, k, func(st *State) (bool, error) {
				changed, event = nil, ""
				p := st.Pending
				if p == nil || p.Due.After(t) {
					return false, nil // settled meanwhile
				}
				switch {
				case p.Met && st.Alert == nil:
					changed, event = s.raise(k, p, p.Due), "raised"
					st.Alert = changed
				case !p.Met && st.Alert != nil:
					changed, event = clearAlert(st.Alert, p.Due, "rule:"+k.RuleID), "cleared"
				}
				st.Pending = nil
				return true, nil
			})
			if err != nil {
				return n, fmt.Errorf("sweep alert %s/%s/%s: %w", k.RuleID, k.DeviceID, k.Type, err)
			}
			if event != "" {
				n++
				s.announce(ctx, event, changed)
			}
		}
		if len(keys) < sweepBatch {
			return n, nil
		}
	}
}

// Get returns one of the tenant's alerts.
func (s *Service) Get(ctx context.Context, tenant, id string) (*tether.Alert, error) {
	return s.store.Alert(ctx, tenant, id)
}

// List returns a page of the tenant's alerts, newest first.
func (s *Service) List(ctx context.Context, tenant string, f tether.AlertFilter) ([]*tether.Alert, error) {
	switch f.Status {
	case "", "open", tether.AlertActive, tether.AlertAcknowledged, tether.AlertCleared:
	default:
		return nil, tether.Errorf(tether.EINVALID, "status %q is not an alert status (or open)", f.Status)
	}
	return s.store.Alerts(ctx, tenant, f.Status, f.DeviceID, f.RuleID, f.After, f.Limit)
}

// Acknowledge marks an active alert acknowledged by by, now; an
// acknowledged one is returned unchanged. A cleared alert cannot be
// acknowledged (ECONFLICT).
func (s *Service) Acknowledge(ctx context.Context, tenant, id, by string) (*tether.Alert, error) {
	if by == "" {
		return nil, tether.Errorf(tether.EINVALID, "acknowledge: say who acknowledges")
	}
	a, changed, err := s.store.UpdateAlert(ctx, tenant, id, func(a *tether.Alert) (bool, error) {
		switch a.Status {
		case tether.AlertAcknowledged:
			return false, nil
		case tether.AlertCleared:
			return false, tether.Errorf(tether.ECONFLICT, "alert %s is cleared", a.ID)
		}
		now := s.now()
		a.Status, a.AcknowledgedAt, a.AcknowledgedBy = tether.AlertAcknowledged, &now, by
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		s.announce(ctx, "acknowledged", a)
	}
	return a, nil
}

// Clear clears an alert by hand, by by, now; a cleared one is returned
// unchanged. If the rule still finds the condition met, its next signal
// starts a new alert (after the minimum duration).
func (s *Service) Clear(ctx context.Context, tenant, id, by string) (*tether.Alert, error) {
	if by == "" {
		return nil, tether.Errorf(tether.EINVALID, "clear: say who clears")
	}
	a, changed, err := s.store.UpdateAlert(ctx, tenant, id, func(a *tether.Alert) (bool, error) {
		if a.Status == tether.AlertCleared {
			return false, nil
		}
		clearAlert(a, s.now(), by)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		s.announce(ctx, "cleared", a)
	}
	return a, nil
}

// announce publishes a change of an alert's status on the bus and, for
// raising and clearing, queues its notifications. A failure is logged:
// the alert is stored already.
func (s *Service) announce(ctx context.Context, event string, a *tether.Alert) {
	if b, err := json.Marshal(a); err != nil {
		s.log.Error("alert event", "alert", a.ID, "err", err)
	} else if err := s.events.PublishEvent(ctx, a.TenantID, tether.EventAlert, a.DeviceID, b); err != nil {
		s.log.Warn("alert event", "alert", a.ID, "err", err)
	}
	if event == "raised" || event == "cleared" {
		s.notify(ctx, event, a)
	}
}

// checkAction validates an alert action and fills in its defaults.
func checkAction(a *tether.RuleAction) error {
	if a.AlertType == "" {
		a.AlertType = DefaultType
	}
	if !tether.ValidID(a.AlertType) {
		return tether.Errorf(tether.EINVALID, "alert_type %q must be 1 to 64 letters, digits, '-' or '_'", a.AlertType)
	}
	if a.Severity == "" {
		a.Severity = DefaultSeverity
	}
	if severityRank[a.Severity] == 0 {
		return tether.Errorf(tether.EINVALID, "severity %q is none of info, warning, critical", a.Severity)
	}
	if a.MinDuration < 0 || a.ClearAfter < 0 {
		return tether.Errorf(tether.EINVALID, "min_duration and clear_after must not be negative")
	}
	return nil
}

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newID returns an alert ID that sorts by t (base32hex keeps the order of
// the bytes), with 40 random bits after the time.
func newID(t time.Time) string {
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	_, _ = rand.Read(b[8:]) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return "al_" + idEncoding.EncodeToString(b[:])
}

// channelNotFound is the error of a channel that does not exist.
func channelNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "alert channel %q not found", id)
}
