package mqtt

import (
	"testing"

	"github.com/tether-iot/tether"
)

func provision(key string) creds { return creds{user: provisionUser, pass: key} }

func TestProvisioning(t *testing.T) {
	tg, _ := startServices(t, nil)

	t.Run("a device with the key registers itself and receives its token", func(t *testing.T) {
		c := tg.mustConnect3(t, "tcp", provision(goodKey), opts3{id: "new1"})
		if code := c.subscribe(t, "$provision/new1/#", 1); code != 1 {
			t.Fatalf("SUBACK %#x", code)
		}
		c.publish(t, "$provision/new1", 1, false, `{"name":"Fridge","labels":{"room":"kitchen"}}`)
		got := decode(t, on3(t, c, "$provision/new1/accepted"))
		d, _ := got["device"].(map[string]any)
		if got["token"] != "new1.token" || d["id"] != "new1" || d["name"] != "Fridge" || d["labels"].(map[string]any)["room"] != "kitchen" {
			t.Fatalf("accepted %v", got)
		}
		// Registered once: the ID is taken now.
		c.publish(t, "$provision/new1", 1, false, "")
		if got := decode(t, on3(t, c, "$provision/new1/rejected")); got["code"] != tether.ECONFLICT {
			t.Fatalf("rejected %v", got)
		}
	})

	t.Run("a wrong key is rejected", func(t *testing.T) {
		c := tg.mustConnect5(t, "tcp", provision("pk_bad.secret"), opts5{id: "new2"})
		c.subscribe(t, "$provision/new2/+", 1)
		c.publish(t, "$provision/new2", 1, false, "")
		if got := decode(t, on5(t, c, "$provision/new2/rejected").Payload); got["code"] != tether.EUNAUTHORIZED || got["message"] == "" {
			t.Fatalf("rejected %v", got)
		}
	})

	t.Run("an MQTT 5 device gets the answer on its response topic too", func(t *testing.T) {
		c := tg.mustConnect5(t, "tcp", provision(goodKey), opts5{id: "new3"})
		c.subscribe(t, "$provision/new3/inbox", 1)
		if code := c.publishProps(t, "$provision/new3", 1, "", "$provision/new3/inbox", "r1"); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
		m := on5(t, c, "$provision/new3/inbox")
		if string(m.Properties.CorrelationData) != "r1" || decode(t, m.Payload)["token"] != "new3.token" {
			t.Fatalf("answer %q, correlation %q", m.Payload, m.Properties.CorrelationData)
		}
	})

	t.Run("nobody else reads a provisioning answer", func(t *testing.T) {
		anon5 := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		anon3 := tg.mustConnect3(t, "tcp", creds{}, opts3{})
		dev := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		other := tg.mustConnect5(t, "tcp", provision(goodKey), opts5{id: "other"})
		for _, f := range []string{"$provision/#", "$provision/new4/accepted", "$share/g/$provision/new4/#", "$provision/+/accepted"} {
			if code := anon5.subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("anonymous 5.0 SUBACK for %s: %#x", f, code)
			}
			if code := anon3.subscribe(t, f, 1); code != subackRefused3 {
				t.Errorf("anonymous 3.1.1 SUBACK for %s: %#x", f, code)
			}
			if code := dev.subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("device SUBACK for %s: %#x", f, code)
			}
			if code := other.subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("another provisioning client's SUBACK for %s: %#x", f, code)
			}
		}
		anon3.subscribe(t, "#", 1)

		c := tg.mustConnect3(t, "tcp", provision(goodKey), opts3{id: "new4"})
		c.subscribe(t, "$provision/new4/#", 1)
		// A second provisioning connection under the same client ID is
		// refused while the first waits for its answer.
		if _, code, err := tg.connect3(t, "tcp", provision(goodKey), opts3{id: "new4"}); err == nil || code != v3ServerUnavailable {
			t.Fatalf("a second connection as new4: %v, return code %d", err, code)
		}
		c.publish(t, "$provision/new4", 1, false, "")
		on3(t, c, "$provision/new4/accepted")
		nothing(t, anon3.msgs, "an anonymous subscription to #")
		nothing(t, anon5.msgs, "an anonymous client")
		nothing(t, other.msgs, "another provisioning client")
	})

	t.Run("a provisioning client stays in its own topics", func(t *testing.T) {
		c := tg.mustConnect5(t, "tcp", provision(goodKey), opts5{id: "new5"})
		for _, f := range []string{"devices/new5/#", "#", "$events/t1/#", "$provision/new6/#"} {
			if code := c.subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("SUBACK for %s: %#x", f, code)
			}
		}
		for _, topic := range []string{"devices/new5/telemetry", "$provision/new6", "$provision/new5/accepted", "lab/x"} {
			if code, _ := c.publish(t, topic, 1, false, "{}"); code != notAuthorized {
				t.Errorf("PUBACK for %s: %#x", topic, code)
			}
		}
		// Nor may others publish in the provisioning topics.
		anon := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		for _, topic := range []string{"$provision/new5/accepted", "$provision/new5"} {
			if code, _ := anon.publish(t, topic, 1, false, "{}"); code != notAuthorized {
				t.Errorf("anonymous PUBACK for %s: %#x", topic, code)
			}
		}
	})

	t.Run("a provisioning client needs a key and a client ID that can be a device ID", func(t *testing.T) {
		if _, code, err := tg.connect3(t, "tcp", provision(""), opts3{id: "new7"}); err == nil || code != v3NotAuthorized {
			t.Errorf("no key: %v, return code %d", err, code)
		}
		if _, code, err := tg.connect3(t, "tcp", provision(goodKey), opts3{id: "bad.id"}); err == nil || code != v3IdentifierRejected {
			t.Errorf("a bad ID: %v, return code %d", err, code)
		}
	})
}

