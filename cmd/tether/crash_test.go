package main_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// process is the real tether binary, running.
type process struct {
	cmd            *exec.Cmd
	mqttAddr, http string
}

// buildBinary builds cmd/tether once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tether-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tether")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// startProcess runs `tether serve` on random ports over dataDir and waits
// until it listens.
func startProcess(t *testing.T, dataDir string) *process {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--mqtt-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--log-format", "json", "--writer-max-delay", "5ms",
		"--mqtt-ws-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0", "--mqtt-wss-addr", "127.0.0.1:0",
		"--https-addr", "127.0.0.1:0", "--coap-addr", "127.0.0.1:0", "--coaps-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "TETHER_BOOTSTRAP_ADMIN_KEY="+adminKey)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue
			}
			switch rec.Msg {
			case "MQTT listening":
				p.mqttAddr = rec.Addr
			case "HTTP API listening":
				p.http = rec.Addr
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("tether did not start in 30s")
	}
	return p
}

func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// TestKillNineLosesNoAcknowledgedMessage publishes QoS 1 messages from
// several devices, kills the server with SIGKILL at a random moment
// mid-stream, restarts it on the same data dir, and repeats; then every
// acknowledged message must be stored exactly once, and no message twice.
func TestKillNineLosesNoAcknowledgedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	dataDir := t.TempDir()
	p := startProcess(t, dataDir)
	call := func(method, path string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+p.http+path, nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	// Enough devices publishing at once that the bus batches their
	// messages (one JetStream message holds many devices' messages), so a
	// kill lands in the middle of batches too.
	const devices = 32
	tokens := map[string]string{}
	for i := range devices {
		var out createdDevice
		req, _ := http.NewRequest("POST", "http://"+p.http+"/api/v1/devices",
			stringsReader(fmt.Sprintf(`{"id":"crash-%d"}`, i)))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		tokens[out.Device.ID] = out.Token
	}

	var mu sync.Mutex
	acked := map[string]map[int]bool{} // device → seq
	seq := 0
	for round := range 3 {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for dev, token := range tokens {
			c, err := connect3(t, p.mqttAddr, dev, token)
			if err != nil {
				t.Fatalf("round %d: connect %s: %v", round, dev, err)
			}
			start := seq
			seq += 1_000_000
			wg.Add(1)
			go func(c paho3.Client, dev string, start, next int) {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if next-start >= 3000 {
						return // stay under the query's 10,000-point limit
					}
					tok := c.Publish("devices/"+dev+"/telemetry", 1, false, fmt.Sprintf(`{"seq": %d}`, next))
					if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
						return // the server is gone; this message counts only if acknowledged
					}
					mu.Lock()
					if acked[dev] == nil {
						acked[dev] = map[int]bool{}
					}
					acked[dev][next] = true
					mu.Unlock()
					next++
				}
			}(c, dev, start, start)
		}
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		p.kill(t)
		close(stop)
		wg.Wait()
		p = startProcess(t, dataDir)
	}

	total := 0
	for _, s := range acked {
		total += len(s)
	}
	if total < 100 {
		t.Fatalf("only %d messages were acknowledged; the test proves nothing", total)
	}
	// Wait until the writer has caught up with the bus, then compare.
	deadline := time.Now().Add(30 * time.Second)
	for dev, want := range acked {
		for {
			var out struct {
				Series []series `json:"series"`
			}
			call("GET", "/api/v1/devices/"+dev+"/telemetry?keys=seq&limit=10000&from="+
				time.Now().Add(-time.Hour).Format(time.RFC3339), &out)
			stored := map[int]int{}
			for _, s := range out.Series {
				for _, smp := range s.Samples {
					stored[int(smp.Value.(float64))]++
				}
			}
			missing, dup := 0, 0
			for v := range want {
				if stored[v] == 0 {
					missing++
				}
			}
			for _, c := range stored {
				if c > 1 {
					dup++
				}
			}
			if dup > 0 {
				t.Fatalf("%s: %d messages stored more than once", dev, dup)
			}
			if missing == 0 {
				t.Logf("%s: %d acknowledged, %d stored, all acknowledged stored once", dev, len(want), len(stored))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d acknowledged messages missing", dev, missing, len(want))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
