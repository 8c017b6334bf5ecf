package graphql

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/tether-iot/tether"
)

// resolver is the root of the resolvers. Every resolver reads its caller
// from the context and authorizes it: the @auth directive guards the root
// fields, and each resolver checks again, so that a directive dropped
// from the schema by mistake opens nothing.
type resolver struct {
	o   *Options
	log *slog.Logger
	now func() time.Time
}

func (r *resolver) Query() QueryResolver               { return queryResolver{r} }
func (r *resolver) Mutation() MutationResolver         { return mutationResolver{r} }
func (r *resolver) Subscription() SubscriptionResolver { return subscriptionResolver{r} }
func (r *resolver) Device() DeviceResolver             { return deviceResolver{r} }
func (r *resolver) Alert() AlertResolver               { return alertResolver{r} }
func (r *resolver) Profile() ProfileResolver           { return profileResolver{r} }

type (
	queryResolver        struct{ *resolver }
	deviceResolver       struct{ *resolver }
	alertResolver        struct{ *resolver }
	profileResolver      struct{ *resolver }
	mutationResolver     struct{ *resolver }
	subscriptionResolver struct{ *resolver }
)

// unavailable is the error of a field whose service this node lacks.
func unavailable(service string) error {
	return tether.Errorf(tether.EUNAVAILABLE, "this node does not run the %s service", service)
}

// orNil turns "not found" into a null answer, as a nullable field that
// looks one thing up gives.
func orNil[T any](v *T, err error) (*T, error) {
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, nil
	}
	return v, err
}

// pageSize checks a page size argument: from 1 to most.
func pageSize(name string, n *int, def, most int) (int, error) {
	v := deref(n, def)
	if v < 1 || v > most {
		return 0, tether.Errorf(tether.EINVALID, "%s is %d; it must be from 1 to %d", name, v, most)
	}
	return v, nil
}

// device reads a device once per operation.
func (r *resolver) device(ctx context.Context, tenant, id string) (*tether.Device, error) {
	return cached(ctx, "device", id, func() (*tether.Device, error) { return r.o.Devices.Device(ctx, tenant, id) })
}

func (q queryResolver) Viewer(ctx context.Context) (*tether.Principal, error) {
	return authorize(ctx, tether.RoleViewer)
}

func (q queryResolver) Devices(ctx context.Context, first *int, after *string, labels []*LabelInput, profile *string, status *string) (*DevicePage, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	n, err := pageSize("first", first, 100, 1000)
	if err != nil {
		return nil, err
	}
	sel, err := labelMap(labels)
	if err != nil {
		return nil, err
	}
	devs, err := q.o.Devices.Devices(ctx, tether.DeviceFilter{
		TenantID: p.TenantID, Labels: sel, Profile: deref(profile, ""), Status: deref(status, ""),
		After: deref(after, ""), Limit: n + 1,
	})
	if err != nil {
		return nil, err
	}
	page := &DevicePage{Devices: devs}
	if len(devs) > n {
		page.Devices = devs[:n]
		next := devs[n-1].ID
		page.NextCursor = &next
	}
	return page, nil
}

func (q queryResolver) Device(ctx context.Context, id string) (*tether.Device, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	return orNil(q.device(ctx, p.TenantID, id))
}

// alertFilter is the alert service's status filter: status if given,
// else "open" (not cleared) if open, else any.
func alertFilter(status *string, open *bool) string {
	switch {
	case status != nil:
		return *status
	case deref(open, false):
		return "open"
	}
	return ""
}

func (q queryResolver) Alerts(ctx context.Context, status *string, open *bool, deviceID *string, ruleID *string, first *int, after *string) (*AlertPage, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if q.o.Alerts == nil {
		return nil, unavailable("alert")
	}
	f := tether.AlertFilter{Status: alertFilter(status, open), DeviceID: deref(deviceID, ""), RuleID: deref(ruleID, ""), After: deref(after, "")}
	if f.Limit, err = pageSize("first", first, 100, 1000); err != nil {
		return nil, err
	}
	as, err := q.o.Alerts.List(ctx, p.TenantID, f)
	if err != nil {
		return nil, err
	}
	page := &AlertPage{Alerts: as}
	if len(as) == f.Limit {
		next := as[len(as)-1].ID
		page.NextCursor = &next
	}
	return page, nil
}

func (q queryResolver) Alert(ctx context.Context, id string) (*tether.Alert, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if q.o.Alerts == nil {
		return nil, unavailable("alert")
	}
	return orNil(q.o.Alerts.Get(ctx, p.TenantID, id))
}

func (q queryResolver) Rules(ctx context.Context) ([]*tether.Rule, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if q.o.Rules == nil {
		return nil, unavailable("rules")
	}
	return q.o.Rules.List(ctx, p.TenantID)
}

