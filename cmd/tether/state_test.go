package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-iot/tether"
	main "github.com/tether-iot/tether/cmd/tether"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/testkit"
)

// This file holds the end-to-end tests of device state and control
// (issue 4): shadows, commands, presence, provisioning and quarantine,
// each through the real node with real clients on every delivery path.

// createProfile creates a profile over REST.
func (n *node) createProfile(p map[string]any) {
	n.t.Helper()
	if status, _, raw := n.api("POST", "/api/v1/profiles", "", p, nil); status != http.StatusCreated {
		n.t.Fatalf("create profile: %d %s", status, raw)
	}
}

// createDeviceWith registers a device with a profile.
func (n *node) createDeviceWith(id, profile string) (string, string) {
	n.t.Helper()
	var out createdDevice
	status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]any{"id": id, "profile": profile}, &out)
	if status != http.StatusCreated {
		n.t.Fatalf("create device: %d %s", status, raw)
	}
	return out.Device.ID, out.Token
}

// command reads a command over REST.
func (n *node) command(device, id string) tether.Command {
	n.t.Helper()
	var c tether.Command
	if status, _, raw := n.api("GET", "/api/v1/devices/"+device+"/commands/"+id, "", nil, &c); status != http.StatusOK {
		n.t.Fatalf("get command: %d %s", status, raw)
	}
	return c
}

// send sends a command over REST and returns it.
func (n *node) send(device string, body map[string]any, query string) (int, tether.Command, []byte) {
	n.t.Helper()
	var c tether.Command
	status, _, raw := n.api("POST", "/api/v1/devices/"+device+"/commands"+query, "", body, &c)
	return status, c, raw
}

