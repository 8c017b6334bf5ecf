package coap_test

import (
	"context"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/testkit"
)

var showClientOutput = flag.Bool("libcoap.v", false, "log the output of the libcoap clients")

// runClient runs a libcoap client and returns its output. The clients exit
// 0 even when the response is an error, so tests judge by what the fakes
// saw or by the -v 7 output.
func runClient(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if *showClientOutput {
		t.Logf("output:\n%s", out)
	}
	if err != nil {
		t.Logf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return string(out)
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLibcoapInterop(t *testing.T) {
	plain := testkit.Tool(t, "coap-client-notls", "libcoap3-bin")
	secure := testkit.Tool(t, "coap-client-openssl", "libcoap3-bin")

	uri := func(e *env, path string) string {
		return "coap://127.0.0.1:" + port(t, e.g.Addr()) + path + "?t=" + token
	}
	secureURI := func(e *env, path string) string {
		return "coaps://127.0.0.1:" + port(t, e.g.DTLSAddr()) + path
	}
	wantStored := func(t *testing.T, e *env, want string, out string) {
		t.Helper()
		got := e.in.got()
		if len(got) != 1 || got[0].payload != want || got[0].device != deviceID {
			t.Fatalf("ingest got %v, want %q\nclient output:\n%s", got, want, out)
		}
	}

	t.Run("coap-client-notls posts JSON with the token in the query", func(t *testing.T) {
		e := start(t)
		out := runClient(t, plain, "-m", "post", "-t", "json", "-e", `{"temp":21.5}`, uri(e, "/telemetry"))
		wantStored(t, e, `{"temp":21.5}`, out)
	})
	t.Run("coap-client-notls posts non-confirmable", func(t *testing.T) {
		e := start(t)
		out := runClient(t, plain, "-N", "-m", "post", "-t", "json", "-e", `{"temp":21.5}`, uri(e, "/telemetry"))
		wantStored(t, e, `{"temp":21.5}`, out)
	})
	t.Run("coap-client-notls posts CBOR", func(t *testing.T) {
		e := start(t)
		// {"temp": 21.5} with 21.5 as a half-precision float.
		out := runClient(t, plain, "-m", "post", "-t", "cbor", "-e", "%A1%64temp%F9%4D%60", uri(e, "/telemetry"))
		wantStored(t, e, `{"temp":21.5}`, out)
	})
	t.Run("coap-client-notls posts block-wise under the limit", func(t *testing.T) {
		e := start(t, func(e *env) { e.in.limits.MaxPayload = 2048 })
		payload := bigJSON(1500)
		file := filepath.Join(t.TempDir(), "payload.json")
		if err := os.WriteFile(file, []byte(payload), 0o600); err != nil {
			t.Fatal(err)
		}
		out := runClient(t, plain, "-m", "post", "-t", "json", "-b", "64", "-f", file, uri(e, "/telemetry"))
		wantStored(t, e, payload, out)
	})
	t.Run("coap-client-notls posting block-wise over the limit gets 4.13 and stores nothing", func(t *testing.T) {
		e := start(t, func(e *env) { e.in.limits.MaxPayload = 512 })
		file := filepath.Join(t.TempDir(), "payload.json")
		if err := os.WriteFile(file, []byte(bigJSON(1500)), 0o600); err != nil {
			t.Fatal(err)
		}
		out := runClient(t, plain, "-v", "7", "-m", "post", "-t", "json", "-b", "64", "-f", file, uri(e, "/telemetry"))
		if !strings.Contains(out, "4.13") {
			t.Errorf("no 4.13 in the client's output:\n%s", out)
		}
		if got := e.in.got(); len(got) != 0 {
			t.Errorf("ingest got %d messages", len(got))
		}
	})
	t.Run("coap-client-notls without a token gets 4.01", func(t *testing.T) {
		e := start(t)
		out := runClient(t, plain, "-v", "7", "-m", "post", "-t", "json", "-e", `{"temp":21.5}`,
			"coap://127.0.0.1:"+port(t, e.g.Addr())+"/telemetry")
		if !strings.Contains(out, "4.01") {
			t.Errorf("no 4.01 in the client's output:\n%s", out)
		}
		if got := e.in.got(); len(got) != 0 {
			t.Errorf("ingest got %d messages", len(got))
		}
	})
	t.Run("coap-client-openssl posts over DTLS with the device's pre-shared key", func(t *testing.T) {
		e := start(t)
		out := runClient(t, secure, "-u", deviceID, "-k", pskKey, "-m", "post", "-t", "json", "-e", `{"temp":21.5}`, secureURI(e, "/telemetry"))
		wantStored(t, e, `{"temp":21.5}`, out)
	})
	t.Run("coap-client-openssl posts block-wise over DTLS", func(t *testing.T) {
		e := start(t)
		payload := bigJSON(1500)
		file := filepath.Join(t.TempDir(), "payload.json")
		if err := os.WriteFile(file, []byte(payload), 0o600); err != nil {
			t.Fatal(err)
		}
		out := runClient(t, secure, "-u", deviceID, "-k", pskKey, "-m", "post", "-t", "json", "-b", "64", "-f", file, secureURI(e, "/telemetry"))
		wantStored(t, e, payload, out)
	})
	t.Run("coap-client-openssl with a wrong key stores nothing", func(t *testing.T) {
		e := start(t)
		out := runClient(t, secure, "-B", "3", "-u", deviceID, "-k", "wrong-key", "-m", "post", "-t", "json", "-e", `{"temp":21.5}`, secureURI(e, "/telemetry"))
		if got := e.in.got(); len(got) != 0 {
			t.Errorf("ingest got %v\nclient output:\n%s", got, out)
		}
	})
	t.Run("coap-client-notls gets /latest as CBOR", func(t *testing.T) {
		e := start(t)
		e.latest.set(deviceID, tether.Latest{Key: "on", Time: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), Value: true})
		out := runClient(t, plain, "-v", "7", "-A", "cbor", uri(e, "/latest"))
		if !strings.Contains(out, "on") || !strings.Contains(out, "2024-05-01T10:00:00Z") {
			t.Errorf("no CBOR representation in the output:\n%s", out)
		}
	})
	for _, tt := range []struct {
		name string
		args func(e *env) []string
	}{
		{"coap-client-notls observes /latest and is notified after Stored", func(e *env) []string {
			return []string{plain, "-v", "7", uri(e, "/latest")}
		}},
		{"coap-client-openssl observes /latest over DTLS and is notified after Stored", func(e *env) []string {
			return []string{secure, "-u", deviceID, "-k", pskKey, secureURI(e, "/latest")}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t)
			e.latest.set(deviceID, tether.Latest{Key: "temp", Time: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), Value: 20.0})
			args := tt.args(e)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, args[0], append([]string{"-s", "4"}, args[1:]...)...)
			var out testkit.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the observation", func() bool { return e.g.Observers(deviceID) == 1 })
			e.latest.set(deviceID, tether.Latest{Key: "temp", Time: time.Date(2024, 5, 1, 10, 1, 0, 0, time.UTC), Value: 23.25})
			e.g.Stored([]tether.Message{{DeviceID: deviceID}})
			eventually(t, "the notification", func() bool { return strings.Contains(out.String(), "23.25") })
			if err := cmd.Wait(); err != nil {
				t.Logf("client: %v", err)
			}
			if *showClientOutput {
				t.Logf("output:\n%s", out.String())
			}
			if !strings.Contains(out.String(), `"value":20`) {
				t.Errorf("the first representation is not in the output:\n%s", out.String())
			}
			eventually(t, "the deregistration", func() bool { return e.g.Observers(deviceID) == 0 })
		})
	}
}

