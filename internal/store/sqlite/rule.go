package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tether-iot/tether"
)

// Rules are stored with their current definition and state in rules and
// every kept version's definition in rule_versions (see
// migrations/0010_rules.sql). The store checks identity, tenancy, the
// per-tenant limit and versions; it does not parse statements or check
// actions (the rules service does, before it stores anything).

// maxRuleError bounds the stored error of a failing rule, so that an
// engine passing a huge message does not bloat every read of the rule.
const maxRuleError = 1024

const ruleColumns = "tenant_id, id, name, statement, actions, enabled, version, status, error, created_at, updated_at"

func encodeActions(r *tether.Rule) (string, error) {
	actions := r.Actions
	if actions == nil {
		actions = []tether.RuleAction{}
	}
	b, err := json.Marshal(actions)
	if err != nil {
		return "", tether.Errorf(tether.EINVALID, "the actions of rule %q cannot be stored as JSON: %v", r.ID, err)
	}
	return string(b), nil
}

func decodeActions(s string) ([]tether.RuleAction, error) {
	var actions []tether.RuleAction
	if err := json.Unmarshal([]byte(s), &actions); err != nil {
		return nil, fmt.Errorf("decode actions: %w", err)
	}
	return actions, nil
}

func scanRule(row interface{ Scan(...any) error }) (*tether.Rule, error) {
	var (
		r                tether.Rule
		actions          string
		enabled          bool
		created, updated int64
	)
	if err := row.Scan(&r.TenantID, &r.ID, &r.Name, &r.Statement, &actions, &enabled, &r.Version,
		&r.Status, &r.Error, &created, &updated); err != nil {
		return nil, err
	}
	var err error
	if r.Actions, err = decodeActions(actions); err != nil {
		return nil, fmt.Errorf("rule %s: %w", r.ID, err)
	}
	r.Enabled = enabled
	r.CreatedAt, r.UpdatedAt = fromNanos(created), fromNanos(updated)
	return &r, nil
}

func ruleNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "rule %q not found", id)
}

// insertRuleVersion records r's definition as its version r.Version,
// made at r.UpdatedAt, and deletes the oldest versions beyond keep
// (keep <= 0 keeps them all).
func insertRuleVersion(ctx context.Context, tx *sql.Tx, r *tether.Rule, actions string, keep int) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO rule_versions
		(tenant_id, rule_id, version, name, statement, actions, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		r.TenantID, r.ID, r.Version, r.Name, r.Statement, actions, nanos(r.UpdatedAt)); err != nil {
		return err
	}
	if keep > 0 {
		if _, err := tx.ExecContext(ctx, "DELETE FROM rule_versions WHERE tenant_id = ? AND rule_id = ? AND version <= ?",
			r.TenantID, r.ID, r.Version-keep); err != nil {
			return err
		}
	}
	return nil
}

// CreateRule stores a new rule of r.TenantID as its version 1, with
// status ok, and sets r's version, status and times (a zero UpdatedAt is
// the current time; CreatedAt is UpdatedAt). It returns an ECONFLICT
// error if the tenant has a rule with the ID, an ETOOMANY error if the
// tenant has maxRules rules already (maxRules <= 0: no limit) and an
// ENOTFOUND error if the tenant does not exist.
func (db *DB) CreateRule(ctx context.Context, r *tether.Rule, maxRules int) error {
	if !tether.ValidID(r.ID) {
		return tether.Errorf(tether.EINVALID, "invalid rule id %q", r.ID)
	}
	actions, err := encodeActions(r)
	if err != nil {
		return err
	}
	stampRule(r)
	r.CreatedAt = r.UpdatedAt
	r.Version, r.Status, r.Error = 1, tether.RuleOK, ""
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if maxRules > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM rules WHERE tenant_id = ?", r.TenantID).Scan(&n); err != nil {
				return err
			}
			if n >= maxRules {
				return tether.Errorf(tether.ETOOMANY, "a tenant has at most %d rules; delete one first", maxRules)
			}
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO rules ("+ruleColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			r.TenantID, r.ID, r.Name, r.Statement, actions, r.Enabled, r.Version, r.Status, r.Error,
			nanos(r.CreatedAt), nanos(r.UpdatedAt))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "rule %q already exists", r.ID)
		case foreignKeyConstraint:
			return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", r.TenantID)
		}
		if err != nil {
			return err
		}
		return insertRuleVersion(ctx, tx, r, actions, 0)
	})
	if err != nil {
		return fmt.Errorf("create rule %s: %w", r.ID, err)
	}
	return nil
}

