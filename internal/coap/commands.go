package coap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// readyTimeout bounds the command service's Ready, which offers a device
// its queued commands once it observes /commands.
const readyTimeout = 30 * time.Second

// commandMessage is a command as a device receives it, on every transport.
type commandMessage struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params,omitempty"`
	OneWay bool            `json:"one_way"`
}

func newCommandMessage(c *tether.Command) commandMessage {
	return commandMessage{ID: c.ID, Name: c.Name, Params: c.Params, OneWay: c.OneWay}
}

// queuedCommand is a command handed to an observer of /commands, encoded
// when it was handed over (the command service may change its copy).
type queuedCommand struct {
	id   string
	body []byte
}

// Deliver hands a command to the device's observation of /commands on this
// gateway (its newest, when it has several) and reports whether it has
// one; it does not block. The command goes as a confirmable notification
// after those handed over before it, and the command service is told it
// was delivered once the device acknowledged it. A command whose
// notification is never acknowledged stays sent, and the service offers it
// again when the device observes /commands again. Deliver makes the
// gateway a command transport.
func (g *Gateway) Deliver(cmd *tether.Command) bool {
	if g.commands == nil || cmd == nil {
		return false
	}
	body, err := json.Marshal(newCommandMessage(cmd))
	if err != nil {
		g.log.Error("coap command", "device", cmd.DeviceID, "command", cmd.ID, "err", err)
		return false
	}
	return g.obs.deliver(queuedCommand{id: cmd.ID, body: body}, cmd.TenantID, cmd.DeviceID, g.commandsRes)
}

// nextCommand is the next notification of an observer of /commands: the
// next command handed to it, or no representation (a refresh with nothing
// waiting).
func (g *Gateway) nextCommand(o *observer) ([]byte, func()) {
	q, ok := g.obs.popCommand(o)
	if !ok {
		return nil, nil
	}
	d := o.device
	return q.body, func() { g.delivered(d, q.id) }
}

// delivered tells the command service that the device received a command.
func (g *Gateway) delivered(d *tether.Device, id string) {
	ctx, cancel := context.WithTimeout(g.ctx, authTimeout)
	defer cancel()
	if err := g.commands.Delivered(ctx, d.TenantID, d.ID, id); err != nil {
		g.log.Warn("coap command delivered", "device", d.ID, "command", id, "err", err)
	}
}

// getCommands serves GET /commands. With Observe 0 it registers the
// requester as the device's command transport: the response has no
// representation, and each later notification is one command. Without
// Observe it answers the pending commands as a JSON array and marks them
// delivered once the response is written. With Observe 1 it deregisters
// and answers without a representation, so that a client cancelling its
// observation is handed no command it would drop.
func (g *Gateway) getCommands(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	cc := w.Conn()
	obs, obsErr := r.Observe()
	deregister := obsErr == nil && obs == 1
	if deregister {
		g.obs.deregister(cc, string(r.Token()))
	}
	d, ok := g.admit(w, r)
	if !ok {
		return
	}
	if a, err := r.Accept(); !errors.Is(err, message.ErrOptionNotFound) && (err != nil || a != message.AppJSON) {
		g.reply(w, r, d, refusal{code: codes.NotAcceptable, msg: "/commands is application/json (50)", reason: "accept"})
		return
	}
	switch {
	case deregister:
		_ = w.SetResponse(codes.Content, message.AppJSON, nil)
	case obsErr == nil && obs == 0:
		g.observeCommands(w, r, d)
	default:
		g.pendingCommands(w, r, d)
	}
}

// observeCommands registers an observer of /commands and, once the
// registration is answered, asks the command service to offer the
// device's queued commands.
func (g *Gateway) observeCommands(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, d *tether.Device) {
	o := newObserver(w.Conn(), string(r.Token()), d, g.commandsRes, message.AppJSON, blockSize(r))
	seq, evicted, ok := g.obs.register(o)
	if !ok {
		g.reply(w, r, d, unavailable("the server is shutting down; observe again later"))
		return
	}
	if evicted != nil {
		g.endObservation(evicted, unavailable(fmt.Sprintf("observation ended: the device has more than %d observations", maxObserversPerDevice)))
	}
	start := func() {
		g.obs.ready(o)
		if rd, ok := g.commands.(CommandReadier); ok {
			g.obs.goTracked(func() {
				ctx, cancel := context.WithTimeout(g.ctx, readyTimeout)
				defer cancel()
				rd.Ready(ctx, d.TenantID, d.ID, false)
			})
		}
	}
	if err := w.SetResponse(codes.Content, message.AppJSON, nil); err != nil {
		// No-Response: the client does not want this response.
		start()
		return
	}
	w.Message().SetObserve(seq)
	w.Message().SetOptionUint32(message.MaxAge, observeMaxAge)
	if !responsewriter.AfterWrite(r.Context(), start) {
		start()
	}
}

// pendingCommands answers the device's pending commands and marks them
// delivered once the response is written (a confirmable request whose
// response is lost is answered again from go-coap's cache).
func (g *Gateway) pendingCommands(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, d *tether.Device) {
	ctx, cancel := context.WithTimeout(r.Context(), renderTimeout)
	cmds, err := g.commands.Pending(ctx, d.TenantID, d.ID)
	cancel()
	if err != nil {
		g.reply(w, r, d, g.serviceRefusal("pending commands", d, err))
		return
	}
	list := make([]commandMessage, len(cmds))
	for i, c := range cmds {
		list[i] = newCommandMessage(c)
	}
	body, err := json.Marshal(list)
	if err != nil {
		g.log.Error("coap commands", "device", d.ID, "err", err)
		g.reply(w, r, d, unavailable("the commands could not be encoded"))
		return
	}
	if err := w.SetResponse(codes.Content, message.AppJSON, bytesReader(body)); err != nil {
		return // No-Response: nothing is handed over
	}
	w.Message().SetOptionUint32(message.MaxAge, 0)
	if len(list) == 0 {
		return
	}
	// In the request's goroutine, so that the device's reply, which comes
	// after this response, finds the command delivered.
	mark := func() {
		for _, c := range list {
			g.delivered(d, c.ID)
		}
	}
	if !responsewriter.AfterWrite(r.Context(), mark) {
		mark()
	}
}

// maxCommandID bounds the command ID of a reply path.
const maxCommandID = 128

// replyPath returns the command ID of a path /commands/<id>/reply.
func replyPath(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/commands/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/reply")
	if !ok || id == "" || len(id) > maxCommandID || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// postReply takes the device's reply to a command: 2.04 once the command
// service stored it; 4.04 for a command of the device it does not know;
// 4.09 Conflict when the command is done already (replied to, failed,
// expired), with its status in the diagnostic, since a 2.04 would tell a
// device whose reply came too late that it counted.
func (g *Gateway) postReply(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, id string) {
	d, ok := g.admit(w, r)
	if !ok {
		return
	}
	js, ref := g.readJSON(r)
	if ref != nil {
		g.reply(w, r, d, *ref)
		return
	}
	var reply tether.CommandReply
	if err := decodeStrict(js, &reply, "a command reply"); err != nil {
		g.reply(w, r, d, refusalFor(err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	cmd, err := g.commands.Reply(ctx, d.TenantID, d.ID, id, reply)
	cancel()
	if err != nil {
		ref := g.serviceRefusal("command reply", d, err)
		if tether.ErrorCode(err) == tether.ECONFLICT && cmd != nil {
			ref.msg = fmt.Sprintf("the command is already %s; this reply changes nothing", cmd.Status)
		}
		g.reply(w, r, d, ref)
		return
	}
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
}
