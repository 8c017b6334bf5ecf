package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"net/smtp"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/egress"
)

// Channel kinds.
const (
	KindWebhook = "webhook"
	KindEmail   = "email"
)

// Timeouts of one notification.
const (
	webhookTimeout = 10 * time.Second
	smtpTimeout    = 30 * time.Second
)

// Notification is the JSON body a webhook channel gets: the event
// ("alert.raised" or "alert.cleared"), a delivery ID unique to this
// request and the alert. The body is signed with the channel's secret:
// header X-Tether-Signature is "sha256=" and the hex HMAC-SHA256 of the
// body.
type Notification struct {
	Event    string       `json:"event"`
	Delivery string       `json:"delivery"`
	Alert    tether.Alert `json:"alert"`
}

// job is one notification to send on one channel.
type job struct {
	tenant string
	ch     Channel
	n      Notification
}

type chanKey struct{ tenant, id string }

// chanState is a channel's rate limit and counters. times holds the
// times of the last (at most) rate notifications admitted, as a ring
// whose oldest entry is at next: a new one is admitted when that oldest
// is a minute old, so no minute ever holds more than rate of them.
type chanState struct {
	times                 []time.Time
	next                  int
	sent, failed, dropped uint64
}

// AddChannel adds a notification channel to the tenant, with a new ID,
// and returns it. A webhook channel needs an https URL (http only to a
// loopback address, for a receiver on the same host) and a Secret to
// sign with; an e-mail channel an SMTP server's host:port, a From
// address and 1 to 20 To addresses. MinSeverity "" means every alert;
// RatePerMinute 0 takes DefaultRatePerMinute.
func (s *Service) AddChannel(ctx context.Context, tenant string, c Channel) (*Channel, error) {
	if err := checkChannel(&c); err != nil {
		return nil, err
	}
	c.ID = "ch_" + randomID()
	if err := s.store.CreateAlertChannel(ctx, tenant, c, s.now(), MaxChannels); err != nil {
		return nil, err
	}
	return &c, nil
}

// Channels returns the tenant's notification channels.
func (s *Service) Channels(ctx context.Context, tenant string) ([]Channel, error) {
	return s.store.AlertChannels(ctx, tenant)
}

// GetChannel returns one of the tenant's notification channels.
func (s *Service) GetChannel(ctx context.Context, tenant, id string) (*Channel, error) {
	cs, err := s.store.AlertChannels(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.ID == id {
			return &c, nil
		}
	}
	return nil, channelNotFound(id)
}

// DeleteChannel deletes one of the tenant's notification channels.
func (s *Service) DeleteChannel(ctx context.Context, tenant, id string) error {
	if err := s.store.DeleteAlertChannel(ctx, tenant, id); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.chans, chanKey{tenant, id})
	s.mu.Unlock()
	return nil
}

// ChannelStats returns how many notifications a channel sent, failed to
// send, and dropped (over its rate limit, or with the queue full), since
// this process started.
func (s *Service) ChannelStats(tenant, id string) (sent, failed, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.chans[chanKey{tenant, id}]; st != nil {
		return st.sent, st.failed, st.dropped
	}
	return 0, 0, 0
}