// UpdateRule stores r's name, statement and actions as a new version of
// the tenant's existing rule, which must be at version prev: it returns
// an ECONFLICT error naming the current version otherwise, and an
// ENOTFOUND error if there is no such rule. The new version's status is
// ok (the engine has not run it yet). It keeps the newest keep versions
// and deletes older ones (keep <= 0 keeps them all). It sets r's
// version, status, enabled flag and times (a zero UpdatedAt is the
// current time; CreatedAt is the stored one).
func (db *DB) UpdateRule(ctx context.Context, r *tether.Rule, prev, keep int) error {
	actions, err := encodeActions(r)
	if err != nil {
		return err
	}
	stampRule(r)
	err = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var (
			version int
			enabled bool
			created int64
		)
		err := tx.QueryRowContext(ctx, "SELECT version, enabled, created_at FROM rules WHERE tenant_id = ? AND id = ?",
			r.TenantID, r.ID).Scan(&version, &enabled, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return ruleNotFound(r.ID)
		}
		if err != nil {
			return err
		}
		if version != prev {
			return tether.Errorf(tether.ECONFLICT, "rule %q is at version %d, not %d", r.ID, version, prev)
		}
		r.Version, r.Enabled, r.CreatedAt = version+1, enabled, fromNanos(created)
		r.Status, r.Error = tether.RuleOK, ""
		if _, err := tx.ExecContext(ctx, `UPDATE rules SET name = ?, statement = ?, actions = ?, version = ?,
			status = ?, error = ?, updated_at = ? WHERE tenant_id = ? AND id = ?`,
			r.Name, r.Statement, actions, r.Version, r.Status, r.Error, nanos(r.UpdatedAt), r.TenantID, r.ID); err != nil {
			return err
		}
		return insertRuleVersion(ctx, tx, r, actions, keep)
	})
	if err != nil {
		return fmt.Errorf("update rule %s: %w", r.ID, err)
	}
	return nil
}

// stampRule fills in a rule's zero update time with now and makes its
// times UTC.
func stampRule(r *tether.Rule) {
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = time.Now()
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
}

// Rule returns the tenant's rule with the ID as it is now, or an
// ENOTFOUND error.
func (db *DB) Rule(ctx context.Context, tenantID, id string) (*tether.Rule, error) {
	return one(db.read.QueryRowContext(ctx,
		"SELECT "+ruleColumns+" FROM rules WHERE tenant_id = ? AND id = ?", tenantID, id), scanRule,
		func() error { return ruleNotFound(id) }, "rule %s", id)
}

// Rules returns every rule of the tenant in ID order.
func (db *DB) Rules(ctx context.Context, tenantID string) ([]*tether.Rule, error) {
	rs, err := db.queryRules(ctx, "SELECT "+ruleColumns+" FROM rules WHERE tenant_id = ? ORDER BY id", tenantID)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return rs, nil
}

// EnabledRules returns the enabled rules of every tenant, in tenant and
// ID order.
func (db *DB) EnabledRules(ctx context.Context) ([]*tether.Rule, error) {
	rs, err := db.queryRules(ctx, "SELECT "+ruleColumns+" FROM rules WHERE enabled = 1 ORDER BY tenant_id, id")
	if err != nil {
		return nil, fmt.Errorf("list enabled rules: %w", err)
	}
	return rs, nil
}

func (db *DB) queryRules(ctx context.Context, q string, args ...any) ([]*tether.Rule, error) {
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanRule)
}

