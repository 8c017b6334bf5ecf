package alert_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/alert"
)

// webhookPeer is an httptest server that records the requests it gets.
type webhookPeer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []webhookRequest
	hold chan struct{} // if not nil, each request waits for it to close
}

type webhookRequest struct {
	header http.Header
	body   []byte
}

func newWebhookPeer(t *testing.T) *webhookPeer {
	p := &webhookPeer{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.hold != nil {
			<-p.hold
		}
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.reqs = append(p.reqs, webhookRequest{r.Header.Clone(), b})
		p.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *webhookPeer) requests() []webhookRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]webhookRequest(nil), p.reqs...)
}

// smtpPeer is a real SMTP server (emersion/go-smtp) that keeps the
// messages it receives.
type smtpPeer struct {
	addr string
	mu   sync.Mutex
	msgs []smtpMessage
}

type smtpMessage struct {
	from string
	to   []string
	data string
}

func newSMTPPeer(t *testing.T) *smtpPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &smtpPeer{addr: ln.Addr().String()}
	srv := smtp.NewServer(p)
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return p
}

// NewSession makes smtpPeer a go-smtp backend.
func (p *smtpPeer) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{peer: p}, nil }

type smtpSession struct {
	peer *smtpPeer
	m    smtpMessage
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.m = smtpMessage{from: from}
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.m.to = append(s.m.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.data = string(b)
	s.peer.mu.Lock()
	s.peer.msgs = append(s.peer.msgs, s.m)
	s.peer.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.m = smtpMessage{} }
func (s *smtpSession) Logout() error { return nil }

func (p *smtpPeer) messages() []smtpMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]smtpMessage(nil), p.msgs...)
}

// waitStats waits until a channel has sent and failed notifications.
func waitStats(t *testing.T, svc *alert.Service, tenant, id string, sent, failed uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, f, _ := svc.ChannelStats(tenant, id)
		if s == sent && f == failed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s: sent %d, failed %d; want %d, %d", id, s, f, sent, failed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func addChannel(t *testing.T, h *harness, tenant string, c alert.Channel) *alert.Channel {
	t.Helper()
	ch, err := h.svc.AddChannel(context.Background(), tenant, c)
	if err != nil {
		t.Fatalf("AddChannel: %v", err)
	}
	return ch
}

var instant = tether.RuleAction{AlertType: "overheat", Severity: alert.SeverityCritical}