// checkChannel validates a channel and normalizes its fields.
func checkChannel(c *Channel) error {
	switch c.Kind {
	case KindWebhook:
		if c.SMTPAddr != "" || c.From != "" || len(c.To) > 0 {
			return tether.Errorf(tether.EINVALID, "a webhook channel has no smtp_addr, from or to")
		}
		if err := checkWebhookURL(c.URL); err != nil {
			return err
		}
		if c.Secret == "" {
			return tether.Errorf(tether.EINVALID, "a webhook channel needs a secret to sign its requests with")
		}
	case KindEmail:
		if c.URL != "" || c.Secret != "" {
			return tether.Errorf(tether.EINVALID, "an e-mail channel has no url or secret")
		}
		host, port, err := net.SplitHostPort(c.SMTPAddr)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return tether.Errorf(tether.EINVALID, "smtp_addr %q is not host:port", c.SMTPAddr)
		}
		from, err := mail.ParseAddress(c.From)
		if err != nil {
			return tether.Errorf(tether.EINVALID, "from %q is not an e-mail address", c.From)
		}
		c.From = from.Address
		if len(c.To) == 0 || len(c.To) > maxTo {
			return tether.Errorf(tether.EINVALID, "an e-mail channel needs 1 to %d to addresses", maxTo)
		}
		to := make([]string, len(c.To))
		for i, s := range c.To {
			a, err := mail.ParseAddress(s)
			if err != nil {
				return tether.Errorf(tether.EINVALID, "to %q is not an e-mail address", s)
			}
			to[i] = a.Address
		}
		c.To = to
	default:
		return tether.Errorf(tether.EINVALID, "kind %q is neither webhook nor email", c.Kind)
	}
	if c.MinSeverity != "" && severityRank[c.MinSeverity] == 0 {
		return tether.Errorf(tether.EINVALID, "min_severity %q is none of info, warning, critical", c.MinSeverity)
	}
	if c.RatePerMinute == 0 {
		c.RatePerMinute = DefaultRatePerMinute
	}
	if c.RatePerMinute < 1 || c.RatePerMinute > MaxRatePerMinute {
		return tether.Errorf(tether.EINVALID, "rate_per_minute must be from 1 to %d (0 takes %d)", MaxRatePerMinute, DefaultRatePerMinute)
	}
	return nil
}

// checkWebhookURL requires https, except to a loopback host: a receiver
// on the same machine (and tests) may use plain http, nothing else, so
// that a signed alert never crosses a network in clear text.
func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return tether.Errorf(tether.EINVALID, "url %q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return tether.Errorf(tether.EINVALID, "url %q must be https (http only to a loopback address)", raw)
	}
	return tether.Errorf(tether.EINVALID, "url %q must be https", raw)
}

// notify queues the notifications of an alert's event on the tenant's
// channels that take its severity, within their rate limits. It never
// blocks on a channel: sending is the workers' job.
func (s *Service) notify(ctx context.Context, event string, a *tether.Alert) {
	chans, err := s.store.AlertChannels(ctx, a.TenantID)
	if err != nil {
		s.log.Error("alert notifications", "alert", a.ID, "err", err)
		return
	}
	now := s.now()
	for _, c := range chans {
		if severityRank[a.Severity] < severityRank[c.MinSeverity] {
			continue
		}
		if !s.admit(a.TenantID, c, now) {
			s.log.Warn("alert notification over the channel's rate limit, dropped", "channel", c.ID, "alert", a.ID)
			continue
		}
		j := job{tenant: a.TenantID, ch: c, n: Notification{Event: "alert." + event, Delivery: randomID(), Alert: *a}}
		h := fnv.New32a()
		h.Write([]byte(a.TenantID + "/" + c.ID))
		select {
		case s.queues[h.Sum32()%uint32(len(s.queues))] <- j:
		default:
			s.count(a.TenantID, c.ID, func(st *chanState) { st.dropped++ })
			s.log.Warn("alert notification queue full, dropped", "channel", c.ID, "alert", a.ID)
		}
	}
}

// admit applies a channel's rate limit at now and counts a refusal.
func (s *Service) admit(tenant string, c Channel, now time.Time) bool {
	rate := c.RatePerMinute
	if rate <= 0 {
		rate = DefaultRatePerMinute
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(tenant, c.ID)
	if len(st.times) < rate {
		st.times = append(st.times, now)
		return true
	}
	if now.Sub(st.times[st.next]) < time.Minute {
		st.dropped++
		return false
	}
	st.times[st.next] = now
	st.next = (st.next + 1) % rate
	return true
}

// state returns a channel's state; s.mu must be held.
func (s *Service) state(tenant, id string) *chanState {
	k := chanKey{tenant, id}
	st := s.chans[k]
	if st == nil {
		st = &chanState{}
		s.chans[k] = st
	}
	return st
}

func (s *Service) count(tenant, id string, f func(*chanState)) {
	s.mu.Lock()
	f(s.state(tenant, id))
	s.mu.Unlock()
}

// deliver sends one notification and counts the outcome.
func (s *Service) deliver(ctx context.Context, j job) {
	var err error
	switch j.ch.Kind {
	case KindWebhook:
		err = s.postWebhook(ctx, j)
	case KindEmail:
		err = s.sendEmail(ctx, j)
	default:
		err = fmt.Errorf("unknown channel kind %q", j.ch.Kind)
	}
	if err != nil {
		s.count(j.tenant, j.ch.ID, func(st *chanState) { st.failed++ })
		s.log.Warn("alert notification failed", "channel", j.ch.ID, "alert", j.n.Alert.ID, "err", err)
		return
	}
	s.count(j.tenant, j.ch.ID, func(st *chanState) { st.sent++ })
}

// sign returns the X-Tether-Signature of body: "sha256=" and the hex
// HMAC-SHA256 of body with secret.
func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (s *Service) postWebhook(ctx context.Context, j job) error {
	body, err := json.Marshal(j.n)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", j.ch.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.ch.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", j.ch.ID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tether-alerts")
	req.Header.Set("X-Tether-Event", j.n.Event)
	req.Header.Set("X-Tether-Delivery", j.n.Delivery)
	req.Header.Set("X-Tether-Signature", sign(j.ch.Secret, body))
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", j.ch.ID, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: status %s", j.ch.ID, resp.Status)
	}
	return nil
}

