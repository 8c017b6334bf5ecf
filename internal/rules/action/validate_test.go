package action_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/rules/action"
)

func TestValidate(t *testing.T) {
	hook := func(url string) tether.RuleAction {
		return tether.RuleAction{Type: tether.ActionWebhook, URL: url, Secret: "k"}
	}
	for _, c := range []struct {
		name  string
		a     tether.RuleAction
		field string // "" if valid
	}{
		{"accepts an https webhook", hook("https://example.com/hook?x=1"), ""},
		{"accepts an http webhook to 127.0.0.1", hook("http://127.0.0.1:8080/hook"), ""},
		{"accepts an http webhook to localhost", hook("http://localhost/hook"), ""},
		{"accepts an http webhook to ::1", hook("http://[::1]:9000/"), ""},
		{"refuses an http webhook to another host", hook("http://example.com/hook"), "url"},
		{"refuses an http webhook to a private address", hook("http://10.0.0.1/hook"), "url"},
		{"refuses another scheme", hook("ftp://example.com/"), "url"},
		{"refuses a webhook without a URL", hook(""), "url"},
		{"refuses a URL without a host", hook("https:///path"), "url"},
		{"refuses a webhook without a secret", tether.RuleAction{Type: tether.ActionWebhook, URL: "https://example.com"}, "secret"},
		{"accepts a republish topic with {device}", tether.RuleAction{Type: tether.ActionRepublish, Topic: "factory/{device}/hot"}, ""},
		{"refuses a republish without a topic", tether.RuleAction{Type: tether.ActionRepublish}, "topic"},
		{"refuses a republish topic with a wildcard", tether.RuleAction{Type: tether.ActionRepublish, Topic: "factory/+/hot"}, "topic"},
		{"refuses a republish topic under devices/", tether.RuleAction{Type: tether.ActionRepublish, Topic: "devices/{device}/commands/x"}, "topic"},
		{"refuses a republish $ topic", tether.RuleAction{Type: tether.ActionRepublish, Topic: "$SYS/x"}, "topic"},
		{"refuses an unknown placeholder", tether.RuleAction{Type: tether.ActionRepublish, Topic: "a/{devce}"}, "topic"},
		{"accepts a NATS subject with {device}", tether.RuleAction{Type: tether.ActionNATS, Topic: "hot.{device}"}, ""},
		{"refuses a NATS action without a subject", tether.RuleAction{Type: tether.ActionNATS}, "topic"},
		{"refuses a NATS subject with a wildcard", tether.RuleAction{Type: tether.ActionNATS, Topic: "hot.>"}, "topic"},
		{"refuses a NATS subject with an empty token", tether.RuleAction{Type: tether.ActionNATS, Topic: "hot..x"}, "topic"},
		{"refuses a NATS subject with a space", tether.RuleAction{Type: tether.ActionNATS, Topic: "hot x"}, "topic"},
		{"accepts a store action", tether.RuleAction{Type: tether.ActionStore}, ""},
		{"accepts a command with params", tether.RuleAction{Type: tether.ActionCommand, Command: "set_speed", Params: json.RawMessage(`{"rpm":"{v}"}`)}, ""},
		{"refuses a command without a name", tether.RuleAction{Type: tether.ActionCommand}, "command"},
		{"refuses a command with a bad name", tether.RuleAction{Type: tether.ActionCommand, Command: "set speed"}, "command"},
		{"refuses command params that are not JSON", tether.RuleAction{Type: tether.ActionCommand, Command: "x", Params: json.RawMessage(`{"a":`)}, "params"},
		{"refuses command params that are not an object", tether.RuleAction{Type: tether.ActionCommand, Command: "x", Params: json.RawMessage(`[1]`)}, "params"},
		{"accepts an alert", tether.RuleAction{Type: tether.ActionAlert, AlertType: "overheat", Severity: "critical",
			MinDuration: tether.Duration(time.Minute), ClearAfter: tether.Duration(time.Minute)}, ""},
		{"refuses an alert without a type", tether.RuleAction{Type: tether.ActionAlert}, "alert_type"},
		{"refuses an alert of an unknown severity", tether.RuleAction{Type: tether.ActionAlert, AlertType: "x", Severity: "dire"}, "severity"},
		{"refuses a negative minimum duration", tether.RuleAction{Type: tether.ActionAlert, AlertType: "x", MinDuration: -1}, "min_duration"},
		{"refuses a negative clear-after", tether.RuleAction{Type: tether.ActionAlert, AlertType: "x", ClearAfter: -1}, "clear_after"},
		{"refuses negative max attempts", tether.RuleAction{Type: tether.ActionStore, MaxAttempts: -1}, "max_attempts"},
		{"refuses too many attempts", tether.RuleAction{Type: tether.ActionStore, MaxAttempts: 101}, "max_attempts"},
		{"refuses a negative backoff", tether.RuleAction{Type: tether.ActionStore, RetryBackoff: -1}, "retry_backoff"},
		{"refuses a backoff over an hour", tether.RuleAction{Type: tether.ActionStore, RetryBackoff: tether.Duration(2 * time.Hour)}, "retry_backoff"},
		{"refuses an action without a type", tether.RuleAction{}, "type"},
		{"refuses an unknown type", tether.RuleAction{Type: "email"}, "type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := action.Validate(c.a)
			if c.field == "" {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if tether.ErrorCode(err) != tether.EINVALID || !strings.Contains(err.Error(), " "+c.field+": ") {
				t.Errorf("Validate = %v, want EINVALID naming %s", err, c.field)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	r := action.New(nil, action.Sinks{}, action.Options{Logger: quiet})
	rule := newRule()
	res := result("d7", map[string]any{"v": 4.5, "eta": 7})
	for _, c := range []struct {
		name string
		a    tether.RuleAction
		want []string // in the description
		not  []string
	}{
		{"a webhook shows the request and signature, not the secret nor the query",
			tether.RuleAction{Type: tether.ActionWebhook, URL: "https://example.com/h?token=abc", Secret: "s3cret"},
			[]string{"POST https://example.com/h ", "X-Tether-Signature: sha256=",
				`{"rule":"r1","version":3,"device":"d7","ts":"2025-03-04T05:00:00Z","values":{"eta":7,"v":4.5}}`},
			[]string{"s3cret", "abc"}},
		{"a webhook of a rule without its secret (as the API hands dry runs) is still described",
			tether.RuleAction{Type: tether.ActionWebhook, URL: "https://example.com/h"},
			[]string{"POST https://example.com/h ", "X-Tether-Signature: <signed with the rule's secret>"},
			[]string{"stand-in"}},
		{"a republish shows the topic", tether.RuleAction{Type: tether.ActionRepublish, Topic: "f/{device}"},
			[]string{"MQTT topic f/d7: {"}, nil},
		{"a nats action shows the subject", tether.RuleAction{Type: tether.ActionNATS, Topic: "x.{device}"},
			[]string{"NATS subject tether.acme.rules.x.d7"}, nil},
		{"a store action shows the values", tether.RuleAction{Type: tether.ActionStore},
			[]string{"store for device d7 at 2025-03-04T05:00:00Z", `{"eta":7,"v":4.5}`}, nil},
		{"a command shows its params", tether.RuleAction{Type: tether.ActionCommand, Command: "slow", Params: json.RawMessage(`{"to":"{v}"}`)},
			[]string{`send command slow to device d7 with {"to":4.5} (source rule:r1)`}, nil},
		{"an alert shows its type and severity", tether.RuleAction{Type: tether.ActionAlert, AlertType: "hot", Severity: "warning"},
			[]string{`signal alert hot (warning) of device "d7": condition met`}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := r.Describe(rule, c.a, res)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("description %q lacks %q", got, w)
				}
			}
			for _, n := range c.not {
				if strings.Contains(got, n) {
					t.Errorf("description %q shows %q", got, n)
				}
			}
		})
	}

	t.Run("says why an action cannot run", func(t *testing.T) {
		_, err := r.Describe(rule, tether.RuleAction{Type: tether.ActionCommand, Command: "x", Params: json.RawMessage(`{"a":"{missing}"}`)}, res)
		if tether.ErrorCode(err) != tether.EINVALID || !strings.Contains(err.Error(), "missing") {
			t.Errorf("Describe = %v", err)
		}
		_, err = r.Describe(rule, tether.RuleAction{Type: tether.ActionRepublish, Topic: "{device}/x"}, result("devices", nil))
		if tether.ErrorCode(err) != tether.EINVALID || !strings.Contains(err.Error(), "devices/") {
			t.Errorf("Describe of a topic a device ID puts under devices/ = %v", err)
		}
		_, err = r.Describe(rule, tether.RuleAction{Type: tether.ActionWebhook, URL: "http://example.com"}, res)
		if tether.ErrorCode(err) != tether.EINVALID {
			t.Errorf("Describe of an invalid action = %v", err)
		}
	})
}

func TestExpandParams(t *testing.T) {
	res := tether.RuleResult{DeviceID: "d1", Values: map[string]any{"v": 4.5, "s": "on", "obj": map[string]any{"a": 1.0}, "device": "group-7"}}
	for _, c := range []struct {
		name, params, want, err string
	}{
		{"keeps params without placeholders as they are", `{"a": 1.10, "b": [true, null]}`, `{"a":1.10,"b":[true,null]}`, ""},
		{"replaces a whole-string placeholder by the value, keeping its type", `{"a":"{v}","b":"{s}","c":"{obj}"}`, `{"a":4.5,"b":"on","c":{"a":1}}`, ""},
		{"replaces placeholders at any depth", `{"x":{"y":["{v}"]}}`, `{"x":{"y":[4.5]}}`, ""},
		{"leaves strings that only contain a placeholder", `{"a":"speed {v}","b":"{}","c":"{v"}`, `{"a":"speed {v}","b":"{}","c":"{v"}`, ""},
		{"prefers a value named device to the device id", `{"d":"{device}"}`, `{"d":"group-7"}`, ""},
		{"refuses a field the result does not have", `{"a":"{nope}"}`, "", `no value "nope"`},
		{"refuses invalid JSON", `{"a":`, "", "not valid JSON"},
		{"refuses two values", `{} {}`, "", "more than one value"},
		{"leaves empty params empty", ``, ``, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := action.ExpandParams(json.RawMessage(c.params), res)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("ExpandParams = %s, %v; want error %q", got, err, c.err)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Errorf("ExpandParams = %s, %v; want %s", got, err, c.want)
			}
		})
	}

	t.Run("takes the device id when the result has no value named device", func(t *testing.T) {
		got, err := action.ExpandParams(json.RawMessage(`{"d":"{device}"}`), tether.RuleResult{DeviceID: "d1"})
		if err != nil || string(got) != `{"d":"d1"}` {
			t.Errorf("ExpandParams = %s, %v", got, err)
		}
	})
}