// RuleVersions returns the kept versions of the tenant's rule, oldest
// first, or an ENOTFOUND error if there is no such rule. A version holds
// the rule's definition (name, statement, actions) as it was; its
// UpdatedAt is when the version was made and its CreatedAt the rule's
// creation. Enabled, Status and Error are the rule's state, not a
// version's, and are left zero.
func (db *DB) RuleVersions(ctx context.Context, tenantID, id string) ([]*tether.Rule, error) {
	var vs []*tether.Rule
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		var created int64
		err := tx.QueryRowContext(ctx, "SELECT created_at FROM rules WHERE tenant_id = ? AND id = ?", tenantID, id).Scan(&created)
		if errors.Is(err, sql.ErrNoRows) {
			return ruleNotFound(id)
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT version, name, statement, actions, created_at FROM rule_versions
			WHERE tenant_id = ? AND rule_id = ? ORDER BY version`, tenantID, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scanRuleVersion(rows, tenantID, id, created)
			if err != nil {
				return err
			}
			vs = append(vs, v)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("rule %s versions: %w", id, err)
	}
	return vs, nil
}

// RuleVersion returns one kept version of the tenant's rule, as
// RuleVersions does, or an ENOTFOUND error if the rule or the version
// (never made, or no longer kept) does not exist.
func (db *DB) RuleVersion(ctx context.Context, tenantID, id string, version int) (*tether.Rule, error) {
	v, err := scanRuleVersion(db.read.QueryRowContext(ctx, `SELECT v.version, v.name, v.statement, v.actions, v.created_at, r.created_at
		FROM rule_versions v JOIN rules r ON r.tenant_id = v.tenant_id AND r.id = v.rule_id
		WHERE v.tenant_id = ? AND v.rule_id = ? AND v.version = ?`, tenantID, id, version), tenantID, id, -1)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := db.Rule(ctx, tenantID, id); err != nil {
			return nil, err
		}
		return nil, tether.Errorf(tether.ENOTFOUND, "rule %q has no version %d", id, version)
	}
	if err != nil {
		return nil, fmt.Errorf("rule %s version %d: %w", id, version, err)
	}
	return v, nil
}

// scanRuleVersion reads a rule_versions row. With created -1 the row has
// the rule's creation time as a last column.
func scanRuleVersion(row interface{ Scan(...any) error }, tenantID, id string, created int64) (*tether.Rule, error) {
	r := tether.Rule{TenantID: tenantID, ID: id}
	var (
		actions string
		made    int64
	)
	dest := []any{&r.Version, &r.Name, &r.Statement, &actions, &made}
	if created == -1 {
		dest = append(dest, &created)
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	var err error
	if r.Actions, err = decodeActions(actions); err != nil {
		return nil, fmt.Errorf("version %d: %w", r.Version, err)
	}
	r.CreatedAt, r.UpdatedAt = fromNanos(created), fromNanos(made)
	return &r, nil
}

// SetRuleEnabled enables or disables the tenant's rule and returns it,
// or an ENOTFOUND error. It makes no new version. Enabling a rule resets
// its status to ok, so that the engine tries it afresh; at is the update
// time.
func (db *DB) SetRuleEnabled(ctx context.Context, tenantID, id string, on bool, at time.Time) (*tether.Rule, error) {
	var r *tether.Rule
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		q := "UPDATE rules SET enabled = ?, updated_at = ? WHERE tenant_id = ? AND id = ? RETURNING " + ruleColumns
		args := []any{on, nanos(at), tenantID, id}
		if on {
			q = "UPDATE rules SET enabled = ?, updated_at = ?, status = ?, error = '' WHERE tenant_id = ? AND id = ? RETURNING " + ruleColumns
			args = []any{on, nanos(at), tether.RuleOK, tenantID, id}
		}
		var err error
		r, err = scanRule(tx.QueryRowContext(ctx, q, args...))
		if errors.Is(err, sql.ErrNoRows) {
			return ruleNotFound(id)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set rule %s enabled: %w", id, err)
	}
	return r, nil
}

// SetRuleStatus records the engine's status of a version of the tenant's
// rule (tether.RuleOK, or tether.RuleFailing with the error, cut to 1024
// bytes). It reports whether it did: a status for a version that is no
// longer the rule's current one is dropped, so that the verdict on an
// old version never sticks to the new one. It returns an ENOTFOUND error
// if there is no such rule. It does not change the rule's update time,
// which is that of the user's last change.
func (db *DB) SetRuleStatus(ctx context.Context, tenantID, id string, version int, status, errText string) (bool, error) {
	if status != tether.RuleOK && status != tether.RuleFailing {
		return false, tether.Errorf(tether.EINVALID, "rule status %q is neither %s nor %s", status, tether.RuleOK, tether.RuleFailing)
	}
	if status == tether.RuleOK {
		errText = ""
	}
	errText = truncateUTF8(errText, maxRuleError)
	var set bool
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var current int
		err := tx.QueryRowContext(ctx, "SELECT version FROM rules WHERE tenant_id = ? AND id = ?", tenantID, id).Scan(&current)
		if errors.Is(err, sql.ErrNoRows) {
			return ruleNotFound(id)
		}
		if err != nil || current != version {
			return err
		}
		set = true
		_, err = tx.ExecContext(ctx, "UPDATE rules SET status = ?, error = ? WHERE tenant_id = ? AND id = ?",
			status, errText, tenantID, id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("set rule %s status: %w", id, err)
	}
	return set, nil
}

// DeleteRule deletes the tenant's rule with all its versions, or returns
// an ENOTFOUND error.
func (db *DB) DeleteRule(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// rule_versions rows go with it (ON DELETE CASCADE).
		res, err := tx.ExecContext(ctx, "DELETE FROM rules WHERE tenant_id = ? AND id = ?", tenantID, id)
		if err != nil {
			return err
		}
		if err := affected(res, func() error { return ruleNotFound(id) }); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete rule %s: %w", id, err)
	}
	return nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
