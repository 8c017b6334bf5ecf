package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/tether-iot/tether"
)

// deviceKey names a device across tenants.
type deviceKey struct{ tenant, device string }

// poll is a device's long poll for commands. Deliver appends to cmds
// while the poll is registered; the poll writes what it holds once it
// leaves the registry, so a command Deliver accepted is always written
// (or, if the device has gone, left sent for the next poll to find).
type poll struct {
	key   deviceKey
	cmds  []*tether.Command
	ready chan struct{} // a token when cmds gains a command
}

// Deliver hands a command to a long poll of its device that is waiting,
// and reports whether one took it; it never blocks on the network. It makes the server a command
// transport: the command service offers each command it sends to its
// transports until one takes it.
func (s *Server) Deliver(cmd *tether.Command) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.polls[deviceKey{cmd.TenantID, cmd.DeviceID}]
	if len(ps) == 0 {
		return false
	}
	// A command a poll is writing already (found pending as the service
	// offered it) is as good as taken.
	if s.inflight[inflightKey(cmd)] {
		return true
	}
	p := ps[0]
	s.inflight[inflightKey(cmd)] = true
	// A copy, as the service goes on changing its command (sent, ...)
	// while the poll writes this one.
	c := *cmd
	p.cmds = append(p.cmds, &c)
	select {
	case p.ready <- struct{}{}:
	default:
	}
	return true
}

func inflightKey(c *tether.Command) string { return c.TenantID + "/" + c.DeviceID + "/" + c.ID }

// pollCommands is a device's long poll: it answers at once with the
// device's commands not yet delivered, if it has any; else, with ?wait,
// it waits up to that long for the command service to deliver one. It
// answers a JSON array (empty after a wait in vain) and marks each
// command in it delivered once written.
//
// A delivered two-way command awaiting its reply is not sent again: a
// device polling while it works on one would otherwise get it back at
// once, over and over. Nor is one just sent another way (offerAgain).
func (s *Server) pollCommands(w http.ResponseWriter, r *http.Request, d *tether.Device) error {
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	// The poll is registered before the store is read, so that a command
	// sent in between reaches it one way or the other.
	p := &poll{key: deviceKey{d.TenantID, d.ID}, ready: make(chan struct{}, 1)}
	s.mu.Lock()
	s.polls[p.key] = append(s.polls[p.key], p)
	s.mu.Unlock()
	pending, err := s.sv.Commands.Pending(r.Context(), d.TenantID, d.ID)
	if err != nil {
		s.release(s.endPoll(p))
		return err
	}
	s.mu.Lock()
	now := s.now()
	for _, c := range pending {
		if !offerAgain(c, now) || s.inflight[inflightKey(c)] {
			continue
		}
		s.inflight[inflightKey(c)] = true
		p.cmds = append(p.cmds, c)
	}
	n := len(p.cmds)
	s.mu.Unlock()
	if n == 0 && wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-p.ready:
		case <-t.C:
		case <-r.Context().Done():
		case <-s.closing.Done():
		}
		t.Stop()
	}
	cmds := s.endPoll(p)
	defer s.release(cmds)
	slices.SortFunc(cmds, func(a, b *tether.Command) int { return cmp.Compare(a.Seq, b.Seq) })
	if cmds == nil {
		cmds = []*tether.Command{}
	}
	body, err := json.Marshal(cmds)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(append(body, '\n')); err != nil {
		return nil // the device has gone; its commands stay sent and go out again
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		return nil
	}
	for _, c := range cmds {
		if err := s.sv.Commands.Delivered(context.WithoutCancel(r.Context()), d.TenantID, d.ID, c.ID); err != nil {
			s.log.Warn("command delivered over HTTP but not marked so", "device", d.ID, "command", c.ID, "err", err)
		}
	}
	return nil
}

// resendAfter is how long a command sent to the device another way (MQTT,
// CoAP) waits for that transport's acknowledgement before a poll takes it
// too: a device that polls over HTTP has likely left the other one.
const resendAfter = 10 * time.Second

// offerAgain reports whether a poll may hand out a pending command: a
// queued one, or one sent at least resendAfter ago and not delivered.
func offerAgain(c *tether.Command, now time.Time) bool {
	switch c.Status {
	case tether.CommandQueued:
		return true
	case tether.CommandSent:
		for i := len(c.History) - 1; i >= 0; i-- {
			if h := c.History[i]; h.Status == tether.CommandSent {
				return now.Sub(h.At) >= resendAfter
			}
		}
		return true
	}
	return false
}

// endPoll takes the poll out of the registry, so Deliver no longer gives
// it commands, and returns those it holds.
func (s *Server) endPoll(p *poll) []*tether.Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := slices.DeleteFunc(s.polls[p.key], func(q *poll) bool { return q == p })
	if len(ps) == 0 {
		delete(s.polls, p.key)
	} else {
		s.polls[p.key] = ps
	}
	return p.cmds
}

// release forgets that cmds are being written.
func (s *Server) release(cmds []*tether.Command) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cmds {
		delete(s.inflight, inflightKey(c))
	}
}

// replyCommand is a device's answer to a command. A reply to a command
// already done is 409 with the command as it stands.
func (s *Server) replyCommand(w http.ResponseWriter, r *http.Request, d *tether.Device) error {
	var reply tether.CommandReply
	if err := decodeBody(r, &reply); err != nil {
		return err
	}
	switch reply.Status {
	case "", tether.CommandSucceeded, tether.CommandFailed:
	default:
		return tether.Errorf(tether.EINVALID, "status %q must be succeeded or failed", reply.Status)
	}
	if bytes.Equal(reply.Result, []byte("null")) {
		reply.Result = nil
	}
	cmd, err := s.sv.Commands.Reply(r.Context(), d.TenantID, d.ID, r.PathValue("cid"), reply)
	if err != nil {
		if cmd != nil {
			return &detailedError{err: err, command: cmd}
		}
		return err
	}
	return writeJSON(w, http.StatusOK, cmd)
}
