package mqtt

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// persistentGateway is a gateway with a store in a temporary directory.
func persistentGateway(t *testing.T, change func(*Options)) *testGateway {
	t.Helper()
	dir := t.TempDir()
	return startGateway(t, func(o *Options) {
		o.StoreDir = dir
		o.AllowAnonymous = true
		if change != nil {
			change(o)
		}
	})
}

// waitGone waits until the broker has noticed a client's disconnect.
func (tg *testGateway) waitGone(t *testing.T, clientID string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, ok := tg.srv.Clients.Get(clientID)
		if !ok || cl.Closed() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s still connected", clientID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func payloads3(t *testing.T, c *client3, n int) []string {
	t.Helper()
	var got []string
	for range n {
		got = append(got, string(receive(t, c.msgs, "a queued message").Payload()))
	}
	sort.Strings(got)
	return got
}

func payloads5(t *testing.T, c *client5, n int) []string {
	t.Helper()
	var got []string
	for range n {
		got = append(got, string(receive(t, c.msgs, "a queued message").Payload))
	}
	sort.Strings(got)
	return got
}

func TestRestart(t *testing.T) {
	want := []string{"m1", "m2", "m3"}

	t.Run("a 3.1.1 persistent session gets what was queued while it was away, across a restart", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "c1", persist: true})
		c.subscribe(t, "devices/d1/cmd", 1)
		c.Disconnect(100)
		tg.waitGone(t, "d1:c1")
		pub := tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		for _, m := range want {
			pub.publish(t, "devices/d1/cmd", 1, false, m)
		}

		tg.restart(t)
		back := tg.mustConnect3(t, "ssl", token("d1"), opts3{id: "c1", persist: true})
		if !back.present {
			t.Error("session present is false")
		}
		if got := payloads3(t, back, 3); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("received %v, want %v", got, want)
		}
		// And the subscription is still there.
		pub = tg.mustConnect3(t, "tcp", token("d1"), opts3{})
		pub.publish(t, "devices/d1/cmd", 1, false, "m4")
		if m := receive(t, back.msgs, "a message after the restart"); string(m.Payload()) != "m4" {
			t.Fatalf("received %q", m.Payload())
		}
	})

	t.Run("a 5.0 session with an expiry gets what was queued while it was away, across a restart", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "c5", expiry: 3600, cleanStart: ptr(false)})
		c.subscribe(t, "devices/d1/cmd", 1)
		_ = c.Disconnect(&paho5.Disconnect{})
		tg.waitGone(t, "d1:c5")
		pub := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		for _, m := range want {
			pub.publish(t, "devices/d1/cmd", 1, false, m)
		}

		tg.restart(t)
		back := tg.mustConnect5(t, "wss", token("d1"), opts5{id: "c5", expiry: 3600, cleanStart: ptr(false)})
		if !back.connack.SessionPresent {
			t.Error("session present is false")
		}
		if got := payloads5(t, back, 3); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("received %v, want %v", got, want)
		}
	})

	t.Run("a clean session leaves nothing behind", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "clean"})
		c.subscribe(t, "devices/d1/cmd", 1)
		c.Disconnect(100)
		tg.waitGone(t, "d1:clean")
		tg.restart(t)
		if back := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "clean", persist: true}); back.present {
			t.Error("session present after a clean session")
		}
	})

	t.Run("retained messages survive a restart", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		tg.mustConnect3(t, "tcp", token("d1"), opts3{}).publish(t, "devices/d1/state", 1, true, "on")
		tg.mustConnect5(t, "tcp", creds{}, opts5{}).publish(t, "lab/state", 1, true, "lab")

		tg.restart(t)
		d := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		d.subscribe(t, "devices/d1/#", 1)
		if m := receive(t, d.msgs, "the device's retained message"); string(m.Payload) != "on" || !m.Retain {
			t.Fatalf("received %q (retain %v)", m.Payload, m.Retain)
		}
		a := tg.mustConnect3(t, "tcp", creds{}, opts3{})
		a.subscribe(t, "lab/#", 1)
		if m := receive(t, a.msgs, "the lab's retained message"); string(m.Payload()) != "lab" {
			t.Fatalf("received %q", m.Payload())
		}
		// The retained bound still counts them.
		tg.hook.retained.setBounds(1, 1)
		if code, _ := tg.mustConnect5(t, "tcp", creds{}, opts5{}).publish(t, "lab/other", 1, true, "x"); code != quotaExceeded {
			t.Errorf("a second anonymous retained topic: PUBACK %#x, want %#x", code, quotaExceeded)
		}
	})

	t.Run("a retained message's expiry survives a restart", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		pub := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, &paho5.Publish{
			Topic: "lab/brief", QoS: 1, Retain: true, Payload: []byte("soon gone"),
			Properties: &paho5.PublishProperties{MessageExpiry: ptr(uint32(1))},
		}); err != nil {
			t.Fatal(err)
		}
		tg.restart(t)
		time.Sleep(2500 * time.Millisecond)
		sub := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		sub.subscribe(t, "lab/#", 1)
		nothing(t, sub.msgs, "an expired retained message")
	})

	t.Run("what a deleted device left is not given to a new device under its ID", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "c1", persist: true})
		c.subscribe(t, "devices/d1/cmd", 1)
		c.publish(t, "devices/d1/state", 1, true, "old device")
		c.Disconnect(100)
		tg.waitGone(t, "d1:c1")
		tg.mustConnect3(t, "tcp", token("d1"), opts3{}).publish(t, "devices/d1/cmd", 1, false, "for the old device")

		tg.restart(t)
		// Deleted while the gateway was down, and created again.
		tg.auth.add("d1", time.Unix(1800000000, 0))
		back := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "c1", persist: true})
		if back.present {
			t.Error("the new device resumed the old device's session")
		}
		back.subscribe(t, "devices/d1/#", 1)
		nothing(t, back.msgs, "the old device's messages")
	})

	t.Run("Forget deletes a device's sessions and retained messages", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "f", expiry: 3600, cleanStart: ptr(false)})
		c.subscribe(t, "devices/d1/cmd", 1)
		c.publish(t, "devices/d1/state", 1, true, "x")
		live := tg.mustConnect5(t, "tcp", token("d1"), opts5{})
		if n := tg.Forget("d1"); n != 2 {
			t.Errorf("Forget cut %d connections, want 2", n)
		}
		receive(t, live.gone, "the DISCONNECT")
		tg.restart(t)
		back := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "f", expiry: 3600, cleanStart: ptr(false)})
		if back.connack.SessionPresent {
			t.Error("session present after Forget")
		}
		back.subscribe(t, "devices/d1/#", 1)
		nothing(t, back.msgs, "a retained message after Forget")
	})
}

