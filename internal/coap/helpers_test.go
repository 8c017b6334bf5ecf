package coap_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/coap"
	"github.com/tether-iot/tether/internal/telemetry"
	"github.com/tether-iot/tether/internal/testkit"
)

// Credentials of the devices the fake authenticator knows.
const (
	deviceID = "sensor-1"
	token    = "sensor-1.SECRETsecretSECRET"
	otherID  = "sensor-2"
	other    = "sensor-2.OTHERotherOTHER"
	pskKey   = "psk-of-sensor-1"
)

// fakeAuth knows sensor-1 (token and PSK) and sensor-2 (token only).
type fakeAuth struct {
	mu      sync.Mutex
	devices map[string]*tether.Device
	tokens  map[string]string
	psks    map[string][]byte
	err     error // returned by every call when set
}

func newFakeAuth() *fakeAuth {
	return &fakeAuth{
		devices: map[string]*tether.Device{
			deviceID: {TenantID: "default", ID: deviceID},
			otherID:  {TenantID: "default", ID: otherID},
		},
		tokens: map[string]string{deviceID: token, otherID: other},
		psks:   map[string][]byte{deviceID: []byte(pskKey)},
	}
}

func (a *fakeAuth) AuthenticateDevice(_ context.Context, id, tok string) (*tether.Device, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return nil, a.err
	}
	tid, _, _ := strings.Cut(tok, ".")
	if want, ok := a.tokens[tid]; !ok || want != tok || (id != "" && id != tid) {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "the device ID or token is wrong")
	}
	return a.devices[tid], nil
}

func (a *fakeAuth) DevicePSK(_ context.Context, id string) (*tether.Device, []byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return nil, nil, a.err
	}
	key, ok := a.psks[id]
	if !ok {
		return nil, nil, tether.Errorf(tether.EUNAUTHORIZED, "unknown device or no key")
	}
	return a.devices[id], key, nil
}

// fakeIngest decodes payloads with the real decoder and records the
// accepted ones.
type fakeIngest struct {
	limits telemetry.Limits

	mu       sync.Mutex
	accepted []acceptedMsg
	busErr   error
	deny     time.Duration // Allow says no, with this retry-after, when > 0
	allowed  int
	// hold, when set, makes Accept signal entered and wait for release.
	hold     bool
	entered  chan struct{}
	release  chan struct{}
	returned chan struct{}
}

type acceptedMsg struct {
	device  string
	payload string
}

func newFakeIngest() *fakeIngest {
	return &fakeIngest{
		entered:  make(chan struct{}, 16),
		release:  make(chan struct{}),
		returned: make(chan struct{}, 16),
	}
}

func (f *fakeIngest) Limits() telemetry.Limits { return f.limits }

func (f *fakeIngest) Allow(*tether.Device) (bool, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allowed++
	if f.deny > 0 {
		return false, f.deny
	}
	return true, 0
}

func (f *fakeIngest) AcceptCBOR(ctx context.Context, d *tether.Device, payload []byte) (int, error) {
	js, err := telemetry.CBORToJSON(payload, f.limits)
	if err != nil {
		return 0, err
	}
	return f.Accept(ctx, d, js)
}

func (f *fakeIngest) Accept(ctx context.Context, d *tether.Device, payload []byte) (int, error) {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold {
		f.entered <- struct{}{}
		select {
		case <-f.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		defer func() { f.returned <- struct{}{} }()
	}
	pts, err := telemetry.Decode(payload, time.Now(), f.limits)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busErr != nil {
		return 0, f.busErr
	}
	f.accepted = append(f.accepted, acceptedMsg{d.ID, string(payload)})
	return len(pts), nil
}

func (f *fakeIngest) got() []acceptedMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]acceptedMsg(nil), f.accepted...)
}

// fakeLatest serves latest values set by the test.
type fakeLatest struct {
	mu     sync.Mutex
	values map[string][]tether.Latest
}

func (l *fakeLatest) Latest(_ context.Context, _, id string) ([]tether.Latest, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.values[id], nil
}

func (l *fakeLatest) set(id string, v ...tether.Latest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.values == nil {
		l.values = map[string][]tether.Latest{}
	}
	l.values[id] = v
}

// env is a running gateway with its fakes.
type env struct {
	g      *coap.Gateway
	auth   *fakeAuth
	in     *fakeIngest
	latest *fakeLatest
	logs   *testkit.Buffer
	// ingestor, when set, is the gateway's Ingestor instead of in.
	ingestor coap.Ingestor
	// before runs between New and Serve.
	before func(*coap.Gateway)
	// cert is Options.Certificate.
	cert func() (*tls.Certificate, error)
	// shadows, commands and presence are the optional services; start
	// sets them all unless a setup function sets noServices.
	shadows    *fakeShadows
	commands   *fakeCommands
	presence   *fakePresence
	noServices bool
}

// start runs a gateway with plain CoAP and DTLS on 127.0.0.1.
func start(t *testing.T, setup ...func(*env)) *env {
	t.Helper()
	e := &env{
		auth: newFakeAuth(), in: newFakeIngest(), latest: &fakeLatest{}, logs: &testkit.Buffer{},
		shadows: newFakeShadows(), commands: newFakeCommands(), presence: &fakePresence{},
	}
	for _, s := range setup {
		s(e)
	}
	var in coap.Ingestor = e.in
	if e.ingestor != nil {
		in = e.ingestor
	}
	o := coap.Options{
		Addr:        "127.0.0.1:0",
		DTLSAddr:    "127.0.0.1:0",
		Certificate: e.cert,
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if !e.noServices {
		o.Shadows, o.Commands, o.Presence = e.shadows, e.commands, e.presence
	}
	g, err := coap.New(e.auth, in, e.latest, o)
	if err != nil {
		t.Fatalf("coap.New: %v", err)
	}
	e.commands.setTransport(g)
	if e.before != nil {
		e.before(g)
	}
	if err := g.Serve(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	e.g = g
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func query(q string) message.Option { return message.Option{ID: message.URIQuery, Value: []byte(q)} }

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawClient speaks CoAP over a bare UDP socket, to see exactly which
// datagrams the gateway sends.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
	mid  uint16
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, conn: c, mid: 1000}
}

// send sends m, giving it the next message ID unless it has one, and
// returns that ID.
func (c *rawClient) send(m message.Message) int32 {
	c.t.Helper()
	if m.MessageID == 0 {
		c.mid++
		m.MessageID = int32(c.mid)
	}
	buf := make([]byte, 64<<10)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		c.t.Fatalf("encode: %v", err)
	}
	if _, err := c.conn.Write(buf[:n]); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	return m.MessageID
}

// recv returns the next datagram, or false when none comes within d.
func (c *rawClient) recv(d time.Duration) (message.Message, bool) {
	c.t.Helper()
	buf := make([]byte, 64<<10)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return message.Message{}, false
		}
		c.t.Fatalf("read: %v", err)
	}
	m := message.Message{Options: make(message.Options, 0, 32)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		c.t.Fatalf("decode: %v", err)
	}
	return m, true
}

// must returns the next datagram, failing the test when none comes.
func (c *rawClient) must(d time.Duration) message.Message {
	c.t.Helper()
	m, ok := c.recv(d)
	if !ok {
		c.t.Fatalf("no datagram within %v", d)
	}
	return m
}

func compactJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