func TestAppEvents(t *testing.T) {
	tg, _ := startServices(t, nil)
	app := func(key string) creds { return creds{user: appUser, pass: key} }

	t.Run("an application reads its tenant's events only", func(t *testing.T) {
		a1 := tg.mustConnect5(t, "tcp", app("app1.secret"), opts5{})
		if code := a1.subscribe(t, "$events/t1/#", 1); code != 1 {
			t.Fatalf("SUBACK %#x", code)
		}
		for _, f := range []string{"$events/t2/#", "$events/#", "#", "devices/d1/#", "$provision/#"} {
			if code := a1.subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("SUBACK for %s: %#x", f, code)
			}
		}
		a2 := tg.mustConnect3(t, "tcp", app("app2.secret"), opts3{})
		a2.subscribe(t, "$events/t2/+/+", 1)
		anon := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		if code := anon.subscribe(t, "$events/t1/#", 1); code != notAuthorized {
			t.Errorf("anonymous SUBACK %#x", code)
		}
		anon.subscribe(t, "#", 1)

		tg.PublishEvent("t1", tether.EventPresence, "d1", []byte(`{"status":"online"}`))
		if m := on5(t, a1, "$events/t1/presence/d1"); string(m.Payload) != `{"status":"online"}` {
			t.Fatalf("event %q", m.Payload)
		}
		nothing(t, a2.msgs, "an application of another tenant")
		nothing(t, anon.msgs, "an anonymous client")
		tg.PublishEvent("t2", tether.EventCommand, "x9", []byte(`{}`))
		on3(t, a2, "$events/t2/command/x9")
	})

	t.Run("an application never publishes", func(t *testing.T) {
		a := tg.mustConnect5(t, "tcp", app("app1.secret"), opts5{})
		for _, topic := range []string{"$events/t1/presence/d1", "lab/x", "devices/d1/telemetry"} {
			if code, _ := a.publish(t, topic, 1, false, "{}"); code != notAuthorized {
				t.Errorf("PUBACK for %s: %#x", topic, code)
			}
		}
		anon := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		if code, _ := anon.publish(t, "$events/t1/presence/d1", 1, false, "{}"); code != notAuthorized {
			t.Errorf("anonymous PUBACK %#x", code)
		}
	})

	t.Run("a wrong API key is refused", func(t *testing.T) {
		if _, ca, err := tg.connect5(t, "tcp", app("nope"), opts5{}); err == nil || ca == nil || ca.ReasonCode != notAuthorized {
			t.Fatalf("%v, CONNACK %+v", err, ca)
		}
	})
}
