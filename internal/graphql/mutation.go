package graphql

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"time"

	gql "github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tether-iot/tether"
)

// The mutations need the roles the REST API's routes for the same change
// need: an admin changes devices and rules, an operator runs the fleet
// (shadows' desired state, commands, alerts).

func (m mutationResolver) CreateDevice(ctx context.Context, in CreateDeviceInput) (*CreatedDevice, error) {
	p, err := authorize(ctx, tether.RoleAdmin)
	if err != nil {
		return nil, err
	}
	d := tether.Device{ID: deref(in.ID, ""), Name: deref(in.Name, ""), ProfileID: deref(in.Profile, "")}
	if d.Labels, err = labelMap(in.Labels); err != nil {
		return nil, err
	}
	if d.Metadata, err = jsonObject("metadata", in.Metadata); err != nil {
		return nil, err
	}
	dev, token, err := m.o.Devices.CreateDevice(ctx, p.TenantID, d)
	if err != nil {
		return nil, err
	}
	return &CreatedDevice{Device: dev, Token: token}, nil
}

func (m mutationResolver) UpdateDevice(ctx context.Context, id string, in UpdateDeviceInput) (*tether.Device, error) {
	p, err := authorize(ctx, tether.RoleAdmin)
	if err != nil {
		return nil, err
	}
	u := tether.DeviceUpdate{Name: in.Name, Profile: in.Profile}
	if u.Labels, err = labelMap(in.Labels); err != nil {
		return nil, err
	}
	if u.Metadata, err = jsonObject("metadata", in.Metadata); err != nil {
		return nil, err
	}
	if in.Metadata != nil && u.Metadata == nil {
		u.Metadata = map[string]any{}
	}
	return m.o.Devices.UpdateDevice(ctx, p.TenantID, id, u)
}

func (m mutationResolver) DeleteDevice(ctx context.Context, id string) (string, error) {
	p, err := authorize(ctx, tether.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := m.o.Devices.DeleteDevice(ctx, p.TenantID, id); err != nil {
		return "", err
	}
	return id, nil
}

func (m mutationResolver) RotateDeviceToken(ctx context.Context, id string) (*RotatedToken, error) {
	p, err := authorize(ctx, tether.RoleAdmin)
	if err != nil {
		return nil, err
	}
	token, err := m.o.Devices.RotateToken(ctx, p.TenantID, id)
	if err != nil {
		return nil, err
	}
	return &RotatedToken{DeviceID: id, Token: token}, nil
}

func (m mutationResolver) UpdateShadowDesired(ctx context.Context, deviceID string, name *string, desired any, version *int64) (*tether.Shadow, error) {
	p, err := authorize(ctx, tether.RoleOperator)
	if err != nil {
		return nil, err
	}
	if m.o.Shadows == nil {
		return nil, unavailable("shadow")
	}
	patch, err := jsonObject("desired", desired)
	if err != nil {
		return nil, err
	}
	if patch == nil {
		return nil, tether.Errorf(tether.EINVALID, "desired must be a JSON object (a merge patch: a null deletes a field)")
	}
	if v := deref(version, 0); v < 0 {
		return nil, tether.Errorf(tether.EINVALID, "version must not be negative")
	}
	var u tether.ShadowUpdate
	u.State.Desired, u.Version = patch, deref(version, 0)
	sh, err := m.o.Shadows.Update(ctx, p.TenantID, deviceID, deref(name, ""), u)
	if tether.ErrorCode(err) == tether.ECONFLICT {
		// The caller needs the current version to try again.
		ge := &gqlerror.Error{Message: tether.ErrorMessage(err), Path: gql.GetPath(ctx), Extensions: map[string]any{"code": tether.ECONFLICT}}
		if cur, gerr := m.o.Shadows.Get(ctx, p.TenantID, deviceID, deref(name, "")); gerr == nil {
			ge.Extensions["currentVersion"] = cur.Version
		}
		return nil, ge
	}
	return sh, err
}

// maxWait bounds sendCommand's wait, as the REST API's ?wait.
const maxWait = 60 * time.Second

func (m mutationResolver) SendCommand(ctx context.Context, deviceID string, in CommandInput, wait *time.Duration) (*tether.Command, error) {
	p, err := authorize(ctx, tether.RoleOperator)
	if err != nil {
		return nil, err
	}
	if m.o.Commands == nil {
		return nil, unavailable("command")
	}
	w := deref(wait, 0)
	if w < 0 || w > maxWait {
		return nil, tether.Errorf(tether.EINVALID, "wait %s must be from 0s to %s", w, maxWait)
	}
	req := tether.CommandRequest{Name: in.Name, OneWay: deref(in.OneWay, false), Timeout: deref(in.Timeout, 0), TTL: deref(in.TTL, 0),
		IdempotencyKey: deref(in.IdempotencyKey, ""), Source: p.Source(), Role: p.Role}
	if req.Timeout < 0 || req.TTL < 0 {
		return nil, tether.Errorf(tether.EINVALID, "timeout and ttl must not be negative")
	}
	if in.Params != nil {
		if req.Params, err = json.Marshal(in.Params); err != nil {
			return nil, tether.Errorf(tether.EINVALID, "params is not JSON: %v", err)
		}
	}
	cmd, _, err := m.o.Commands.Send(ctx, p.TenantID, deviceID, req)
	if err != nil {
		return nil, refusal(ctx, cmd, err)
	}
	if w > 0 && !tether.CommandDone(cmd.Status) {
		wctx, cancel := context.WithTimeout(ctx, w)
		defer cancel()
		if cmd, err = m.o.Commands.Wait(wctx, p.TenantID, deviceID, cmd.ID); err != nil {
			return nil, err
		}
	}
	return cmd, nil
}

// refusal is the error of a command the service refused: with the
// command it stored as rejected, if any, and the wait it suggests.
func refusal(ctx context.Context, cmd *tether.Command, err error) error {
	if cmd == nil {
		return err
	}
	ge := &gqlerror.Error{Message: tether.ErrorMessage(err), Path: gql.GetPath(ctx), Extensions: map[string]any{
		"code":    tether.ErrorCode(err),
		"command": map[string]any{"id": cmd.ID, "status": cmd.Status, "reason": cmd.Reason},
	}}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) && ra.RetryAfter() > 0 {
		ge.Extensions["retryAfter"] = max(1, int(math.Ceil(ra.RetryAfter().Seconds())))
	}
	return ge
}

