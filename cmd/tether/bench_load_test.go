package main_test

// The end-to-end load benchmarks: Tether and Mosquitto under the same
// load, from the same generator, in one run. This file holds what the
// benchmarks share: the knobs, the payload, the measurement window, the
// results and their side-by-side table, and the two brokers.
//
//	go test -run '^$' -bench 'FanIn|FanOut|CoAP' -benchtime 1x ./cmd/tether/
//	go test -run '^$' -bench 'FanIn/qos=1/load=offered' -benchtime 1x ./cmd/tether/ -args -load.duration 5s

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/config"
)

var (
	loadDevices  = flag.Int("load.devices", 1000, "publishers of the fan-in and clients of the CoAP benchmark (each a device with its own token on Tether)")
	loadWarmup   = flag.Duration("load.warmup", 3*time.Second, "time under load before measuring")
	loadDuration = flag.Duration("load.duration", 10*time.Second, "measured time of each run, after the warm-up")
	loadKeys     = flag.Int("load.keys", 10, "values (points) per message")
	loadRate     = flag.Float64("load.rate", 5, "messages per second per publisher in the offered-rate fan-in and CoAP runs")
	loadSubs     = flag.Int("load.subscribers", 1000, "subscribers of the fan-out benchmark")
	loadFanRate  = flag.Float64("load.fanout-rate", 20, "messages per second of the fan-out publisher in the offered-rate run (each delivered to every subscriber)")
	loadWindow   = flag.Int("load.window", 8, "fan-out capacity run: messages in flight, published but not yet received by every subscriber")
	loadProfile  = flag.String("load.cpuprofile", "", "directory to write a CPU profile of each run's measured window to (<benchmark>.prof); not with -cpuprofile")
)

// lossTimeout is how long a closed loop waits for a QoS 0 message before it
// counts it as lost and goes on.
const lossTimeout = 10 * time.Second

// loadKeyNames are the payload's keys: "k00", "k01", …
func loadKeyNames() []string {
	keys := make([]string, *loadKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf(`"k%02d":`, i)
	}
	return keys
}

// appendPayload appends one message as a device sends it: {"ts":…,"k00":v.5,…}
// with the send time as "ts" in epoch milliseconds with a microsecond
// fraction, which Tether stores as the points' time and every receiver
// reads back for latency. A seq ≥ 0 is added as "seq", for the fan-out's
// receivers to tell messages apart.
func appendPayload(b []byte, keys []string, sent time.Time, seq int64, v int) []byte {
	us := sent.UnixMicro()
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	if seq >= 0 {
		b = strconv.AppendInt(append(b, `,"seq":`...), seq, 10)
	}
	for _, k := range keys {
		b = append(append(b, ','), k...)
		b = strconv.AppendInt(b, int64(v%1000), 10)
		b = append(b, ".5"...)
	}
	return append(b, '}')
}