func FuzzExpandParams(f *testing.F) {
	for _, s := range []string{`{"a":"{v}"}`, `{"x":{"y":["{s}",1e400]}}`, `[1,"{device}"]`, `"{v}"`, `{"a":"{nope}"}`, `{`, ``} {
		f.Add(s)
	}
	res := tether.RuleResult{DeviceID: "d1", Values: map[string]any{"v": 4.5, "s": "on"}}
	f.Fuzz(func(t *testing.T, params string) {
		got, err := action.ExpandParams(json.RawMessage(params), res)
		if err != nil {
			return
		}
		if len(got) > 0 && !json.Valid(got) {
			t.Errorf("ExpandParams(%q) = %q: not JSON", params, got)
		}
	})
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"https://example.com/h", "http://127.0.0.1:1/", "factory/{device}/x", "a.{device}.b", "http://[::1", "{device", "devices/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, typ := range []string{tether.ActionWebhook, tether.ActionRepublish, tether.ActionNATS} {
			a := tether.RuleAction{Type: typ, URL: s, Topic: s, Secret: "k"}
			if action.Validate(a) != nil {
				continue
			}
			// Whatever Validate accepts, a result of a valid device can run.
			r := action.New(nil, action.Sinks{}, action.Options{Logger: quiet})
			if _, err := r.Describe(nil, a, tether.RuleResult{TenantID: "acme", RuleID: "r1", DeviceID: "d-1"}); err != nil {
				t.Errorf("Validate accepts %s %q but Describe says %v", typ, s, err)
			}
		}
	})
}
