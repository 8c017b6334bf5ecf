// Package rules manages the rules of every tenant: it validates a rule
// when it is saved (its statement is parsed by package
// [github.com/tether-iot/tether/internal/rules/lang], each action checked
// by package [github.com/tether-iot/tether/internal/rules/action]), keeps
// its versions (an edit makes a new version; a rollback makes a new
// version equal to an old one; the newest 100 are kept by default),
// enables and disables it, records the
// status the engine reports (ok, or failing with the error) and bounds
// how many rules a tenant has. Evaluating rules is the engine's job
// (package engine), running their actions the runner's (package action).
package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/action"
	"github.com/tether-iot/tether/internal/rules/lang"
	"github.com/tether-iot/tether/internal/secret"
)

// Store keeps rules and their versions (package sqlite implements it).
//
// CreateRule stores a new rule as version 1 with status ok; it fails with
// ECONFLICT for an existing ID and ETOOMANY when the tenant has maxRules
// rules. UpdateRule stores r's definition as the next version of a rule
// that is at version prev (ECONFLICT otherwise), with status ok, keeping
// the newest keep versions, and sets r's version, enabled flag and
// creation time from the store. SetRuleStatus drops (returns false for) a
// status of a version that is not the current one. Every method but
// EnabledRules is scoped to one tenant; a rule of another is ENOTFOUND.
type Store interface {
	CreateRule(ctx context.Context, r *tether.Rule, maxRules int) error
	UpdateRule(ctx context.Context, r *tether.Rule, prev, keep int) error
	Rule(ctx context.Context, tenantID, id string) (*tether.Rule, error)
	Rules(ctx context.Context, tenantID string) ([]*tether.Rule, error)
	RuleVersions(ctx context.Context, tenantID, id string) ([]*tether.Rule, error)
	RuleVersion(ctx context.Context, tenantID, id string, version int) (*tether.Rule, error)
	SetRuleEnabled(ctx context.Context, tenantID, id string, on bool, at time.Time) (*tether.Rule, error)
	SetRuleStatus(ctx context.Context, tenantID, id string, version int, status, errText string) (bool, error)
	EnabledRules(ctx context.Context) ([]*tether.Rule, error)
	DeleteRule(ctx context.Context, tenantID, id string) error
}

// Events announces rule changes on the bus (package bus implements it).
// Rule changes are events of kind [EventKind] whose "device" is the
// rule's ID; the data is an [Event].
type Events interface {
	PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error
}

// EventKind is the bus event kind of rule changes. Engines on every node
// reload on it.
const EventKind = "rule"

// Changes an [Event] reports.
const (
	ChangeCreated    = "created"
	ChangeUpdated    = "updated"
	ChangeRolledBack = "rolled_back"
	ChangeEnabled    = "enabled"
	ChangeDisabled   = "disabled"
	ChangeStatus     = "status"
	ChangeDeleted    = "deleted"
)

// Event is the data of a rule change event. It carries no definition
// (and so no webhook secret): a consumer reads the rule.
type Event struct {
	RuleID  string `json:"rule_id"`
	Change  string `json:"change"`
	Version int    `json:"version"`
	Enabled bool   `json:"enabled"`
	Status  string `json:"status,omitempty"`
}

// Limits of a rule. The statement's own limits (length, expression size)
// are the language's; MaxStatementLen is checked first so that the store
// never holds more.
const (
	MaxNameLen      = 256
	MaxStatementLen = 4096
	MaxActions      = 16
)

// Defaults of [Options].
const (
	DefaultMaxRules    = 1000
	DefaultMaxVersions = 100
)

// updateTries bounds how often an update (or rollback) that raced
// another one is tried again before it gives up with ECONFLICT.
const updateTries = 3

// Options configure a [Service].
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// MaxRules bounds the rules of one tenant; default 1000.
	MaxRules int
	// MaxVersions bounds the versions kept of one rule (the current one
	// included); older ones are deleted and cannot be rolled back to.
	// Default 100.
	MaxVersions int
}

// Service validates, stores and versions rules.
type Service struct {
	st          Store
	events      Events
	log         *slog.Logger
	now         func() time.Time
	maxRules    int
	maxVersions int
}