func TestNotifications(t *testing.T) {
	ctx := context.Background()

	t.Run("a webhook channel gets the raise and the clear, signed with its secret", func(t *testing.T) {
		h := newHarness(t)
		peer := newWebhookPeer(t)
		ch := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: peer.URL + "/hook", Secret: "s3cret"})
		h.run(t)
		al := h.signal(t, "d1", instant, true, t0, map[string]any{"temp": 99.0})
		if _, err := h.svc.Clear(ctx, tenantA, al.ID, "api:ak_1"); err != nil {
			t.Fatal(err)
		}
		waitStats(t, h.svc, tenantA, ch.ID, 2, 0)
		reqs := peer.requests()
		for i, want := range []string{"alert.raised", "alert.cleared"} {
			r := reqs[i]
			mac := hmac.New(sha256.New, []byte("s3cret"))
			mac.Write(r.body)
			if got := r.header.Get("X-Tether-Signature"); got != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
				t.Errorf("request %d: signature %q does not match the body", i, got)
			}
			var n alert.Notification
			if err := json.Unmarshal(r.body, &n); err != nil {
				t.Fatal(err)
			}
			if n.Event != want || r.header.Get("X-Tether-Event") != want || n.Alert.ID != al.ID ||
				n.Delivery == "" || r.header.Get("X-Tether-Delivery") != n.Delivery {
				t.Errorf("request %d: %+v, headers %v; want %s of %s", i, n, r.header, want, al.ID)
			}
		}
		var n alert.Notification
		_ = json.Unmarshal(reqs[0].body, &n)
		if n.Alert.Values["temp"] != 99.0 || n.Alert.Status != tether.AlertActive {
			t.Errorf("raised alert in the body: %+v", n.Alert)
		}
	})

	t.Run("an e-mail channel sends the alert over SMTP", func(t *testing.T) {
		h := newHarness(t)
		peer := newSMTPPeer(t)
		ch := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindEmail, SMTPAddr: peer.addr,
			From: "Tether <alerts@example.com>", To: []string{"ops@example.com", "Night Shift <night@example.com>"}})
		if ch.From != "alerts@example.com" || ch.To[1] != "night@example.com" {
			t.Errorf("addresses not normalized: %+v", ch)
		}
		h.run(t)
		al := h.signal(t, "pump-7", instant, true, t0, map[string]any{"temp": 99.5})
		waitStats(t, h.svc, tenantA, ch.ID, 1, 0)
		msgs := peer.messages()
		if len(msgs) != 1 {
			t.Fatalf("%d messages, want 1", len(msgs))
		}
		m := msgs[0]
		if m.from != "alerts@example.com" || strings.Join(m.to, ",") != "ops@example.com,night@example.com" {
			t.Errorf("envelope from %q to %q", m.from, m.to)
		}
		msg, err := mail.ReadMessage(strings.NewReader(m.data))
		if err != nil {
			t.Fatalf("the message does not parse: %v\n%s", err, m.data)
		}
		body, _ := io.ReadAll(msg.Body)
		subject := msg.Header.Get("Subject")
		for _, want := range []string{"critical", "raised", "overheat", "pump-7"} {
			if !strings.Contains(subject, want) {
				t.Errorf("subject %q lacks %q", subject, want)
			}
		}
		for _, want := range []string{al.ID, "pump-7", "r1", "critical", "active", `{"temp":99.5}`} {
			if !strings.Contains(string(body), want) {
				t.Errorf("body lacks %q:\n%s", want, body)
			}
		}
	})

	t.Run("a channel's rate limit drops the excess and counts it", func(t *testing.T) {
		h := newHarness(t)
		peer := newWebhookPeer(t)
		ch := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: peer.URL, Secret: "k", RatePerMinute: 2})
		h.run(t)
		for _, d := range []string{"d1", "d2", "d3", "d4", "d5"} {
			h.signal(t, d, instant, true, t0, nil)
		}
		waitStats(t, h.svc, tenantA, ch.ID, 2, 0)
		if _, _, dropped := h.svc.ChannelStats(tenantA, ch.ID); dropped != 3 {
			t.Errorf("dropped %d, want 3", dropped)
		}
		h.clock.Set(at(time.Minute))
		h.signal(t, "d6", instant, true, t0, nil)
		waitStats(t, h.svc, tenantA, ch.ID, 3, 0)
		if n := len(peer.requests()); n != 3 {
			t.Errorf("the peer got %d requests, want 3", n)
		}
	})

	t.Run("a channel gets only alerts of at least its minimum severity", func(t *testing.T) {
		h := newHarness(t)
		peer := newWebhookPeer(t)
		ch := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: peer.URL, Secret: "k", MinSeverity: alert.SeverityWarning})
		h.run(t)
		info := instant
		info.Severity, info.AlertType = alert.SeverityInfo, "note"
		h.signal(t, "d1", info, true, t0, nil)
		h.signal(t, "d1", instant, true, t0, nil)
		waitStats(t, h.svc, tenantA, ch.ID, 1, 0)
		var n alert.Notification
		_ = json.Unmarshal(peer.requests()[0].body, &n)
		if n.Alert.Severity != alert.SeverityCritical {
			t.Errorf("the channel got %+v", n.Alert)
		}
	})

	t.Run("a slow channel does not hold up Signal", func(t *testing.T) {
		h := newHarness(t)
		peer := newWebhookPeer(t)
		peer.hold = make(chan struct{})
		ch := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: peer.URL, Secret: "k"})
		h.run(t)
		start := time.Now()
		for _, d := range []string{"d1", "d2", "d3", "d4", "d5", "d6"} {
			h.signal(t, d, instant, true, t0, nil)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("six signals took %v with the peer not answering", d)
		}
		close(peer.hold)
		waitStats(t, h.svc, tenantA, ch.ID, 6, 0)
	})

	t.Run("a failing channel is counted as failed", func(t *testing.T) {
		h := newHarness(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		ch := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindEmail, SMTPAddr: addr, From: "a@example.com", To: []string{"b@example.com"}})
		h.run(t)
		h.signal(t, "d1", instant, true, t0, nil)
		waitStats(t, h.svc, tenantA, ch.ID, 0, 1)
	})
}

