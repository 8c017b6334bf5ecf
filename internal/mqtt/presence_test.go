package mqtt

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/tether-iot/tether"
)

func TestPresence(t *testing.T) {
	tg, s := startServices(t, nil, "p1", "p2", "p3", "p4", "p5", "p6", "p7")

	// connected waits for a device's connect and returns its sequence
	// number; disconnected waits for its disconnect and checks it.
	connected := func(t *testing.T, device string) int64 {
		t.Helper()
		e := next(t, s.presence.events.ch(device), device+" connected")
		if !e.connected {
			t.Fatalf("%s: %+v, want a connect", device, e)
		}
		return e.seq
	}
	disconnected := func(t *testing.T, device string, seq int64, reason string) {
		t.Helper()
		e := next(t, s.presence.events.ch(device), device+" disconnected")
		if e.connected || e.seq != seq || e.reason != reason {
			t.Fatalf("%s: %+v, want a disconnect of connection %d because %s", device, e, seq, reason)
		}
	}
	raw := func(id, device string, will bool) *packets.Connect {
		cp := &packets.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
			Username: device, UsernameFlag: true, Password: []byte(device + ".secret"), PasswordFlag: true}
		if will {
			cp.WillFlag, cp.WillTopic, cp.WillMessage, cp.WillProperties = true, "devices/"+device+"/status", []byte("gone"), &packets.Properties{}
		}
		return cp
	}

	t.Run("a clean disconnect", func(t *testing.T) {
		c := tg.mustConnect3(t, "tcp", token("p1"), opts3{})
		seq := connected(t, "p1")
		c.Disconnect(250)
		disconnected(t, "p1", seq, tether.ReasonCleanDisconnect)
	})

	t.Run("a keep-alive timeout", func(t *testing.T) {
		c := connectRaw(t, tg.Addr(), 1, token("p2"))
		seq := connected(t, "p2")
		if err := c.waitClosed(5e9); err != nil {
			t.Fatal(err)
		}
		disconnected(t, "p2", seq, tether.ReasonKeepAliveTimeout)
	})

	t.Run("a connection lost with a will", func(t *testing.T) {
		// The device's only connection: with another one up, the device
		// would stay online.
		conn := connectRawWith(t, tg.Addr(), raw("p3-will", "p3", true))
		seq := connected(t, "p3")
		conn.Close()
		disconnected(t, "p3", seq, tether.ReasonWill)
	})

	t.Run("a connection lost without a will", func(t *testing.T) {
		conn := connectRawWith(t, tg.Addr(), raw("p4-lost", "p4", false))
		seq := connected(t, "p4")
		conn.Close()
		disconnected(t, "p4", seq, tether.ReasonConnectionLost)
	})

	t.Run("a takeover by a connection with the same client ID", func(t *testing.T) {
		tg.mustConnect3(t, "tcp", token("p5"), opts3{id: "same"})
		first := connected(t, "p5")
		tg.mustConnect3(t, "tcp", token("p5"), opts3{id: "same"})
		// The old connection's end and the new one's start race; each
		// keeps its own sequence number.
		var second int64
		for range 2 {
			e := next(t, s.presence.events.ch("p5"), "p5")
			switch {
			case e.connected:
				second = e.seq
			case e.seq != first || e.reason != tether.ReasonTakeover:
				t.Fatalf("%+v, want a disconnect of connection %d because of a takeover", e, first)
			}
		}
		if second <= first {
			t.Fatalf("the new connection has sequence number %d, the old one %d", second, first)
		}
	})

	t.Run("a device with two connections stays online until the last one ends", func(t *testing.T) {
		a := tg.mustConnect3(t, "tcp", token("p7"), opts3{id: "a"})
		connected(t, "p7")
		b := tg.mustConnect3(t, "tcp", token("p7"), opts3{id: "b"})
		newest := connected(t, "p7")
		b.Disconnect(250)
		select {
		case e := <-s.presence.events.ch("p7"):
			t.Fatalf("%+v recorded while connection a is still up", e)
		case <-time.After(300 * time.Millisecond):
		}
		a.Disconnect(250)
		disconnected(t, "p7", newest, tether.ReasonCleanDisconnect)
	})

	t.Run("a server shutdown, recorded before Close returns", func(t *testing.T) {
		tg.mustConnect5(t, "tcp", token("p6"), opts5{})
		seq := connected(t, "p6")
		tg.stop(t)
		select {
		case e := <-s.presence.events.ch("p6"):
			if e.connected || e.seq != seq || e.reason != tether.ReasonServerShutdown {
				t.Fatalf("%+v, want a disconnect of connection %d because of the shutdown", e, seq)
			}
		default:
			t.Fatal("no disconnect recorded when Close returned")
		}
	})
}
