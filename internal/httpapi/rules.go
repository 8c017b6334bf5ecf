package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/tether-iot/tether"
)

// Rules is what the API needs of the rules service. Its rules carry
// their webhook secrets; the API leaves them out of every answer.
type Rules interface {
	Create(ctx context.Context, tenant string, r tether.Rule) (*tether.Rule, error)
	// Update makes a new version; a non-zero r.Version must be the
	// current one (ECONFLICT otherwise), and a webhook action without a
	// secret keeps the current secret of its URL.
	Update(ctx context.Context, tenant, id string, r tether.Rule) (*tether.Rule, error)
	Get(ctx context.Context, tenant, id string) (*tether.Rule, error)
	List(ctx context.Context, tenant string) ([]*tether.Rule, error)
	Delete(ctx context.Context, tenant, id string) error
	Versions(ctx context.Context, tenant, id string) ([]*tether.Rule, error)
	// Rollback makes a new version equal to an old one.
	Rollback(ctx context.Context, tenant, id string, version int) (*tether.Rule, error)
	SetEnabled(ctx context.Context, tenant, id string, on bool) (*tether.Rule, error)
	Validate(stmt string, actions []tether.RuleAction) error
}

// RuleInvalid is implemented by the rules service's verdict that a rule
// is invalid. The API answers it with 422 and, when the line is not 0,
// the position in the statement.
type RuleInvalid interface {
	error
	Position() (line, column int)
}

// ruleRoutes registers the rules API with add (see Handler).
func (s *Server) ruleRoutes(add addRoute) {
	ok := s.sv.Rules != nil
	add(tether.RoleAdmin, "POST /api/v1/rules", needs(ok, "rules", s.createRule))
	add(tether.RoleViewer, "GET /api/v1/rules", needs(ok, "rules", s.listRules))
	add(tether.RoleOperator, "POST /api/v1/rules/validate", needs(ok, "rules", s.validateRule))
	add(tether.RoleViewer, "GET /api/v1/rules/{id}", needs(ok, "rules", s.getRule))
	add(tether.RoleAdmin, "PUT /api/v1/rules/{id}", needs(ok, "rules", s.putRule))
	add(tether.RoleAdmin, "DELETE /api/v1/rules/{id}", needs(ok, "rules", s.deleteRule))
	add(tether.RoleAdmin, "POST /api/v1/rules/{id}/enable", needs(ok, "rules", s.enableRule(true)))
	add(tether.RoleAdmin, "POST /api/v1/rules/{id}/disable", needs(ok, "rules", s.enableRule(false)))
	add(tether.RoleViewer, "GET /api/v1/rules/{id}/versions", needs(ok, "rules", s.ruleVersions))
	add(tether.RoleAdmin, "POST /api/v1/rules/{id}/rollback", needs(ok, "rules", s.rollbackRule))
}

// ruleBody is a rule as a client sends it. It takes every field a rule
// is answered with, so that a rule read with GET can be sent back changed
// with PUT as it is; the service sets version (except as a PUT's
// precondition), status, error and the times.
type ruleBody struct {
	TenantID  string              `json:"tenant_id"`
	ID        string              `json:"id"`
	Name      string              `json:"name"`
	Statement string              `json:"statement"`
	Actions   []tether.RuleAction `json:"actions"`
	// Enabled defaults to true on create; PUT ignores it (use enable and
	// disable).
	Enabled   *bool           `json:"enabled"`
	Version   int             `json:"version"`
	Status    json.RawMessage `json:"status"`
	Error     json.RawMessage `json:"error"`
	CreatedAt json.RawMessage `json:"created_at"`
	UpdatedAt json.RawMessage `json:"updated_at"`
}

func decodeRule(r *http.Request, k *tether.Principal) (tether.Rule, *bool, error) {
	var b ruleBody
	if err := decodeBody(r, &b); err != nil {
		return tether.Rule{}, nil, err
	}
	if b.TenantID != "" && b.TenantID != k.TenantID {
		return tether.Rule{}, nil, tether.Errorf(tether.EINVALID, "tenant_id %q is not the API key's tenant", b.TenantID)
	}
	return tether.Rule{TenantID: k.TenantID, ID: b.ID, Name: b.Name, Statement: b.Statement, Actions: b.Actions,
		Version: b.Version}, b.Enabled, nil
}

