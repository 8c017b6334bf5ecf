package main_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	coapclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether/internal/config"
)

// BenchmarkCoAPIngest measures Tether's CoAP gateway (Mosquitto has no
// counterpart): N devices, each a go-coap UDP client, POST telemetry of K
// values as confirmable requests to coap://…/telemetry?t=<token>; the
// gateway answers 2.04 once the bus has the message.
//
//   - acks: 2.04 Changed per second, publish → 2.04 latency at the client.
//   - delivered: committed to SQLite, from the payload's "ts" to the commit.
//
// load=offered: R requests a second per device, each waiting for the
// previous answer. load=capacity: each device sends its next request as
// soon as the 2.04 returns.
func BenchmarkCoAPIngest(b *testing.B) {
	table := newSideBySide(fmt.Sprintf("CoAP CON ingest (Tether only): %d clients, %d values/message, offered %g requests/s each, %s measured",
		*loadDevices, *loadKeys, *loadRate, *loadDuration))
	defer table.print()
	for _, mode := range []loadMode{offered, capacity} {
		row := "CoAP CON capacity"
		if mode == offered {
			row = fmt.Sprintf("CoAP CON offered %g req/s", *loadRate*float64(*loadDevices))
		}
		b.Run(fmt.Sprintf("load=%s/clients=%d", mode, *loadDevices), func(b *testing.B) {
			table.add(row, coapIngest(b, mode))
		})
	}
}

func coapIngest(b *testing.B, mode loadMode) loadResult {
	run := newLoadRun(b, nil)
	n := startBenchNode(b, func(c *config.Config) { c.CoAPAddr = "127.0.0.1:0" }, run.stored)
	addr := n.CoAP.Addr()
	tokens := make([]string, *loadDevices)
	for i := range tokens {
		_, tokens[i] = n.createDevice(fmt.Sprintf("coap-%05d", i))
	}
	clients := make([]*coapclient.Conn, len(tokens))
	for i := range clients {
		c, err := udp.Dial(addr, options.WithErrors(func(error) {}))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		clients[i] = c
	}
	keys := loadKeyNames()
	post := func(ctx context.Context, c *coapclient.Conn, query []byte, payload []byte) error {
		resp, err := c.Post(ctx, "/telemetry", message.AppJSON, bytes.NewReader(payload), message.Option{ID: message.URIQuery, Value: query})
		if err != nil {
			return err
		}
		defer c.ReleaseMessage(resp)
		if resp.Code() != codes.Changed {
			body, _ := resp.ReadBody()
			return fmt.Errorf("answer %v %s, want 2.04 Changed", resp.Code(), body)
		}
		return nil
	}
	// One request first, so that a gateway that does not answer is one
	// clear failure rather than 1,000 timeouts.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := post(ctx, clients[0], []byte("t="+tokens[0]), appendPayload(nil, keys, time.Now(), -1, 0))
	cancel()
	if err != nil {
		b.Fatalf("first CoAP POST to %s: %v", addr, err)
	}

	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tick *time.Ticker
			if mode == offered {
				period := time.Duration(float64(time.Second) / *loadRate)
				stagger(i, len(clients), period)
				tick = time.NewTicker(period)
				defer tick.Stop()
			}
			var acked []time.Duration
			defer func() { run.addAcked(acked...) }()
			query := []byte("t=" + tokens[i])
			buf := make([]byte, 0, 256)
			for v := 1; !run.stopping.Load(); v++ {
				if tick != nil {
					select {
					case <-tick.C:
					case <-run.stopped:
						return
					}
				}
				sent := time.Now()
				buf = appendPayload(buf[:0], keys, sent, -1, v)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				run.published.Add(1)
				err := post(ctx, c, query, buf)
				cancel()
				if err != nil {
					// A request without a 2.04 is counted, and the first few
					// are logged: the device would send it again.
					if run.lost.Add(1) <= 3 && !run.stopping.Load() {
						b.Logf("CoAP POST: %v", err)
					}
					continue
				}
				if run.recording.Load() {
					acked = append(acked, time.Since(sent))
				}
			}
		}()
	}
	run.measure()
	wg.Wait()
	r := run.result("tether")
	r.report(b)
	return r
}
