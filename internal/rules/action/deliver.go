package action

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// Webhook headers.
const (
	// SignatureHeader carries "sha256=" and the lowercase hex HMAC-SHA256
	// of the body, keyed with the action's secret.
	SignatureHeader = "X-Tether-Signature"
	// DeliveryHeader carries the delivery ID, the same for every attempt.
	DeliveryHeader = "X-Tether-Delivery"
)

// Message is the JSON body of a webhook, and the payload republished over
// MQTT and NATS: one rule result.
type Message struct {
	Rule    string `json:"rule"`
	Version int    `json:"version"`
	Device  string `json:"device,omitempty"`
	// Time is the result's time (for a window, its end).
	Time        time.Time      `json:"ts"`
	WindowStart *time.Time     `json:"window_start,omitempty"`
	Values      map[string]any `json:"values"`
}

// Sign returns the X-Tether-Signature value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// delivery is what one action does with one result, worked out once
// (plan) for both running it and describing it.
type delivery struct {
	a       tether.RuleAction
	res     tether.RuleResult
	target  string // the webhook URL, the MQTT topic or the NATS subject
	payload []byte // the Message, for webhooks, republish and NATS
	params  json.RawMessage
}

// plan works out what action a does with res, or why it cannot.
func plan(a tether.RuleAction, res tether.RuleResult) (*delivery, error) {
	if err := Validate(a); err != nil {
		return nil, err
	}
	d := &delivery{a: a, res: res}
	needDevice := func(what string) error {
		if res.DeviceID == "" {
			return tether.Errorf(tether.EINVALID, "%s action: %s: the result has no device", a.Type, what)
		}
		return nil
	}
	var err error
	switch a.Type {
	case tether.ActionWebhook:
		d.target = a.URL
	case tether.ActionRepublish:
		if strings.Contains(a.Topic, "{device}") {
			if err := needDevice("topic"); err != nil {
				return nil, err
			}
		}
		d.target = strings.ReplaceAll(a.Topic, "{device}", res.DeviceID)
		// The device ID could make a valid template a topic Validate
		// would refuse (a device named "devices" at the first level).
		if msg := checkMQTTTopic(d.target); msg != "" {
			return nil, tether.Errorf(tether.EINVALID, "republish action: topic %q %s", clip(d.target), msg)
		}
	case tether.ActionNATS:
		if strings.Contains(a.Topic, "{device}") {
			if err := needDevice("topic"); err != nil {
				return nil, err
			}
		}
		d.target = "tether." + res.TenantID + ".rules." + strings.ReplaceAll(a.Topic, "{device}", res.DeviceID)
		if msg := checkTokens(d.target); msg != "" {
			return nil, tether.Errorf(tether.EINVALID, "nats action: subject %q %s", clip(d.target), msg)
		}
	case tether.ActionStore:
		if err := needDevice("store"); err != nil {
			return nil, err
		}
	case tether.ActionCommand:
		if err := needDevice("command"); err != nil {
			return nil, err
		}
		if d.params, err = ExpandParams(a.Params, res); err != nil {
			return nil, tether.Errorf(tether.EINVALID, "command action: params: %s", err)
		}
	case tether.ActionAlert:
	}
	switch a.Type {
	case tether.ActionWebhook, tether.ActionRepublish, tether.ActionNATS:
		values := res.Values
		if values == nil {
			values = map[string]any{}
		}
		d.payload, err = json.Marshal(Message{Rule: res.RuleID, Version: res.RuleVersion, Device: res.DeviceID,
			Time: res.Time, WindowStart: res.WindowStart, Values: values})
		if err != nil {
			return nil, tether.Errorf(tether.EINVALID, "%s action: the result's values: %s", a.Type, err)
		}
	}
	return d, nil
}