// parsePayload reads back the send time and, if there is one, the seq of a
// payload appendPayload wrote.
func parsePayload(p []byte) (sent time.Time, seq int64, err error) {
	_, rest, ok := bytes.Cut(p, tsPrefix)
	if !ok {
		return time.Time{}, -1, fmt.Errorf("payload without ts: %.40q", p)
	}
	var us int64
	digits := 0
	for _, c := range rest {
		if c == '.' {
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		us = us*10 + int64(c-'0')
		digits++
	}
	if digits == 0 {
		return time.Time{}, -1, fmt.Errorf("bad ts: %.40q", p)
	}
	seq = -1
	if _, rest, ok := bytes.Cut(rest, seqPrefix); ok {
		seq = 0
		for _, c := range rest {
			if c < '0' || c > '9' {
				break
			}
			seq = seq*10 + int64(c-'0')
		}
	}
	return time.UnixMicro(us), seq, nil
}

var tsPrefix, seqPrefix = []byte(`{"ts":`), []byte(`,"seq":`)

// loadRun is one run's measurement: a warm-up, then a window in which what
// arrives is recorded, then a stop. Latencies are collected per goroutine
// and merged once, so recording costs the load a slice append.
type loadRun struct {
	b         *testing.B
	brokerCPU func() time.Duration // Mosquitto's CPU time; nil for Tether, which runs in this process
	cpu       struct{ self, broker time.Duration }
	recording atomic.Bool
	stopping  atomic.Bool
	stopped   chan struct{}
	elapsed   time.Duration

	mu        sync.Mutex
	delivered []time.Duration // publish → at the far end (stored, received)
	acked     []time.Duration // publish → PUBACK or CoAP 2.04
	points    atomic.Int64    // points stored (Tether's fan-in and CoAP)
	lost      atomic.Int64    // QoS 0 messages a closed loop gave up on

	// published counts messages sent and arrived their arrivals at the far
	// end (each subscriber's counts), over the whole run; copies is how
	// many arrivals one message makes (the subscribers of a fan-out).
	// What is missing when the window ends is the backlog: a broker that
	// acknowledges faster than it delivers builds one.
	published, arrived atomic.Int64
	copies             int64
	backlog            int64
}

// newLoadRun starts a run's measurement; brokerCPU reads the CPU time of a
// broker in another process, nil when it runs in this one.
func newLoadRun(b *testing.B, brokerCPU func() time.Duration) *loadRun {
	return &loadRun{b: b, brokerCPU: brokerCPU, stopped: make(chan struct{}), copies: 1}
}

// measure runs the warm-up and the measured window, then tells the load to
// stop; it returns at once after that. With -load.cpuprofile the measured
// window, and only it, is profiled: set-up, warm-up and the writing of a
// backlog at shutdown stay out of the profile.
func (r *loadRun) measure() {
	time.Sleep(*loadWarmup)
	stopProfile := r.startProfile()
	self0, broker0 := r.cpuTimes()
	r.recording.Store(true)
	start := time.Now()
	time.Sleep(*loadDuration)
	r.recording.Store(false)
	r.elapsed = time.Since(start)
	r.backlog = r.published.Load()*r.copies - r.arrived.Load()
	self1, broker1 := r.cpuTimes()
	r.cpu.self, r.cpu.broker = self1-self0, broker1-broker0
	stopProfile()
	r.stopping.Store(true)
	close(r.stopped)
}

func (r *loadRun) cpuTimes() (self, broker time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if r.brokerCPU != nil {
		broker = r.brokerCPU()
	}
	return self, broker
}

func (r *loadRun) startProfile() (stop func()) {
	if *loadProfile == "" {
		return func() {}
	}
	name := strings.NewReplacer("/", "_", "=", "-").Replace(strings.TrimPrefix(r.b.Name(), "Benchmark"))
	f, err := os.Create(filepath.Join(*loadProfile, name+".prof"))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		r.b.Fatalf("cpu profile: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			r.b.Errorf("cpu profile: %v", err)
		}
	}
}

func (r *loadRun) addDelivered(ds ...time.Duration) {
	r.mu.Lock()
	r.delivered = append(r.delivered, ds...)
	r.mu.Unlock()
}

// stored is the node's Observe hook: it records a committed batch, with
// each message's latency from its "ts" (the points' time) to the commit.
func (r *loadRun) stored(msgs []tether.Message, committed time.Time) {
	r.arrived.Add(int64(len(msgs)))
	if !r.recording.Load() {
		return
	}
	lat := make([]time.Duration, len(msgs))
	points := 0
	for i, m := range msgs {
		lat[i] = committed.Sub(m.Points[0].Time)
		points += len(m.Points)
	}
	r.addDelivered(lat...)
	r.points.Add(int64(points))
}

func (r *loadRun) addAcked(ds ...time.Duration) {
	r.mu.Lock()
	r.acked = append(r.acked, ds...)
	r.mu.Unlock()
}

