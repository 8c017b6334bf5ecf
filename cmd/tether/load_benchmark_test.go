package main_test

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/config"
)

var (
	loadDevices  = flag.Int("load.devices", 1000, "simulated devices in BenchmarkEndToEnd")
	loadDuration = flag.Duration("load.duration", 20*time.Second, "measured time of BenchmarkEndToEnd, after warm-up")
	loadKeys     = flag.Int("load.keys", 10, "values (points) per message in BenchmarkEndToEnd")
	loadRate     = flag.Float64("load.rate", 5, "messages per second per device; 0 publishes as fast as PUBACKs come back")
)

// BenchmarkEndToEnd runs the same load against Tether and, when it is
// installed, Mosquitto in one run: N devices, each publishing QoS 1
// telemetry of K values at R messages a second and waiting for each PUBACK
// before the next (as a device with one message in flight does); with R = 0
// each publishes as fast as its PUBACKs come back, which finds the
// capacity. For Tether it measures points
// durably stored per second and publish-to-stored latency (from the
// device's timestamp to the commit of the storage transaction); for both
// it measures PUBACKs per second and publish-to-PUBACK latency, so the
// ratio shows what durability costs. Mosquitto runs without persistence:
// it acknowledges from memory.
//
//	go test -run '^$' -bench EndToEnd -benchtime 1x ./cmd/tether/ -args -load.devices 1000
func BenchmarkEndToEnd(b *testing.B) {
	var results []loadResult
	b.Run(fmt.Sprintf("broker=tether/devices=%d", *loadDevices), func(b *testing.B) {
		var (
			mu        sync.Mutex
			recording atomic.Bool
			stored    []time.Duration
		)
		n := startNodeObserved(b, func(msgs []tether.Message, at time.Time) {
			if !recording.Load() {
				return
			}
			mu.Lock()
			for _, m := range msgs {
				stored = append(stored, at.Sub(m.Points[0].Time))
			}
			mu.Unlock()
		})
		users := make([][2]string, *loadDevices)
		for i := range users {
			id, token := n.createDevice(fmt.Sprintf("load-%05d", i))
			users[i] = [2]string{id, token}
		}
		before := n.Writer.Stored()
		r := runLoad(b, n.MQTT.Addr(), users, func(phase string) {
			switch phase {
			case "measure":
				before = n.Writer.Stored()
				recording.Store(true)
			case "done":
				recording.Store(false)
			}
		})
		r.name = "tether"
		r.storedPerSec = float64(n.Writer.Stored()-before) / r.elapsed.Seconds()
		mu.Lock()
		r.storeP50, r.storeP99 = percentile(stored, 50), percentile(stored, 99)
		mu.Unlock()
		r.report(b)
		results = append(results, r)
	})
	b.Run(fmt.Sprintf("broker=mosquitto/devices=%d", *loadDevices), func(b *testing.B) {
		bin, err := exec.LookPath("mosquitto")
		if err != nil {
			if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
				b.Skip("mosquitto is not installed (apt-get install mosquitto); no side-by-side figures")
			}
		}
		addr := startMosquitto(b, bin)
		users := make([][2]string, *loadDevices)
		for i := range users {
			users[i] = [2]string{fmt.Sprintf("load-%05d", i), ""}
		}
		r := runLoad(b, addr, users, func(string) {})
		r.name = "mosquitto"
		r.report(b)
		results = append(results, r)
	})
	// With -count N each broker ran N times; compare their medians.
	t, m := medianOf(results, "tether"), medianOf(results, "mosquitto")
	if t.name != "" && m.name != "" {
		fmt.Printf("\nSIDE BY SIDE, medians (devices=%d, %d values/message, %.1f messages/s/device (0 = as fast as acked), %s measured)\n",
			*loadDevices, *loadKeys, *loadRate, *loadDuration)
		fmt.Printf("  acks/s          tether %.0f  mosquitto %.0f  ratio %.2f\n", t.acksPerSec, m.acksPerSec, t.acksPerSec/m.acksPerSec)
		fmt.Printf("  ack p50 ms      tether %.2f  mosquitto %.2f  ratio %.2f\n", ms(t.ackP50), ms(m.ackP50), ms(t.ackP50)/ms(m.ackP50))
		fmt.Printf("  ack p99 ms      tether %.2f  mosquitto %.2f  ratio %.2f\n", ms(t.ackP99), ms(m.ackP99), ms(t.ackP99)/ms(m.ackP99))
		fmt.Printf("  tether stored   %.0f points/s, publish-to-stored p50 %.1f ms, p99 %.1f ms\n\n", t.storedPerSec, ms(t.storeP50), ms(t.storeP99))
	}
}