// deliver runs one attempt of a planned action.
func (r *Runner) deliver(ctx context.Context, id string, d *delivery) error {
	res := d.res
	notConfigured := func(what string) error {
		return permanent(fmt.Errorf("%s action: %s is not configured on this server", d.a.Type, what))
	}
	var err error
	switch d.a.Type {
	case tether.ActionWebhook:
		return r.webhook(ctx, id, d)
	case tether.ActionRepublish:
		if r.sinks.Republish == nil {
			return notConfigured("MQTT publishing")
		}
		err = r.sinks.Republish(ctx, res.TenantID, d.target, d.payload)
	case tether.ActionNATS:
		if r.sinks.NATS == nil {
			return notConfigured("NATS publishing")
		}
		err = r.sinks.NATS(ctx, d.target, d.payload)
	case tether.ActionStore:
		if r.sinks.Store == nil {
			return notConfigured("storing derived series")
		}
		err = r.sinks.Store(ctx, res.TenantID, res.DeviceID, res.Time, res.Values)
	case tether.ActionCommand:
		if r.sinks.Command == nil {
			return notConfigured("sending commands")
		}
		err = r.sinks.Command(ctx, res.TenantID, res.DeviceID, d.a.Command, d.params, "rule:"+res.RuleID)
	case tether.ActionAlert:
		if r.sinks.Alert == nil {
			return notConfigured("alerting")
		}
		err = r.sinks.Alert(ctx, res.TenantID, res.RuleID, res.DeviceID, d.a, true, res.Time, res.Values)
	default:
		return permanent(fmt.Errorf("unknown action type %q", clip(d.a.Type)))
	}
	if err != nil {
		return fmt.Errorf("%s action: %w", d.a.Type, err)
	}
	return nil
}

