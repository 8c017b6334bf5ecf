package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
	"github.com/tether-iot/tether/internal/testkit"
)

// fakeAuth knows devices by ID, each with a token, and trusts client
// certificates issued by the test CA to the device named in their common
// name.
type fakeAuth struct {
	mu      sync.Mutex
	devices map[string]*tether.Device
	tokens  map[string]string
	roots   *x509.CertPool
}

func newFakeAuth(p *testPKI) *fakeAuth {
	a := &fakeAuth{devices: map[string]*tether.Device{}, tokens: map[string]string{}, roots: x509.NewCertPool()}
	a.roots.AddCert(p.ca)
	for _, id := range []string{"d1", "d2"} {
		a.add(id, time.Unix(1700000000, 0))
	}
	return a
}

// add registers (or re-creates) a device; its token is "<id>.secret".
func (a *fakeAuth) add(id string, created time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.devices[id] = &tether.Device{TenantID: "t1", ID: id, CreatedAt: created}
	a.tokens[id] = id + ".secret"
}

func (a *fakeAuth) AuthenticateDevice(_ context.Context, deviceID, token string) (*tether.Device, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.devices[deviceID]
	if d == nil || a.tokens[deviceID] != token {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "unknown device or wrong token")
	}
	c := *d
	return &c, nil
}

func (a *fakeAuth) AuthenticateCertificate(_ context.Context, chain []*x509.Certificate) (*tether.Device, error) {
	if len(chain) == 0 {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: a.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "bad certificate")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.devices[chain[0].Subject.CommonName]
	if d == nil {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "bad certificate")
	}
	c := *d
	return &c, nil
}

// fakeIngest accepts telemetry (see Accept) and gives each device a
// budget of publishes (unlimited when budget is negative).
type fakeIngest struct {
	mu       sync.Mutex
	accepted [][]byte
	budget   int
	allowed  map[string]int
	calls    atomic.Int64
	refused  atomic.Int64
}

func newFakeIngest() *fakeIngest { return &fakeIngest{budget: -1, allowed: map[string]int{}} }

// Accept takes every payload except "bad", which the decoder refuses,
// and "unstorable", which the bus does not take.
func (f *fakeIngest) Accept(_ context.Context, _ *tether.Device, payload []byte) (int, error) {
	switch string(payload) {
	case "bad":
		return 0, &telemetry.Error{Reason: "invalid_json", Message: "the payload is not a JSON object"}
	case "unstorable":
		return 0, errors.New("bus unavailable")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accepted = append(f.accepted, payload)
	return 1, nil
}

func (f *fakeIngest) Limits() telemetry.Limits { return telemetry.DefaultLimits() }

func (f *fakeIngest) Allow(d *tether.Device) (bool, time.Duration) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.budget >= 0 && f.allowed[d.ID] >= f.budget {
		f.refused.Add(1)
		return false, 250 * time.Millisecond
	}
	f.allowed[d.ID]++
	return true, 0
}

// Throttle is Allow without a wait: the fake's budget does not refill.
func (f *fakeIngest) Throttle(_ context.Context, d *tether.Device, _ time.Duration) bool {
	ok, _ := f.Allow(d)
	return ok
}

func (f *fakeIngest) setBudget(n int) {
	f.mu.Lock()
	f.budget = n
	f.mu.Unlock()
}

func (f *fakeIngest) acceptedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.accepted)
}

// testPKI is a CA with a server certificate for 127.0.0.1 and client
// certificates for the devices d1 and d2, plus a certificate for d1 from
// a CA nobody trusts.
type testPKI struct {
	ca                *x509.Certificate
	caPEM             []byte
	server            tls.Certificate
	d1, d2, untrusted tls.Certificate
	d1PEM, d1KeyPEM   []byte
}

var pki = sync.OnceValue(func() *testPKI {
	p := &testPKI{}
	caKey, caCert, caPEM := newCA("Tether test CA")
	p.ca, p.caPEM = caCert, caPEM
	p.server, _, _ = issue(caCert, caKey, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	p.d1, p.d1PEM, p.d1KeyPEM = issue(caCert, caKey, "d1", x509.ExtKeyUsageClientAuth)
	p.d2, _, _ = issue(caCert, caKey, "d2", x509.ExtKeyUsageClientAuth)
	rogueKey, rogueCert, _ := newCA("someone else's CA")
	p.untrusted, _, _ = issue(rogueCert, rogueKey, "d1", x509.ExtKeyUsageClientAuth)
	return p
})

func newCA(name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

var serial atomic.Int64

// issue returns a certificate for name (an IP address becomes an IP SAN)
// with its PEM encodings.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		panic(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		panic(err)
	}
	return c, certPEM, keyPEM
}