// failed reports a load goroutine's error, unless the run was stopping,
// when closed connections are expected.
func (r *loadRun) failed(b *testing.B, what string, err error) {
	if err != nil && !r.stopping.Load() {
		b.Errorf("%s: %v", what, err)
	}
}

// result turns the samples into rates and percentiles.
func (r *loadRun) result(broker string) loadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.elapsed.Seconds()
	res := loadResult{
		broker:    broker,
		delivered: float64(len(r.delivered)) / s,
		acks:      float64(len(r.acked)) / s,
		points:    float64(r.points.Load()) / s,
		lost:      r.lost.Load(),
		backlog:   r.backlog,
	}
	res.selfCPU, res.brokerCPU = r.cpu.self.Seconds()/s, r.cpu.broker.Seconds()/s
	res.p50, res.p99 = quantiles(r.delivered)
	res.ackP50, res.ackP99 = quantiles(r.acked)
	return res
}

// quantiles returns the median and the 99th percentile; it sorts ds.
func quantiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	at := func(p int) time.Duration { return ds[min(len(ds)-1, len(ds)*p/100)] }
	return at(50), at(99)
}

// loadResult is one run of one broker.
type loadResult struct {
	broker string
	// delivered is messages per second at the far end: stored by Tether's
	// writer, received by the subscriber(s); for fan-out, deliveries to
	// subscribers. p50 and p99 are publish → delivered.
	delivered float64
	p50, p99  time.Duration
	// acks is PUBACKs (CoAP: 2.04s) per second; 0 at QoS 0.
	acks           float64
	ackP50, ackP99 time.Duration
	points         float64 // points stored per second; Tether's store only
	lost           int64
	backlog        int64 // published but not delivered when the window ended
	// CPU time over the measured window, in cores: this process's (the
	// load generator's, and with Tether the node's too) and Mosquitto's.
	selfCPU, brokerCPU float64
}