// webhook POSTs the planned message, signed.
func (r *Runner) webhook(ctx context.Context, id string, d *delivery) error {
	// Errors name the host only: a webhook URL's path or query often holds
	// a token, and errors end up in logs and dead letters.
	u, err := url.Parse(d.target)
	if err != nil {
		return permanent(fmt.Errorf("webhook: url: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.target, bytes.NewReader(d.payload))
	if err != nil {
		return permanent(fmt.Errorf("webhook to %s: %w", u.Host, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tether-Webhook/1")
	req.Header.Set(SignatureHeader, Sign(d.a.Secret, d.payload))
	req.Header.Set(DeliveryHeader, id)
	resp, err := r.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook to %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	// Read a little so that the connection can be reused. The body is
	// not kept: errors end in dead letters the tenant reads, and the
	// answer of whatever the URL reached is not the tenant's to read.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("webhook to %s: %s", u.Host, resp.Status)
	if resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return permanent(err)
	}
	return err
}

// Describe says what action a would do with res, without doing it: for
// dry runs and backtests. rule (if not nil) gives the result its tenant,
// rule ID and version, as Enqueue does. The result goes through the same
// JSON round trip as an enqueued one, so that the description shows what
// a live run would send (numbers as float64, non-finite numbers as null).
// Webhook secrets are not shown; the signature is.
func (r *Runner) Describe(rule *tether.Rule, a tether.RuleAction, res tether.RuleResult) (string, error) {
	if rule != nil {
		res.TenantID, res.RuleID, res.RuleVersion = rule.TenantID, rule.ID, rule.Version
	}
	b, err := marshalResult(res)
	if err != nil {
		return "", err
	}
	res = tether.RuleResult{}
	if err := json.Unmarshal(b, &res); err != nil {
		return "", fmt.Errorf("describe: %w", err)
	}
	// The API hands dry runs rules without their webhook secrets: describe
	// the request with a stand-in, and show no signature.
	signature := ""
	if a.Type == tether.ActionWebhook && a.Secret == "" {
		a.Secret, signature = "stand-in", "<signed with the rule's secret>"
	}
	d, err := plan(a, res)
	if err != nil {
		return "", err
	}
	switch a.Type {
	case tether.ActionWebhook:
		if signature == "" {
			signature = Sign(a.Secret, d.payload)
		}
		return fmt.Sprintf("POST %s with %s: %s and %s: <delivery id>: %s",
			redactURL(d.target), SignatureHeader, signature, DeliveryHeader, d.payload), nil
	case tether.ActionRepublish:
		return fmt.Sprintf("publish on MQTT topic %s: %s", d.target, d.payload), nil
	case tether.ActionNATS:
		return fmt.Sprintf("publish on NATS subject %s: %s", d.target, d.payload), nil
	case tether.ActionStore:
		v, _ := json.Marshal(res.Values)
		return fmt.Sprintf("store for device %s at %s: %s", res.DeviceID, res.Time.Format(time.RFC3339Nano), v), nil
	case tether.ActionCommand:
		params := string(d.params)
		if params == "" {
			params = "no params"
		}
		return fmt.Sprintf("send command %s to device %s with %s (source rule:%s)", a.Command, res.DeviceID, params, res.RuleID), nil
	case tether.ActionAlert:
		sev := a.Severity
		if sev == "" {
			sev = "default severity"
		}
		v, _ := json.Marshal(res.Values)
		return fmt.Sprintf("signal alert %s (%s) of device %q: condition met at %s with %s",
			a.AlertType, sev, res.DeviceID, res.Time.Format(time.RFC3339Nano), v), nil
	}
	return "", fmt.Errorf("describe: unknown action type %q", clip(a.Type))
}

// redactURL returns u without its query and user info, which often hold
// tokens.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid URL>"
	}
	u.User, u.RawQuery, u.ForceQuery = nil, "", false
	return u.String()
}

// marshalResult encodes res for the outbox, with non-finite numbers
// (NaN, ±Inf, which JSON cannot carry) as null.
func marshalResult(res tether.RuleResult) ([]byte, error) {
	if v, changed := finiteChanged(res.Values); changed {
		res.Values = v.(map[string]any)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("result of %q: %w", res.DeviceID, err)
	}
	return b, nil
}

// finite returns v with every NaN and ±Inf (in nested maps and slices
// too) replaced by nil. Maps and slices holding one are copied, never
// changed in place.
func finite(v any) any {
	f, _ := finiteChanged(v)
	return f
}

// finiteChanged is finite that also reports whether it replaced anything.
func finiteChanged(v any) (any, bool) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, true
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, true
		}
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			f, changed := finiteChanged(e)
			if !changed {
				continue
			}
			if out == nil {
				out = make(map[string]any, len(x))
				for k2, e2 := range x {
					out[k2] = e2
				}
			}
			out[k] = f
		}
		if out != nil {
			return out, true
		}
	case []any:
		var out []any
		for i, e := range x {
			f, changed := finiteChanged(e)
			if !changed {
				continue
			}
			if out == nil {
				out = append([]any(nil), x...)
			}
			out[i] = f
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}

// ExpandParams returns a command's params with every JSON string that is
// exactly "{field}" (at any depth) replaced by the result's value of
// field; "{device}" is the result's device ID unless the result has a
// value named device. A field the result does not have is an error.
// Empty params stay empty.
func ExpandParams(params json.RawMessage, res tether.RuleResult) (json.RawMessage, error) {
	if len(bytes.TrimSpace(params)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.UseNumber() // leave numbers exactly as written
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not valid JSON: more than one value")
	}
	v, err := expand(v, res, 0)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(finite(v))
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

// maxDepth bounds the nesting ExpandParams walks.
const maxDepth = 64

func expand(v any, res tether.RuleResult, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested more than %d deep", maxDepth)
	}
	switch x := v.(type) {
	case string:
		if len(x) < 3 || x[0] != '{' || x[len(x)-1] != '}' {
			return x, nil
		}
		field := x[1 : len(x)-1]
		if val, ok := res.Values[field]; ok {
			return val, nil
		}
		if field == "device" {
			return res.DeviceID, nil
		}
		return nil, fmt.Errorf("%q: the result has no value %q", x, field)
	case map[string]any:
		for k, e := range x {
			f, err := expand(e, res, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = f
		}
	case []any:
		for i, e := range x {
			f, err := expand(e, res, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = f
		}
	}
	return v, nil
}
