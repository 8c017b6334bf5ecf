package tether

import (
	"encoding/json"
	"time"
)

// Rule is a statement evaluated on the stream (telemetry, device events or
// MQTT topics) with the actions its results trigger. Editing a rule makes
// a new version; the old ones are kept.
type Rule struct {
	TenantID string `json:"tenant_id"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	// Statement is the rule in its SQL-like language, for example
	// SELECT avg(vibration) AS v FROM telemetry GROUP BY device, TUMBLING(1m) HAVING v > 4.2
	Statement string       `json:"statement"`
	Actions   []RuleAction `json:"actions"`
	Enabled   bool         `json:"enabled"`
	Version   int          `json:"version"`
	// Status is RuleOK or RuleFailing; Error is the last error of a
	// failing rule.
	Status    string    `json:"status"`
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Rule statuses.
const (
	RuleOK      = "ok"
	RuleFailing = "failing"
)

// Rule action types.
const (
	ActionStore     = "store"     // store the result as a derived time series of the device
	ActionRepublish = "republish" // publish the result on an MQTT topic
	ActionWebhook   = "webhook"   // POST the result, HMAC-signed, with retries
	ActionCommand   = "command"   // send a device command (through the command guardrails)
	ActionAlert     = "alert"     // raise (or clear) an alert
	ActionNATS      = "nats"      // publish the result on a NATS subject
)

// RuleAction is one thing a rule does with each result. Which fields
// matter depends on Type.
type RuleAction struct {
	Type string `json:"type"`
	// Topic is the MQTT topic (republish) or the subject under
	// tether.<tenant>.rules. (nats); "{device}" is replaced by the
	// result's device ID.
	Topic string `json:"topic,omitempty"`
	// URL and Secret are a webhook's target and the key of its
	// X-Tether-Signature (HMAC-SHA256 of the body). The secret is never
	// returned by the API.
	URL    string `json:"url,omitempty"`
	Secret string `json:"secret,omitempty"`
	// Command and Params are the command to send (params may use
	// "{field}" to take a result field).
	Command string          `json:"command,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	// Alert: its type (with the rule and the device, its identity),
	// severity (info, warning, critical), how long the condition must
	// hold before it is raised (MinDuration) and how long it must be false
	// before it clears (ClearAfter).
	AlertType   string   `json:"alert_type,omitempty"`
	Severity    string   `json:"severity,omitempty"`
	MinDuration Duration `json:"min_duration,omitempty"`
	ClearAfter  Duration `json:"clear_after,omitempty"`
	// Retry bounds the attempts (default 5) with exponential backoff
	// from RetryBackoff (default 1s); after the last, the result goes to
	// the dead-letter record.
	MaxAttempts  int      `json:"max_attempts,omitempty"`
	RetryBackoff Duration `json:"retry_backoff,omitempty"`
}

// RuleResult is one output of a rule: the projected values for one device
// (or group) at one time (for a window, its end).
type RuleResult struct {
	TenantID    string         `json:"tenant_id"`
	RuleID      string         `json:"rule_id"`
	RuleVersion int            `json:"rule_version"`
	DeviceID    string         `json:"device_id,omitempty"`
	Time        time.Time      `json:"ts"`
	WindowStart *time.Time     `json:"window_start,omitempty"`
	Values      map[string]any `json:"values"`
}

// Alert statuses.
const (
	AlertActive       = "active"
	AlertAcknowledged = "acknowledged"
	AlertCleared      = "cleared"
)

// Alert is raised by a rule. Its identity is (rule, device, type): while
// it is not cleared, a repeat updates it (Count, LastSeenAt, Value)
// instead of making another.
type Alert struct {
	TenantID       string         `json:"tenant_id"`
	ID             string         `json:"id"`
	RuleID         string         `json:"rule_id"`
	DeviceID       string         `json:"device_id"`
	Type           string         `json:"type"`
	Severity       string         `json:"severity"`
	Status         string         `json:"status"`
	Message        string         `json:"message,omitempty"`
	Values         map[string]any `json:"values,omitempty"`
	Count          int            `json:"count"`
	RaisedAt       time.Time      `json:"raised_at"`
	LastSeenAt     time.Time      `json:"last_seen_at"`
	AcknowledgedAt *time.Time     `json:"acknowledged_at,omitempty"`
	AcknowledgedBy string         `json:"acknowledged_by,omitempty"`
	ClearedAt      *time.Time     `json:"cleared_at,omitempty"`
	ClearedBy      string         `json:"cleared_by,omitempty"`
}

// AlertFilter selects alerts to list. Status is one of the alert
// statuses, "open" (any but cleared) or "" (any); After is the cursor, the
// ID of the last alert of the previous page (alerts are listed newest
// first).
type AlertFilter struct {
	Status, DeviceID, RuleID string
	After                    string
	Limit                    int
}

// EventAlert is the bus event kind of alert changes.
const EventAlert = "alert"

// AlertKey is an alert's identity: a rule, a device and a type.
type AlertKey struct{ TenantID, RuleID, DeviceID, Type string }

// AlertPending is the condition of an alert identity that has not held
// long enough yet to change its alert: Met (true: to raise one; false: to
// clear the open one) since Since, last signalled at Last, due at Due,
// with the action and the values to raise it with.
type AlertPending struct {
	Met              bool
	Since, Last, Due time.Time
	Action           RuleAction
	Values           map[string]any
}

// AlertState is what the store keeps of an alert identity: its pending
// condition (nil: none) and its alert that is not cleared (nil: none).
type AlertState struct {
	Pending *AlertPending
	Alert   *Alert
}

// AlertChannel is a notification channel of a tenant's alerts: a webhook
// (URL, Secret) or e-mail (SMTPAddr, From, To). It gets the raising and
// the clearing of alerts of at least MinSeverity, at most RatePerMinute a
// minute.
type AlertChannel struct {
	ID, Kind, URL, Secret, SMTPAddr, From string
	To                                    []string
	MinSeverity                           string
	RatePerMinute                         int
}

// ActionJob is one action of one rule result in the durable outbox.
type ActionJob struct {
	ID          string // the delivery id, unique
	TenantID    string
	RuleID      string
	RuleVersion int
	DeviceID    string
	Index       int             // the action's position in the rule's actions
	Action      json.RawMessage // the RuleAction, as JSON
	Result      json.RawMessage // the RuleResult, as JSON
	// Attempts counts the attempts started, the one claimed included.
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	CreatedAt     time.Time
}

// ActionDeadLetter is an action that failed for good: its outbox row
// with the last error.
type ActionDeadLetter struct {
	ID          string          `json:"id"`
	TenantID    string          `json:"tenant_id"`
	RuleID      string          `json:"rule_id"`
	RuleVersion int             `json:"rule_version"`
	DeviceID    string          `json:"device_id,omitempty"`
	Index       int             `json:"action_index"`
	Action      json.RawMessage `json:"action"`
	Result      json.RawMessage `json:"result"`
	Attempts    int             `json:"attempts"`
	Error       string          `json:"error"`
	CreatedAt   time.Time       `json:"created_at"`
	FailedAt    time.Time       `json:"failed_at"`
}
