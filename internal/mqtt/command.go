package mqtt

import (
	"context"
	"encoding/json"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-iot/tether"
)

// commandTopic is where a device receives a command.
func commandTopic(deviceID, id string) string {
	return "devices/" + deviceID + "/commands/" + id
}

// commandMessage is what a device receives.
type commandMessage struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params"`
	OneWay bool            `json:"one_way"`
}

// Deliver hands a command to a live connection of its device that
// subscribes to it (devices/<id>/commands/<command id>), at QoS 1, with
// the reply topic as MQTT 5 Response Topic and the command ID as
// Correlation Data. It reports false when no such connection exists on
// this node: the command then waits for the device's next
// Commands.Ready. The device's PUBACK makes the command delivered.
//
// A connection that subscribed at QoS 0 gets the command at QoS 0, and
// there is no PUBACK to wait for: the command counts as delivered once
// it is handed over.
func (g *Gateway) Deliver(cmd *tether.Command) bool { return g.hook.deliver(cmd) }

func (h *hook) deliver(cmd *tether.Command) bool {
	if h.closing.Load() || cmd == nil || !tether.ValidID(cmd.DeviceID) || cmd.ID == "" || strings.ContainsAny(cmd.ID, "/+#\x00") {
		return false
	}
	topic := commandTopic(cmd.DeviceID, cmd.ID)
	live, acked := h.subscribers(cmd.TenantID, cmd.DeviceID, topic)
	if !live {
		return false
	}
	body, err := json.Marshal(commandMessage{ID: cmd.ID, Name: cmd.Name, Params: cmd.Params, OneWay: cmd.OneWay})
	if err != nil {
		h.log.Error("mqtt command", "device", cmd.DeviceID, "command", cmd.ID, "err", err)
		return false
	}
	if !h.publish(topic, body, &packets.Properties{ResponseTopic: topic + "/reply", CorrelationData: []byte(cmd.ID)}) {
		return false
	}
	if !acked {
		h.delivered(cmd.TenantID, cmd.DeviceID, cmd.ID)
	}
	return true
}

// subscribers reports whether a live connection of the device (of that
// tenant) subscribes to a topic, and whether one does at QoS 1 or more.
func (h *hook) subscribers(tenant, deviceID, topic string) (live, acked bool) {
	subs := h.srv.Topics.Subscribers(topic)
	check := func(id string, sub packets.Subscription) {
		if dev, ok := deviceOf(id); !ok || dev != deviceID {
			return
		}
		cl, ok := h.srv.Clients.Get(id)
		if !ok || cl.Net.Conn == nil || cl.Closed() {
			return
		}
		if d := h.device(cl); d == nil || d.TenantID != tenant {
			return
		}
		live = true
		acked = acked || sub.Qos > 0
	}
	for id, sub := range subs.Subscriptions {
		check(id, sub)
	}
	for _, group := range subs.Shared {
		for id, sub := range group {
			check(id, sub)
		}
	}
	return live, acked
}

// OnSubscribed tells the command service that a device can take commands
// once one of its clients subscribes to a filter covering all of them
// (devices/<id>/commands/+, devices/<id>/#, …).
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	d, c := h.connOf(cl)
	if d == nil {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < 0x80 && coversCommands(f.Filter, d.ID) {
			h.ready(d, c)
			return
		}
	}
}

// ready queues Commands.Ready for a device connection. Only its first
// call can say the session is new: after it, the commands sent on this
// connection are in its session, and offering them again would deliver
// them twice.
func (h *hook) ready(d *tether.Device, c *conn) {
	resumed := c.present || c.ready
	c.ready = true
	h.queues.do(d.ID, func() {
		ctx, cancel := context.WithTimeout(h.svcCtx, readyTimeout)
		defer cancel()
		h.opts.Commands.Ready(ctx, d.TenantID, d.ID, resumed)
	})
}

// coversCommands reports whether a filter (shared or not) matches every
// command topic of a device, devices/<id>/commands/<any id>.
func coversCommands(filter, deviceID string) bool {
	if len(filter) > 7 && strings.EqualFold(filter[:7], "$share/") {
		_, filter, _ = strings.Cut(filter[7:], "/")
	}
	want := [...]string{"devices", deviceID, "commands"}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#":
			return true
		case i > len(want):
			return false
		case i == len(want):
			// The command ID: only a wildcard matches them all.
			if l != "+" {
				return false
			}
		case l != "+" && l != want[i]:
			return false
		}
	}
	return len(levels) == len(want)+1
}

