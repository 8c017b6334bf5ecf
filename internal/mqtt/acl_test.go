package mqtt

import (
	"testing"
)

// SUBACK and PUBACK codes the tests expect.
const (
	subackRefused3 = 0x80 // 3.1.1 failure
	notAuthorized  = 0x87 // 5.0
	quotaExceeded  = 0x97 // 5.0
)

func TestLabModeACL(t *testing.T) {
	tg := startGateway(t, func(o *Options) { o.AllowAnonymous = true })
	anon := creds{}

	t.Run("an anonymous client publishes and subscribes outside devices/", func(t *testing.T) {
		sub := tg.mustConnect5(t, "tcp", anon, opts5{})
		if code := sub.subscribe(t, "lab/#", 1); code != 1 {
			t.Fatalf("SUBACK %#x, want 1", code)
		}
		pub := tg.mustConnect3(t, "ws", anon, opts3{})
		pub.publish(t, "lab/x", 1, false, "hello")
		if m := receive(t, sub.msgs, "lab/x"); string(m.Payload) != "hello" {
			t.Fatalf("payload %q", m.Payload)
		}
	})

	t.Run("an anonymous client cannot subscribe under devices/", func(t *testing.T) {
		for _, f := range []string{"devices/d1/#", "devices/#", "$share/g/devices/d1/state"} {
			if code := tg.mustConnect5(t, "tcp", anon, opts5{}).subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("5.0 SUBACK for %s: %#x, want %#x", f, code, notAuthorized)
			}
			if code := tg.mustConnect3(t, "tcp", anon, opts3{}).subscribe(t, f, 1); code != subackRefused3 {
				t.Errorf("3.1.1 SUBACK for %s: %#x, want %#x", f, code, subackRefused3)
			}
		}
	})

	t.Run("an anonymous client's publish under devices/ is refused and goes nowhere", func(t *testing.T) {
		dev := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		dev.subscribe(t, "devices/d1/#", 1)
		before := tg.in.acceptedCount()

		pub5 := tg.mustConnect5(t, "tcp", anon, opts5{})
		if code, _ := pub5.publish(t, "devices/d1/telemetry", 1, false, `{"t":1}`); code != notAuthorized {
			t.Errorf("5.0 QoS 1 PUBACK %#x, want %#x", code, notAuthorized)
		}
		if code, _ := pub5.publish(t, "devices/d1/cmd", 2, false, "x"); code != notAuthorized {
			t.Errorf("5.0 QoS 2 PUBREC %#x, want %#x", code, notAuthorized)
		}
		// Mosquitto acknowledges a refused 3.1.1 publish and drops it;
		// the client stays connected.
		pub3 := tg.mustConnect3(t, "tcp", anon, opts3{})
		pub3.publish(t, "devices/d1/telemetry", 1, false, `{"t":1}`)
		pub3.publish(t, "devices/d1/cmd", 2, false, "x")
		if !pub3.IsConnectionOpen() {
			t.Error("the 3.1.1 client was disconnected")
		}
		nothing(t, dev.msgs, "the device's subscription")
		if n := tg.in.acceptedCount(); n != before {
			t.Errorf("%d telemetry messages ingested", n-before)
		}
	})

	t.Run("an anonymous wildcard subscription never receives a device's message", func(t *testing.T) {
		filters := []string{"#", "+/d1/state", "+/+/+", "$share/g/#", "$share/g/+/d1/state"}
		var subs5 []*client5
		var subs3 []*client3
		for _, f := range filters {
			s5 := tg.mustConnect5(t, "tcp", anon, opts5{})
			if code := s5.subscribe(t, f, 1); code != 1 {
				t.Fatalf("SUBACK for %s: %#x", f, code)
			}
			subs5 = append(subs5, s5)
			s3 := tg.mustConnect3(t, "tcp", anon, opts3{})
			s3.subscribe(t, f, 1)
			subs3 = append(subs3, s3)
		}
		// A device subscription in the shared group too: the broker must
		// pick a member who may read the message.
		devShared := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		devShared.subscribe(t, "$share/g/devices/d1/state", 1)

		tg.mustConnect3(t, "tcp", token("d1"), opts3{}).publish(t, "devices/d1/state", 1, true, "secret")
		receive(t, devShared.msgs, "the device's own shared subscription")
		for i, f := range filters {
			nothing(t, subs5[i].msgs, "5.0 anonymous "+f)
			nothing(t, subs3[i].msgs, "3.1.1 anonymous "+f)
		}
		// Nor later, as a retained message.
		late := tg.mustConnect5(t, "tcp", anon, opts5{})
		late.subscribe(t, "#", 1)
		late.subscribe(t, "+/d1/state", 1)
		nothing(t, late.msgs, "a retained message under devices/")

		// The same wildcards do deliver the lab's own messages.
		tg.mustConnect3(t, "tcp", anon, opts3{}).publish(t, "lab/d1/state", 1, false, "open")
		for i, f := range filters[:3] {
			receive(t, subs5[i].msgs, "5.0 anonymous "+f+" on lab/d1/state")
		}
	})

	t.Run("$SYS is read-only and other $ topics are not", func(t *testing.T) {
		pub5 := tg.mustConnect5(t, "tcp", anon, opts5{})
		if code, _ := pub5.publish(t, "$SYS/broker/x", 1, false, "x"); code != notAuthorized {
			t.Errorf("5.0 PUBACK %#x, want %#x", code, notAuthorized)
		}
		// Other $ topics are anyone's, as in Mosquitto.
		if code, _ := pub5.publish(t, "$foo/x", 1, false, "x"); code >= 0x80 {
			t.Errorf("5.0 PUBACK for $foo %#x, want success", code)
		}
		pub3 := tg.mustConnect3(t, "tcp", anon, opts3{})
		pub3.publish(t, "$SYS/broker/x", 1, false, "x") // acknowledged (and dropped)

		sub := tg.mustConnect5(t, "tcp", anon, opts5{})
		if code := sub.subscribe(t, "$SYS/broker/version", 0); code != 0 {
			t.Fatalf("SUBACK %#x, want 0", code)
		}
		receive(t, sub.msgs, "$SYS/broker/version")
	})

	t.Run("a device stays in its own tree", func(t *testing.T) {
		d5 := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		d3 := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		for _, f := range []string{"devices/d2/#", "lab/#", "#", "devices/+/state"} {
			if code := d5.subscribe(t, f, 1); code != notAuthorized {
				t.Errorf("5.0 SUBACK for %s: %#x, want %#x", f, code, notAuthorized)
			}
			if code := d3.subscribe(t, f, 1); code != subackRefused3 {
				t.Errorf("3.1.1 SUBACK for %s: %#x, want %#x", f, code, subackRefused3)
			}
		}
		other := tg.mustConnect3(t, "tcp", token("d2"), opts3{})
		other.subscribe(t, "devices/d2/#", 1)
		if code, _ := d5.publish(t, "devices/d2/cmd", 1, false, "x"); code != notAuthorized {
			t.Errorf("5.0 PUBACK %#x, want %#x", code, notAuthorized)
		}
		d3.publish(t, "devices/d2/cmd", 1, false, "x")
		nothing(t, other.msgs, "the other device's subscription")
		if !d3.IsConnectionOpen() {
			t.Error("the 3.1.1 device was disconnected")
		}
	})
}