// waitCommand waits until a command has the status.
func (n *node) waitCommand(device, id, status string) tether.Command {
	n.t.Helper()
	var c tether.Command
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c = n.command(device, id); c.Status == status {
			return c
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("command %s is %s (%s), want %s", id, c.Status, c.Reason, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// collector is a paho 3.1.1 handler that keeps what arrives, in order.
type collector struct {
	mu   sync.Mutex
	msgs []paho3.Message
	ch   chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) handle(_ paho3.Client, m paho3.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// wait returns the first message on topic that arrived, waiting for it.
func (c *collector) wait(t *testing.T, topic string) paho3.Message {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		for i, m := range c.msgs {
			if m.Topic() == topic {
				c.msgs = append(c.msgs[:i:i], c.msgs[i+1:]...)
				c.mu.Unlock()
				return m
			}
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("nothing on %s", topic)
		}
	}
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

func TestShadowsOverEveryPath(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("heater-1")
	dev := newCollector()
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "heater-1", id, token, func(o *paho3.ClientOptions) { o.SetDefaultPublishHandler(dev.handle) })
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.Subscribe("devices/"+id+"/shadow/#", 1, nil))
	base := "devices/" + id + "/shadow/"

	t.Run("an MQTT 3.1.1 device reports its state and hears accepted", func(t *testing.T) {
		wait(t, c.Publish(base+"update", 1, false, `{"state":{"reported":{"temp":21,"mode":"eco"}}}`))
		var sh tether.Shadow
		decode(t, dev.wait(t, base+"update/accepted").Payload(), &sh)
		if sh.Version != 1 || sh.State.Reported["temp"] != 21.0 {
			t.Errorf("shadow = %+v", sh)
		}
	})
	t.Run("an app sets desired over REST and the device hears the delta", func(t *testing.T) {
		var sh tether.Shadow
		status, _, raw := n.api("PATCH", "/api/v1/devices/"+id+"/shadow", "", map[string]any{"state": map[string]any{"desired": map[string]any{"temp": 19}}, "version": 1}, &sh)
		if status != http.StatusOK || sh.Version != 2 || sh.State.Delta["temp"] != 19.0 {
			t.Fatalf("PATCH: %d %s", status, raw)
		}
		var delta struct {
			State   map[string]any `json:"state"`
			Version int64          `json:"version"`
		}
		decode(t, dev.wait(t, base+"delta").Payload(), &delta)
		if delta.State["temp"] != 19.0 || delta.Version != 2 {
			t.Errorf("delta = %+v", delta)
		}
	})
	t.Run("a stale version is refused with 409", func(t *testing.T) {
		status, _, raw := n.api("PATCH", "/api/v1/devices/"+id+"/shadow", "", map[string]any{"state": map[string]any{"desired": map[string]any{"temp": 30}}, "version": 1}, nil)
		if status != http.StatusConflict || !strings.Contains(string(raw), "2") {
			t.Errorf("PATCH with version 1: %d %s", status, raw)
		}
	})
	t.Run("a device may not set desired", func(t *testing.T) {
		wait(t, c.Publish(base+"update", 1, false, `{"state":{"desired":{"temp":30}}}`))
		if p := string(dev.wait(t, base+"update/rejected").Payload()); !strings.Contains(p, "forbidden") {
			t.Errorf("rejected = %s", p)
		}
	})
	t.Run("a device updates over HTTP and the delta is gone", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/v1/device/shadow", stringsReader(`{"state":{"reported":{"temp":19}}}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		var sh tether.Shadow
		if err := doJSON(req, &sh); err != nil {
			t.Fatal(err)
		}
		if len(sh.State.Delta) != 0 || sh.Version != 3 {
			t.Errorf("shadow = %+v", sh)
		}
	})
	t.Run("a device updates over CoAP", func(t *testing.T) {
		coap := coapClient(t, "coap-client-notls")
		out, err := exec.Command(coap, "-m", "post", "-t", "json", "-e", `{"state":{"reported":{"hum":40}}}`, "coap://"+n.CoAP.Addr()+"/shadow?t="+token).CombinedOutput()
		if err != nil {
			t.Fatalf("%v %s", err, out)
		}
		var sh tether.Shadow
		n.api("GET", "/api/v1/devices/"+id+"/shadow", "", nil, &sh)
		if sh.State.Reported["hum"] != 40.0 || sh.Version != 4 {
			t.Errorf("shadow = %+v", sh.State)
		}
	})
	t.Run("an MQTT 5 device gets its shadow on its response topic", func(t *testing.T) {
		c5, _, err := connect5(t, n.MQTT.Addr(), id, token)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/inbox", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c5.Publish(ctx, &paho.Publish{Topic: base + "get", QoS: 1, Properties: &paho.PublishProperties{ResponseTopic: "devices/" + id + "/inbox", CorrelationData: []byte("req-7")}}); err != nil {
			t.Fatal(err)
		}
		m := c5.waitMessages(t, 1)[0]
		var sh tether.Shadow
		decode(t, m.Payload, &sh)
		if m.Topic != "devices/"+id+"/inbox" || string(m.Properties.CorrelationData) != "req-7" || sh.Version != 4 {
			t.Errorf("got %s %q %s", m.Topic, m.Properties.CorrelationData, m.Payload)
		}
	})
}

