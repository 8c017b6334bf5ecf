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
	streamClients = flag.Int("stream.clients", 100, "live stream benchmark: WebSocket clients, each taking every telemetry event")
	streamKinds   = flag.String("stream.kinds", "telemetry", "live stream benchmark: kinds the clients ask for")
	streamDevices = flag.Int("stream.devices", 100, "live stream benchmark: devices publishing over MQTT (QoS 1)")
)

// BenchmarkStream measures live streams: events per second delivered to
// 100 WebSocket clients, each streaming every telemetry event of the
// tenant, while 100 devices publish over MQTT (QoS 1, each waiting for its
// PUBACK) messages of -load.keys values.
//
// load=offered: each device publishes -load.rate messages a second, so
// the clients want devices × rate × clients events a second.
// load=capacity: each device publishes as soon as its PUBACK returns,
// more than the clients can take: the figure is the most the node
// delivers, and what it drops for lagging clients is counted (dropped/s)
// while ingest goes on (msgs/s).
//
// Latency is from the device's "ts" (set when it sends) to the client's
// receipt, sampled on one event in 64 of each client.
func BenchmarkStream(b *testing.B) {
	type row struct {
		mode loadMode
		r    streamResult
	}
	var rows []row
	for _, mode := range []loadMode{offered, capacity} {
		b.Run(fmt.Sprintf("load=%s/clients=%d/devices=%d", mode, *streamClients, *streamDevices), func(b *testing.B) {
			r := streamRun(b, mode)
			r.report(b)
			rows = append(rows, row{mode, r})
		})
	}
	fmt.Printf("\nLIVE STREAM: %d WebSocket clients taking every telemetry event, %d devices publishing QoS 1 with %d values/message, %s measured\n\n",
		*streamClients, *streamDevices, *loadKeys, *loadDuration)
	fmt.Printf("| load | messages/s in | events/s wanted | events/s delivered | dropped/s | p50 ms | p99 ms | CPU cores |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.2f |\n", r.mode, r.r.msgs, r.r.msgs*float64(*streamClients),
			r.r.events, r.r.dropped, ms(r.r.p50), ms(r.r.p99), r.r.cpu)
	}
	fmt.Println()
}

// streamResult is one run's rates.
type streamResult struct {
	msgs, events, dropped float64 // per second: messages acknowledged, events received by all clients, events dropped for them
	p50, p99              time.Duration
	cpu                   float64 // node and load generator, in cores
}

func (r streamResult) report(b *testing.B) {
	b.ReportMetric(r.events, "events/s")
	b.ReportMetric(r.dropped, "dropped/s")
	b.ReportMetric(r.msgs, "msgs/s")
	b.ReportMetric(ms(r.p50), "p50-ms")
	b.ReportMetric(ms(r.p99), "p99-ms")
	b.ReportMetric(r.cpu, "node+generator-cpu-cores")
	b.ReportMetric(0, "ns/op") // the load is time-based; ns/op means nothing here
}

func streamRun(b *testing.B, mode loadMode) streamResult {
	run := newLoadRun(b, nil)
	n := startBenchNode(b, nil, nil)
	creds := make([][2]string, *streamDevices)
	for i := range creds {
		id, token := n.createDevice(fmt.Sprintf("stream-%03d", i))
		creds[i] = [2]string{id, token}
	}

	// The clients count what arrives while the window is open.
	var events, dropped atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration
	var readers sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for i := range *streamClients {
		c, resp, err := websocket.Dial(ctx, "ws://"+n.HTTP.Addr()+"/api/v1/stream?kinds="+*streamKinds,
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + adminKey}}})
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
				if !run.recording.Load() {
					continue
				}
				switch {
				case bytes.HasPrefix(msg, []byte(`{"type":"event"`)):
					events.Add(1)
					if k%64 == 0 {
						if d, ok := streamLatency(msg); ok {
							latMu.Lock()
							lat = append(lat, d)
							latMu.Unlock()
						}
					}
				case bytes.HasPrefix(msg, []byte(`{"type":"lagging"`)):
					var m struct{ Dropped int64 }
					_ = json.Unmarshal(msg, &m)
					dropped.Add(m.Dropped)
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

	clients, err := connectAll(b, n.MQTT.Addr(), creds)
	if err != nil {
		b.Fatal(err)
	}
	var acked atomic.Int64
	keys := loadKeyNames()
	var wg sync.WaitGroup
	for i, c := range clients {
		topic := "devices/" + creds[i][0] + "/telemetry"
		wg.Go(func() {
			var payload []byte
			period := time.Duration(float64(time.Second) / *loadRate)
			if mode == offered {
				stagger(i, len(clients), period)
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
	unblock(clients)
	wg.Wait()

	s := run.elapsed.Seconds()
	latMu.Lock()
	defer latMu.Unlock()
	r := streamResult{msgs: float64(acked.Load()) / s, events: float64(events.Load()) / s, dropped: float64(dropped.Load()) / s,
		cpu: run.cpu.self.Seconds() / s}
	r.p50, r.p99 = quantiles(lat)
	return r
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
