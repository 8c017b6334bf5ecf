package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/config"
)

var loadCallers = flag.Int("load.callers", 64, "commands benchmark: concurrent API callers (each waits for the device's reply before its next command)")

// BenchmarkCommands measures commands end to end: an API caller sends a
// command and waits for the device's reply (POST …/commands?wait=10s),
// with *loadDevices devices connected over MQTT, each subscribed to its
// commands and replying at once. C callers run a closed loop, one command
// in flight each, spread over the devices. Delivered = a reply reached
// the caller; its latency is the whole round trip.
//
// Mosquitto has no commands; the row beside it is the same round trip as
// plain MQTT request/response through it (the caller publishes the
// request at QoS 1 on the device's command topic and waits for the reply
// on the reply topic), in memory, with no guardrail, no record and no
// status. The ratio is what Tether's durable, guarded command path costs
// against the bare broker hop.
func BenchmarkCommands(b *testing.B) {
	table := newSideBySide(fmt.Sprintf("COMMANDS: %d devices over MQTT, %d callers with one command in flight each, %s measured",
		*loadDevices, *loadCallers, *loadDuration))
	defer table.print()
	row := fmt.Sprintf("command round trip, %d callers", *loadCallers)
	b.Run(fmt.Sprintf("broker=tether/devices=%d", *loadDevices), func(b *testing.B) {
		table.add(row, commandsTether(b))
	})
	b.Run(fmt.Sprintf("broker=mosquitto/devices=%d", *loadDevices), func(b *testing.B) {
		table.add(row, commandsMosquitto(b))
	})
}

// BenchmarkShadowUpdates measures device shadow updates: every device
// publishes a reported state on devices/<id>/shadow/update and waits for
// …/update/accepted before the next (one in flight per device). The
// Mosquitto row is the nearest thing it has, a retained QoS 1 message per
// device acknowledged by PUBACK, with no version, merge or delta.
func BenchmarkShadowUpdates(b *testing.B) {
	table := newSideBySide(fmt.Sprintf("SHADOW UPDATES: %d devices, one update in flight each, %s measured", *loadDevices, *loadDuration))
	defer table.print()
	row := "shadow update → accepted"
	b.Run(fmt.Sprintf("broker=tether/devices=%d", *loadDevices), func(b *testing.B) {
		run := newLoadRun(b, nil)
		n := startBenchNode(b, nil, nil)
		creds := benchDevices(b, n, "shadow")
		clients, err := connectAll(b, n.MQTT.Addr(), creds)
		if err != nil {
			b.Fatal(err)
		}
		for i, c := range clients {
			if err := c.subscribe("devices/"+creds[i][0]+"/shadow/update/accepted", 0); err != nil {
				b.Fatal(err)
			}
		}
		closedLoop(b, run, len(clients), func() { unblock(clients) }, func(i, v int) error {
			c, id := clients[i], creds[i][0]
			if _, err := c.publish("devices/"+id+"/shadow/update", 1, fmt.Appendf(nil, `{"state":{"reported":{"temp":%d,"fw":"1.0.%d"}}}`, v, i)); err != nil {
				return err
			}
			return c.awaitPublish("devices/" + id + "/shadow/update/accepted")
		})
		r := run.result("tether")
		r.report(b)
		table.add(row, r)
	})
	b.Run(fmt.Sprintf("broker=mosquitto/devices=%d", *loadDevices), func(b *testing.B) {
		addr, cpu := startMosquitto(b)
		run := newLoadRun(b, cpu)
		creds := make([][2]string, *loadDevices)
		for i := range creds {
			creds[i] = [2]string{fmt.Sprintf("shadow-%05d", i), ""}
		}
		clients, err := connectAll(b, addr, creds)
		if err != nil {
			b.Fatal(err)
		}
		closedLoop(b, run, len(clients), func() { unblock(clients) }, func(i, v int) error {
			c := clients[i]
			id, err := c.publishRetained("devices/"+creds[i][0]+"/shadow/reported", fmt.Appendf(nil, `{"temp":%d,"fw":"1.0.%d"}`, v, i))
			if err != nil {
				return err
			}
			return c.waitAck(id)
		})
		r := run.result("mosquitto")
		r.report(b)
		table.add(row, r)
	})
}

// closedLoop runs workers loops of op until the measured window ends,
// recording each op's duration as a delivery; worker w's calls get v = w,
// w+workers, w+2·workers, …. unblock (if not nil) frees workers waiting
// on their connections when the window ends.
func closedLoop(b *testing.B, run *loadRun, workers int, unblock func(), op func(w, v int) error) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			defer func() { run.addDelivered(lat...) }()
			for v := w; !run.stopping.Load(); v += workers {
				start := time.Now()
				if err := op(w, v); err != nil {
					run.failed(b, "load", err)
					return
				}
				if run.recording.Load() {
					lat = append(lat, time.Since(start))
				}
			}
		}()
	}
	run.measure()
	if unblock != nil {
		unblock()
	}
	wg.Wait()
}

// benchDevices registers *loadDevices devices and returns their IDs and tokens.
func benchDevices(b *testing.B, n *node, prefix string) [][2]string {
	b.Helper()
	creds := make([][2]string, *loadDevices)
	for i := range creds {
		d, token, err := n.Registry.CreateDevice(context.Background(), tether.DefaultTenantID, tether.Device{ID: fmt.Sprintf("%s-%05d", prefix, i)})
		if err != nil {
			b.Fatal(err)
		}
		creds[i] = [2]string{d.ID, token}
	}
	return creds
}

