package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var (
	streamClients = flag.Int("stream.clients", 100, "live stream benchmark: WebSocket clients (Mosquitto: MQTT subscribers), each taking every telemetry event")
	streamKinds   = flag.String("stream.kinds", "telemetry", "live stream benchmark: kinds the clients ask for")
	streamDevices = flag.Int("stream.devices", 100, "live stream benchmark: devices publishing over MQTT (QoS 1)")
)

// BenchmarkStream measures live streams: events per second delivered to
// 100 clients, each taking every telemetry event of the tenant, while 100
// devices publish over MQTT (QoS 1, each waiting for its PUBACK) messages
// of -load.keys values.
//
// broker=tether: the clients are WebSocket clients of /api/v1/stream.
// broker=mosquitto: the nearest thing Mosquitto has, the same devices
// publishing the same messages (anonymously) and 100 MQTT subscribers of
// devices/+/telemetry at QoS 0, which receive each message as it was
// published, with none of Tether's storage, decoding or JSON events; on
// TCP_NODELAY, as Tether's sockets are.
//
// load=offered: each device publishes -load.rate messages a second, so
// the clients want devices × rate × clients events a second.
// load=capacity: each device publishes as soon as its PUBACK returns: the
// figure is the most the broker delivers. Tether drops events for a
// client that lags (counted, dropped/s) while ingest goes on (msgs/s);
// Mosquitto queues them (backlog).
//
// Latency is from the device's "ts" (set when it sends) to the client's
// receipt, sampled on one message in 64 of each client.
func BenchmarkStream(b *testing.B) {
	var rows []streamResult
	for _, mode := range []loadMode{offered, capacity} {
		for _, broker := range []string{"tether", "mosquitto"} {
			b.Run(fmt.Sprintf("load=%s/broker=%s/clients=%d/devices=%d", mode, broker, *streamClients, *streamDevices), func(b *testing.B) {
				run := streamTether
				if broker == "mosquitto" {
					run = streamMosquitto
				}
				r := run(b, mode)
				r.mode, r.broker = mode, broker
				r.report(b)
				rows = append(rows, r)
			})
		}
	}
	printStreamTable(rows)
}

// streamResult is one run's rates.
type streamResult struct {
	mode                  loadMode
	broker                string
	msgs, events, dropped float64 // per second: messages acknowledged, events received by all clients, events dropped for them
	p50, p99              time.Duration
	backlog               int64   // events published for the clients but neither received nor dropped when the window ended
	selfCPU, brokerCPU    float64 // in cores: this process (Tether's node and the load generator) and Mosquitto
}

func (r streamResult) report(b *testing.B) {
	b.ReportMetric(r.events, "events/s")
	b.ReportMetric(r.dropped, "dropped/s")
	b.ReportMetric(r.msgs, "msgs/s")
	b.ReportMetric(ms(r.p50), "p50-ms")
	b.ReportMetric(ms(r.p99), "p99-ms")
	b.ReportMetric(float64(r.backlog), "backlog")
	if r.broker == "mosquitto" {
		b.ReportMetric(r.selfCPU, "generator-cpu-cores")
		b.ReportMetric(r.brokerCPU, "broker-cpu-cores")
	} else {
		b.ReportMetric(r.selfCPU, "node+generator-cpu-cores")
	}
	b.ReportMetric(0, "ns/op") // the load is time-based; ns/op means nothing here
}

