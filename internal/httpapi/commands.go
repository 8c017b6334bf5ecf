package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tether-iot/tether"
)

// maxWait bounds ?wait on sending a command and on a device's long poll.
const maxWait = 60 * time.Second

// commandInput is the body of a command to send.
type commandInput struct {
	Name           string          `json:"name"`
	Params         json.RawMessage `json:"params"`
	OneWay         bool            `json:"one_way"`
	Timeout        tether.Duration `json:"timeout"`
	TTL            tether.Duration `json:"ttl"`
	IdempotencyKey string          `json:"idempotency_key"`
}

// sendCommand sends a command through the command service's guardrails:
// 201 with the new command, 200 with the first one for a repeated
// idempotency key, or the refusal as a problem that carries the rejected
// command. With ?wait it waits for the command to be done, up to the
// duration, and answers its state then.
func (s *Server) sendCommand(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	var in commandInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if h := r.Header.Get("Idempotency-Key"); h != "" {
		if in.IdempotencyKey != "" && in.IdempotencyKey != h {
			return tether.Errorf(tether.EINVALID, "the Idempotency-Key header %q and the body's idempotency_key %q differ", h, in.IdempotencyKey)
		}
		in.IdempotencyKey = h
	}
	if in.Timeout < 0 || in.TTL < 0 {
		return tether.Errorf(tether.EINVALID, "timeout and ttl must not be negative")
	}
	if string(in.Params) == "null" {
		in.Params = nil
	}
	device := r.PathValue("id")
	cmd, created, err := s.sv.Commands.Send(r.Context(), k.TenantID, device, tether.CommandRequest{
		Name: in.Name, Params: in.Params, OneWay: in.OneWay,
		Timeout: time.Duration(in.Timeout), TTL: time.Duration(in.TTL),
		IdempotencyKey: in.IdempotencyKey, Source: k.Source(), Role: k.Role,
	})
	if err != nil {
		return refusal(w, cmd, err)
	}
	if wait > 0 && !tether.CommandDone(cmd.Status) {
		if cmd, err = s.waitCommand(r.Context(), k.TenantID, device, cmd.ID, wait); err != nil {
			return err
		}
	}
	w.Header().Set("Location", "/api/v1/devices/"+device+"/commands/"+cmd.ID)
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	return writeJSON(w, status, cmd)
}

// refusal is the problem for a command the service refused: with the
// command it stored as rejected, if any, a parameter or definition the
// profile refuses as 422 (the request itself was well formed), and the
// wait the service suggests, if it says, as Retry-After.
func refusal(w http.ResponseWriter, cmd *tether.Command, err error) error {
	if cmd == nil {
		return err
	}
	de := &detailedError{err: err, command: cmd}
	if tether.ErrorCode(err) == tether.EINVALID {
		de.status = http.StatusUnprocessableEntity
	}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) && ra.RetryAfter() > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(ra.RetryAfter().Seconds())))))
	}
	return de
}

// waitCommand waits up to d for a command to be done and returns its
// state then. A shutdown ends the wait early.
func (s *Server) waitCommand(ctx context.Context, tenant, device, id string, d time.Duration) (*tether.Command, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	return s.sv.Commands.Wait(ctx, tenant, device, id)
}

// parseWait reads ?wait, a duration from 0 to maxWait.
func parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxWait {
		return 0, tether.Errorf(tether.EINVALID, "wait %q must be a duration from 0s to %s, like 10s", v, maxWait)
	}
	return d, nil
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	q := r.URL.Query()
	f := tether.CommandFilter{Status: q.Get("status"), Limit: 100}
	switch f.Status {
	case "", tether.CommandAwaitingConfirmation, tether.CommandQueued, tether.CommandSent, tether.CommandDelivered,
		tether.CommandSucceeded, tether.CommandFailed, tether.CommandExpired, tether.CommandRejected:
	default:
		return tether.Errorf(tether.EINVALID, "status %q is not a command status", f.Status)
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return tether.Errorf(tether.EINVALID, "after %q must be a command's seq, a number from 0", v)
		}
		f.After = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return tether.Errorf(tether.EINVALID, "limit %q must be a number from 1 to 1000", v)
		}
		f.Limit = n
	}
	device := r.PathValue("id")
	if _, err := s.reg.Device(r.Context(), k.TenantID, device); err != nil {
		return err
	}
	cmds, err := s.sv.Commands.List(r.Context(), k.TenantID, device, f)
	if err != nil {
		return err
	}
	if cmds == nil {
		cmds = []*tether.Command{}
	}
	resp := struct {
		Device    string            `json:"device"`
		Commands  []*tether.Command `json:"commands"`
		NextAfter int64             `json:"next_after,omitempty"`
	}{Device: device, Commands: cmds}
	if len(cmds) == f.Limit {
		resp.NextAfter = cmds[len(cmds)-1].Seq
	}
	return writeJSON(w, http.StatusOK, resp)
}

// getCommand answers a command; with ?wait, once it is done or the
// duration has passed.
func (s *Server) getCommand(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	device, id := r.PathValue("id"), r.PathValue("cid")
	cmd, err := s.sv.Commands.Get(r.Context(), k.TenantID, device, id)
	if err != nil {
		return err
	}
	if wait > 0 && !tether.CommandDone(cmd.Status) {
		if cmd, err = s.waitCommand(r.Context(), k.TenantID, device, id, wait); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, cmd)
}

// confirmCommand approves a command whose definition asks for a second
// call; the key that approves is recorded.
func (s *Server) confirmCommand(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	cmd, err := s.sv.Commands.Confirm(r.Context(), k.TenantID, r.PathValue("id"), r.PathValue("cid"), k.Source())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, cmd)
}