// commandDevices connects the devices, subscribes each to its commands
// and makes it answer them (see answerCommands).
func commandDevices(b *testing.B, addr string, creds [][2]string) ([]*mqttClient, *sync.WaitGroup) {
	b.Helper()
	clients, err := connectAll(b, addr, creds)
	if err != nil {
		b.Fatal(err)
	}
	for i, c := range clients {
		if err := c.subscribe("devices/"+creds[i][0]+"/commands/+", 1); err != nil {
			b.Fatal(err)
		}
	}
	return clients, answerCommands(clients)
}

// answerCommands makes every client a device that replies to each command
// on its reply topic, at once; it returns when the connections close.
func answerCommands(clients []*mqttClient) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reply []byte
			var id uint16
			_ = c.receive(func(topic, _ []byte) {
				if bytes.HasSuffix(topic, []byte("/reply")) {
					return
				}
				id++
				reply = appendPublish(reply[:0], string(topic)+"/reply", 1, id, []byte(`{"status":"succeeded","result":{"ok":true}}`))
				_, _ = c.conn.Write(reply)
			})
		}()
	}
	return &wg
}

func commandsTether(b *testing.B) loadResult {
	run := newLoadRun(b, nil)
	n := startBenchNode(b, func(c *config.Config) { c.CommandRatePerDevice = 1 << 30 }, nil)
	creds := benchDevices(b, n, "cmd")
	clients, devices := commandDevices(b, n.MQTT.Addr(), creds)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *loadCallers}}
	url := "http://" + n.HTTP.Addr() + "/api/v1/devices/"
	closedLoop(b, run, *loadCallers, nil, func(_, v int) error {
		id := creds[ownDevice(v, *loadCallers, len(creds))][0]
		req, _ := http.NewRequest("POST", url+id+"/commands?wait=10s", strings.NewReader(fmt.Sprintf(`{"name":"ping","params":{"n":%d}}`, v)))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		var cmd tether.Command
		err = json.NewDecoder(resp.Body).Decode(&cmd)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || cmd.Status != tether.CommandSucceeded {
			return fmt.Errorf("command: HTTP %d, status %q, %v", resp.StatusCode, cmd.Status, err)
		}
		return nil
	})
	unblock(clients)
	devices.Wait()
	r := run.result("tether")
	r.report(b)
	return r
}

func commandsMosquitto(b *testing.B) loadResult {
	// A request and its reply are two small writes in a row; without
	// TCP_NODELAY (Go's default, Mosquitto's option) the second waits for
	// the peer's delayed ACK, 40 ms, and that would be measured instead.
	addr, cpu := startMosquitto(b, "set_tcp_nodelay true")
	run := newLoadRun(b, cpu)
	creds := make([][2]string, *loadDevices)
	for i := range creds {
		creds[i] = [2]string{fmt.Sprintf("cmd-%05d", i), ""}
	}
	clients, devices := commandDevices(b, addr, creds)
	callers := make([][2]string, *loadCallers)
	for w := range callers {
		callers[w] = [2]string{fmt.Sprintf("caller-%03d", w), ""}
	}
	apps, err := connectAll(b, addr, callers)
	if err != nil {
		b.Fatal(err)
	}
	// Caller w sends to devices w, w+C, w+2C, …: it subscribes to their
	// replies only.
	for w, a := range apps {
		for v := w; v < len(creds); v += len(apps) {
			if err := a.subscribe("devices/"+creds[v][0]+"/commands/+/reply", 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	closedLoop(b, run, len(apps), func() { unblock(apps) }, func(w, v int) error {
		a := apps[w]
		topic := fmt.Sprintf("devices/%s/commands/c%d", creds[ownDevice(v, len(apps), len(creds))][0], v)
		if _, err := a.publish(topic, 1, fmt.Appendf(nil, `{"id":"c%d","name":"ping","params":{"n":%d}}`, v, v)); err != nil {
			return err
		}
		return a.awaitPublish(topic + "/reply")
	})
	unblock(clients)
	devices.Wait()
	r := run.result("mosquitto")
	r.report(b)
	return r
}

// ownDevice spreads the devices over the callers: the v-th command of the
// caller v mod callers goes to one of that caller's devices (those whose
// index is the caller's number modulo callers), in turn.
func ownDevice(v, callers, devices int) int {
	w := v % callers
	own := (devices - w + callers - 1) / callers // how many devices are w's
	return w + (v/callers%own)*callers
}

// awaitPublish reads until a PUBLISH on topic arrives, acknowledging those
// of QoS 1 and skipping everything else (the PUBACKs of its own publishes).
func (c *mqttClient) awaitPublish(topic string) error {
	for {
		h, body, err := c.read()
		if err != nil {
			return err
		}
		if h>>4 != 3 || len(body) < 2 {
			continue
		}
		end := 2 + (int(body[0])<<8 | int(body[1]))
		if end > len(body) {
			return fmt.Errorf("malformed PUBLISH")
		}
		got := string(body[2:end])
		if (h>>1)&3 > 0 {
			if _, err := c.conn.Write([]byte{0x40, 2, body[end], body[end+1]}); err != nil {
				return err
			}
		}
		if got == topic {
			return nil
		}
	}
}

// publishRetained sends a retained QoS 1 PUBLISH and returns its packet
// identifier.
func (c *mqttClient) publishRetained(topic string, payload []byte) (uint16, error) {
	id := c.nextID()
	c.out = appendPublish(c.out[:0], topic, 1, id, payload)
	c.out[0] |= 1 // retain
	_, err := c.conn.Write(c.out)
	return id, err
}

// appendPublish appends a PUBLISH packet (id is used at QoS > 0).
func appendPublish(b []byte, topic string, qos byte, id uint16, payload []byte) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	b = appendMQTTLength(append(b, 0x30|qos<<1), n)
	b = appendMQTTString(b, topic)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	return append(b, payload...)
}