// New returns a Service over st. events may be nil: changes are then not
// announced.
func New(st Store, events Events, o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxRules <= 0 {
		o.MaxRules = DefaultMaxRules
	}
	if o.MaxVersions <= 0 {
		o.MaxVersions = DefaultMaxVersions
	}
	return &Service{st: st, events: events, log: o.Logger, now: o.Now, maxRules: o.MaxRules, maxVersions: o.MaxVersions}
}

// Create validates r and stores it as a new rule of the tenant, at
// version 1 with status ok, and returns it as stored. An empty ID is
// given a random one. Enabled is taken as r has it. It returns a
// [*ValidationError] (code EINVALID) naming what is wrong, with the
// position in the statement when the parser gave one; ECONFLICT if the
// tenant has a rule with the ID; ETOOMANY if the tenant has MaxRules
// rules already.
func (s *Service) Create(ctx context.Context, tenant string, r tether.Rule) (*tether.Rule, error) {
	if r.ID == "" {
		r.ID = secret.ID()
	}
	if err := s.check(&r); err != nil {
		return nil, err
	}
	nr := tether.Rule{TenantID: tenant, ID: r.ID, Name: r.Name, Statement: r.Statement, Actions: r.Actions,
		Enabled: r.Enabled, UpdatedAt: s.now().UTC()}
	if err := s.st.CreateRule(ctx, &nr, s.maxRules); err != nil {
		return nil, err
	}
	s.announce(ctx, &nr, ChangeCreated)
	return &nr, nil
}

// Update validates r and stores its name, statement and actions as the
// next version of the tenant's rule id, and returns the rule as stored:
// status ok (the engine has not run it yet), Enabled unchanged (see
// [Service.SetEnabled]). A non-zero r.Version must be the rule's current
// version, or the update is refused with ECONFLICT, so that an edit made
// from an old read does not silently undo another. A webhook action
// without a secret keeps the secret of the current version's webhook
// action with the same URL, so that a rule read from the API (which never
// shows secrets) can be sent back changed. Errors are those of
// [Service.Create], and ENOTFOUND.
func (s *Service) Update(ctx context.Context, tenant, id string, r tether.Rule) (*tether.Rule, error) {
	r.ID = id
	if err := s.checkDefinition(&r); err != nil {
		return nil, err
	}
	return s.newVersion(ctx, tenant, id, r.Version, ChangeUpdated, func(cur *tether.Rule) (*tether.Rule, error) {
		nr := &tether.Rule{Name: r.Name, Statement: r.Statement, Actions: keepSecrets(r.Actions, cur.Actions)}
		if err := checkActions(nr.Actions); err != nil {
			return nil, err
		}
		return nr, nil
	})
}

// Rollback makes a new version of the tenant's rule equal to its version
// (name, statement and actions, secrets included), and returns the rule
// as stored. The old version is validated again, as the language may have
// changed since. It returns ENOTFOUND for a rule or a version that does
// not exist (or is no longer kept).
func (s *Service) Rollback(ctx context.Context, tenant, id string, version int) (*tether.Rule, error) {
	if version < 1 {
		return nil, tether.Errorf(tether.EINVALID, "version %d: versions start at 1", version)
	}
	old, err := s.st.RuleVersion(ctx, tenant, id, version)
	if err != nil {
		return nil, err
	}
	if err := s.check(old); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.Message = fmt.Sprintf("version %d no longer validates: %s", version, ve.Message)
		}
		return nil, err
	}
	return s.newVersion(ctx, tenant, id, 0, ChangeRolledBack, func(*tether.Rule) (*tether.Rule, error) {
		return &tether.Rule{Name: old.Name, Statement: old.Statement, Actions: old.Actions}, nil
	})
}

