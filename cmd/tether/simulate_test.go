// This file is in package main, as certs_test.go is, because it drives
// run (the command line without the process) for `tether simulate`; the
// demo's tests start their node here too, with a few helpers of their own.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/simulate"
	"github.com/tether-iot/tether/internal/testkit"
)

// simKey is the bootstrap admin key of these tests' nodes.
const simKey = "simulate-admin-key-0123456789abcdef012345"

// simNode is a node on random loopback ports.
type simNode struct {
	*Main
	t      *testing.T
	logs   *testkit.Buffer
	closed bool
}

// startSimNode runs a node on dir; with demo, as `tether serve --demo`.
// The test's cleanup closes it unless the test did.
func startSimNode(t *testing.T, dir string, demo bool) *simNode {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir, cfg.Demo = dir, demo
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
	cfg.WriterMaxDelay = 5 * time.Millisecond
	cfg.LogLevel = "debug"
	logs := &testkit.Buffer{}
	m := NewMain(cfg, simKey, logs)
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("start node: %v\n%s", err, logs)
	}
	n := &simNode{Main: m, t: t, logs: logs}
	t.Cleanup(func() {
		if !n.closed {
			n.close()
		}
		if t.Failed() {
			t.Logf("node log:\n%s", logs)
		}
	})
	return n
}

func (n *simNode) close() {
	n.t.Helper()
	n.closed = true
	if err := n.Close(); err != nil {
		n.t.Errorf("close node: %v", err)
	}
}

// api calls the REST API as admin and decodes a 2xx answer into out.
func (n *simNode) api(method, path string, body, out any) (int, []byte) {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.HTTP.Addr()+path, rd)
	req.Header.Set("Authorization", "Bearer "+simKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, raw
}

// latest returns a device's newest values by key, and their newest time.
func (n *simNode) latest(device string) (map[string]any, time.Time) {
	n.t.Helper()
	var out struct {
		Values []tether.Latest `json:"values"`
	}
	if status, raw := n.api("GET", "/api/v1/devices/"+device+"/latest", nil, &out); status != http.StatusOK {
		n.t.Fatalf("latest %s: %d %s", device, status, raw)
	}
	m := map[string]any{}
	var newest time.Time
	for _, v := range out.Values {
		m[v.Key] = v.Value
		if v.Time.After(newest) {
			newest = v.Time
		}
	}
	return m, newest
}

// devices lists the devices with a label selector.
func (n *simNode) devices(query string) []map[string]any {
	n.t.Helper()
	var out struct {
		Devices []map[string]any `json:"devices"`
	}
	if status, raw := n.api("GET", "/api/v1/devices?"+query, nil, &out); status != http.StatusOK {
		n.t.Fatalf("devices: %d %s", status, raw)
	}
	return out.Devices
}

// command sends a command and waits up to 10 s for its result.
func (n *simNode) command(device, name, params string) tether.Command {
	n.t.Helper()
	var c tether.Command
	body := map[string]any{"name": name}
	if params != "" {
		body["params"] = json.RawMessage(params)
	}
	if status, raw := n.api("POST", "/api/v1/devices/"+device+"/commands?wait=10s", body, &c); status >= 300 {
		n.t.Fatalf("command %s to %s: %d %s", name, device, status, raw)
	}
	return c
}

// eventually polls cond for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// demoFleet is the demo's devices and their IDs.
func demoFleet() ([]simulate.Spec, []string) {
	specs := simulate.Fleet(simulate.FleetOptions{Devices: demoDevices, Prefix: demoPrefix})
	var ids []string
	for _, s := range specs {
		ids = append(ids, s.Device.ID)
	}
	return specs, ids
}