// In-flight records written before their keys said whose the packet id
// is, and before they had a sequence number, are loaded in the order they
// were created (not their keys' order, where packet 10 comes before 9),
// and stored again under the new keys.
func TestRestartLoadsOldInflightRecords(t *testing.T) {
	tg := persistentGateway(t, nil)
	c := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "c1", persist: true})
	c.subscribe(t, "devices/d1/cmd", 1)
	c.Disconnect(100)
	tg.waitGone(t, "d1:c1")
	tg.stop(t)

	db, err := pebble.Open(tg.opts.StoreDir, &pebble.Options{Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().Unix() - 60
	for i, pid := range []uint16{10, 9, 2} {
		m := storedMessage{Message: storage.Message{
			ID: "d1:c1", T: storage.InflightKey, Client: "d1:c1", PacketID: pid, TopicName: "devices/d1/cmd",
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Payload: []byte{'a' + byte(i)},
			Created: created + int64(i), Origin: "d1:pub",
		}, ProtocolVersion: 4}
		b, _ := json.Marshal(m)
		if err := db.Set([]byte("i/d1:c1\x00"+strconv.Itoa(int(pid))), b, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	tg.start(t)
	// The broker resends a session's messages in their order in flight.
	cl, ok := tg.srv.Clients.Get("d1:c1")
	if !ok {
		t.Fatal("the session was not restored")
	}
	var order string
	for _, pk := range cl.State.Inflight.GetAll(false) {
		order += string(pk.Payload)
	}
	if order != "abc" {
		t.Errorf("restored in the order %q, want abc: the order they were created in", order)
	}
	back := tg.mustConnect3(t, "tcp", token("d1"), opts3{id: "c1", persist: true})
	if got := payloads3(t, back, 3); strings.Join(got, "") != "abc" {
		t.Errorf("received %v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, ok := tg.srv.Clients.Get("d1:c1")
		if ok && cl.State.Inflight.Len() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the messages were not acknowledged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	back.Disconnect(100)
	tg.waitGone(t, "d1:c1")
	tg.stop(t)

	db, err = pebble.Open(tg.opts.StoreDir, &pebble.Options{Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: []byte("i/"), UpperBound: []byte("i0")})
	for it.First(); it.Valid(); it.Next() {
		t.Errorf("still stored after the messages were acknowledged: %q", it.Key())
	}
	_ = it.Close()
}

func TestSessionExpiry(t *testing.T) {
	t.Run("an expired session is gone, from the broker and from the store", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "e", expiry: 1, cleanStart: ptr(false)})
		c.subscribe(t, "devices/d1/x", 1)
		_ = c.Disconnect(&paho5.Disconnect{})
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := tg.srv.Clients.Get("d1:e"); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the session did not expire")
			}
			time.Sleep(50 * time.Millisecond)
		}
		// mochi leaves an expired session's subscriptions in its topic
		// index, where a later client with the same ID would inherit
		// them without subscribing.
		back := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "e", cleanStart: ptr(false)})
		if back.connack.SessionPresent {
			t.Error("session present after expiry")
		}
		tg.mustConnect5(t, "tcp", token("d1"), opts5{}).publish(t, "devices/d1/x", 1, false, "x")
		nothing(t, back.msgs, "a message for the expired subscription")
		_ = back.Disconnect(&paho5.Disconnect{})
		tg.waitGone(t, "d1:e")

		tg.stop(t)
		db, err := pebble.Open(tg.opts.StoreDir, &pebble.Options{Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		it, _ := db.NewIter(nil)
		for it.First(); it.Valid(); it.Next() {
			if strings.Contains(string(it.Key()), "d1:e") {
				t.Errorf("stored: %q", it.Key())
			}
		}
		_ = it.Close()
	})

	t.Run("a stored session expires when it would have without the restart", func(t *testing.T) {
		tg := persistentGateway(t, nil)
		c := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "r", expiry: 1, cleanStart: ptr(false)})
		c.subscribe(t, "devices/d1/x", 1)
		tg.stop(t) // the session ends with the gateway
		time.Sleep(2500 * time.Millisecond)
		tg.start(t)
		if back := tg.mustConnect5(t, "tcp", token("d1"), opts5{id: "r", expiry: 60, cleanStart: ptr(false)}); back.connack.SessionPresent {
			t.Error("a session expired during the downtime was resumed")
		}
	})
}
