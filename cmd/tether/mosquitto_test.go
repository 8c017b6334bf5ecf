package main_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/tether-iot/tether/internal/testkit"
)

func mosquittoPub(t *testing.T) string { return testkit.Tool(t, "mosquitto_pub", "mosquitto-clients") }

// TestTheREADMEsMosquittoPubCommandsWork runs the tour's client, the
// mosquitto_pub command line, against a node.
func TestTheREADMEsMosquittoPubCommandsWork(t *testing.T) {
	bin := mosquittoPub(t)
	n := startNode(t, nil)
	id, token := n.createDevice("thermostat-1")
	host, port, _ := net.SplitHostPort(n.MQTT.Addr())
	pub := func(pass, payload string) (string, error) {
		out, err := exec.Command(bin, "-h", host, "-p", port, "-q", "1", "-u", id, "-P", pass,
			"-t", "devices/"+id+"/telemetry", "-m", payload).CombinedOutput()
		return string(out), err
	}
	t.Run("a QoS 1 publish with the device's token is stored", func(t *testing.T) {
		if out, err := pub(token, `{"temp": 21.5, "on": true, "mode": "eco"}`); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		n.waitStored(3)
		if s := n.telemetry(id, "keys=temp")["temp"].Samples; len(s) != 1 || s[0].Value != 21.5 {
			t.Errorf("temp = %+v", s)
		}
	})
	t.Run("a wrong token is refused as not authorised", func(t *testing.T) {
		out, err := pub("wrong", `{"temp": 1}`)
		if err == nil || !strings.Contains(strings.ToLower(out), "not authori") {
			t.Errorf("err = %v, output %q", err, out)
		}
	})
}
