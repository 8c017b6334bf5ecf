package mqtt

import (
	"context"
	"errors"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-iot/tether"
)

// transport names MQTT to the presence service.
const transport = "mqtt"

// OnSessionEstablish notes, just before the broker looks for the session
// a device's client resumes, whether there is one: the broker's own
// decision (inheritClientSession) follows the same rule, and CONNACK
// reports it as "session present".
func (h *hook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	_, c := h.connOf(cl)
	if c == nil {
		return
	}
	old, ok := h.srv.Clients.Get(cl.ID)
	c.present = ok && !pk.Connect.Clean && !sessionEnded(old)
}

// sessionEnded reports whether a session ends with its connection: a
// 3.1.1 clean session, or a 5.0 one without an expiry interval.
func sessionEnded(cl *mochi.Client) bool {
	if cl.Properties.ProtocolVersion < 5 {
		return cl.Properties.Clean
	}
	return cl.Properties.Props.SessionExpiryInterval == 0
}

// OnSessionEstablished, once the CONNACK is sent, records the device's
// connection with the presence service and, if it resumed a session that
// already subscribes to its commands, tells the command service it can
// take them.
//
// Presence and command calls write to the store, so they do not run in
// the client's packet loop (a slow store would hold up the connect and
// every packet after it) but on the device's own queue ([queues]): one
// device's calls keep their order (its connect's sequence number is known
// before its disconnect is recorded), and no device waits for another's.
func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	d, c := h.connOf(cl)
	if d == nil {
		return
	}
	if p := h.opts.Presence; p != nil {
		h.queues.do(d.ID, func() {
			ctx, cancel := context.WithTimeout(h.svcCtx, serviceTimeout)
			defer cancel()
			seq, err := p.Connected(ctx, d, transport)
			if err != nil {
				h.log.Error("mqtt presence: connected", "device", d.ID, "err", err)
				return
			}
			c.seq.Store(seq)
			h.mu.Lock()
			h.seqs[d.ID] = max(h.seqs[d.ID], seq)
			h.mu.Unlock()
		})
	}
	if h.opts.Commands != nil && c.present {
		for _, sub := range cl.State.Subscriptions.GetAll() {
			if coversCommands(sub.Filter, d.ID) {
				h.ready(d, c)
				break
			}
		}
	}
}

// disconnected records why a device's connection ended. A device may
// hold several connections (mqtt_max_connections_per_device): while
// another of them is up, the device stays online, and when the last one
// ends its disconnect is recorded under the newest sequence number the
// device had here, so that it applies.
func (h *hook) disconnected(cl *mochi.Client, d *tether.Device, c *conn, err error) {
	p := h.opts.Presence
	if p == nil {
		return
	}
	reason := disconnectReason(cl, err, c.hasWill)
	h.queues.do(d.ID, func() {
		seq := c.seq.Load()
		if seq == 0 {
			return // its connect was never recorded
		}
		if reason != tether.ReasonTakeover {
			h.mu.Lock()
			if h.otherConnection(d.ID, cl) {
				h.mu.Unlock()
				return
			}
			seq = max(seq, h.seqs[d.ID])
			delete(h.seqs, d.ID)
			h.mu.Unlock()
		}
		ctx, cancel := context.WithTimeout(h.svcCtx, serviceTimeout)
		defer cancel()
		if err := p.Disconnected(ctx, d, seq, reason); err != nil {
			h.log.Error("mqtt presence: disconnected", "device", d.ID, "reason", reason, "err", err)
		}
	})
}

// disconnectReason says why a connection ended, from what stopped the
// client first (mochi keeps it as the stop cause) and the error its
// packet loop ended with (nil after a DISCONNECT; the broker publishes
// the will after any error). A keep-alive expiry is reported as such even
// when it made the broker publish the client's will: it says more.
func disconnectReason(cl *mochi.Client, err error, hasWill bool) string {
	cause := cl.StopCause()
	if cause == nil {
		cause = err
	}
	var ne net.Error
	switch {
	case cl.IsTakenOver() || errors.Is(cause, packets.ErrSessionTakenOver):
		return tether.ReasonTakeover
	case errors.Is(cause, packets.ErrServerShuttingDown):
		return tether.ReasonServerShutdown
	case err == nil && errors.Is(cause, packets.CodeDisconnect):
		return tether.ReasonCleanDisconnect
	case err == nil:
		// Closed by the server (its credentials revoked, say) between two
		// packets: the broker sends no will then.
		return tether.ReasonConnectionLost
	case errors.As(err, &ne) && ne.Timeout():
		return tether.ReasonKeepAliveTimeout
	case hasWill:
		return tether.ReasonWill
	}
	return tether.ReasonConnectionLost
}

// otherConnection reports whether a device has a live connection other
// than cl under another client ID (one under the same ID is a takeover).
// h.mu must be held.
func (h *hook) otherConnection(deviceID string, cl *mochi.Client) bool {
	e := h.devices[deviceID]
	if e == nil {
		return false
	}
	for other := range e.clients {
		if other != cl && other.ID != cl.ID && !other.Closed() {
			return true
		}
	}
	return false
}
