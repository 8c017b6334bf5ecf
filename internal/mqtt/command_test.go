package mqtt

import (
	"encoding/json"
	"testing"

	"github.com/tether-iot/tether"
)

func TestCommands(t *testing.T) {
	tg, s := startServices(t, nil, "c1", "c2", "c3", "c4", "c5", "c6")
	cmd := func(device, id string) *tether.Command {
		return &tether.Command{TenantID: "t1", DeviceID: device, ID: id, Name: "reboot", Params: json.RawMessage(`{"delay":1}`)}
	}

	t.Run("a 3.1.1 device subscribing to its commands is ready, receives one, acknowledges and replies", func(t *testing.T) {
		dev := tg.mustConnect3(t, "tcp", token("c1"), opts3{})
		dev.subscribe(t, "devices/c1/commands/+", 1)
		if r := next(t, s.commands.ready.ch("c1"), "Ready"); r.tenant != "t1" || r.resumed {
			t.Fatalf("Ready %+v, want tenant t1, not resumed", r)
		}
		if !tg.Deliver(cmd("c1", "k1")) {
			t.Fatal("Deliver: false")
		}
		got := decode(t, on3(t, dev, "devices/c1/commands/k1"))
		if got["id"] != "k1" || got["name"] != "reboot" || got["params"].(map[string]any)["delay"] != 1.0 || got["one_way"] != false {
			t.Fatalf("command %v", got)
		}
		if d := next(t, s.commands.delivered.ch("c1"), "Delivered after the PUBACK"); d != "t1/k1" {
			t.Fatalf("Delivered %s", d)
		}
		dev.publish(t, "devices/c1/commands/k1/reply", 1, false, `{"status":"succeeded","result":{"ok":true}}`)
		r := next(t, s.commands.replies.ch("c1"), "Reply")
		if r.tenant != "t1" || r.id != "k1" || r.reply.Status != tether.CommandSucceeded || string(r.reply.Result) != `{"ok":true}` {
			t.Fatalf("Reply %+v", r)
		}
	})

	t.Run("an MQTT 5 device replies on the response topic with the correlation data", func(t *testing.T) {
		dev := tg.mustConnect5(t, "tcp", token("c2"), opts5{})
		dev.subscribe(t, "devices/c2/#", 1)
		next(t, s.commands.ready.ch("c2"), "Ready")
		if !tg.Deliver(cmd("c2", "k2")) {
			t.Fatal("Deliver: false")
		}
		m := on5(t, dev, "devices/c2/commands/k2")
		if m.Properties == nil || m.Properties.ResponseTopic != "devices/c2/commands/k2/reply" || string(m.Properties.CorrelationData) != "k2" {
			t.Fatalf("properties %+v", m.Properties)
		}
		next(t, s.commands.delivered.ch("c2"), "Delivered")
		if code := dev.publishProps(t, m.Properties.ResponseTopic, 1, `{"status":"failed","error":"busy"}`, "", string(m.Properties.CorrelationData)); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
		if r := next(t, s.commands.replies.ch("c2"), "Reply"); r.id != "k2" || r.reply.Status != tether.CommandFailed || r.reply.Error != "busy" {
			t.Fatalf("Reply %+v", r)
		}
		nothing(t, dev.msgs, "the device's own subscription to its reply")
	})

	t.Run("Deliver is false without a live subscribed connection of the device", func(t *testing.T) {
		if tg.Deliver(cmd("c3", "k3")) {
			t.Error("an offline device: true")
		}
		dev := tg.mustConnect3(t, "tcp", token("c3"), opts3{})
		dev.subscribe(t, "devices/c3/state", 1)
		if tg.Deliver(cmd("c3", "k3")) {
			t.Error("a device not subscribed to its commands: true")
		}
		dev.subscribe(t, "devices/c3/commands/+", 1)
		next(t, s.commands.ready.ch("c3"), "Ready")
		other := cmd("c3", "k3")
		other.TenantID = "t2"
		if tg.Deliver(other) {
			t.Error("a command of another tenant: true")
		}
		nothing(t, dev.msgs, "the device")
	})

	t.Run("a QoS 0 subscription makes the command delivered once handed over", func(t *testing.T) {
		dev := tg.mustConnect3(t, "tcp", token("c4"), opts3{})
		dev.subscribe(t, "devices/c4/commands/#", 0)
		next(t, s.commands.ready.ch("c4"), "Ready")
		if !tg.Deliver(cmd("c4", "k4")) {
			t.Fatal("Deliver: false")
		}
		on3(t, dev, "devices/c4/commands/k4")
		next(t, s.commands.delivered.ch("c4"), "Delivered")
	})

	t.Run("a bad or refused reply is told on the errors topic", func(t *testing.T) {
		dev := tg.mustConnect5(t, "tcp", token("c5"), opts5{})
		dev.subscribe(t, "devices/c5/errors", 0)
		if code, _ := dev.publish(t, "devices/c5/commands/k5/reply", 1, false, "not json"); code != 0x99 {
			t.Errorf("PUBACK %#x, want 0x99", code)
		}
		if n := decode(t, on5(t, dev, "devices/c5/errors").Payload); n["reason"] != tether.EINVALID {
			t.Errorf("notice %v", n)
		}
		if code, _ := dev.publish(t, "devices/c5/commands/unknown/reply", 1, false, `{}`); code != 0 {
			t.Errorf("PUBACK %#x, want 0", code)
		}
		if n := decode(t, on5(t, dev, "devices/c5/errors").Payload); n["reason"] != tether.ENOTFOUND {
			t.Errorf("notice %v", n)
		}
		if code, _ := dev.publish(t, "devices/c5/commands/down/reply", 1, false, `{}`); code != 0x80 {
			t.Errorf("PUBACK %#x for an unavailable service, want 0x80", code)
		}
	})

	t.Run("a resumed session that subscribes to its commands is ready without subscribing again", func(t *testing.T) {
		dev := tg.mustConnect3(t, "tcp", token("c6"), opts3{id: "c6-session", persist: true})
		dev.subscribe(t, "devices/c6/commands/+", 1)
		if r := next(t, s.commands.ready.ch("c6"), "Ready"); r.resumed {
			t.Fatal("a new session: resumed")
		}
		dev.Disconnect(250)
		again := tg.mustConnect3(t, "tcp", token("c6"), opts3{id: "c6-session", persist: true})
		if !again.present {
			t.Fatal("the session is not present")
		}
		if r := next(t, s.commands.ready.ch("c6"), "Ready"); !r.resumed {
			t.Fatal("a resumed session: not resumed")
		}
		if !tg.Deliver(cmd("c6", "k6")) {
			t.Fatal("Deliver: false")
		}
		on3(t, again, "devices/c6/commands/k6")
	})
}

func TestCoversCommands(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{"devices/d1/commands/+", true},
		{"devices/d1/commands/#", true},
		{"devices/d1/#", true},
		{"devices/+/commands/+", true},
		{"$share/g/devices/d1/commands/+", true},
		{"devices/d1/+/+", true},
		{"devices/d1/commands/k1", false},
		{"devices/d1/commands", false},
		{"devices/d1/commands/+/reply", false},
		{"devices/d2/commands/+", false},
		{"devices/d1/state", false},
	} {
		if got := coversCommands(tc.filter, "d1"); got != tc.want {
			t.Errorf("coversCommands(%q) = %v, want %v", tc.filter, got, tc.want)
		}
	}
}