// observeWith starts a libcoap client observing for seconds and returns
// its output buffer and a function that waits for it to exit.
func observeWith(t *testing.T, seconds string, bin string, args ...string) (*testkit.Buffer, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, bin, append([]string{"-s", seconds}, args...)...)
	var out testkit.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return &out, func() {
		defer cancel()
		if err := cmd.Wait(); err != nil {
			t.Logf("client: %v", err)
		}
		if *showClientOutput {
			t.Logf("output:\n%s", out.String())
		}
	}
}

func TestLibcoapShadowAndCommands(t *testing.T) {
	plain := testkit.Tool(t, "coap-client-notls", "libcoap3-bin")
	uri := func(e *env, path string) string {
		return "coap://127.0.0.1:" + port(t, e.g.Addr()) + path + "?t=" + token
	}

	t.Run("coap-client-notls gets a named shadow", func(t *testing.T) {
		e := start(t)
		e.shadows.setDesired(deviceID, "pump", "rpm", 1200.0)
		out := runClient(t, plain, "coap://127.0.0.1:"+port(t, e.g.Addr())+"/shadow?name=pump&t="+token)
		if !strings.Contains(out, `"name":"pump"`) || !strings.Contains(out, `"desired":{"rpm":1200}`) {
			t.Errorf("no shadow in the output:\n%s", out)
		}
	})
	t.Run("coap-client-notls posts reported state and gets the shadow back", func(t *testing.T) {
		e := start(t)
		out := runClient(t, plain, "-m", "post", "-t", "json", "-e", `{"state":{"reported":{"temp":21.5}}}`, uri(e, "/shadow"))
		if calls := e.shadows.calls(); len(calls) != 1 || calls[0].device != deviceID || calls[0].update.State.Reported["temp"] != 21.5 {
			t.Fatalf("updates %+v\nclient output:\n%s", calls, out)
		}
		if !strings.Contains(out, `"reported":{"temp":21.5}`) || !strings.Contains(out, `"version":1`) {
			t.Errorf("no shadow in the output:\n%s", out)
		}
	})
	t.Run("coap-client-notls posts CBOR reported state", func(t *testing.T) {
		e := start(t)
		// {"state":{"reported":{"temp":21.5}}}
		out := runClient(t, plain, "-m", "post", "-t", "cbor", "-e", "%A1%65state%A1%68reported%A1%64temp%F9%4D%60", uri(e, "/shadow"))
		if calls := e.shadows.calls(); len(calls) != 1 || calls[0].update.State.Reported["temp"] != 21.5 {
			t.Fatalf("updates %+v\nclient output:\n%s", calls, out)
		}
	})
	t.Run("coap-client-notls posting desired state gets 4.03", func(t *testing.T) {
		e := start(t)
		out := runClient(t, plain, "-v", "7", "-m", "post", "-t", "json", "-e", `{"state":{"desired":{"led":"on"}}}`, uri(e, "/shadow"))
		if !strings.Contains(out, "4.03") {
			t.Errorf("no 4.03 in the client's output:\n%s", out)
		}
		if calls := e.shadows.calls(); len(calls) != 0 {
			t.Errorf("updates %+v", calls)
		}
	})
	t.Run("coap-client-notls posting a stale version gets 4.09", func(t *testing.T) {
		e := start(t)
		e.shadows.setDesired(deviceID, "", "led", "on")
		e.shadows.setDesired(deviceID, "", "led", "off")
		out := runClient(t, plain, "-v", "7", "-m", "post", "-t", "json", "-e", `{"state":{"reported":{"led":"on"}},"version":1}`, uri(e, "/shadow"))
		if !strings.Contains(out, "4.09") {
			t.Errorf("no 4.09 in the client's output:\n%s", out)
		}
	})
	t.Run("coap-client-notls observes the shadow and is notified when desired changes", func(t *testing.T) {
		e := start(t)
		out, wait := observeWith(t, "4", plain, uri(e, "/shadow"))
		eventually(t, "the observation", func() bool { return e.g.Observers(deviceID) == 1 })
		e.g.ShadowChanged(e.shadows.setDesired(deviceID, "", "led", "blinking"))
		eventually(t, "the notification", func() bool { return strings.Contains(out.String(), `"desired":{"led":"blinking"}`) })
		wait()
		if !strings.Contains(out.String(), `"version":0`) {
			t.Errorf("the first representation is not in the output:\n%s", out.String())
		}
	})
	t.Run("coap-client-notls observes /commands, gets a command, and replies with another client", func(t *testing.T) {
		e := start(t)
		e.commands.add(deviceID, "c1", "set_led", `{"on":true}`)
		out, wait := observeWith(t, "4", plain, uri(e, "/commands"))
		eventually(t, "the queued command", func() bool {
			return strings.Contains(out.String(), `{"id":"c1","name":"set_led","params":{"on":true},"one_way":false}`)
		})
		eventually(t, "c1 delivered", func() bool { return e.commands.status(deviceID, "c1") == "delivered" })
		if !e.g.Deliver(e.commands.add(deviceID, "c2", "reboot", "")) {
			t.Fatal("Deliver did not take c2")
		}
		eventually(t, "the new command", func() bool { return strings.Contains(out.String(), `"id":"c2"`) })
		eventually(t, "c2 delivered", func() bool { return e.commands.status(deviceID, "c2") == "delivered" })

		reply := runClient(t, plain, "-m", "post", "-t", "json", "-e", `{"status":"succeeded","result":{"led":"on"}}`, uri(e, "/commands/c1/reply"))
		if r, ok := e.commands.replyOf("c1"); !ok || string(r.Result) != `{"led":"on"}` {
			t.Fatalf("reply %+v %v\nclient output:\n%s", r, ok, reply)
		}
		again := runClient(t, plain, "-v", "7", "-m", "post", "-t", "json", "-e", `{"status":"succeeded"}`, uri(e, "/commands/c1/reply"))
		if !strings.Contains(again, "4.09") {
			t.Errorf("a second reply got no 4.09:\n%s", again)
		}
		wait()
		eventually(t, "the deregistration", func() bool { return e.g.Observers(deviceID) == 0 })
	})
	t.Run("coap-client-openssl observes /commands over DTLS and replies", func(t *testing.T) {
		secure := testkit.Tool(t, "coap-client-openssl", "libcoap3-bin")
		e := start(t)
		e.commands.add(deviceID, "c1", "reboot", "")
		secureURI := "coaps://127.0.0.1:" + port(t, e.g.DTLSAddr())
		out, wait := observeWith(t, "3", secure, "-u", deviceID, "-k", pskKey, secureURI+"/commands")
		eventually(t, "the queued command", func() bool { return strings.Contains(out.String(), `"id":"c1"`) })
		eventually(t, "c1 delivered", func() bool { return e.commands.status(deviceID, "c1") == "delivered" })
		reply := runClient(t, secure, "-u", deviceID, "-k", pskKey, "-m", "post", "-t", "json", "-e", `{"status":"failed","error":"busy"}`, secureURI+"/commands/c1/reply")
		if r, ok := e.commands.replyOf("c1"); !ok || r.Status != "failed" || r.Error != "busy" {
			t.Fatalf("reply %+v %v\nclient output:\n%s", r, ok, reply)
		}
		wait()
	})
	t.Run("coap-client-notls gets the pending commands without observing", func(t *testing.T) {
		e := start(t)
		e.commands.add(deviceID, "c1", "reboot", "")
		out := runClient(t, plain, uri(e, "/commands"))
		if !strings.Contains(out, `[{"id":"c1","name":"reboot","one_way":false}]`) {
			t.Errorf("no commands in the output:\n%s", out)
		}
		eventually(t, "c1 delivered", func() bool { return e.commands.status(deviceID, "c1") == "delivered" })
	})
}
