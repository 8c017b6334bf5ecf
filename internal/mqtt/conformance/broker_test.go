package conformance_test

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/mqtt"
	"github.com/tether-iot/tether/internal/telemetry"
	"github.com/tether-iot/tether/internal/testkit"
)

// mosquittoBin is where Debian's package mosquitto installs the broker.
const mosquittoBin = "/usr/sbin/mosquitto"

// Both brokers get the same limits, so that a case can assert one
// behaviour for both: the longest keep-alive a client may have, and the
// largest packet a client may send (Tether's is its telemetry payload
// limit plus 64 KiB; Mosquitto is told the same).
const (
	maxKeepAlive  = 3600
	maxPacketSize = 256<<10 + 64<<10
)

// TestMain lets more cases run at once than there are cores: nearly all of
// a case's time is spent waiting for a timer (a keep-alive, a will delay,
// an expiry), not computing. An explicit -test.parallel wins.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "12")
	}
	os.Exit(m.Run())
}

// broker is an MQTT server under test.
type broker interface {
	// addr returns the host:port clients connect to.
	addr() string
	// restart stops the broker the way an operator would (a graceful
	// shutdown) and starts it again on the same store and address.
	restart(t *testing.T)
}

// eachBroker runs a case against Mosquitto, the reference, and against
// Tether's gateway, each a fresh broker of its own.
func eachBroker(t *testing.T, run func(t *testing.T, b broker)) {
	t.Helper()
	t.Run("mosquitto", func(t *testing.T) {
		t.Parallel()
		run(t, startMosquitto(t))
	})
	t.Run("tether", func(t *testing.T) {
		t.Parallel()
		for _, d := range tetherDivergences {
			if strings.Contains(t.Name(), d.name) && strings.Contains(t.Name(), "/"+d.version+"/") {
				t.Skipf("known divergence (docs/architecture.md, MQTT conformance): %s", d.why)
			}
		}
		run(t, startTether(t))
	})
}

// tetherDivergences are the cases Tether's gateway fails today, each
// with its reason; docs/architecture.md lists them with the fix each
// needs. They are skipped on Tether's side only, so Mosquitto still checks
// the cases themselves, and deleting an entry shows at once whether the
// gateway has been fixed. The divergences of mochi-mqtt v2.7.9 this table
// held are fixed in its fork, third_party/mochi-mqtt (see PATCHES.md there).
var tetherDivergences = []struct{ name, version, why string }{}

// showOnFailure logs what the broker logged if the test failed.
func showOnFailure(t *testing.T, name string, l *testkit.Buffer) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, l.String())
		}
	})
}

// tetherBroker is Tether's MQTT gateway in lab mode.
type tetherBroker struct {
	dir  string
	log  *testkit.Buffer
	gw   *mqtt.Gateway
	host string // the address it listens on, kept across restarts
}

