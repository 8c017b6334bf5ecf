package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-iot/tether"
	main "github.com/tether-iot/tether/cmd/tether"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/testkit"
)

// adminKey is the bootstrap admin key of every test node.
const adminKey = "test-admin-key-0123456789abcdef0123456789"

// node is a Tether node running in-process on random ports.
type node struct {
	*main.Main
	t    testing.TB
	logs *testkit.Buffer
}

// startNode runs a node with a temp data dir; edit may change the config.
func startNode(t testing.TB, edit func(*config.Config)) *node {
	t.Helper()
	return startNodeWith(t, edit, nil)
}

// startNodeWith is startNode with a writer observer.
func startNodeWith(t testing.TB, edit func(*config.Config), observe func([]tether.Message, time.Time)) *node {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.MQTTAddr = "127.0.0.1:0", "127.0.0.1:0"
	// Every other listener is on a free port too; the TLS ones start only
	// with a certificate.
	cfg.MQTTWSAddr, cfg.MQTTSAddr, cfg.MQTTWSSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.HTTPSAddr, cfg.CoAPAddr, cfg.CoAPSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.WriterMaxDelay = 5 * time.Millisecond
	cfg.LogLevel = "debug"
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	m := main.NewMain(cfg, adminKey, logs)
	m.Observe = observe
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("start node: %v\n%s", err, logs)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
		if t.Failed() {
			t.Logf("node log:\n%s", logs)
		}
	})
	return &node{Main: m, t: t, logs: logs}
}

// api calls the REST API with key (adminKey if empty) and decodes a JSON
// answer into out (if not nil). It returns the status and the raw body.
func (n *node) api(method, path, key string, body any, out any) (int, http.Header, []byte) {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			n.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.HTTP.Addr()+path, rd)
	if err != nil {
		n.t.Fatal(err)
	}
	if key == "" {
		key = adminKey
	}
	if key != "-" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, resp.Header, raw
}

type createdDevice struct {
	Device struct {
		ID     string            `json:"id"`
		Labels map[string]string `json:"labels"`
	} `json:"device"`
	Token string `json:"token"`
}

// createDevice registers a device over REST and returns its id and token.
func (n *node) createDevice(id string) (string, string) {
	n.t.Helper()
	var out createdDevice
	status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]any{"id": id, "name": "test " + id}, &out)
	if status != http.StatusCreated {
		n.t.Fatalf("create device: %d %s", status, raw)
	}
	return out.Device.ID, out.Token
}

type series struct {
	Key     string `json:"key"`
	Samples []struct {
		TS    time.Time `json:"ts"`
		Value any       `json:"value"`
	} `json:"samples"`
}

// telemetry queries a device's telemetry with the query string q.
func (n *node) telemetry(device, q string) map[string]series {
	n.t.Helper()
	var out struct {
		Series []series `json:"series"`
	}
	status, _, raw := n.api("GET", "/api/v1/devices/"+device+"/telemetry?"+q, "", nil, &out)
	if status != http.StatusOK {
		n.t.Fatalf("telemetry: %d %s", status, raw)
	}
	m := map[string]series{}
	for _, s := range out.Series {
		m[s.Key] = s
	}
	return m
}

// waitStored waits until the node's writer has stored at least n points.
func (n *node) waitStored(points uint64) {
	n.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.Writer.Stored() < points {
		if time.Now().After(deadline) {
			n.t.Fatalf("stored %d points, want %d", n.Writer.Stored(), points)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connect3 connects an MQTT 3.1.1 client (paho.mqtt.golang).
func connect3(t testing.TB, addr, user, pass string) (paho3.Client, error) {
	t.Helper()
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second)
	c := paho3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// client5 is an MQTT 5 client (paho.golang) with the messages it received.
type client5 struct {
	*paho.Client
	mu       sync.Mutex
	received []*paho.Publish
	arrived  chan struct{}
}

func (c *client5) messages() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.received...)
}

// waitMessages waits until the client has received n messages.
func (c *client5) waitMessages(t *testing.T, n int) []*paho.Publish {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if m := c.messages(); len(m) >= n {
			return m
		}
		select {
		case <-c.arrived:
		case <-deadline:
			t.Fatalf("received %d messages, want %d", len(c.messages()), n)
		}
	}
}

// connect5 connects an MQTT 5 client; it returns the CONNACK even when the
// connection is refused.
func connect5(t *testing.T, addr, user, pass string) (*client5, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client5{arrived: make(chan struct{}, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.received = append(c.received, pr.Packet)
			c.mu.Unlock()
			select {
			case c.arrived <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: fmt.Sprintf("%s-%d", user, time.Now().UnixNano()), KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		return nil, ca, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c, ca, nil
}

// publish5 publishes with MQTT 5 and returns the PUBACK's reason code
// (0 for QoS 0) and reason string.
func publish5(t *testing.T, c *client5, topic string, qos byte, payload string) (byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if resp != nil {
		reason := ""
		if resp.Properties != nil {
			reason = resp.Properties.ReasonString
		}
		return resp.ReasonCode, reason
	}
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return 0, ""
}

func countLines(s, substr string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// doJSON sends req and decodes a 2xx JSON answer into out.
func doJSON(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}