// OnQosComplete marks a command delivered when the device acknowledges
// it (PUBACK). The acknowledged message is the gateway's own PUBLISH on
// devices/<id>/commands/<command id>.
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish || pk.Origin != inlineID {
		return
	}
	dev, ok := deviceOf(cl.ID)
	if !ok {
		return
	}
	rest, ok := strings.CutPrefix(pk.TopicName, "devices/"+dev+"/commands/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return
	}
	tenant, _, _ := strings.Cut(string(cl.Properties.Username), "/") // see owner
	h.delivered(tenant, dev, rest)
}

// delivered queues Commands.Delivered after what is queued for the
// device, so that it follows the Ready that sent the command.
func (h *hook) delivered(tenant, deviceID, id string) {
	h.queues.do(deviceID, func() {
		ctx, cancel := context.WithTimeout(h.svcCtx, serviceTimeout)
		defer cancel()
		if err := h.opts.Commands.Delivered(ctx, tenant, deviceID, id); err != nil {
			if c := tether.ErrorCode(err); c == tether.EINTERNAL || c == tether.EUNAVAILABLE {
				h.log.Error("mqtt command delivered", "device", deviceID, "command", id, "err", err)
			} else {
				h.log.Debug("mqtt command delivered", "device", deviceID, "command", id, "err", err)
			}
		}
	})
}

// replyTopic returns the command ID of a reply topic (the part of the
// topic after devices/<id>/: commands/<command id>/reply).
func (h *hook) replyTopic(rest string) (string, bool) {
	if h.opts.Commands == nil {
		return "", false
	}
	rest, ok := strings.CutPrefix(rest, "commands/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/reply")
	return id, ok && id != "" && !strings.Contains(id, "/")
}

// commandReply hands a device's reply to the command service, after what
// is queued for the device (its command's delivery first), and answers
// the PUBLISH when the service has it. A reply that cannot be read, or
// that the service refuses, is told to the device on its errors topic
// (and, for MQTT 5, in the PUBACK); the reply goes to no subscriber.
func (h *hook) commandReply(cl *mochi.Client, d *tether.Device, pk packets.Packet, id string) (packets.Packet, error) {
	v5 := cl.Properties.ProtocolVersion == 5
	// A refused reply cannot succeed if sent again: it is acknowledged
	// (an MQTT 5 one that is malformed with "payload format invalid"), and
	// the device reads why on its errors topic.
	refuse := func(reason, msg string) (packets.Packet, error) {
		h.publishNotice(d, map[string]any{"topic": pk.TopicName, "reason": reason, "error": msg})
		if v5 && pk.FixedHeader.Qos > 0 && reason == tether.EINVALID {
			return h.nack(cl, pk, packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: truncateReason(msg)})
		}
		return pk, packets.CodeSuccessIgnore
	}
	var r tether.CommandReply
	if err := json.Unmarshal(pk.Payload, &r); err != nil {
		return refuse(tether.EINVALID, "the reply is not a JSON object with status, result and error")
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.PublishTimeout)
	defer cancel()
	res := make(chan error, 1)
	h.queues.do(d.ID, func() {
		_, err := h.opts.Commands.Reply(ctx, d.TenantID, d.ID, id, r)
		res <- err
	})
	var err error
	select {
	case err = <-res:
	case <-ctx.Done():
		err = tether.Errorf(tether.EUNAVAILABLE, "the reply could not be recorded in time")
	}
	switch code := tether.ErrorCode(err); code {
	case "":
		return pk, packets.CodeSuccessIgnore
	case tether.EUNAVAILABLE, tether.EINTERNAL:
		h.log.Error("mqtt command reply", "device", d.ID, "command", id, "err", err)
		// Not acknowledged, so that the device sends it again.
		if v5 && pk.FixedHeader.Qos > 0 {
			return h.nack(cl, pk, packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "the reply could not be recorded; send it again"})
		}
		if pk.FixedHeader.Qos > 0 {
			cl.Stop(err)
		}
		return pk, packets.ErrRejectPacket
	default:
		return refuse(code, tether.ErrorMessage(err))
	}
}