func TestCommandsOverEveryPath(t *testing.T) {
	n := startNode(t, nil)
	reply := `{"status":"succeeded","result":{"pong":true}}`

	t.Run("an MQTT 3.1.1 device replies on the reply topic and the caller waits for it", func(t *testing.T) {
		id, token := n.createDevice("mqtt3-dev")
		c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "mqtt3-dev", id, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		wait(t, c.Subscribe("devices/"+id+"/commands/+", 1, func(c paho3.Client, m paho3.Message) {
			c.Publish(m.Topic()+"/reply", 1, false, reply)
		}))
		status, cmd, raw := n.send(id, map[string]any{"name": "ping", "params": map[string]any{"n": 1}}, "?wait=10s")
		if status != http.StatusCreated || cmd.Status != tether.CommandSucceeded || string(cmd.Result) != `{"pong":true}` {
			t.Fatalf("%d %s", status, raw)
		}
		var seen []string
		for _, h := range cmd.History {
			seen = append(seen, h.Status)
		}
		if got := strings.Join(seen, ","); got != "queued,sent,delivered,succeeded" {
			t.Errorf("history = %s", got)
		}
	})
	t.Run("an MQTT 5 device replies to the response topic with the correlation data", func(t *testing.T) {
		id, token := n.createDevice("mqtt5-dev")
		c5, _, err := connect5(t, n.MQTT.Addr(), id, token)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		status, cmd, raw := n.send(id, map[string]any{"name": "ping"}, "")
		if status != http.StatusCreated {
			t.Fatalf("%d %s", status, raw)
		}
		m := c5.waitMessages(t, 1)[0]
		if m.Properties == nil || m.Properties.ResponseTopic == "" || string(m.Properties.CorrelationData) != cmd.ID {
			t.Fatalf("command PUBLISH properties = %+v", m.Properties)
		}
		if _, err := c5.Publish(ctx, &paho.Publish{Topic: m.Properties.ResponseTopic, QoS: 1, Payload: []byte(reply),
			Properties: &paho.PublishProperties{CorrelationData: m.Properties.CorrelationData}}); err != nil {
			t.Fatal(err)
		}
		n.waitCommand(id, cmd.ID, tether.CommandSucceeded)
	})
	t.Run("a CoAP device observes its commands and replies", func(t *testing.T) {
		coap := coapClient(t, "coap-client-notls")
		id, token := n.createDevice("coap-dev")
		// libcoap's client writes to a pipe in blocks, so what it printed
		// is read once it exits; the command's status tells when the
		// notification was acknowledged.
		obs := exec.Command(coap, "-s", "3", "-m", "get", "coap://"+n.CoAP.Addr()+"/commands?t="+token)
		var out testkit.Buffer
		obs.Stdout, obs.Stderr = &out, &out
		if err := obs.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // observing (a command sent before is offered when it starts)
		_, cmd, _ := n.send(id, map[string]any{"name": "blink"}, "")
		n.waitCommand(id, cmd.ID, tether.CommandDelivered)
		_ = obs.Wait()
		if !strings.Contains(out.String(), cmd.ID) {
			t.Errorf("the observer printed no command:\n%s", out.String())
		}
		if o, err := exec.Command(coap, "-m", "post", "-t", "json", "-e", reply, "coap://"+n.CoAP.Addr()+"/commands/"+cmd.ID+"/reply?t="+token).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, o)
		}
		n.waitCommand(id, cmd.ID, tether.CommandSucceeded)
	})
	t.Run("an HTTP device long-polls and replies", func(t *testing.T) {
		id, token := n.createDevice("http-dev")
		got := make(chan []tether.Command, 1)
		go func() {
			req, _ := http.NewRequest("GET", "http://"+n.HTTP.Addr()+"/api/v1/device/commands?wait=10s", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			var cmds []tether.Command
			if err := doJSON(req, &cmds); err != nil {
				t.Error(err)
			}
			got <- cmds
		}()
		time.Sleep(200 * time.Millisecond) // the poll is waiting
		_, cmd, _ := n.send(id, map[string]any{"name": "reboot"}, "")
		cmds := <-got
		if len(cmds) != 1 || cmds[0].ID != cmd.ID {
			t.Fatalf("polled %+v", cmds)
		}
		req, _ := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/v1/device/commands/"+cmd.ID+"/reply", stringsReader(reply))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		var done tether.Command
		if err := doJSON(req, &done); err != nil {
			t.Fatal(err)
		}
		n.waitCommand(id, cmd.ID, tether.CommandSucceeded)
	})
}