// printStreamTable prints the runs as one Markdown table, Tether and
// Mosquitto side by side for each load, with the ratio Tether ÷ Mosquitto.
func printStreamTable(rows []streamResult) {
	fmt.Printf("\nLIVE STREAM: %d clients taking every telemetry event (Tether: WebSocket /api/v1/stream; Mosquitto: MQTT subscribers of devices/+/telemetry, QoS 0), %d devices publishing QoS 1 with %d values/message, %s measured (ratio = Tether ÷ Mosquitto)\n\n",
		*streamClients, *streamDevices, *loadKeys, *loadDuration)
	fmt.Printf("| run | metric | Tether | Mosquitto | ratio |\n| --- | --- | ---: | ---: | ---: |\n")
	for _, mode := range []loadMode{offered, capacity} {
		var te, mo *streamResult
		for i := range rows {
			switch r := &rows[i]; {
			case r.mode == mode && r.broker == "tether":
				te = r
			case r.mode == mode && r.broker == "mosquitto":
				mo = r
			}
		}
		if te == nil && mo == nil {
			continue
		}
		run := "capacity (closed loop)"
		if mode == offered {
			run = fmt.Sprintf("offered %g msg/s × %d devices", *loadRate, *streamDevices)
		}
		// line prints one metric; a zero is a value only where
		// zeroCounts, elsewhere it means the broker has no such figure.
		line := func(metric, format string, zeroCounts bool, f func(streamResult) float64) {
			cell := func(r *streamResult) (string, float64) {
				if r == nil {
					return "—", 0
				}
				v := f(*r)
				if v == 0 && !zeroCounts {
					return "—", 0
				}
				return fmt.Sprintf(format, v), v
			}
			tc, tv := cell(te)
			mc, mv := cell(mo)
			ratio := "—"
			if tv > 0 && mv > 0 {
				ratio = fmt.Sprintf("%.2f", tv/mv)
			}
			fmt.Printf("| %s | %s | %s | %s | %s |\n", run, metric, tc, mc, ratio)
			run = ""
		}
		line("messages/s in (PUBACKs)", "%.0f", true, func(r streamResult) float64 { return r.msgs })
		line("events/s wanted", "%.0f", true, func(r streamResult) float64 { return r.msgs * float64(*streamClients) })
		line("events/s delivered", "%.0f", true, func(r streamResult) float64 { return r.events })
		line("dropped/s", "%.0f", true, func(r streamResult) float64 { return r.dropped })
		line("p50 ms", "%.2f", false, func(r streamResult) float64 { return ms(r.p50) })
		line("p99 ms", "%.2f", false, func(r streamResult) float64 { return ms(r.p99) })
		line("backlog at end (events)", "%.0f", true, func(r streamResult) float64 { return float64(r.backlog) })
		line("CPU cores, all (broker + generator)", "%.2f", false, func(r streamResult) float64 { return r.selfCPU + r.brokerCPU })
		line("CPU cores, Mosquitto alone", "%.2f", false, func(r streamResult) float64 { return r.brokerCPU })
	}
	fmt.Println()
}

// streamCounts is what the clients of a stream run receive. events,
// dropped and the latencies count only the measured window; the run's
// arrived counts every event received or reported dropped, for its
// backlog.
type streamCounts struct {
	events, dropped atomic.Int64
	mu              sync.Mutex
	lat             []time.Duration
}

func (c *streamCounts) sample(d time.Duration) {
	c.mu.Lock()
	c.lat = append(c.lat, d)
	c.mu.Unlock()
}

// result turns a finished run's counts into rates.
func (c *streamCounts) result(run *loadRun, acked int64) streamResult {
	s := run.elapsed.Seconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	r := streamResult{msgs: float64(acked) / s, events: float64(c.events.Load()) / s, dropped: float64(c.dropped.Load()) / s,
		backlog: run.backlog, selfCPU: run.cpu.self.Seconds() / s, brokerCPU: run.cpu.broker.Seconds() / s}
	r.p50, r.p99 = quantiles(c.lat)
	return r
}

