package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/testkit"
)

// This file holds the end-to-end tests of live streams (issue 6): a real
// node, devices over MQTT, and WebSocket and SSE clients over real
// sockets.

// liveMessage is any message of a live stream.
type liveMessage struct {
	Type    string          `json:"type"`
	Kind    string          `json:"kind"`
	Device  string          `json:"device"`
	Time    time.Time       `json:"time"`
	Data    json.RawMessage `json:"data"`
	Dropped uint64          `json:"dropped"`
	Message string          `json:"message"`
}

// livePoints is the data of a telemetry event.
type livePoints struct {
	Points []struct {
		Key   string    `json:"key"`
		TS    time.Time `json:"ts"`
		Value any       `json:"value"`
	} `json:"points"`
}

// liveDial opens a WebSocket stream with the admin key and reads its
// ready message. rcvbuf, if not 0, shrinks the client's socket receive
// buffer, so that a client that stops reading backs up sooner.
func liveDial(t *testing.T, n *node, query string, rcvbuf int) *websocket.Conn {
	t.Helper()
	dialer := &net.Dialer{}
	if rcvbuf > 0 {
		dialer.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			if err != nil {
				return err
			}
			return serr
		}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+n.HTTP.Addr()+"/api/v1/stream?"+query, &websocket.DialOptions{
		HTTPClient: client, HTTPHeader: http.Header{"Authorization": {"Bearer " + adminKey}}})
	if err != nil {
		t.Fatalf("dial stream ?%s: %v (%v)", query, err, resp)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	if m := liveRead(t, c); m.Type != "ready" {
		t.Fatalf("first message %+v, want ready", m)
	}
	return c
}

func liveRead(t *testing.T, c *websocket.Conn) liveMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	var m liveMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return m
}

// liveTelemetry reads until the next telemetry event and returns it with
// its points.
func liveTelemetry(t *testing.T, c *websocket.Conn) (liveMessage, livePoints) {
	t.Helper()
	for {
		m := liveRead(t, c)
		if m.Type == "event" && m.Kind == "telemetry" {
			var p livePoints
			if err := json.Unmarshal(m.Data, &p); err != nil {
				t.Fatalf("telemetry data %s: %v", m.Data, err)
			}
			return m, p
		}
	}
}

// createLabelledDevice registers a device with labels and a profile.
func (n *node) createLabelledDevice(id, profile string, labels map[string]string) string {
	n.t.Helper()
	var out createdDevice
	status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]any{"id": id, "labels": labels, "profile": profile}, &out)
	if status != http.StatusCreated {
		n.t.Fatalf("create device: %d %s", status, raw)
	}
	return out.Token
}

func TestLiveStreamsDeliverTelemetryAndPresence(t *testing.T) {
	n := startNode(t, nil)
	for _, p := range []string{"thermostat", "fridge"} {
		if status, _, raw := n.api("POST", "/api/v1/profiles", "", map[string]any{"id": p, "name": p}, nil); status != http.StatusCreated {
			t.Fatalf("create profile: %d %s", status, raw)
		}
	}
	northToken := n.createLabelledDevice("north-1", "thermostat", map[string]string{"site": "north"})
	southToken := n.createLabelledDevice("south-1", "fridge", map[string]string{"site": "south"})

	presence := liveDial(t, n, "kinds=presence&devices=north-1", 0)
	clients := map[string]*websocket.Conn{
		"devices=north-1":    liveDial(t, n, "kinds=telemetry&devices=north-1", 0),
		"labels=site=north":  liveDial(t, n, "kinds=telemetry&labels=site=north", 0),
		"profile=thermostat": liveDial(t, n, "kinds=telemetry&profile=thermostat", 0),
	}
	everything := liveDial(t, n, "", 0)

	north, err := connect3(t, n.MQTT.Addr(), "north-1", northToken)
	if err != nil {
		t.Fatal(err)
	}
	south, err := connect3(t, n.MQTT.Addr(), "south-1", southToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a device that connects is announced online", func(t *testing.T) {
		m := liveRead(t, presence)
		var p struct {
			DeviceID string `json:"device_id"`
			Status   string `json:"status"`
		}
		_ = json.Unmarshal(m.Data, &p)
		if m.Type != "event" || m.Kind != "presence" || m.Device != "north-1" || p.DeviceID != "north-1" || p.Status != "online" {
			t.Errorf("got %+v (%+v), want north-1 online", m, p)
		}
	})

	publish := func(c paho3.Client, device, payload string) {
		t.Helper()
		tok := c.Publish("devices/"+device+"/telemetry", 1, false, payload)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", device, tok.Error())
		}
	}
	// South publishes first: a filter that let it through would show it
	// before north's.
	publish(south, "south-1", `{"temp": 4.5}`)
	publish(north, "north-1", `{"temp": 21.5, "on": true, "mode": "eco"}`)

	for name, c := range clients {
		t.Run("a stream filtered by "+name+" gets north's telemetry only", func(t *testing.T) {
			m, p := liveTelemetry(t, c)
			if m.Device != "north-1" || len(p.Points) != 3 || p.Points[0].Key != "temp" || p.Points[0].Value != 21.5 ||
				p.Points[1].Value != true || p.Points[2].Value != "eco" || time.Since(p.Points[0].TS) > time.Minute {
				t.Errorf("got %+v %s", m, m.Data)
			}
		})
	}
	t.Run("an unfiltered stream gets both devices' telemetry, in order", func(t *testing.T) {
		if m, _ := liveTelemetry(t, everything); m.Device != "south-1" {
			t.Errorf("first telemetry of %s", m.Device)
		}
		if m, _ := liveTelemetry(t, everything); m.Device != "north-1" {
			t.Errorf("second telemetry of %s", m.Device)
		}
	})

	t.Run("SSE delivers the same events to a plain HTTP client", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.HTTP.Addr()+"/api/v1/stream/sse?kinds=telemetry&devices=north-1", nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		lines := bufio.NewScanner(resp.Body)
		waitLine(t, lines, "event: ready")
		publish(north, "north-1", `{"temp": 22.5}`)
		waitLine(t, lines, "event: event")
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), `data: {"type":"event","kind":"telemetry","device":"north-1"`) ||
			!strings.Contains(lines.Text(), `"key":"temp"`) || !strings.Contains(lines.Text(), `"value":22.5`) {
			t.Errorf("data line %q", lines.Text())
		}
	})

	t.Run("curl -N shows SSE as it comes", func(t *testing.T) {
		bin := testkit.Tool(t, "curl", "curl")
		cmd := exec.Command(bin, "-sS", "-N", "--max-time", "30", "-H", "Authorization: Bearer "+adminKey,
			"http://"+n.HTTP.Addr()+"/api/v1/stream/sse?devices=north-1&kinds=telemetry")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}()
		lines := bufio.NewScanner(out)
		waitLine(t, lines, "event: ready")
		publish(north, "north-1", `{"temp": 23.5}`)
		waitLine(t, lines, "event: event")
		if !lines.Scan() || !strings.Contains(lines.Text(), `"value":23.5`) {
			t.Errorf("data line %q", lines.Text())
		}
	})

	t.Run("streams refuse callers without a valid key", func(t *testing.T) {
		for _, path := range []string{"/api/v1/stream", "/api/v1/stream/sse"} {
			for _, key := range []string{"-", "not-a-key"} {
				status, h, raw := n.api("GET", path, key, nil, nil)
				if status != http.StatusUnauthorized || h.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(raw), `"code":"unauthorized"`) {
					t.Errorf("GET %s with key %q: %d %s", path, key, status, raw)
				}
			}
		}
		if status, _, raw := n.api("GET", "/api/v1/stream?kinds=nope", "", nil, nil); status != http.StatusBadRequest {
			t.Errorf("an unknown kind: %d %s", status, raw)
		}
	})
}