func startTether(t *testing.T) broker {
	t.Helper()
	b := &tetherBroker{dir: t.TempDir(), log: &testkit.Buffer{}, host: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	showOnFailure(t, "tether", b.log)
	b.start(t)
	t.Cleanup(func() { b.stop(t) })
	return b
}

func (b *tetherBroker) start(t *testing.T) {
	t.Helper()
	gw, err := mqtt.New(refuseDevices{}, discard{}, mqtt.Options{
		Addr:                    b.host,
		Logger:                  slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AllowAnonymous:          true,
		StoreDir:                b.dir,
		MaxKeepAlive:            maxKeepAlive,
		MaxConnectionsPerDevice: 4,
		ConnectRatePerIP:        1000,
		ConnectTimeout:          10 * time.Second,
	})
	if err != nil {
		t.Fatalf("start tether: %v", err)
	}
	if err := gw.Serve(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	b.gw, b.host = gw, gw.Addr()
}

func (b *tetherBroker) stop(t *testing.T) {
	t.Helper()
	if b.gw == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.gw.Close(ctx); err != nil {
		t.Errorf("close tether: %v", err)
	}
	b.gw = nil
}

func (b *tetherBroker) addr() string { return b.host }

func (b *tetherBroker) restart(t *testing.T) {
	t.Helper()
	b.stop(t)
	b.start(t)
}

// refuseDevices refuses every device: the suite runs in lab mode, as
// anonymous clients outside devices/.
type refuseDevices struct{}

func (refuseDevices) AuthenticateDevice(context.Context, string, string) (*tether.Device, error) {
	return nil, tether.Errorf(tether.EUNAUTHORIZED, "no devices in the conformance suite")
}

func (refuseDevices) AuthenticateCertificate(context.Context, []*x509.Certificate) (*tether.Device, error) {
	return nil, tether.Errorf(tether.EUNAUTHORIZED, "no devices in the conformance suite")
}

// discard is an ingest path that never sees a message (no device
// connects) and lets everything through.
type discard struct{}

func (discard) Accept(context.Context, *tether.Device, []byte) (int, error)  { return 0, nil }
func (discard) Limits() telemetry.Limits                                     { return telemetry.DefaultLimits() }
func (discard) Allow(*tether.Device) (bool, time.Duration)                   { return true, 0 }
func (discard) Throttle(context.Context, *tether.Device, time.Duration) bool { return true }

// mosquittoBroker is a Mosquitto process with a configuration of its own.
type mosquittoBroker struct {
	conf string
	port int
	log  *testkit.Buffer
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

func startMosquitto(t *testing.T) broker {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		t.Skipf("%s not found (apt-get install mosquitto): the reference side of the case is skipped", mosquittoBin)
	}
	dir := t.TempDir()
	b := &mosquittoBroker{conf: filepath.Join(dir, "mosquitto.conf"), port: freePort(t), log: &testkit.Buffer{}}
	showOnFailure(t, "mosquitto", b.log)
	// "user root" keeps Mosquitto, when started as root, from switching
	// to the mosquitto user, who could not write the temporary directory.
	// sys_interval 1 publishes $SYS topics every second rather than ten.
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
user root
max_keepalive %d
max_packet_size %d
sys_interval 1
log_dest stderr
log_type all
`, b.port, dir, maxKeepAlive, maxPacketSize)
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	t.Cleanup(func() { b.stop(t) })
	return b
}

func (b *mosquittoBroker) start(t *testing.T) {
	t.Helper()
	b.cmd = exec.Command(mosquittoBin, "-c", b.conf)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(b.cmd, b.done)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-b.done:
			t.Fatalf("mosquitto exited at start: %v", b.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto does not accept connections on %s: %v", b.addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *mosquittoBroker) stop(t *testing.T) {
	t.Helper()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		t.Errorf("mosquitto did not stop on SIGTERM within 5s")
	}
	b.cmd = nil
}

func (b *mosquittoBroker) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

func (b *mosquittoBroker) restart(t *testing.T) {
	t.Helper()
	b.stop(t)
	b.start(t)
}

// freePort returns a TCP port nothing listens on just now, below the
// range the system picks client ports from. Both brokers are given one
// rather than picking their own (Mosquitto cannot be told to pick one),
// and a broker restarted in a case listens on its port again: a port from
// the client range could meanwhile have become the local end of another
// case's connection.
func freePort(t *testing.T) int {
	t.Helper()
	low := 32768 // Linux's default start of ip_local_port_range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	for range 100 {
		port := 10000 + rand.IntN(low-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port below the client port range")
	return 0
}

// eventually waits until cond holds, failing the test at the deadline.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mosquittoDeviates skips the Mosquitto side of a case where Mosquitto
// itself breaks a rule of the specification: it is the reference, not the
// subject. The reason names the rule and what Mosquitto does instead.
func mosquittoDeviates(t *testing.T, b broker, reason string) {
	t.Helper()
	if _, ok := b.(*mosquittoBroker); ok {
		t.Skip("Mosquitto 2.0.11 deviates from the specification here: " + reason)
	}
}

// mosquittoBefore skips the Mosquitto side of a case when the Mosquitto
// installed is older than the version whose behaviour the case asserts.
func mosquittoBefore(t *testing.T, b broker, version, olderBehaviour string) {
	t.Helper()
	if _, ok := b.(*mosquittoBroker); !ok {
		return
	}
	v, err := mosquittoVersion()
	if err != nil {
		t.Fatal(err)
	}
	if versionLess(v, version) {
		t.Skipf("Mosquitto %s behaves as %s does not: %s", v, version, olderBehaviour)
	}
}

// mosquittoVersion returns the version of the Mosquitto installed, from
// the first line of its usage text ("mosquitto version 2.0.11").
var mosquittoVersion = sync.OnceValues(func() (string, error) {
	out, _ := exec.Command(mosquittoBin, "-h").CombinedOutput() // exits 3 after printing usage
	var v string
	if _, err := fmt.Sscanf(string(out), "mosquitto version %s", &v); err != nil {
		return "", fmt.Errorf("mosquitto -h: %q: %w", out, err)
	}
	return v, nil
})

// versionLess compares dotted version numbers.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