func TestAnOfflineDeviceGetsItsQueuedCommandsInOrder(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("boat-1")
	var ids []string
	for i := range 5 {
		status, cmd, raw := n.send(id, map[string]any{"name": "step", "params": map[string]any{"i": i}, "one_way": true}, "")
		if status != http.StatusCreated || cmd.Status != tether.CommandQueued {
			t.Fatalf("%d %s", status, raw)
		}
		ids = append(ids, cmd.ID)
	}
	got := make(chan string, 10)
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "boat-1", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.Subscribe("devices/"+id+"/commands/+", 1, func(_ paho3.Client, m paho3.Message) {
		got <- m.Topic()[strings.LastIndexByte(m.Topic(), '/')+1:]
	}))
	for i, want := range ids {
		select {
		case cid := <-got:
			if cid != want {
				t.Fatalf("command %d is %s, want %s", i, cid, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d commands arrived", i, len(ids))
		}
	}
	for _, cid := range ids {
		n.waitCommand(id, cid, tether.CommandSucceeded) // one-way: delivered is success
	}
	select {
	case cid := <-got:
		t.Errorf("command %s arrived twice", cid)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestACommandStormLetsExactlyTheLimitThrough(t *testing.T) {
	n := startNode(t, nil)
	n.createProfile(map[string]any{"id": "fridge", "name": "Smart fridge", "commands": map[string]any{
		"order_pizza": map[string]any{"rate_limit": map[string]any{"count": 2, "per": "1h"},
			"params": json.RawMessage(`{"type":"object","properties":{"size":{"enum":["s","m","l"]}},"required":["size"]}`)},
	}})
	id, _ := n.createDeviceWith("fridge-1", "fridge")
	const calls, workers = 2000, 32
	var created, refused atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < calls; i += workers {
				status, _, raw := n.api("POST", "/api/v1/devices/"+id+"/commands", "", map[string]any{"name": "order_pizza", "params": map[string]any{"size": "l"}}, nil)
				switch status {
				case http.StatusCreated:
					created.Add(1)
				case http.StatusTooManyRequests:
					refused.Add(1)
				default:
					t.Errorf("call %d: %d %s", i, status, raw)
					return
				}
			}
		}()
	}
	wg.Wait()
	if created.Load() != 2 || refused.Load() != calls-2 {
		t.Errorf("%d created, %d refused; want 2 and %d", created.Load(), refused.Load(), calls-2)
	}
	t.Run("each refusal is a rejected command with the reason", func(t *testing.T) {
		var list struct{ Commands []tether.Command }
		n.api("GET", "/api/v1/devices/"+id+"/commands?status=rejected&limit=5", "", nil, &list)
		if len(list.Commands) == 0 || !strings.Contains(list.Commands[0].Reason, "rate") {
			t.Errorf("rejected = %+v", list)
		}
	})
	t.Run("bad parameters are refused by the profile's schema", func(t *testing.T) {
		status, _, raw := n.api("POST", "/api/v1/devices/"+id+"/commands", "", map[string]any{"name": "order_pizza", "params": map[string]any{"size": "xxl"}}, nil)
		if status != http.StatusUnprocessableEntity && status != http.StatusBadRequest || !strings.Contains(string(raw), "size") {
			t.Errorf("%d %s", status, raw)
		}
	})
	t.Run("a duplicate idempotency key returns the first command", func(t *testing.T) {
		id2, _ := n.createDevice("fridge-2")
		body := map[string]any{"name": "defrost", "idempotency_key": "k-1"}
		s1, c1, _ := n.send(id2, body, "")
		s2, c2, _ := n.send(id2, body, "")
		if s1 != http.StatusCreated || s2 != http.StatusOK || c1.ID != c2.ID {
			t.Errorf("first %d %s, second %d %s", s1, c1.ID, s2, c2.ID)
		}
	})
}

func TestPresenceFollowsConnections(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("door-1")
	presence := func() tether.Presence {
		var p tether.Presence
		n.api("GET", "/api/v1/devices/"+id+"/presence", "", nil, &p)
		return p
	}
	if p := presence(); p.Status != tether.PresenceOffline || p.Reason != tether.ReasonNeverConnected {
		t.Errorf("before connecting: %+v", p)
	}
	broker := "tcp://" + n.MQTT.Addr()
	first, err := mqtt3(t, broker, "door", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "online", func() bool { return presence().Status == tether.PresenceOnline })
	seq := presence().Seq
	t.Run("a takeover's late disconnect does not make the device offline", func(t *testing.T) {
		second, err := mqtt3(t, broker, "door", id, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the first connection to close", func() bool { return !first.IsConnectionOpen() })
		time.Sleep(100 * time.Millisecond)
		if p := presence(); p.Status != tether.PresenceOnline || p.Seq <= seq {
			t.Errorf("after the takeover: %+v (first seq %d)", p, seq)
		}
		second.Disconnect(100)
		waitFor(t, "offline", func() bool { return presence().Status == tether.PresenceOffline })
		if p := presence(); p.Reason != tether.ReasonCleanDisconnect {
			t.Errorf("after a clean disconnect: %+v", p)
		}
	})
	t.Run("devices are listed by status", func(t *testing.T) {
		var page struct {
			Devices []struct {
				ID string `json:"id"`
			} `json:"devices"`
		}
		n.api("GET", "/api/v1/devices?status=offline", "", nil, &page)
		if len(page.Devices) != 1 || page.Devices[0].ID != id {
			t.Errorf("offline = %+v", page.Devices)
		}
		n.api("GET", "/api/v1/devices?status=online", "", nil, &page)
		if len(page.Devices) != 0 {
			t.Errorf("online = %+v", page.Devices)
		}
	})
}

func TestADeviceProvisionsItself(t *testing.T) {
	n := startNode(t, nil)
	n.createProfile(map[string]any{"id": "sensor", "name": "Soil sensor"})
	var key struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if status, _, raw := n.api("POST", "/api/v1/provisioning-keys", "", map[string]any{"profile": "sensor", "max_uses": 2}, &key); status != http.StatusCreated || key.Secret == "" {
		t.Fatalf("%d %s", status, raw)
	}
	t.Run("over MQTT, with the key, on $provision", func(t *testing.T) {
		got := newCollector()
		c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "soil-1", "$provision", key.Secret, func(o *paho3.ClientOptions) { o.SetDefaultPublishHandler(got.handle) })
		if err != nil {
			t.Fatal(err)
		}
		wait(t, c.Subscribe("$provision/soil-1/#", 1, nil))
		wait(t, c.Publish("$provision/soil-1", 1, false, `{"name":"Soil sensor 1","labels":{"field":"north"}}`))
		var out struct {
			Device tether.Device `json:"device"`
			Token  string        `json:"token"`
		}
		decode(t, got.wait(t, "$provision/soil-1/accepted").Payload(), &out)
		if out.Device.ID != "soil-1" || out.Device.ProfileID != "sensor" || out.Token == "" {
			t.Fatalf("accepted = %+v", out)
		}
		if _, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "soil-1", "soil-1", out.Token, nil); err != nil {
			t.Errorf("the new device cannot connect with its token: %v", err)
		}
		wait(t, c.Publish("$provision/soil-1", 1, false, `{}`))
		if p := string(got.wait(t, "$provision/soil-1/rejected").Payload()); !strings.Contains(p, "conflict") {
			t.Errorf("registering twice: %s", p)
		}
	})
	t.Run("over HTTP, until the key is used up", func(t *testing.T) {
		post := func(id string) int {
			status, _, _ := n.api("POST", "/api/v1/provision", key.Secret, map[string]any{"id": id}, nil)
			return status
		}
		if s := post("soil-2"); s != http.StatusCreated {
			t.Errorf("second use: %d", s)
		}
		if s := post("soil-3"); s != http.StatusUnauthorized {
			t.Errorf("third use of a key for two: %d", s)
		}
	})
}

