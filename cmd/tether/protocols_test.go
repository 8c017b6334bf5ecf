package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	main "github.com/tether-iot/tether/cmd/tether"
	"github.com/tether-iot/tether/internal/certs"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/testkit"
)

// mqtt3 connects a 3.1.1 client to broker (a URL) with options edited by
// edit.
func mqtt3(t *testing.T, broker, clientID, user, pass string, edit func(*paho3.ClientOptions)) (paho3.Client, error) {
	t.Helper()
	opts := paho3.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	if edit != nil {
		edit(opts)
	}
	c := paho3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect to %s timed out", broker)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func wait(t *testing.T, tok paho3.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("token: %v", tok.Error())
	}
}

func TestMQTTOverWebSocketIsTheSameBroker(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("panel-1")
	tcp, err := mqtt3(t, "tcp://"+n.MQTT.Addr(), "tcp-side", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	wait(t, tcp.Subscribe("devices/"+id+"/status", 1, func(_ paho3.Client, m paho3.Message) { got <- string(m.Payload()) }))
	ws, err := mqtt3(t, "ws://"+n.MQTT.WSAddr()+"/mqtt", "ws-side", id, token, nil)
	if err != nil {
		t.Fatalf("connect over WebSocket: %v", err)
	}
	t.Run("telemetry over WebSocket is stored", func(t *testing.T) {
		wait(t, ws.Publish("devices/"+id+"/telemetry", 1, false, `{"volts": 230}`))
		n.waitStored(1)
	})
	t.Run("a WebSocket publish reaches a TCP subscriber", func(t *testing.T) {
		wait(t, ws.Publish("devices/"+id+"/status", 1, false, "on"))
		select {
		case m := <-got:
			if m != "on" {
				t.Errorf("got %q", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the TCP subscriber got nothing")
		}
	})
}

func TestMQTTSWithMosquittoPub(t *testing.T) {
	bin := mosquittoPub(t)
	n, dir := tlsNode(t, nil)
	id, token := n.createDevice("boiler-1")
	dev, err := certs.WriteDevice(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(n.MQTT.TLSAddr())
	pub := func(args ...string) error {
		out, err := exec.Command(bin, append([]string{"-h", host, "-p", port, "--cafile", filepath.Join(dir, "ca.pem"),
			"-q", "1", "-t", "devices/" + id + "/telemetry", "-m", `{"bar": 1.8}`}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	t.Run("a device with its token over TLS is stored", func(t *testing.T) {
		if err := pub("-u", id, "-P", token); err != nil {
			t.Fatal(err)
		}
		n.waitStored(1)
	})
	t.Run("an unregistered client certificate is refused", func(t *testing.T) {
		if err := pub("--cert", dev.Cert, "--key", dev.Key); err == nil {
			t.Fatal("mosquitto_pub succeeded")
		}
	})
	t.Run("a registered client certificate needs no token", func(t *testing.T) {
		pem := readFile(t, dev.Cert)
		if status, _, raw := n.api("POST", "/api/v1/devices/"+id+"/certificates", "", map[string]string{"pem": pem}, nil); status != http.StatusCreated {
			t.Fatalf("register: %d %s", status, raw)
		}
		if err := pub("--cert", dev.Cert, "--key", dev.Key); err != nil {
			t.Fatal(err)
		}
		n.waitStored(2)
	})
}

// coapClient returns the path of one of libcoap's clients.
func coapClient(t *testing.T, name string) string { return testkit.Tool(t, name, "libcoap3-bin") }

func TestCoAPWithLibcoap(t *testing.T) {
	plain := coapClient(t, "coap-client-notls")
	dtls := coapClient(t, "coap-client-openssl")
	n := startNode(t, nil)
	id, token := n.createDevice("soil-1")
	run := func(bin string, args ...string) string {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Run("a confirmable POST with the token query is stored", func(t *testing.T) {
		run(plain, "-m", "post", "-t", "json", "-e", `{"moisture": 31.5}`, "coap://"+n.CoAP.Addr()+"/telemetry?t="+token)
		n.waitStored(1)
	})
	t.Run("a POST with a wrong token is stored nowhere", func(t *testing.T) {
		out := run(plain, "-v", "7", "-m", "post", "-t", "json", "-e", `{"moisture": 1}`, "coap://"+n.CoAP.Addr()+"/telemetry?t="+id+".wrong")
		if !strings.Contains(out, "4.01") {
			t.Errorf("no 4.01 in the exchange:\n%s", out)
		}
	})
	t.Run("a device with a pre-shared key over DTLS is stored", func(t *testing.T) {
		var psk struct{ Identity, PSK string }
		if status, _, raw := n.api("POST", "/api/v1/devices/"+id+"/psk", "", nil, &psk); status != http.StatusCreated {
			t.Fatalf("psk: %d %s", status, raw)
		}
		run(dtls, "-u", psk.Identity, "-k", psk.PSK, "-m", "post", "-t", "json", "-e", `{"moisture": 32}`, "coaps://"+n.CoAP.DTLSAddr()+"/telemetry")
		n.waitStored(2)
	})
	t.Run("a large payload sent block-wise is stored", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("{")
		for i := range 60 {
			fmt.Fprintf(&b, `"probe_%02d": %d,`, i, i)
		}
		b.WriteString(`"last": 1}`)
		run(plain, "-b", "64", "-m", "post", "-t", "json", "-e", b.String(), "coap://"+n.CoAP.Addr()+"/telemetry?t="+token)
		n.waitStored(2 + 61)
	})
	t.Run("the device's latest values are readable", func(t *testing.T) {
		out := run(plain, "-m", "get", "coap://"+n.CoAP.Addr()+"/latest?t="+token)
		if !strings.Contains(out, "moisture") {
			t.Errorf("latest: %s", out)
		}
	})
}

// TestMQTTSessionsAndRetainedSurviveARestart stops a node and starts
// another over the same data directory: a device's persistent session
// gets the message queued for it meanwhile, and a retained message is
// still there.
func TestMQTTSessionsAndRetainedSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	start := func() *main.Main {
		cfg := config.Default()
		cfg.DataDir = dir
		cfg.HTTPAddr, cfg.MQTTAddr, cfg.MQTTWSAddr, cfg.CoAPAddr, cfg.CoAPSAddr = "127.0.0.1:0", "127.0.0.1:0", "", "", ""
		m := main.NewMain(cfg, adminKey, &bytes.Buffer{})
		if err := m.Run(context.Background()); err != nil {
			m.Close()
			t.Fatal(err)
		}
		return m
	}
	m := start()
	n := &node{Main: m, t: t, logs: &testkit.Buffer{}}
	id, token := n.createDevice("lock-1")
	broker := "tcp://" + m.MQTT.Addr()
	persistent := func(o *paho3.ClientOptions) { o.SetCleanSession(false) }
	sub, err := mqtt3(t, broker, "lock-app", id, token, persistent)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, sub.Subscribe("devices/"+id+"/commands", 1, nil))
	sub.Disconnect(100)
	pub, err := mqtt3(t, broker, "lock-side", id, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, pub.Publish("devices/"+id+"/commands", 1, false, "unlock"))
	wait(t, pub.Publish("devices/"+id+"/state", 1, true, "locked"))
	pub.Disconnect(100)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m = start()
	defer m.Close()
	broker = "tcp://" + m.MQTT.Addr()
	queued := make(chan string, 4)
	if _, err := mqtt3(t, broker, "lock-app", id, token, func(o *paho3.ClientOptions) {
		persistent(o)
		o.SetDefaultPublishHandler(func(_ paho3.Client, msg paho3.Message) { queued <- msg.Topic() + " " + string(msg.Payload()) })
	}); err != nil {
		t.Fatal(err)
	}
	t.Run("the queued QoS 1 message reaches the persistent session", func(t *testing.T) {
		select {
		case got := <-queued:
			if got != "devices/"+id+"/commands unlock" {
				t.Errorf("got %q", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("nothing delivered after the restart")
		}
	})
	t.Run("the retained message is still retained", func(t *testing.T) {
		c, err := mqtt3(t, broker, "lock-reader", id, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		wait(t, c.Subscribe("devices/"+id+"/state", 1, func(_ paho3.Client, msg paho3.Message) { got <- string(msg.Payload()) }))
		select {
		case v := <-got:
			if v != "locked" {
				t.Errorf("got %q", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no retained message after the restart")
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