func TestServeDemoShowsALiveFleet(t *testing.T) {
	started := time.Now()
	dir := t.TempDir()
	n := startSimNode(t, dir, true)
	specs, ids := demoFleet()
	if len(ids) != 12 {
		t.Fatalf("%d demo devices", len(ids))
	}

	t.Run("the welcome text says the demo runs", func(t *testing.T) {
		var b bytes.Buffer
		n.PrintWelcome(&b)
		if !strings.Contains(b.String(), "12 simulated devices") || !strings.Contains(b.String(), "without --demo") {
			t.Errorf("welcome:\n%s", b.String())
		}
	})
	t.Run("the demo's profiles and example rules exist", func(t *testing.T) {
		for _, kind := range simulate.Kinds {
			var p tether.Profile
			if status, raw := n.api("GET", "/api/v1/profiles/"+kind, nil, &p); status != http.StatusOK || len(p.Commands) == 0 || len(p.Telemetry) == 0 {
				t.Errorf("profile %s: %d %s", kind, status, raw)
			}
		}
		for _, r := range simulate.ExampleRules() {
			var got tether.Rule
			if status, raw := n.api("GET", "/api/v1/rules/"+r.ID, nil, &got); status != http.StatusOK || !got.Enabled || got.Version != 1 {
				t.Errorf("rule %s: %d %s", r.ID, status, raw)
			}
		}
	})
	t.Run("every demo device sends its profile's telemetry within seconds", func(t *testing.T) {
		for _, s := range specs {
			id := s.Device.ID
			var want []string
			for _, p := range simulate.Profiles() {
				if p.ID == s.Kind {
					for k := range p.Telemetry {
						want = append(want, k)
					}
				}
			}
			if len(want) == 0 {
				t.Fatalf("no profile for %s (%s)", id, s.Kind)
			}
			eventually(t, id+"'s latest values", func() bool {
				got, _ := n.latest(id)
				for _, k := range want {
					if _, ok := got[k]; !ok {
						return false
					}
				}
				return true
			})
		}
		if d := time.Since(started); d > 20*time.Second {
			t.Errorf("the fleet took %v to report", d)
		}
	})
	t.Run("every demo device is online and labelled", func(t *testing.T) {
		eventually(t, "12 online demo devices", func() bool { return len(n.devices("labels=demo=true&status=online")) == 12 })
		for _, site := range simulate.Sites {
			if got := n.devices("labels=demo=true,site=" + site); len(got) != 4 {
				t.Errorf("%d devices in %s, want one of each kind", len(got), site)
			}
		}
	})
	t.Run("a thermostat answers a command and reports its new mode", func(t *testing.T) {
		c := n.command("demo-thermostat-1", "set_mode", `{"mode":"cool"}`)
		if c.Status != tether.CommandSucceeded || string(c.Result) != `{"mode":"cool"}` {
			t.Fatalf("command %s %s: %s", c.Status, c.Reason, c.Result)
		}
		eventually(t, "the reported mode", func() bool {
			var sh tether.Shadow
			n.api("GET", "/api/v1/devices/demo-thermostat-1/shadow", nil, &sh)
			return sh.State.Reported["mode"] == "cool"
		})
	})
	t.Run("a fridge defrosts on command, and a defrost its profile does not allow is refused", func(t *testing.T) {
		c := n.command("demo-fridge-2", "defrost", `{"seconds": 20}`)
		if c.Status != tether.CommandSucceeded || string(c.Result) != `{"defrost_seconds":20}` {
			t.Errorf("defrost: %s %s: %s", c.Status, c.Reason, c.Result)
		}
		status, raw := n.api("POST", "/api/v1/devices/demo-fridge-2/commands", map[string]any{"name": "defrost", "params": map[string]any{"seconds": 1}}, nil)
		if status != http.StatusBadRequest && status != http.StatusUnprocessableEntity {
			t.Errorf("defrost of 1 s: %d %s, want the profile's schema to refuse it", status, raw)
		}
	})
	t.Run("a patient monitor answers a ping over CoAP", func(t *testing.T) {
		c := n.command("demo-patient-monitor-2", "ping", "")
		var res map[string]any
		_ = json.Unmarshal(c.Result, &res)
		if c.Status != tether.CommandSucceeded || res["pong"] != true {
			t.Errorf("ping %s %s: %s", c.Status, c.Reason, c.Result)
		}
		var p tether.Presence
		n.api("GET", "/api/v1/devices/demo-patient-monitor-2/presence", nil, &p)
		if p.Transport != "coap" || p.Status != tether.PresenceOnline {
			t.Errorf("presence %+v, want online over CoAP", p)
		}
	})
	t.Run("a robot arm calibrates on command", func(t *testing.T) {
		if c := n.command("demo-robot-arm-3", "calibrate", ""); c.Status != tether.CommandSucceeded {
			t.Errorf("calibrate %s %s", c.Status, c.Reason)
		}
	})
	t.Run("a thermostat follows a desired target and reports it", func(t *testing.T) {
		var sh tether.Shadow
		body := map[string]any{"state": map[string]any{"desired": map[string]any{"target_temp": 23.5}}}
		if status, raw := n.api("PATCH", "/api/v1/devices/demo-thermostat-2/shadow", body, &sh); status != http.StatusOK {
			t.Fatalf("PATCH: %d %s", status, raw)
		}
		eventually(t, "the reported target", func() bool {
			var sh tether.Shadow // fresh: a missing delta leaves the old one in place
			n.api("GET", "/api/v1/devices/demo-thermostat-2/shadow", nil, &sh)
			return sh.State.Reported["target_temp"] == 23.5 && len(sh.State.Delta) == 0
		})
		eventually(t, "the target in the telemetry", func() bool {
			v, _ := n.latest("demo-thermostat-2")
			return v["target_temp"] == 23.5
		})
	})
	t.Run("the fridge whose door is left open raises an alert", func(t *testing.T) {
		var a tether.Alert
		eventually(t, "an active door_open alert", func() bool {
			var out struct {
				Alerts []tether.Alert `json:"alerts"`
			}
			n.api("GET", "/api/v1/alerts?status=active", nil, &out)
			i := slices.IndexFunc(out.Alerts, func(a tether.Alert) bool {
				return a.RuleID == "demo-fridge-door-open" && a.DeviceID == "demo-fridge-1"
			})
			if i >= 0 {
				a = out.Alerts[i]
			}
			return i >= 0
		})
		if a.Type != "door_open" || a.Severity != "warning" || a.Values["door_open"] != true || a.Values["site"] != "berlin" {
			t.Errorf("alert %+v", a)
		}
		if d := a.RaisedAt.Sub(started); d > 30*time.Second {
			t.Errorf("raised %v after the start", d)
		}
	})
	t.Run("the racing heart and the arm heading for failure raise their alerts", func(t *testing.T) {
		for _, want := range []struct{ rule, device, typ string }{
			{"demo-patient-heart-rate", "demo-patient-monitor-1", "heart_rate"},
			{"demo-arm-vibration-trend", "demo-robot-arm-1", "vibration_trend"},
		} {
			eventually(t, want.typ+" alert on "+want.device, func() bool {
				var out struct {
					Alerts []tether.Alert `json:"alerts"`
				}
				n.api("GET", "/api/v1/alerts?rule="+want.rule, nil, &out)
				return slices.ContainsFunc(out.Alerts, func(a tether.Alert) bool {
					return a.DeviceID == want.device && a.Type == want.typ
				})
			})
		}
	})
	t.Run("the oxygen rule matches a low reading in a dry run", func(t *testing.T) {
		var out struct {
			Results []tether.RuleResult `json:"results"`
		}
		inputs := map[string]any{"inputs": []map[string]any{
			{"device": "demo-patient-monitor-3", "values": map[string]any{"spo2": 96.5, "heart_rate": 70}},
			{"device": "demo-patient-monitor-3", "values": map[string]any{"spo2": 89.2, "heart_rate": 82}},
		}}
		status, raw := n.api("POST", "/api/v1/rules/demo-patient-spo2-low/dry-run", inputs, &out)
		if status != http.StatusOK || len(out.Results) != 1 || out.Results[0].Values["spo2"] != 89.2 {
			t.Errorf("dry run: %d %s", status, raw)
		}
	})
	t.Run("nothing the simulated devices send is refused or quarantined", func(t *testing.T) {
		for _, id := range ids {
			var q struct {
				Count int64 `json:"count"`
			}
			n.api("GET", "/api/v1/devices/"+id+"/quarantine", nil, &q)
			var d struct {
				Refused uint64 `json:"refused_messages"`
			}
			n.api("GET", "/api/v1/devices/"+id, nil, &d)
			if q.Count != 0 || d.Refused != 0 {
				t.Errorf("%s: %d quarantined points, %d refused messages", id, q.Count, d.Refused)
			}
		}
	})

	// A person changes the demo; a restart keeps the change.
	if status, raw := n.api("POST", "/api/v1/rules/demo-patient-spo2-low/disable", nil, nil); status != http.StatusOK {
		t.Fatalf("disable: %d %s", status, raw)
	}
	t.Run("stopping the demo disconnects its devices cleanly", func(t *testing.T) {
		n.stopDemo() // Close does this first, while the node still listens
		eventually(t, "demo-thermostat-1 offline after a clean disconnect", func() bool {
			var p tether.Presence
			n.api("GET", "/api/v1/devices/demo-thermostat-1/presence", nil, &p)
			return p.Status == tether.PresenceOffline && p.Reason == tether.ReasonCleanDisconnect
		})
	})
	closing := time.Now()
	n.close()
	if d := time.Since(closing); d > 10*time.Second {
		t.Errorf("closing took %v", d)
	}
	restarted := time.Now()
	n = startSimNode(t, dir, true)
	t.Run("a restart keeps the demo as it was and connects with new tokens", func(t *testing.T) {
		if got := n.devices("labels=demo=true"); len(got) != 12 {
			t.Errorf("%d demo devices after the restart", len(got))
		}
		var r tether.Rule
		n.api("GET", "/api/v1/rules/demo-patient-spo2-low", nil, &r)
		if r.Enabled || r.Version != 1 {
			t.Errorf("the disabled rule is now %+v", r)
		}
		eventually(t, "the desired target followed again after the restart", func() bool {
			var sh tether.Shadow
			n.api("GET", "/api/v1/devices/demo-thermostat-2/shadow", nil, &sh)
			v, ts := n.latest("demo-thermostat-2")
			return sh.State.Reported["target_temp"] == 23.5 && len(sh.State.Delta) == 0 && v["target_temp"] == 23.5 && ts.After(restarted)
		})
		for _, id := range ids {
			eventually(t, id+" sending again", func() bool {
				_, ts := n.latest(id)
				return ts.After(restarted)
			})
		}
	})
}