// streamTether runs the load against a node with WebSocket clients of
// its live stream.
func streamTether(b *testing.B, mode loadMode) streamResult {
	run := newLoadRun(b, nil)
	run.copies = int64(*streamClients)
	n := startBenchNode(b, nil, nil)
	creds := make([][2]string, *streamDevices)
	for i := range creds {
		id, token := n.createDevice(fmt.Sprintf("stream-%03d", i))
		creds[i] = [2]string{id, token}
	}

	// Each client is a viewer with its own API key, as 100 dashboards
	// would be: the node bounds the live streams of one caller.
	keys := make([]string, *streamClients)
	for i := range keys {
		var created struct{ Key string }
		if status, _, raw := n.api("POST", "/api/v1/api-keys", "", map[string]string{"name": fmt.Sprintf("stream viewer %d", i), "role": "viewer"}, &created); status != http.StatusCreated {
			b.Fatalf("create API key: %d %s", status, raw)
		}
		keys[i] = created.Key
	}

	// The clients count what arrives while the window is open.
	var counts streamCounts
	var readers sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for i, key := range keys {
		c, resp, err := websocket.Dial(ctx, "ws://"+n.HTTP.Addr()+"/api/v1/stream?kinds="+*streamKinds,
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
		if err != nil {
			b.Fatalf("client %d: %v (%v)", i, err, resp)
		}
		c.SetReadLimit(1 << 20)
		readers.Go(func() {
			defer c.CloseNow()
			var buf bytes.Buffer
			for k := 0; ; k++ {
				// One buffer for every message: the clients share the
				// node's cores, so what they spend is not the node's.
				_, rd, err := c.Reader(ctx)
				if err == nil {
					buf.Reset()
					_, err = buf.ReadFrom(rd)
				}
				if err != nil {
					break
				}
				msg := buf.Bytes()
				switch {
				case bytes.HasPrefix(msg, []byte(`{"type":"event"`)):
					run.arrived.Add(1)
					if !run.recording.Load() {
						continue
					}
					counts.events.Add(1)
					if k%64 == 0 {
						if d, ok := streamLatency(msg); ok {
							counts.sample(d)
						}
					}
				case bytes.HasPrefix(msg, []byte(`{"type":"lagging"`)):
					var m struct{ Dropped int64 }
					_ = json.Unmarshal(msg, &m)
					run.arrived.Add(m.Dropped)
					if run.recording.Load() {
						counts.dropped.Add(m.Dropped)
					}
				}
			}
		})
	}
	b.Cleanup(func() {
		cancel()
		readers.Wait()
	})
	if got := n.Stream.Stats().Subscribers; got != *streamClients {
		b.Fatalf("%d streams open, want %d", got, *streamClients)
	}

	devices, err := connectAll(b, n.MQTT.Addr(), creds)
	if err != nil {
		b.Fatal(err)
	}
	acked := publishStream(b, run, devices, creds, mode)
	return counts.result(run, acked)
}

// streamMosquitto runs the load against Mosquitto with MQTT subscribers
// of every device's telemetry in place of the live stream's clients.
func streamMosquitto(b *testing.B, mode loadMode) streamResult {
	// TCP_NODELAY, as Go sets it on Tether's sockets: without it each
	// subscriber's next small message waits for the ACK of the last.
	addr, brokerCPU := startMosquitto(b, "set_tcp_nodelay true")
	run := newLoadRun(b, brokerCPU)
	run.copies = int64(*streamClients)
	creds := make([][2]string, *streamDevices)
	for i := range creds {
		creds[i] = [2]string{fmt.Sprintf("stream-%03d", i), ""}
	}
	subCreds := make([][2]string, *streamClients)
	for i := range subCreds {
		subCreds[i] = [2]string{fmt.Sprintf("stream-sub-%03d", i), ""}
	}
	subs, err := connectAll(b, addr, subCreds)
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range subs {
		if err := s.subscribe("devices/+/telemetry", 0); err != nil {
			b.Fatal(err)
		}
	}
	var counts streamCounts
	var readers sync.WaitGroup
	for _, s := range subs {
		readers.Go(func() {
			k := 0
			err := s.receive(func(_, payload []byte) {
				run.arrived.Add(1)
				if !run.recording.Load() {
					return
				}
				counts.events.Add(1)
				if k++; k%64 == 1 {
					if sent, _, err := parsePayload(payload); err == nil {
						counts.sample(time.Since(sent))
					}
				}
			})
			run.failed(b, "subscriber", err)
		})
	}

	devices, err := connectAll(b, addr, creds)
	if err != nil {
		b.Fatal(err)
	}
	acked := publishStream(b, run, devices, creds, mode)
	unblock(subs)
	for _, s := range subs {
		s.Close()
	}
	readers.Wait()
	return counts.result(run, acked)
}

// publishStream runs the devices of a stream run, one per client, each
// publishing on devices/<ID>/telemetry (the first of its credentials) at
// QoS 1 and waiting for each PUBACK, at -load.rate or, at capacity, as
// fast as the PUBACKs return. It runs the run's warm-up and window, stops
// the devices and returns the messages acknowledged in the window.
func publishStream(b *testing.B, run *loadRun, devices []*mqttClient, creds [][2]string, mode loadMode) int64 {
	b.Helper()
	var acked atomic.Int64
	keys := loadKeyNames()
	period := time.Duration(float64(time.Second) / *loadRate)
	var wg sync.WaitGroup
	for i, c := range devices {
		topic := "devices/" + creds[i][0] + "/telemetry"
		wg.Go(func() {
			var payload []byte
			if mode == offered {
				stagger(i, len(devices), period)
			}
			next := time.Now()
			for v := 0; ; v++ {
				select {
				case <-run.stopped:
					return
				default:
				}
				payload = appendPayload(payload[:0], keys, time.Now(), -1, v)
				id, err := c.publish(topic, 1, payload)
				if err == nil {
					run.published.Add(1)
					err = c.waitAck(id)
				}
				if err != nil {
					run.failed(b, "publish", err)
					return
				}
				if run.recording.Load() {
					acked.Add(1)
				}
				if mode == offered {
					next = next.Add(period)
					time.Sleep(time.Until(next))
				}
			}
		})
	}
	run.measure()
	unblock(devices)
	wg.Wait()
	return acked.Load()
}

// streamLatency reads the first point's "ts" of a telemetry event and
// returns how long ago it was.
func streamLatency(msg []byte) (time.Duration, bool) {
	_, rest, ok := bytes.Cut(msg, []byte(`"ts":"`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(rest[:end]))
	if err != nil {
		return 0, false
	}
	return time.Since(ts), true
}