func TestChannels(t *testing.T) {
	ctx := context.Background()

	t.Run("refuses a channel it could not use", func(t *testing.T) {
		h := newHarness(t)
		for name, c := range map[string]alert.Channel{
			"an unknown kind":                   {Kind: "pager"},
			"a webhook over http to a network":  {Kind: alert.KindWebhook, URL: "http://example.com/x", Secret: "k"},
			"a webhook with no secret":          {Kind: alert.KindWebhook, URL: "https://example.com/x"},
			"a webhook with a relative url":     {Kind: alert.KindWebhook, URL: "/x", Secret: "k"},
			"a webhook with e-mail fields":      {Kind: alert.KindWebhook, URL: "https://example.com/x", Secret: "k", To: []string{"a@b.c"}},
			"an e-mail channel with no port":    {Kind: alert.KindEmail, SMTPAddr: "mail.example.com", From: "a@b.c", To: []string{"a@b.c"}},
			"an e-mail channel with a bad from": {Kind: alert.KindEmail, SMTPAddr: "mail.example.com:25", From: "nobody", To: []string{"a@b.c"}},
			"an e-mail channel with no to":      {Kind: alert.KindEmail, SMTPAddr: "mail.example.com:25", From: "a@b.c"},
			"an e-mail channel with a bad to":   {Kind: alert.KindEmail, SMTPAddr: "mail.example.com:25", From: "a@b.c", To: []string{"x\r\nBcc: y@z"}},
			"an e-mail channel with a secret":   {Kind: alert.KindEmail, SMTPAddr: "mail.example.com:25", From: "a@b.c", To: []string{"a@b.c"}, Secret: "k"},
			"an unknown minimum severity":       {Kind: alert.KindWebhook, URL: "https://example.com/x", Secret: "k", MinSeverity: "loud"},
			"a negative rate":                   {Kind: alert.KindWebhook, URL: "https://example.com/x", Secret: "k", RatePerMinute: -1},
			"a rate over the maximum":           {Kind: alert.KindWebhook, URL: "https://example.com/x", Secret: "k", RatePerMinute: alert.MaxRatePerMinute + 1},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := h.svc.AddChannel(ctx, tenantA, c)
				wantCode(t, err, tether.EINVALID)
			})
		}
	})

	t.Run("keeps each tenant's channels apart, with defaults filled in", func(t *testing.T) {
		h := newHarness(t)
		a := addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: "https://example.com/a", Secret: "k"})
		if a.ID == "" || a.RatePerMinute != alert.DefaultRatePerMinute {
			t.Errorf("added %+v; want an ID and the default rate", a)
		}
		b := addChannel(t, h, tenantB, alert.Channel{Kind: alert.KindWebhook, URL: "https://localhost/b", Secret: "k"})
		for tenant, want := range map[string]string{tenantA: a.ID, tenantB: b.ID} {
			cs, err := h.svc.Channels(ctx, tenant)
			if err != nil || len(cs) != 1 || cs[0].ID != want {
				t.Errorf("tenant %s: %+v, %v; want only %s", tenant, cs, err, want)
			}
		}
		_, err := h.svc.GetChannel(ctx, tenantB, a.ID)
		wantCode(t, err, tether.ENOTFOUND)
		wantCode(t, h.svc.DeleteChannel(ctx, tenantB, a.ID), tether.ENOTFOUND)
		if got, err := h.svc.GetChannel(ctx, tenantA, a.ID); err != nil || got.URL != a.URL || got.Secret != "k" {
			t.Errorf("GetChannel = %+v, %v", got, err)
		}
		if err := h.svc.DeleteChannel(ctx, tenantA, a.ID); err != nil {
			t.Fatal(err)
		}
		if cs, _ := h.svc.Channels(ctx, tenantA); len(cs) != 0 {
			t.Errorf("after the delete: %+v", cs)
		}
	})

	t.Run("refuses a channel over the tenant's limit", func(t *testing.T) {
		h := newHarness(t)
		for range alert.MaxChannels {
			addChannel(t, h, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: "https://example.com/a", Secret: "k"})
		}
		_, err := h.svc.AddChannel(ctx, tenantA, alert.Channel{Kind: alert.KindWebhook, URL: "https://example.com/a", Secret: "k"})
		wantCode(t, err, tether.ETOOMANY)
	})
}