// waitLine reads lines until one equals want.
func waitLine(t *testing.T, lines *bufio.Scanner, want string) {
	t.Helper()
	found := make(chan bool, 1)
	go func() {
		for lines.Scan() {
			if lines.Text() == want {
				found <- true
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("the stream ended before %q: %v", want, lines.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10s", want)
	}
}

// TestASlowWebSocketConsumerDoesNotSlowIngest is the backpressure test: a
// stream client that reads nothing while a device publishes. Every
// publish is still acknowledged and stored; the client, once it reads,
// is told it lost events.
func TestASlowWebSocketConsumerDoesNotSlowIngest(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.DevicePublishRate = 1 << 20 })
	id, token := n.createDevice("busy-1")
	slow := liveDial(t, n, "kinds=telemetry", 4096)
	dev, err := connect3(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatal(err)
	}
	// About 1 KiB a message: a few thousand fill the sockets' buffers
	// and the client's queue.
	var payload strings.Builder
	payload.WriteString(`{"seq":%d`)
	for k := range 40 {
		fmt.Fprintf(&payload, `,"value_with_a_long_name_%02d":%d.25`, k, k)
	}
	payload.WriteString("}")

	// Publish, 32 messages in flight, until the node reports events
	// dropped for the stuck client, then two windows more: ingest goes on
	// while the client lags. The client must read again before the write
	// timeout (10 s) disconnects it, so the messages go out quickly.
	const limit, window = 50000, 32
	sent, extra := 0, -1
	var slowest time.Duration
	for sent < limit && extra != 0 {
		start := time.Now()
		toks := make([]paho3.Token, window)
		for i := range toks {
			toks[i] = dev.Publish("devices/"+id+"/telemetry", 1, false, fmt.Sprintf(payload.String(), sent+i))
		}
		for i, tok := range toks {
			// Generous: a PUBACK takes about a millisecond; one held up
			// by the stuck client would never come.
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: no PUBACK within 10s (%v) with a stuck stream client", sent+i, tok.Error())
			}
		}
		sent += window
		slowest = max(slowest, time.Since(start))
		switch {
		case extra > 0:
			extra--
		case extra < 0 && n.Stream.Stats().Dropped > 0:
			extra = 2
		}
	}
	if extra != 0 {
		t.Fatalf("%d messages published and no event dropped for a client that reads nothing: %+v", sent, n.Stream.Stats())
	}
	t.Logf("%d messages, slowest window of %d PUBACKs %s, stream %+v", sent, window, slowest, n.Stream.Stats())

	t.Run("the slow client, once it reads, is told it lagged", func(t *testing.T) {
		for {
			m := liveRead(t, slow)
			if m.Type == "lagging" {
				if m.Dropped == 0 || m.Message != "lagging, events dropped" {
					t.Errorf("lagging message %+v", m)
				}
				break
			}
			if m.Type != "event" {
				t.Fatalf("message %+v", m)
			}
		}
	})
	t.Run("every point is stored", func(t *testing.T) {
		n.waitStored(uint64(sent * 41))
		q := "keys=seq&agg=count&bucket=24h&from=" + time.Now().Add(-24*time.Hour).UTC().Format(time.RFC3339) +
			"&to=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		var count float64
		for _, s := range n.telemetry(id, q)["seq"].Samples {
			v, _ := s.Value.(float64)
			count += v
		}
		if int(count) != sent {
			t.Errorf("%v seq points stored, %d published", count, sent)
		}
	})
}