// clientTLS trusts the test CA and presents cert, if any.
func (p *testPKI) clientTLS(cert *tls.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	c := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// writeFiles writes the CA and d1's certificate and key for command-line
// clients.
func (p *testPKI) writeFiles(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "d1.pem"), filepath.Join(dir, "d1.key")
	for f, b := range map[string][]byte{ca: p.caPEM, cert: p.d1PEM, key: p.d1KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// testGateway is a gateway on all four listeners of 127.0.0.1, with fakes
// behind it.
type testGateway struct {
	*Gateway
	auth *fakeAuth
	in   *fakeIngest
	opts Options
	log  *testkit.Buffer
}

// startGateway starts a gateway; change adjusts its options (all four
// listeners, a 10 s connect timeout and no limits by default).
func startGateway(t *testing.T, change func(*Options)) *testGateway {
	t.Helper()
	p := pki()
	tg := &testGateway{auth: newFakeAuth(p), in: newFakeIngest(), log: &testkit.Buffer{}}
	tg.opts = Options{
		Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", WSSAddr: "127.0.0.1:0",
		TLS:    &tls.Config{Certificates: []tls.Certificate{p.server}},
		Logger: slog.New(slog.NewTextHandler(tg.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if change != nil {
		change(&tg.opts)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", tg.log.String())
		}
	})
	tg.start(t)
	return tg
}

func (tg *testGateway) start(t *testing.T) {
	t.Helper()
	g, err := New(tg.auth, tg.in, tg.opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := g.Serve(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	tg.Gateway = g
	t.Cleanup(func() { tg.stop(t) })
}

func (tg *testGateway) stop(t *testing.T) {
	t.Helper()
	if tg.Gateway == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tg.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	tg.Gateway = nil
}

// restart closes the gateway and starts a new one on the same store.
func (tg *testGateway) restart(t *testing.T) {
	t.Helper()
	tg.stop(t)
	tg.start(t)
}

// transports are the gateway's four listeners, by the URL scheme paho
// uses for them.
var transports = []string{"tcp", "ssl", "ws", "wss"}

func (tg *testGateway) url(transport string) string {
	switch transport {
	case "tcp":
		return "tcp://" + tg.Addr()
	case "ssl":
		return "ssl://" + tg.TLSAddr()
	case "ws":
		return "ws://" + tg.WSAddr() + wsPath
	case "wss":
		return "wss://" + tg.WSSAddr() + wsPath
	}
	panic(transport)
}

// creds are what a test client presents.
type creds struct {
	user, pass string
	cert       *tls.Certificate
}

func token(id string) creds { return creds{user: id, pass: id + ".secret"} }

// client3 is an MQTT 3.1.1 client (paho.mqtt.golang) that records what it
// receives.
type client3 struct {
	paho3.Client
	msgs    chan paho3.Message
	present bool // the CONNACK's session present flag
}

type opts3 struct {
	id        string
	keepAlive time.Duration // 0: 30 s; negative: none
	persist   bool          // clean session false
}

// connect3 connects an MQTT 3.1.1 client; on a refusal it returns the
// CONNACK return code with the error.
func (tg *testGateway) connect3(t *testing.T, transport string, c creds, o opts3) (*client3, byte, error) {
	t.Helper()
	msgs := make(chan paho3.Message, 100)
	po := paho3.NewClientOptions().AddBroker(tg.url(transport)).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetCleanSession(!o.persist).SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) { msgs <- m })
	if o.id == "" {
		o.id = fmt.Sprintf("c3-%d", serial.Add(1))
	}
	po.SetClientID(o.id)
	switch {
	case o.keepAlive == 0:
		o.keepAlive = 30 * time.Second
	case o.keepAlive < 0:
		o.keepAlive = 0 // no keep-alive
	}
	po.SetKeepAlive(o.keepAlive)
	po.SetUsername(c.user)
	po.SetPassword(c.pass)
	if transport == "ssl" || transport == "wss" {
		po.SetTLSConfig(pki().clientTLS(c.cert))
	}
	cl := paho3.NewClient(po)
	tok := cl.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, 0, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, tok.(*paho3.ConnectToken).ReturnCode(), err
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	return &client3{Client: cl, msgs: msgs, present: tok.(*paho3.ConnectToken).SessionPresent()}, 0, nil
}

// mustConnect3 connects or fails the test.
func (tg *testGateway) mustConnect3(t *testing.T, transport string, c creds, o opts3) *client3 {
	t.Helper()
	cl, code, err := tg.connect3(t, transport, c, o)
	if err != nil {
		t.Fatalf("3.1.1 connect over %s: %v (return code %d)", transport, err, code)
	}
	return cl
}

func (c *client3) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	// paho keys the result by the filter without a $share/<group>/ prefix.
	for _, code := range tok.(*paho3.SubscribeToken).Result() {
		return code
	}
	t.Fatalf("subscribe %s: no result", filter)
	return 0
}

func (c *client3) publish(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// client5 is an MQTT 5.0 client (paho.golang) that records what it
// receives.
type client5 struct {
	*paho5.Client
	connack *paho5.Connack
	msgs    chan *paho5.Publish
	gone    chan *paho5.Disconnect // the server's DISCONNECT
}

type opts5 struct {
	id         string
	keepAlive  uint16
	expiry     uint32 // session expiry interval
	cleanStart *bool  // default true
}

// dial opens a network connection to one of the gateway's listeners.
func (tg *testGateway) dial(t *testing.T, transport string, cert *tls.Certificate) (net.Conn, error) {
	t.Helper()
	switch transport {
	case "tcp":
		return net.DialTimeout("tcp", tg.Addr(), 5*time.Second)
	case "ssl":
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tg.TLSAddr(), pki().clientTLS(cert))
	case "ws", "wss":
		d := &websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second, TLSClientConfig: pki().clientTLS(cert)}
		c, _, err := d.Dial(tg.url(transport), nil)
		if err != nil {
			return nil, err
		}
		return &wsConn{Conn: c.NetConn(), ws: c}, nil
	}
	panic(transport)
}

// connect5 connects an MQTT 5.0 client; on a refusal it returns the
// CONNACK with the error.
func (tg *testGateway) connect5(t *testing.T, transport string, c creds, o opts5) (*client5, *paho5.Connack, error) {
	t.Helper()
	conn, err := tg.dial(t, transport, c.cert)
	if err != nil {
		return nil, nil, err
	}
	cl := &client5{msgs: make(chan *paho5.Publish, 100), gone: make(chan *paho5.Disconnect, 1)}
	cl.Client = paho5.NewClient(paho5.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho5.Disconnect) { cl.gone <- d },
		PacketTimeout:      5 * time.Second,
	})
	if o.keepAlive == 0 {
		o.keepAlive = 30
	}
	if o.id == "" {
		o.id = fmt.Sprintf("c5-%d", serial.Add(1))
	}
	cp := &paho5.Connect{
		ClientID: o.id, KeepAlive: o.keepAlive, CleanStart: o.cleanStart == nil || *o.cleanStart,
		Username: c.user, UsernameFlag: c.user != "", Password: []byte(c.pass), PasswordFlag: c.pass != "",
	}
	if o.expiry > 0 {
		cp.Properties = &paho5.ConnectProperties{SessionExpiryInterval: &o.expiry}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := cl.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	cl.connack = ca
	t.Cleanup(func() { _ = cl.Disconnect(&paho5.Disconnect{}) })
	return cl, ca, nil
}