// sendEmail sends the notification over SMTP to the channel's server,
// with STARTTLS if the server offers it (and then with its certificate
// verified). It does not authenticate: the server must relay for Tether.
func (s *Service) sendEmail(ctx context.Context, j job) error {
	c := j.ch
	ctx, cancel := context.WithTimeout(ctx, smtpTimeout)
	defer cancel()
	conn, err := egress.Dialer(smtpTimeout).DialContext(ctx, "tcp", c.SMTPAddr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", c.SMTPAddr, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	host, _, _ := net.SplitHostPort(c.SMTPAddr)
	cl, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: %w", c.SMTPAddr, err)
	}
	defer cl.Close()
	if ok, _ := cl.Extension("STARTTLS"); ok {
		if err := cl.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("smtp %s: starttls: %w", c.SMTPAddr, err)
		}
	}
	if err := cl.Mail(c.From); err != nil {
		return fmt.Errorf("smtp %s: MAIL: %w", c.SMTPAddr, err)
	}
	for _, to := range c.To {
		if err := cl.Rcpt(to); err != nil {
			return fmt.Errorf("smtp %s: RCPT %s: %w", c.SMTPAddr, to, err)
		}
	}
	w, err := cl.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", c.SMTPAddr, err)
	}
	if _, err := w.Write(emailMessage(c, j.n, s.now())); err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", c.SMTPAddr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", c.SMTPAddr, err)
	}
	if err := cl.Quit(); err != nil {
		return fmt.Errorf("smtp %s: QUIT: %w", c.SMTPAddr, err)
	}
	return nil
}

// emailMessage returns the RFC 5322 message of a notification: a plain
// text body with the alert's fields. Header values come from validated
// addresses and a Q-encoded subject, so no field can inject a header.
func emailMessage(c Channel, n Notification, now time.Time) []byte {
	a := n.Alert
	event := strings.TrimPrefix(n.Event, "alert.")
	subject := fmt.Sprintf("[Tether] %s %s: %s", a.Severity, event, a.Type)
	if a.DeviceID != "" {
		subject += " on " + a.DeviceID
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", c.From)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(c.To, ", "))
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", subject))
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@tether>\r\n", n.Delivery)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	fmt.Fprintf(&b, "Alert %s %s.\r\n\r\n", a.ID, event)
	line := func(k, v string) { fmt.Fprintf(&b, "%-16s %s\r\n", k+":", v) }
	line("Type", a.Type)
	line("Severity", a.Severity)
	line("Status", a.Status)
	line("Rule", a.RuleID)
	line("Device", a.DeviceID)
	line("Raised at", a.RaisedAt.Format(time.RFC3339))
	line("Last seen at", a.LastSeenAt.Format(time.RFC3339))
	line("Count", strconv.Itoa(a.Count))
	if a.ClearedAt != nil {
		line("Cleared at", a.ClearedAt.Format(time.RFC3339))
		line("Cleared by", a.ClearedBy)
	}
	if len(a.Values) > 0 {
		v, _ := json.Marshal(a.Values)
		line("Values", string(v))
	}
	if a.Message != "" {
		fmt.Fprintf(&b, "\r\n%s\r\n", a.Message)
	}
	return b.Bytes()
}

func randomID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return idEncoding.EncodeToString(b)
}