// publicRule returns a copy of r without its webhook secrets.
func publicRule(r *tether.Rule) *tether.Rule {
	c := *r
	if r.Actions != nil {
		c.Actions = make([]tether.RuleAction, len(r.Actions))
		for i, a := range r.Actions {
			a.Secret = ""
			c.Actions[i] = a
		}
	}
	return &c
}

func publicRules(rs []*tether.Rule) []*tether.Rule {
	out := make([]*tether.Rule, len(rs))
	for i, r := range rs {
		out[i] = publicRule(r)
	}
	return out
}

// RuleProblem is the problem details of an invalid rule (status 422):
// a [Problem] and, for a statement the parser refused, where.
type RuleProblem struct {
	Problem
	Position *RulePosition `json:"position,omitempty"`
}

// RulePosition is a place in a rule's statement, 1-based.
type RulePosition struct {
	Line   int `json:"line"`
	Column int `json:"column"`
}

// ruleError answers a rule the service found invalid with 422 and the
// position, and returns any other error for the usual answer.
func (s *Server) ruleError(w http.ResponseWriter, err error) error {
	var ri RuleInvalid
	if !errors.As(err, &ri) {
		return err
	}
	p := RuleProblem{Problem: Problem{Type: "about:blank", Title: http.StatusText(http.StatusUnprocessableEntity),
		Status: http.StatusUnprocessableEntity, Detail: tether.ErrorMessage(err), Code: tether.EINVALID}}
	if line, col := ri.Position(); line > 0 {
		p.Position = &RulePosition{Line: line, Column: col}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
	return nil
}

func (s *Server) createRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	rule, enabled, err := decodeRule(r, k)
	if err != nil {
		return err
	}
	rule.Enabled = enabled == nil || *enabled
	created, err := s.sv.Rules.Create(r.Context(), k.TenantID, rule)
	if err != nil {
		return s.ruleError(w, err)
	}
	w.Header().Set("Location", "/api/v1/rules/"+created.ID)
	return writeJSON(w, http.StatusCreated, publicRule(created))
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	rs, err := s.sv.Rules.List(r.Context(), k.TenantID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Rules []*tether.Rule `json:"rules"`
	}{publicRules(rs)})
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	rule, err := s.sv.Rules.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, publicRule(rule))
}

func (s *Server) putRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	rule, _, err := decodeRule(r, k)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if rule.ID != "" && rule.ID != id {
		return tether.Errorf(tether.EINVALID, "the body's id %q is not the path's %q; a rule's id cannot change", rule.ID, id)
	}
	rule.ID = id
	updated, err := s.sv.Rules.Update(r.Context(), k.TenantID, id, rule)
	if err != nil {
		return s.ruleError(w, err)
	}
	return writeJSON(w, http.StatusOK, publicRule(updated))
}

func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.sv.Rules.Delete(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) enableRule(on bool) handler {
	return func(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
		rule, err := s.sv.Rules.SetEnabled(r.Context(), k.TenantID, r.PathValue("id"), on)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, publicRule(rule))
	}
}

func (s *Server) ruleVersions(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	vs, err := s.sv.Rules.Versions(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Versions []*tether.Rule `json:"versions"`
	}{publicRules(vs)})
}

func (s *Server) rollbackRule(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var b struct {
		Version int `json:"version"`
	}
	if err := decodeBody(r, &b); err != nil {
		return err
	}
	if b.Version < 1 {
		return tether.Errorf(tether.EINVALID, "version must be a version of the rule, 1 or more")
	}
	rule, err := s.sv.Rules.Rollback(r.Context(), k.TenantID, r.PathValue("id"), b.Version)
	if err != nil {
		return s.ruleError(w, err)
	}
	return writeJSON(w, http.StatusOK, publicRule(rule))
}

func (s *Server) validateRule(w http.ResponseWriter, r *http.Request, _ *tether.Principal) error {
	var b struct {
		Statement string              `json:"statement"`
		Actions   []tether.RuleAction `json:"actions"`
	}
	if err := decodeBody(r, &b); err != nil {
		return err
	}
	if err := s.sv.Rules.Validate(b.Statement, b.Actions); err != nil {
		return s.ruleError(w, err)
	}
	return writeJSON(w, http.StatusOK, struct {
		Valid bool `json:"valid"`
	}{true})
}