func (m mutationResolver) ConfirmCommand(ctx context.Context, deviceID string, id string) (*tether.Command, error) {
	p, err := authorize(ctx, tether.RoleOperator)
	if err != nil {
		return nil, err
	}
	if m.o.Commands == nil {
		return nil, unavailable("command")
	}
	return m.o.Commands.Confirm(ctx, p.TenantID, deviceID, id, p.Source())
}

func (m mutationResolver) AcknowledgeAlert(ctx context.Context, id string) (*tether.Alert, error) {
	p, err := authorize(ctx, tether.RoleOperator)
	if err != nil {
		return nil, err
	}
	if m.o.Alerts == nil {
		return nil, unavailable("alert")
	}
	return m.o.Alerts.Acknowledge(ctx, p.TenantID, id, p.Source())
}

func (m mutationResolver) ClearAlert(ctx context.Context, id string) (*tether.Alert, error) {
	p, err := authorize(ctx, tether.RoleOperator)
	if err != nil {
		return nil, err
	}
	if m.o.Alerts == nil {
		return nil, unavailable("alert")
	}
	return m.o.Alerts.Clear(ctx, p.TenantID, id, p.Source())
}

func (m mutationResolver) SetRuleEnabled(ctx context.Context, id string, enabled bool) (*tether.Rule, error) {
	p, err := authorize(ctx, tether.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if m.o.Rules == nil {
		return nil, unavailable("rules")
	}
	return m.o.Rules.SetEnabled(ctx, p.TenantID, id, enabled)
}

// jsonObject turns a JSON argument into a map, as the services take
// JSON objects: null is nil, anything but an object is refused. Numbers
// become float64, as from encoding/json, whether they came as literals
// or in variables.
func jsonObject(name string, v any) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, tether.Errorf(tether.EINVALID, "%s is not JSON: %v", name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, tether.Errorf(tether.EINVALID, "%s must be a JSON object", name)
	}
	return m, nil
}