// medianOf returns, metric by metric, the median of the named broker's runs.
func medianOf(rs []loadResult, name string) loadResult {
	var runs []loadResult
	for _, r := range rs {
		if r.name == name {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return loadResult{}
	}
	mid := func(f func(loadResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	dur := func(f func(loadResult) time.Duration) time.Duration {
		return time.Duration(mid(func(r loadResult) float64 { return float64(f(r)) }))
	}
	return loadResult{
		name:         name,
		acksPerSec:   mid(func(r loadResult) float64 { return r.acksPerSec }),
		ackP50:       dur(func(r loadResult) time.Duration { return r.ackP50 }),
		ackP99:       dur(func(r loadResult) time.Duration { return r.ackP99 }),
		storedPerSec: mid(func(r loadResult) float64 { return r.storedPerSec }),
		storeP50:     dur(func(r loadResult) time.Duration { return r.storeP50 }),
		storeP99:     dur(func(r loadResult) time.Duration { return r.storeP99 }),
	}
}

// startNodeObserved is startNode with a writer observer.
func startNodeObserved(b *testing.B, observe func([]tether.Message, time.Time)) *node {
	return startNodeWith(b, func(c *config.Config) {
		c.LogLevel = "warn"
		c.WriterMaxDelay = 20 * time.Millisecond
	}, observe)
}

type loadResult struct {
	name               string
	elapsed            time.Duration
	acksPerSec         float64
	ackP50, ackP99     time.Duration
	storedPerSec       float64
	storeP50, storeP99 time.Duration
}

func (r loadResult) report(b *testing.B) {
	b.ReportMetric(r.acksPerSec, "acks/s")
	b.ReportMetric(r.acksPerSec*float64(*loadKeys), "points-acked/s")
	b.ReportMetric(ms(r.ackP50), "ack-p50-ms")
	b.ReportMetric(ms(r.ackP99), "ack-p99-ms")
	if r.storedPerSec > 0 {
		b.ReportMetric(r.storedPerSec, "points-stored/s")
		b.ReportMetric(ms(r.storeP50), "stored-p50-ms")
		b.ReportMetric(ms(r.storeP99), "stored-p99-ms")
	}
	b.ReportMetric(0, "ns/op") // the load is time-based; ns/op means nothing here
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// runLoad connects every user and publishes until warm-up plus the
// measured duration are over. phase is told "measure" and "done".
func runLoad(b *testing.B, addr string, users [][2]string, phase func(string)) loadResult {
	b.Helper()
	clients := make([]paho3.Client, len(users))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var connErr atomic.Value
	for i, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(u[0]).
				SetUsername(u[0]).SetPassword(u[1]).SetAutoReconnect(false).SetConnectTimeout(30 * time.Second).
				SetKeepAlive(5 * time.Minute).SetWriteTimeout(30 * time.Second)
			c := paho3.NewClient(opts)
			if tok := c.Connect(); !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
				connErr.Store(fmt.Errorf("connect %s: %v", u[0], tok.Error()))
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if err := connErr.Load(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()

	keys := make([]string, *loadKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
	}
	var (
		stop      atomic.Bool
		recording atomic.Bool
		acks      atomic.Int64
		mu        sync.Mutex
		lat       []time.Duration
	)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := "devices/" + users[i][0] + "/telemetry"
			var sb strings.Builder
			local := make([]time.Duration, 0, 1024)
			var tick *time.Ticker
			if *loadRate > 0 {
				// Spread the devices' first messages over one period.
				period := time.Duration(float64(time.Second) / *loadRate)
				time.Sleep(time.Duration(i) * period / time.Duration(len(clients)))
				tick = time.NewTicker(period)
				defer tick.Stop()
			}
			for v := 0; !stop.Load(); v++ {
				if tick != nil {
					<-tick.C
				}
				sent := time.Now()
				sb.Reset()
				fmt.Fprintf(&sb, `{"ts":%.3f`, float64(sent.UnixMicro())/1000)
				for _, k := range keys {
					fmt.Fprintf(&sb, `,%q:%d.5`, k, v%1000)
				}
				sb.WriteByte('}')
				tok := c.Publish(topic, 1, false, sb.String())
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					b.Errorf("publish: %v", tok.Error())
					return
				}
				if recording.Load() {
					acks.Add(1)
					local = append(local, time.Since(sent))
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	time.Sleep(3 * time.Second) // warm-up
	phase("measure")
	recording.Store(true)
	start := time.Now()
	time.Sleep(*loadDuration)
	recording.Store(false)
	elapsed := time.Since(start)
	phase("done")
	stop.Store(true)
	wg.Wait()
	return loadResult{
		elapsed:    elapsed,
		acksPerSec: float64(acks.Load()) / elapsed.Seconds(),
		ackP50:     percentile(lat, 50),
		ackP99:     percentile(lat, 99),
	}
}

// startMosquitto runs a Mosquitto broker on a free loopback port, in
// memory, and returns its address.
func startMosquitto(b *testing.B, bin string) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(b.TempDir(), "mosquitto.conf")
	err = os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_inflight_messages 0\nmax_queued_messages 0\n"), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
	}
	b.Fatal("mosquitto did not start")
	return ""
}
