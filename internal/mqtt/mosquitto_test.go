package mqtt

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/testkit"
)

// mosquitto runs a Mosquitto client and returns its combined output.
func mosquitto(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, testkit.Tool(t, name, "mosquitto-clients"), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMosquittoClients(t *testing.T) {
	tg := startGateway(t, func(o *Options) { o.AllowAnonymous = true })
	ca, cert, key := pki().writeFiles(t)
	tcp := []string{"-h", "127.0.0.1", "-p", port(t, tg.Addr())}
	tlsWithCert := []string{"-h", "127.0.0.1", "-p", port(t, tg.TLSAddr()), "--cafile", ca, "--cert", cert, "--key", key}
	tlsWithToken := []string{"-h", "127.0.0.1", "-p", port(t, tg.TLSAddr()), "--cafile", ca, "-u", "d1", "-P", "d1.secret"}

	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run("mosquitto_pub sends telemetry with a token over TCP with "+v, func(t *testing.T) {
			before := tg.in.acceptedCount()
			args := append([]string{"-V", v, "-q", "1", "-u", "d1", "-P", "d1.secret", "-t", "devices/d1/telemetry", "-m", `{"temp":21.5}`}, tcp...)
			if out, err := mosquitto(t, "mosquitto_pub", args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if tg.in.acceptedCount() != before+1 {
				t.Fatal("the telemetry was not ingested")
			}
		})

		t.Run("mosquitto_pub sends telemetry with a certificate over TLS with "+v, func(t *testing.T) {
			before := tg.in.acceptedCount()
			args := append([]string{"-V", v, "-q", "1", "-t", "devices/d1/telemetry", "-m", `{"temp":22}`}, tlsWithCert...)
			if out, err := mosquitto(t, "mosquitto_pub", args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if tg.in.acceptedCount() != before+1 {
				t.Fatal("the telemetry was not ingested")
			}
		})

		t.Run("mosquitto_sub receives with a certificate over TLS with "+v, func(t *testing.T) {
			tg.mustConnect3(t, "tcp", token("d1"), opts3{}).publish(t, "devices/d1/state", 1, true, "state-"+v)
			args := append([]string{"-V", v, "-t", "devices/d1/state", "-C", "1", "-W", "10"}, tlsWithCert...)
			out, err := mosquitto(t, "mosquitto_sub", args...)
			if err != nil || out != "state-"+v {
				t.Fatalf("%v: %q", err, out)
			}
		})

		t.Run("mosquitto_sub receives with a token over TLS with "+v, func(t *testing.T) {
			args := append([]string{"-V", v, "-t", "devices/d1/state", "-C", "1", "-W", "10"}, tlsWithToken...)
			out, err := mosquitto(t, "mosquitto_sub", args...)
			if err != nil || !strings.HasPrefix(out, "state-") {
				t.Fatalf("%v: %q", err, out)
			}
		})

		t.Run("mosquitto_pub with a wrong token is refused with "+v, func(t *testing.T) {
			args := append([]string{"-V", v, "-u", "d1", "-P", "wrong", "-t", "devices/d1/x", "-m", "x"}, tcp...)
			out, err := mosquitto(t, "mosquitto_pub", args...)
			if err == nil || !strings.Contains(strings.ToLower(out), "not authori") {
				t.Fatalf("%v: %q, want a refusal as not authorised", err, out)
			}
		})

		t.Run("anonymous mosquitto clients use the lab's topics with "+v, func(t *testing.T) {
			args := append([]string{"-V", v, "-q", "1", "-r", "-t", "lab/" + v, "-m", "hello"}, tcp...)
			if out, err := mosquitto(t, "mosquitto_pub", args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			args = append([]string{"-V", v, "-t", "lab/" + v, "-C", "1", "-W", "10"}, tcp...)
			if out, err := mosquitto(t, "mosquitto_sub", args...); err != nil || out != "hello" {
				t.Fatalf("%v: %q", err, out)
			}
		})
	}
}