func TestBulkImportIsAllOrNothing(t *testing.T) {
	n := startNode(t, nil)
	importCSV := func(body string) (int, []byte) {
		req, _ := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/v1/devices/import", stringsReader(body))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		return resp.StatusCode, []byte(b.String())
	}
	count := func() int {
		var page struct {
			Devices []any `json:"devices"`
		}
		n.api("GET", "/api/v1/devices?limit=1000", "", nil, &page)
		return len(page.Devices)
	}
	t.Run("one bad row imports nothing and is named", func(t *testing.T) {
		status, raw := importCSV("id,name,labels\npump-1,Pump 1,site=a\npump 2,Pump 2,site=a\npump-3,Pump 3,site=b\n")
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(raw), `"row":2`) {
			t.Errorf("%d %s", status, raw)
		}
		if c := count(); c != 0 {
			t.Errorf("%d devices after a refused import", c)
		}
	})
	t.Run("ten thousand rows import in one call", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("id,labels\n")
		for i := range 10000 {
			fmt.Fprintf(&b, "meter-%05d,site=s%d\n", i, i%7)
		}
		start := time.Now()
		status, raw := importCSV(b.String())
		if status != http.StatusCreated {
			t.Fatalf("%d %.300s", status, raw)
		}
		t.Logf("10,000 devices imported in %s", time.Since(start).Round(time.Millisecond))
		var out struct {
			Created int `json:"created"`
		}
		decode(t, raw, &out)
		if out.Created != 10000 {
			t.Errorf("created %d", out.Created)
		}
	})
}