func (tg *testGateway) mustConnect5(t *testing.T, transport string, c creds, o opts5) *client5 {
	t.Helper()
	cl, ca, err := tg.connect5(t, transport, c, o)
	if err != nil {
		var code byte
		if ca != nil {
			code = ca.ReasonCode
		}
		t.Fatalf("5.0 connect over %s: %v (reason code %#x)", transport, err, code)
	}
	return cl
}

func (c *client5) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sa.Reasons[0]
}

// publish publishes and returns the reason code of the acknowledgement
// (0 for QoS 0) and its reason string.
func (c *client5) publish(t *testing.T, topic string, qos byte, retain bool, payload string) (byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
	if pr == nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	reason := ""
	if pr.Properties != nil {
		reason = pr.Properties.ReasonString
	}
	return pr.ReasonCode, reason
}

// receive waits for a message on ch.
func receive[M any](t *testing.T, ch <-chan M, what string) M {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("no message: %s", what)
	}
	var zero M
	return zero
}

// nothing checks that ch receives nothing for a while.
func nothing[M any](t *testing.T, ch <-chan M, what string) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("%s: received %s", what, describe(m))
	case <-time.After(300 * time.Millisecond):
	}
}

// describe names a received message without reading fields the client
// may still be using.
func describe(m any) string {
	switch m := m.(type) {
	case paho3.Message:
		return fmt.Sprintf("%q on %s", m.Payload(), m.Topic())
	case *paho5.Publish:
		return fmt.Sprintf("%q on %s", m.Payload, m.Topic)
	}
	return fmt.Sprintf("a %T", m)
}

func ptr[T any](v T) *T { return &v }