func (r loadResult) report(b *testing.B) {
	b.Helper()
	b.ReportMetric(r.delivered, "delivered/s")
	b.ReportMetric(ms(r.p50), "p50-ms")
	b.ReportMetric(ms(r.p99), "p99-ms")
	if r.acks > 0 {
		b.ReportMetric(r.acks, "acks/s")
		b.ReportMetric(ms(r.ackP50), "ack-p50-ms")
		b.ReportMetric(ms(r.ackP99), "ack-p99-ms")
	}
	if r.points > 0 {
		b.ReportMetric(r.points, "points-stored/s")
	}
	if r.lost > 0 {
		b.ReportMetric(float64(r.lost), "lost")
	}
	b.ReportMetric(float64(r.backlog), "backlog")
	if r.brokerCPU > 0 {
		b.ReportMetric(r.selfCPU, "generator-cpu-cores")
		b.ReportMetric(r.brokerCPU, "broker-cpu-cores")
	} else {
		b.ReportMetric(r.selfCPU, "node+generator-cpu-cores")
	}
	b.ReportMetric(0, "ns/op") // the load is time-based; ns/op means nothing here
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sideBySide collects the runs of a benchmark, row by row, and prints
// them as one Markdown table: the median of each broker's runs and the
// ratio Tether ÷ Mosquitto. With -count N every leaf runs N times.
type sideBySide struct {
	title string
	rows  []string // in order of first appearance
	runs  map[string][]loadResult
}

func newSideBySide(title string) *sideBySide {
	return &sideBySide{title: title, runs: map[string][]loadResult{}}
}

func (t *sideBySide) add(row string, r loadResult) {
	if _, ok := t.runs[row]; !ok {
		t.rows = append(t.rows, row)
	}
	t.runs[row] = append(t.runs[row], r)
}

// print writes the table to stdout, where `make bench` keeps it.
func (t *sideBySide) print() {
	if len(t.rows) == 0 {
		return
	}
	fmt.Printf("\n%s (medians; ratio = Tether ÷ Mosquitto)\n\n", t.title)
	fmt.Printf("| run | metric | Tether | Mosquitto | ratio |\n| --- | --- | ---: | ---: | ---: |\n")
	for _, row := range t.rows {
		te, mo := t.median(row, "tether"), t.median(row, "mosquitto")
		// line prints one metric; zero is a value only where zeroCounts,
		// elsewhere it means the broker has no such figure.
		line := func(metric string, f func(loadResult) float64, format string, zeroCounts bool) {
			tv, mv := f(te.r), f(mo.r)
			if tv == 0 && mv == 0 && !zeroCounts {
				return
			}
			cell := func(ok bool, v float64) string {
				if !ok || (v == 0 && !zeroCounts) {
					return "—"
				}
				return fmt.Sprintf(format, v)
			}
			ratio := "—"
			if te.ok && mo.ok && tv > 0 && mv > 0 {
				ratio = fmt.Sprintf("%.2f", tv/mv)
			}
			fmt.Printf("| %s | %s | %s | %s | %s |\n", row, metric, cell(te.ok, tv), cell(mo.ok, mv), ratio)
		}
		line("delivered/s", func(r loadResult) float64 { return r.delivered }, "%.0f", false)
		line("delivered p50 ms", func(r loadResult) float64 { return ms(r.p50) }, "%.2f", false)
		line("delivered p99 ms", func(r loadResult) float64 { return ms(r.p99) }, "%.2f", false)
		line("acks/s", func(r loadResult) float64 { return r.acks }, "%.0f", false)
		line("ack p50 ms", func(r loadResult) float64 { return ms(r.ackP50) }, "%.2f", false)
		line("ack p99 ms", func(r loadResult) float64 { return ms(r.ackP99) }, "%.2f", false)
		line("points stored/s", func(r loadResult) float64 { return r.points }, "%.0f", false)
		line("lost (QoS 0) / failed (CoAP)", func(r loadResult) float64 { return float64(r.lost) }, "%.0f", false)
		line("backlog at end (messages)", func(r loadResult) float64 { return float64(r.backlog) }, "%.0f", true)
	}
	fmt.Println()
}

type medianResult struct {
	r  loadResult
	ok bool
}

// median returns, metric by metric, the median of one broker's runs of a row.
func (t *sideBySide) median(row, broker string) medianResult {
	var runs []loadResult
	for _, r := range t.runs[row] {
		if r.broker == broker {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return medianResult{}
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
	return medianResult{ok: true, r: loadResult{
		broker:    broker,
		delivered: mid(func(r loadResult) float64 { return r.delivered }),
		p50:       dur(func(r loadResult) time.Duration { return r.p50 }),
		p99:       dur(func(r loadResult) time.Duration { return r.p99 }),
		acks:      mid(func(r loadResult) float64 { return r.acks }),
		ackP50:    dur(func(r loadResult) time.Duration { return r.ackP50 }),
		ackP99:    dur(func(r loadResult) time.Duration { return r.ackP99 }),
		points:    mid(func(r loadResult) float64 { return r.points }),
		lost:      int64(mid(func(r loadResult) float64 { return float64(r.lost) })),
		backlog:   int64(mid(func(r loadResult) float64 { return float64(r.backlog) })),
	}}
}

// loadMode is the offered-rate run (a fixed rate both brokers sustain:
// compare latency) or the capacity run (a closed loop: compare
// throughput).
type loadMode string

const (
	offered  loadMode = "offered"
	capacity loadMode = "capacity"
)

// startBenchNode starts a Tether node for a load benchmark. Only the
// listeners a benchmark uses are on (edit turns on CoAP), and the
// guardrails against floods are raised far above the load: the 1,000
// clients all connect from 127.0.0.1 within a second or two, which the
// per-address connect rate (20/s) would stretch over a minute, and the
// capacity runs publish faster than a device may (100 messages/s). The
// per-device budget is still taken for every message, so its cost is
// measured.
func startBenchNode(b *testing.B, edit func(*config.Config), observe func([]tether.Message, time.Time)) *node {
	b.Helper()
	return startNodeWith(b, func(c *config.Config) {
		c.LogLevel = "warn"
		c.WriterMaxDelay = 20 * time.Millisecond
		c.ShutdownTimeout = 2 * time.Minute // a capacity run leaves a backlog on the bus to write
		c.MQTTWSAddr, c.MQTTSAddr, c.MQTTWSSAddr, c.HTTPSAddr = "", "", "", ""
		c.CoAPAddr, c.CoAPSAddr = "", ""
		c.ConnectRatePerIP = 1 << 20
		c.DevicePublishRate = 1 << 20
		if edit != nil {
			edit(c)
		}
	}, observe)
}

// mosquittoBin returns Mosquitto's path or skips the benchmark.
func mosquittoBin(b *testing.B) string {
	b.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	b.Skip("mosquitto is not installed (apt-get install mosquitto); no side-by-side figures")
	return ""
}

// startMosquitto runs a Mosquitto broker on a free loopback port, in
// memory, with anonymous clients and no limit on queued or in-flight
// messages, and returns its address and a reader of its CPU time. conf
// adds lines to its configuration.
func startMosquitto(b *testing.B, conf ...string) (string, func() time.Duration) {
	b.Helper()
	bin := mosquittoBin(b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	file := filepath.Join(b.TempDir(), "mosquitto.conf")
	text := "listener " + port + " 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_inflight_messages 0\nmax_queued_messages 0\n"
	for _, line := range conf {
		text += line + "\n"
	}
	err = os.WriteFile(file, []byte(text), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", file)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, func() time.Duration { return processCPU(cmd.Process.Pid) }
		}
	}
	b.Fatal("mosquitto did not start")
	return "", nil
}

// processCPU returns the user and system CPU time of another process, from
// /proc/<pid>/stat (in clock ticks of 10 ms), or 0 if it cannot be read.
func processCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: state is
	// field 3 of stat(5), utime 14, stime 15.
	_, rest, _ := bytes.Cut(stat, []byte(") "))
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// connectAll connects one client per credential (client ID and token),
// 32 at a time, and closes them all when the benchmark ends. A client
// with a token authenticates as the device of that ID (the username);
// one without is anonymous. A refused connection returns an error
// wrapping errRefused.
func connectAll(b *testing.B, addr string, creds [][2]string) ([]*mqttClient, error) {
	b.Helper()
	clients := make([]*mqttClient, len(creds))
	sem := make(chan struct{}, 32)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for i, u := range creds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			user := u[0]
			if u[1] == "" {
				user = ""
			}
			c, err := dialMQTT(addr, u[0], user, u[1])
			if err != nil {
				errMu.Lock()
				first = cmpErr(first, err)
				errMu.Unlock()
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}
	if first != nil {
		closeAll()
		return nil, first
	}
	b.Cleanup(closeAll)
	return clients, nil
}

// cmpErr keeps the first error, preferring a refusal, which says the most.
func cmpErr(first, err error) error {
	if first == nil || (errors.Is(err, errRefused) && !errors.Is(first, errRefused)) {
		return err
	}
	return first
}

// unblock makes every client's pending read or write return within a
// few seconds, so a load goroutine waiting on a broker that stopped
// answering ends once the run is over.
func unblock(clients []*mqttClient) {
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range clients {
		_ = c.conn.SetDeadline(deadline)
	}
}

// stagger spreads n publishers' first messages over one period, so an
// offered rate arrives evenly rather than in bursts.
func stagger(i, n int, period time.Duration) {
	time.Sleep(time.Duration(i) * period / time.Duration(n))
}