func TestRogueValuesAreQuarantined(t *testing.T) {
	n := startNode(t, nil)
	n.createProfile(map[string]any{"id": "thermo", "name": "Thermometer", "telemetry": map[string]any{
		"temp": map[string]any{"type": "number", "unit": "°C", "min": -40, "max": 85, "max_rate": 1},
	}})
	id, token := n.createDeviceWith("thermo-1", "thermo")
	c, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "thermo-1", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-time.Minute)
	for i, v := range []string{"21", "500", `"hot"`, "21.5", "60"} {
		ts := now.Add(time.Duration(i) * time.Second).UnixMilli()
		wait(t, c.Publish("devices/"+id+"/telemetry", 1, false, fmt.Sprintf(`{"temp": %s, "ts": %d}`, v, ts)))
	}
	var q struct {
		Count  int                       `json:"count"`
		Points []tether.QuarantinedPoint `json:"points"`
	}
	waitFor(t, "three quarantined points", func() bool {
		n.api("GET", "/api/v1/devices/"+id+"/quarantine", "", nil, &q)
		return q.Count == 3
	})
	reasons := map[string]bool{}
	for _, p := range q.Points {
		reasons[p.Reason] = true
	}
	for _, r := range []string{tether.QuarantineAboveMax, tether.QuarantineType, tether.QuarantineJump} {
		if !reasons[r] {
			t.Errorf("no point quarantined for %s: %+v", r, q.Points)
		}
	}
	t.Run("the series and the average hold only the good values", func(t *testing.T) {
		n.waitStored(2)
		s := n.telemetry(id, "keys=temp")["temp"].Samples
		if len(s) != 2 {
			t.Errorf("samples = %+v", s)
		}
		var latest struct{ Values []tether.Latest }
		n.api("GET", "/api/v1/devices/"+id+"/latest", "", nil, &latest)
		for _, l := range latest.Values {
			if l.Key == "temp" && l.Value != 21.5 {
				t.Errorf("latest temp = %v", l.Value)
			}
		}
	})
}

// dialDevice connects the load generator's raw client as a device and
// subscribes to its commands, so that a test decides when (and whether)
// to acknowledge each.
func dialDevice(t *testing.T, addr, id, token string) *mqttClient {
	t.Helper()
	c, err := dialMQTT(addr, id, id, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.subscribe("devices/"+id+"/commands/+", 1); err != nil {
		t.Fatal(err)
	}
	return c
}

// nextCommand reads until a command arrives and returns its id and packet
// id, without acknowledging it.
func nextCommand(t *testing.T, c *mqttClient) (string, uint16) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		h, body, err := c.read()
		if err != nil {
			t.Fatalf("waiting for a command: %v", err)
		}
		if h>>4 != 3 {
			continue
		}
		end := 2 + (int(body[0])<<8 | int(body[1]))
		topic := string(body[2:end])
		if strings.Contains(topic, "/commands/") && !strings.HasSuffix(topic, "/reply") {
			return topic[strings.LastIndexByte(topic, '/')+1:], uint16(body[end])<<8 | uint16(body[end+1])
		}
	}
}