// runSim runs `tether simulate args…` until ctx ends.
func runSim(ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr syncBuffer
	code := run(ctx, append([]string{"simulate"}, args...), func(k string) string { return env[k] }, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSimulateRunsDevicesAgainstANode(t *testing.T) {
	n := startSimNode(t, t.TempDir(), false)
	base := []string{"--api", "http://" + n.HTTP.Addr(), "--mqtt", n.MQTT.Addr(), "--coap", n.CoAP.Addr(), "--interval", "200ms"}
	ids := []string{"t-thermostat-1", "t-fridge-1", "t-robot-arm-1", "t-patient-monitor-1", "t-thermostat-2"}

	t.Run("it registers its devices, runs them and stops when interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type result struct {
			code           int
			stdout, stderr string
		}
		done := make(chan result, 1)
		go func() {
			code, stdout, stderr := runSim(ctx, nil, append(base, "--api-key", simKey, "--devices", "5", "--prefix", "t-")...)
			done <- result{code, stdout, stderr}
		}()
		for _, id := range ids {
			eventually(t, id+"'s telemetry", func() bool {
				if status, _ := n.api("GET", "/api/v1/devices/"+id, nil, nil); status != http.StatusOK {
					return false
				}
				v, _ := n.latest(id)
				return len(v) >= 4
			})
		}
		if c := n.command("t-fridge-1", "defrost", ""); c.Status != tether.CommandSucceeded || string(c.Result) != `{"defrost_seconds":30}` {
			t.Errorf("defrost %s %s: %s", c.Status, c.Reason, c.Result)
		}
		if c := n.command("t-patient-monitor-1", "ping", ""); c.Status != tether.CommandSucceeded {
			t.Errorf("ping over CoAP %s %s", c.Status, c.Reason)
		}
		var p tether.Presence
		n.api("GET", "/api/v1/devices/t-patient-monitor-1/presence", nil, &p)
		if p.Transport != "coap" {
			t.Errorf("the patient monitor's presence %+v, want CoAP", p)
		}
		cancel()
		select {
		case r := <-done:
			if r.code != 0 || !strings.Contains(r.stdout, "Simulating 5 devices") || !strings.Contains(r.stdout, "t-patient-monitor-1") ||
				!strings.Contains(r.stdout, "Stopped:") {
				t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr, `"temp"`) || strings.Contains(r.stderr, "heart_rate") {
				t.Errorf("a payload was logged:\n%s", r.stderr)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("simulate did not stop")
		}
		eventually(t, "the devices to go offline", func() bool {
			return len(n.devices("labels=demo=true&status=offline")) == 4 // the CoAP one has no connection to end
		})
	})
	t.Run("a second run finds its devices, rotates their tokens and runs them again", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan int, 1)
		var stderr string
		go func() {
			var code int
			// The key from the environment this time.
			code, _, stderr = runSim(ctx, map[string]string{"TETHER_API_KEY": simKey}, append(base, "--devices", "5", "--prefix", "t-")...)
			done <- code
		}()
		since := time.Now()
		eventually(t, "new telemetry from every device", func() bool {
			for _, id := range ids {
				if _, ts := n.latest(id); !ts.After(since) {
					return false
				}
			}
			return true
		})
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit %d: %s", code, stderr)
		}
		if got := n.devices("labels=demo=true"); len(got) != 5 {
			t.Errorf("%d devices", len(got))
		}
	})
	t.Run("a device of the same ID that is not simulated is left alone", func(t *testing.T) {
		var created struct {
			Token string `json:"token"`
		}
		if status, raw := n.api("POST", "/api/v1/devices", map[string]any{"id": "real-thermostat-1"}, &created); status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, raw)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, _, stderr := runSim(ctx, nil, append(base, "--api-key", simKey, "--devices", "1", "--kinds", "thermostat", "--prefix", "real-")...)
		if code != 1 || !strings.Contains(stderr, "real-thermostat-1 exists and is not simulated") {
			t.Errorf("exit %d: %s", code, stderr)
		}
		req, _ := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/v1/ingest", strings.NewReader(`{"temp": 20}`))
		req.Header.Set("Authorization", "Bearer "+created.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("the real device's token: %d, want it still working", resp.StatusCode)
		}
	})
	t.Run("a wrong API key exits 1 with the node's refusal", func(t *testing.T) {
		code, _, stderr := runSim(context.Background(), nil, append(base, "--api-key", "ak_nope.nope")...)
		if code != 1 || !strings.Contains(stderr, "401") {
			t.Errorf("exit %d: %s", code, stderr)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no API key is a usage error", nil, "--api-key or TETHER_API_KEY"},
		{"an unknown kind is a usage error", []string{"--api-key", "k", "--kinds", "toaster"}, `unknown device kind "toaster"`},
		{"no devices is a usage error", []string{"--api-key", "k", "--devices", "0"}, "--devices 0"},
		{"too short an interval is a usage error", []string{"--api-key", "k", "--interval", "1ms"}, "--interval 1ms"},
		{"an API URL that is not HTTP is a usage error", []string{"--api-key", "k", "--api", "ftp://x"}, `API URL "ftp://x"`},
		{"a prefix that makes bad IDs is a usage error", []string{"--api-key", "k", "--prefix", "a b/"}, `--prefix "a b/"`},
		{"a stray argument is a usage error", []string{"--api-key", "k", "now"}, `unexpected argument "now"`},
		{"an unknown flag is a usage error", []string{"--frobnicate"}, "frobnicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runSim(context.Background(), nil, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
	t.Run("-h explains the command", func(t *testing.T) {
		code, _, stderr := runSim(context.Background(), nil, "-h")
		if code != 0 || !strings.Contains(stderr, "Usage: tether simulate") || !strings.Contains(stderr, "-devices") {
			t.Errorf("exit %d: %s", code, stderr)
		}
	})
}