func (q queryResolver) Rule(ctx context.Context, id string) (*tether.Rule, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if q.o.Rules == nil {
		return nil, unavailable("rules")
	}
	return orNil(q.o.Rules.Get(ctx, p.TenantID, id))
}

func (q queryResolver) Profiles(ctx context.Context) ([]*tether.Profile, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if q.o.Profiles == nil {
		return nil, unavailable("profile")
	}
	return q.o.Profiles.List(ctx, p.TenantID)
}

func (q queryResolver) Profile(ctx context.Context, id string) (*tether.Profile, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	return q.profile(ctx, p.TenantID, id)
}

// profile reads a profile once per operation; null if there is none.
func (r *resolver) profile(ctx context.Context, tenant, id string) (*tether.Profile, error) {
	if r.o.Profiles == nil {
		return nil, unavailable("profile")
	}
	return orNil(cached(ctx, "profile", id, func() (*tether.Profile, error) { return r.o.Profiles.Get(ctx, tenant, id) }))
}

func (d deviceResolver) Labels(ctx context.Context, obj *tether.Device) ([]*Label, error) {
	if _, err := authorize(ctx, tether.RoleViewer); err != nil {
		return nil, err
	}
	out := make([]*Label, 0, len(obj.Labels))
	for _, k := range slices.Sorted(maps.Keys(obj.Labels)) {
		out = append(out, &Label{Key: k, Value: obj.Labels[k]})
	}
	return out, nil
}

func (d deviceResolver) ProfileID(ctx context.Context, obj *tether.Device) (*string, error) {
	if _, err := authorize(ctx, tether.RoleViewer); err != nil || obj.ProfileID == "" {
		return nil, err
	}
	return &obj.ProfileID, nil
}

func (d deviceResolver) Profile(ctx context.Context, obj *tether.Device) (*tether.Profile, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil || obj.ProfileID == "" {
		return nil, err
	}
	return d.profile(ctx, p.TenantID, obj.ProfileID)
}

func (d deviceResolver) Presence(ctx context.Context, obj *tether.Device) (*tether.Presence, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if d.o.Presence == nil {
		return nil, unavailable("presence")
	}
	return cached(ctx, "presence", obj.ID, func() (*tether.Presence, error) { return d.o.Presence.Get(ctx, p.TenantID, obj.ID) })
}

func (d deviceResolver) Latest(ctx context.Context, obj *tether.Device, keys []string) ([]*tether.Latest, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	vals, err := cached(ctx, "latest", obj.ID, func() ([]tether.Latest, error) { return d.o.Telemetry.Latest(ctx, p.TenantID, obj.ID) })
	if err != nil {
		return nil, err
	}
	out := make([]*tether.Latest, 0, len(vals))
	for i := range vals {
		if len(keys) == 0 || slices.Contains(keys, vals[i].Key) {
			out = append(out, &vals[i])
		}
	}
	return out, nil
}

func (d deviceResolver) Telemetry(ctx context.Context, obj *tether.Device, keys []string, from, to *time.Time, agg *Aggregation, bucket *time.Duration, limit *int) ([]*tether.Series, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	q, err := telemetryQuery(d.now().UTC(), keys, from, to, agg, bucket, limit)
	if err != nil {
		return nil, err
	}
	q.TenantID, q.DeviceID = p.TenantID, obj.ID
	series, err := d.o.Telemetry.Telemetry(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]*tether.Series, len(series))
	for i := range series {
		if series[i].Samples == nil {
			series[i].Samples = []tether.Sample{}
		}
		out[i] = &series[i]
	}
	return out, nil
}

func (d deviceResolver) Shadow(ctx context.Context, obj *tether.Device, name *string) (*tether.Shadow, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if d.o.Shadows == nil {
		return nil, unavailable("shadow")
	}
	return d.o.Shadows.Get(ctx, p.TenantID, obj.ID, deref(name, ""))
}

func (d deviceResolver) ShadowNames(ctx context.Context, obj *tether.Device) ([]string, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if d.o.Shadows == nil {
		return nil, unavailable("shadow")
	}
	names, err := d.o.Shadows.Names(ctx, p.TenantID, obj.ID)
	if names == nil && err == nil {
		names = []string{}
	}
	return names, err
}

func (d deviceResolver) Alerts(ctx context.Context, obj *tether.Device, status *string, open *bool, first *int) ([]*tether.Alert, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if d.o.Alerts == nil {
		return nil, unavailable("alert")
	}
	f := tether.AlertFilter{Status: alertFilter(status, open), DeviceID: obj.ID}
	if f.Limit, err = pageSize("first", first, 20, 1000); err != nil {
		return nil, err
	}
	return d.o.Alerts.List(ctx, p.TenantID, f)
}

