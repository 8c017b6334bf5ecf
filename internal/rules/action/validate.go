package action

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/tether-iot/tether"
)

// Alert severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Limits Validate keeps.
const (
	maxTopicLen   = 1024
	maxURLLen     = 2048
	maxParamsLen  = 16 << 10
	maxRetryDelay = time.Hour
)

// Validate checks an action before a rule is saved. Its EINVALID error
// names the field at fault by its JSON name, as "webhook action: url:
// must use https …".
//
// A webhook needs an https URL, or an http one whose host is a loopback
// address or localhost (for a receiver on the same machine), and a
// secret to sign with. A republish topic may not contain the wildcards +
// and # and may not be under $ topics or devices/ (a device's own tree:
// the command action is the way to reach a device). A NATS topic is the
// subject under tether.<tenant>.rules: dot-separated tokens without the
// wildcards * and >. In topics "{device}" is the result's device; in
// command params a string "{field}" is the result's value of field.
func Validate(a tether.RuleAction) error {
	field, msg := check(a)
	if field == "" {
		return nil
	}
	if a.Type == "" || field == "type" {
		return tether.Errorf(tether.EINVALID, "action: %s: %s", field, msg)
	}
	return tether.Errorf(tether.EINVALID, "%s action: %s: %s", a.Type, field, msg)
}

// check returns the JSON name of a's first wrong field and what is wrong
// with it, or "" if a is valid.
func check(a tether.RuleAction) (field, msg string) {
	switch a.Type {
	case "":
		return "type", "required (store, republish, webhook, command, alert or nats)"
	case tether.ActionWebhook:
		if msg := checkURL(a.URL); msg != "" {
			return "url", msg
		}
		if a.Secret == "" {
			return "secret", "required: the key of the body's HMAC-SHA256 signature"
		}
	case tether.ActionRepublish:
		if msg := checkMQTTTopic(a.Topic); msg != "" {
			return "topic", msg
		}
	case tether.ActionNATS:
		if msg := checkSubject(a.Topic); msg != "" {
			return "topic", msg
		}
	case tether.ActionStore:
	case tether.ActionCommand:
		if a.Command == "" {
			return "command", "required: the name of the command to send"
		}
		if !tether.ValidID(a.Command) {
			return "command", fmt.Sprintf("%q must be 1 to 64 letters, digits, '-' or '_'", clip(a.Command))
		}
		if msg := checkParams(a.Params); msg != "" {
			return "params", msg
		}
	case tether.ActionAlert:
		if a.AlertType == "" {
			return "alert_type", "required: the alert's type, part of its identity"
		}
		if !tether.ValidID(a.AlertType) {
			return "alert_type", fmt.Sprintf("%q must be 1 to 64 letters, digits, '-' or '_'", clip(a.AlertType))
		}
		switch a.Severity {
		case "", SeverityInfo, SeverityWarning, SeverityCritical:
		default:
			return "severity", fmt.Sprintf("%q is not info, warning or critical", clip(a.Severity))
		}
		if a.MinDuration < 0 {
			return "min_duration", "must not be negative"
		}
		if a.ClearAfter < 0 {
			return "clear_after", "must not be negative"
		}
	default:
		return "type", fmt.Sprintf("%q is not store, republish, webhook, command, alert or nats", clip(a.Type))
	}
	if a.MaxAttempts < 0 || a.MaxAttempts > MaxMaxAttempts {
		return "max_attempts", fmt.Sprintf("%d is not between 1 and %d (0: the default, %d)", a.MaxAttempts, MaxMaxAttempts, DefaultMaxAttempts)
	}
	if a.RetryBackoff < 0 || time.Duration(a.RetryBackoff) > maxRetryDelay {
		return "retry_backoff", fmt.Sprintf("%s is not between 0 and %s", time.Duration(a.RetryBackoff), maxRetryDelay)
	}
	return "", ""
}

// checkURL returns what is wrong with a webhook URL, or "".
func checkURL(s string) string {
	if s == "" {
		return "required"
	}
	if len(s) > maxURLLen {
		return fmt.Sprintf("is %d bytes; at most %d", len(s), maxURLLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "not a URL"
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return "needs a host"
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	case u.Scheme == "http":
		return "must use https (plain http only to a loopback host: localhost, 127.0.0.1, ::1)"
	default:
		return fmt.Sprintf("scheme %q is not https", clip(u.Scheme))
	}
	return ""
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkMQTTTopic returns what is wrong with a republish topic (before
// "{device}" is replaced), or "".
func checkMQTTTopic(t string) string {
	switch {
	case t == "":
		return "required: the MQTT topic to publish on"
	case len(t) > maxTopicLen:
		return fmt.Sprintf("is %d bytes; at most %d", len(t), maxTopicLen)
	case strings.ContainsAny(t, "+#\x00"):
		return "must not contain the wildcards + and # (or NUL)"
	case strings.HasPrefix(t, "$"):
		return "must not be a $ topic"
	case t == "devices" || strings.HasPrefix(t, "devices/"):
		return "must not be under devices/ (a device's own topics; send a command instead)"
	}
	return checkPlaceholders(t)
}

// checkSubject returns what is wrong with a NATS topic (before
// "{device}" is replaced), or "".
func checkSubject(t string) string {
	switch {
	case t == "":
		return "required: the subject under tether.<tenant>.rules to publish on"
	case len(t) > maxTopicLen:
		return fmt.Sprintf("is %d bytes; at most %d", len(t), maxTopicLen)
	}
	if msg := checkTokens(t); msg != "" {
		return msg
	}
	return checkPlaceholders(t)
}

// checkTokens returns what is wrong with a NATS subject's tokens, or "".
func checkTokens(s string) string {
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return "has an empty token (two dots, or a dot at an end)"
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, "*>") {
			return "must not contain the wildcards * and >"
		}
		if strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return "must not contain spaces or control characters"
		}
	}
	return ""
}

// checkPlaceholders returns an error message if a topic has a {…} other
// than {device}.
func checkPlaceholders(t string) string {
	rest := t
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return ""
		}
		rest = rest[i:]
		if !strings.HasPrefix(rest, "{device}") {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				end = len(rest) - 1
			}
			return fmt.Sprintf("unknown placeholder %q: only {device} is replaced", clip(rest[:end+1]))
		}
		rest = rest[len("{device}"):]
	}
}

// checkParams returns what is wrong with a command's params, or "".
func checkParams(p json.RawMessage) string {
	if len(p) == 0 {
		return ""
	}
	if len(p) > maxParamsLen {
		return fmt.Sprintf("are %d bytes; at most %d", len(p), maxParamsLen)
	}
	t := bytes.TrimSpace(p)
	if bytes.Equal(t, []byte("null")) {
		return ""
	}
	if !json.Valid(t) {
		return "not valid JSON"
	}
	if t[0] != '{' {
		return "must be a JSON object"
	}
	return ""
}

// clip shortens a quoted input for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