func TestCommandsSurviveARestartInEveryState(t *testing.T) {
	dir := t.TempDir()
	n := startNodeIn(t, dir)
	ids := map[string]string{}
	tokens := map[string]string{}
	for _, state := range []string{"queued", "sent", "delivered", "succeeded"} {
		ids[state], tokens[state] = n.createDevice("dev-" + state)
	}
	cmd := map[string]string{}
	for state, id := range ids {
		_, c, _ := n.send(id, map[string]any{"name": "act"}, "")
		cmd[state] = c.ID
	}
	addr := n.MQTT.Addr()
	sent := dialDevice(t, addr, ids["sent"], tokens["sent"])
	if got, _ := nextCommand(t, sent); got != cmd["sent"] {
		t.Fatalf("sent: got %s", got)
	}
	delivered := dialDevice(t, addr, ids["delivered"], tokens["delivered"])
	got, pid := nextCommand(t, delivered)
	if _, err := delivered.conn.Write([]byte{0x40, 2, byte(pid >> 8), byte(pid)}); err != nil || got != cmd["delivered"] {
		t.Fatal(got, err)
	}
	n.waitCommand(ids["delivered"], cmd["delivered"], tether.CommandDelivered)
	done := dialDevice(t, addr, ids["succeeded"], tokens["succeeded"])
	got, _ = nextCommand(t, done)
	if _, err := done.publish("devices/"+ids["succeeded"]+"/commands/"+got+"/reply", 0, []byte(`{"status":"succeeded"}`)); err != nil {
		t.Fatal(err)
	}
	n.waitCommand(ids["succeeded"], cmd["succeeded"], tether.CommandSucceeded)
	if c := n.command(ids["sent"], cmd["sent"]); c.Status != tether.CommandSent {
		t.Fatalf("sent: %s", c.Status)
	}
	if c := n.command(ids["queued"], cmd["queued"]); c.Status != tether.CommandQueued {
		t.Fatalf("queued: %s", c.Status)
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = startNodeIn(t, dir)
	defer n.Close()
	addr = n.MQTT.Addr()
	for _, state := range []string{"queued", "sent", "delivered", "succeeded"} {
		t.Run("a command "+state+" before the restart ends once", func(t *testing.T) {
			id := ids[state]
			c := dialDevice(t, addr, id, tokens[state])
			if state == "queued" || state == "sent" {
				got, _ := nextCommand(t, c)
				if got != cmd[state] {
					t.Fatalf("got %s, want %s", got, cmd[state])
				}
			}
			if state != "succeeded" {
				if _, err := c.publish("devices/"+id+"/commands/"+cmd[state]+"/reply", 0, []byte(`{"status":"succeeded"}`)); err != nil {
					t.Fatal(err)
				}
			}
			final := n.waitCommand(id, cmd[state], tether.CommandSucceeded)
			seen := map[string]int{}
			for _, h := range final.History {
				if seen[h.Status]++; seen[h.Status] > 1 && h.Status != tether.CommandSent {
					t.Errorf("history has %s twice: %+v", h.Status, final.History)
				}
			}
			var list struct{ Commands []tether.Command }
			n.api("GET", "/api/v1/devices/"+id+"/commands", "", nil, &list)
			if len(list.Commands) != 1 {
				t.Errorf("%d commands, want 1", len(list.Commands))
			}
		})
	}
}

// startNodeIn runs a node on dir that the test closes itself (to start
// another on the same data).
func startNodeIn(t *testing.T, dir string) *node {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
	cfg.WriterMaxDelay = 5 * time.Millisecond
	logs := &testkit.Buffer{}
	m := main.NewMain(cfg, adminKey, logs)
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("start node: %v\n%s", err, logs)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", logs)
		}
	})
	return &node{Main: m, t: t, logs: logs}
}