// newVersion stores the definition def returns for the current rule as
// its next version, trying again when another change got in between,
// unless the caller named the version to replace (want != 0).
func (s *Service) newVersion(ctx context.Context, tenant, id string, want int, change string,
	def func(cur *tether.Rule) (*tether.Rule, error)) (*tether.Rule, error) {
	for try := 1; ; try++ {
		cur, err := s.st.Rule(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		if want != 0 && want != cur.Version {
			return nil, tether.Errorf(tether.ECONFLICT, "rule %q is at version %d, not %d; read it again", id, cur.Version, want)
		}
		nr, err := def(cur)
		if err != nil {
			return nil, err
		}
		nr.TenantID, nr.ID, nr.UpdatedAt = tenant, id, s.now().UTC()
		err = s.st.UpdateRule(ctx, nr, cur.Version, s.maxVersions)
		if err == nil {
			s.announce(ctx, nr, change)
			return nr, nil
		}
		if tether.ErrorCode(err) != tether.ECONFLICT || want != 0 || try == updateTries {
			return nil, err
		}
	}
}

// Get returns the tenant's rule, webhook secrets included (the API leaves
// them out), or ENOTFOUND.
func (s *Service) Get(ctx context.Context, tenant, id string) (*tether.Rule, error) {
	return s.st.Rule(ctx, tenant, id)
}

// List returns the tenant's rules in ID order, webhook secrets included.
func (s *Service) List(ctx context.Context, tenant string) ([]*tether.Rule, error) {
	return s.st.Rules(ctx, tenant)
}

// Delete deletes the tenant's rule with all its versions, or returns
// ENOTFOUND.
func (s *Service) Delete(ctx context.Context, tenant, id string) error {
	if err := s.st.DeleteRule(ctx, tenant, id); err != nil {
		return err
	}
	s.announce(ctx, &tether.Rule{TenantID: tenant, ID: id}, ChangeDeleted)
	return nil
}

// Versions returns the kept versions of the tenant's rule, oldest first,
// webhook secrets included. A version's UpdatedAt is when it was made;
// Enabled, Status and Error are the rule's state, not a version's, and
// are left zero.
func (s *Service) Versions(ctx context.Context, tenant, id string) ([]*tether.Rule, error) {
	return s.st.RuleVersions(ctx, tenant, id)
}

// SetEnabled enables or disables the tenant's rule and returns it. It
// makes no new version. Enabling resets the status to ok, so that the
// engine tries a failing rule afresh.
func (s *Service) SetEnabled(ctx context.Context, tenant, id string, on bool) (*tether.Rule, error) {
	r, err := s.st.SetRuleEnabled(ctx, tenant, id, on, s.now().UTC())
	if err != nil {
		return nil, err
	}
	change := ChangeDisabled
	if on {
		change = ChangeEnabled
	}
	s.announce(ctx, r, change)
	return r, nil
}

// SetStatus records the engine's verdict on a version of the tenant's
// rule: status [tether.RuleOK], or [tether.RuleFailing] with the error
// (cut to 1 KiB). A verdict on a version that is no longer the current
// one is dropped, and one that changes nothing is not written, so an
// engine may report every evaluation. It returns ENOTFOUND for a rule
// that does not exist (deleted meanwhile, say) and EINVALID for another
// status.
func (s *Service) SetStatus(ctx context.Context, tenant, id string, version int, status, errText string) error {
	if status == tether.RuleOK {
		errText = ""
	}
	cur, err := s.st.Rule(ctx, tenant, id)
	if err != nil {
		return err
	}
	if cur.Version != version || (cur.Status == status && cur.Error == truncate(errText, maxError)) {
		return nil
	}
	set, err := s.st.SetRuleStatus(ctx, tenant, id, version, status, errText)
	if err != nil || !set {
		return err
	}
	cur.Status = status
	s.announce(ctx, cur, ChangeStatus)
	return nil
}

// maxError is the store's bound on a failing rule's error, which
// SetStatus compares with.
const maxError = 1024

// Enabled returns the enabled rules of every tenant, webhook secrets
// included, for the engine when it starts.
func (s *Service) Enabled(ctx context.Context) ([]*tether.Rule, error) {
	return s.st.EnabledRules(ctx)
}

// Validate checks a statement and actions as [Service.Create] does,
// without storing anything: nil, or a [*ValidationError].
func (s *Service) Validate(stmt string, actions []tether.RuleAction) error {
	if err := checkStatement(stmt); err != nil {
		return err
	}
	return checkActions(actions)
}

// announce publishes a change event, if there is a bus. A rule change is
// stored before it is announced and the engines also read rules when they
// start, so a lost event delays a change on other nodes but loses
// nothing stored; it is logged, not returned.
func (s *Service) announce(ctx context.Context, r *tether.Rule, change string) {
	if s.events == nil {
		return
	}
	data, err := json.Marshal(Event{RuleID: r.ID, Change: change, Version: r.Version, Enabled: r.Enabled, Status: r.Status})
	if err == nil {
		err = s.events.PublishEvent(ctx, r.TenantID, EventKind, r.ID, data)
	}
	if err != nil {
		s.log.Warn("rules: announce change", "tenant", r.TenantID, "rule", r.ID, "change", change, "err", err)
	}
}

// check validates a whole rule: its ID and its definition.
func (s *Service) check(r *tether.Rule) error {
	if err := s.checkDefinition(r); err != nil {
		return err
	}
	return checkActions(r.Actions)
}

// checkDefinition validates a rule's ID, name and statement: everything
// but its actions, which an update checks once the current secrets are
// merged in.
func (s *Service) checkDefinition(r *tether.Rule) error {
	if !tether.ValidID(r.ID) {
		return &ValidationError{Field: "id", Message: fmt.Sprintf("rule id %q must be 1 to 64 letters, digits, '-' or '_'", truncate(r.ID, 40))}
	}
	if len(r.Name) > MaxNameLen || !utf8.ValidString(r.Name) {
		return &ValidationError{Field: "name", Message: fmt.Sprintf("name must be at most %d bytes of UTF-8", MaxNameLen)}
	}
	return checkStatement(r.Statement)
}

func checkStatement(stmt string) error {
	if len(stmt) > MaxStatementLen {
		return &ValidationError{Field: "statement", Message: fmt.Sprintf("statement is %d bytes; at most %d", len(stmt), MaxStatementLen)}
	}
	if _, err := lang.Parse(stmt); err != nil {
		// Every parse error is a verdict on the statement; the language
		// returns *lang.Error, with the position.
		ve := &ValidationError{Field: "statement", Message: message(err), err: err}
		var le *lang.Error
		if errors.As(err, &le) {
			ve.Line, ve.Column, ve.Offset, ve.Message = le.Line, le.Col, le.Pos, le.Msg
		}
		return ve
	}
	return nil
}

func checkActions(actions []tether.RuleAction) error {
	if len(actions) > MaxActions {
		return &ValidationError{Field: "actions", Message: fmt.Sprintf("%d actions; at most %d", len(actions), MaxActions)}
	}
	for i, a := range actions {
		if err := action.Validate(a); err != nil {
			return &ValidationError{Field: fmt.Sprintf("actions[%d]", i),
				Message: message(err), err: err}
		}
	}
	return nil
}

// message is the message of a *tether.Error in err's chain, else err's
// text: the validators' errors are meant for the user.
func message(err error) string {
	var te *tether.Error
	if errors.As(err, &te) {
		return te.Message
	}
	return err.Error()
}

// keepSecrets returns actions with each webhook action that has no secret
// given the secret of the first webhook action of old with the same URL.
func keepSecrets(actions, old []tether.RuleAction) []tether.RuleAction {
	out := make([]tether.RuleAction, len(actions))
	copy(out, actions)
	for i, a := range out {
		if a.Type != tether.ActionWebhook || a.Secret != "" {
			continue
		}
		for _, o := range old {
			if o.Type == tether.ActionWebhook && o.URL == a.URL && o.Secret != "" {
				out[i].Secret = o.Secret
				break
			}
		}
	}
	return out
}

// ValidationError is why a rule is invalid: its code is EINVALID, Field
// names the part of the rule ("id", "name", "statement", "actions",
// "actions[2]"), and for a statement the parser refused, Line and Column
// (1-based) and Offset (in bytes) say where. Line is 0 when there is no
// position.
type ValidationError struct {
	Field        string
	Line, Column int
	Offset       int
	Message      string
	err          error // the parser's or the action's error, if any
}

// Error returns the field, the position if any and the message.
func (e *ValidationError) Error() string { return "rule: " + e.text() }

func (e *ValidationError) text() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d, column %d: %s", e.Field, e.Line, e.Column, e.Message)
	}
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Unwrap returns the [*tether.Error] with code EINVALID that the edges
// show, and the parser's or the action's error.
func (e *ValidationError) Unwrap() []error {
	errs := []error{&tether.Error{Code: tether.EINVALID, Message: e.text()}}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

// Position returns where in the statement the error is, 1-based; line 0
// when there is no position.
func (e *ValidationError) Position() (line, column int) { return e.Line, e.Column }

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