// commandStatuses are the statuses a command list may select.
var commandStatuses = []string{tether.CommandAwaitingConfirmation, tether.CommandQueued, tether.CommandSent, tether.CommandDelivered,
	tether.CommandSucceeded, tether.CommandFailed, tether.CommandExpired, tether.CommandRejected}

func (d deviceResolver) Commands(ctx context.Context, obj *tether.Device, status *string, after *int64, first *int) ([]*tether.Command, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if d.o.Commands == nil {
		return nil, unavailable("command")
	}
	f := tether.CommandFilter{Status: deref(status, ""), After: deref(after, 0)}
	if f.Status != "" && !slices.Contains(commandStatuses, f.Status) {
		return nil, tether.Errorf(tether.EINVALID, "status %q is not a command status", f.Status)
	}
	if f.After < 0 {
		return nil, tether.Errorf(tether.EINVALID, "after must be a command's seq, a number from 0")
	}
	if f.Limit, err = pageSize("first", first, 20, 1000); err != nil {
		return nil, err
	}
	return d.o.Commands.List(ctx, p.TenantID, obj.ID, f)
}

func (d deviceResolver) Command(ctx context.Context, obj *tether.Device, id string) (*tether.Command, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	if d.o.Commands == nil {
		return nil, unavailable("command")
	}
	return orNil(d.o.Commands.Get(ctx, p.TenantID, obj.ID, id))
}

func (a alertResolver) Device(ctx context.Context, obj *tether.Alert) (*tether.Device, error) {
	p, err := authorize(ctx, tether.RoleViewer)
	if err != nil {
		return nil, err
	}
	return orNil(a.device(ctx, p.TenantID, obj.DeviceID))
}

func (profileResolver) Telemetry(ctx context.Context, obj *tether.Profile) ([]*TelemetryKey, error) {
	if _, err := authorize(ctx, tether.RoleViewer); err != nil {
		return nil, err
	}
	out := make([]*TelemetryKey, 0, len(obj.Telemetry))
	for k, s := range obj.Telemetry {
		out = append(out, &TelemetryKey{Key: k, Type: s.Type, Unit: s.Unit, Min: s.Min, Max: s.Max, MaxRate: s.MaxRate})
	}
	slices.SortFunc(out, func(a, b *TelemetryKey) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}

func (profileResolver) Commands(ctx context.Context, obj *tether.Profile) ([]*ProfileCommand, error) {
	if _, err := authorize(ctx, tether.RoleViewer); err != nil {
		return nil, err
	}
	out := make([]*ProfileCommand, 0, len(obj.Commands))
	for name, c := range obj.Commands {
		pc := &ProfileCommand{Name: name, Roles: c.Roles, Confirm: c.Confirm}
		if len(c.Params) > 0 {
			pc.Params = c.Params
		}
		if pc.Roles == nil {
			pc.Roles = []string{}
		}
		out = append(out, pc)
	}
	slices.SortFunc(out, func(a, b *ProfileCommand) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// The bounds of a device's labels, [tether.ValidateDeviceFields]'s. A
// selector has the same bounds: one with more labels, or with a label no
// device can have, selects nothing, and each of its labels is a join in
// the store's query.
const (
	maxLabels     = 64
	maxLabelValue = 256
)

// labelMap turns label pairs, a device's or a selector's, into a map,
// refusing more than maxLabels pairs, a key that is not an ID, a value
// over maxLabelValue bytes and a key given twice. It checks them in order
// so that the first bad pair is the one named.
func labelMap(labels []*LabelInput) (map[string]string, error) {
	if labels == nil {
		return nil, nil
	}
	if len(labels) > maxLabels {
		return nil, tether.Errorf(tether.EINVALID, "labels has %d pairs; at most %d labels in a selector or on a device", len(labels), maxLabels)
	}
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		switch {
		case !tether.ValidID(l.Key):
			return nil, tether.Errorf(tether.EINVALID, "label key %q must be 1 to 64 letters, digits, '-' or '_'", shorten(l.Key))
		case len(l.Value) > maxLabelValue:
			return nil, tether.Errorf(tether.EINVALID, "label %q is %d bytes; at most %d", l.Key, len(l.Value), maxLabelValue)
		}
		if _, dup := m[l.Key]; dup {
			return nil, tether.Errorf(tether.EINVALID, "label %q is given twice", l.Key)
		}
		m[l.Key] = l.Value
	}
	return m, nil
}

// shorten cuts what claimed to be an ID to 40 bytes for an error message.
func shorten(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
