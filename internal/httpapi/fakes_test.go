package httpapi_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

// The fakes below stand in for the device-state services with just
// enough behaviour to drive each route through its answers; the services
// themselves are tested in their packages, and together with this API
// end to end in cmd/tether.

// fakeServices returns a fresh set of fakes.
func fakeServices() (httpapi.Services, *fakeCommands, *fakePresence) {
	cmds := newFakeCommands()
	pres := &fakePresence{}
	return httpapi.Services{
		Profiles:   &fakeProfiles{m: map[string]*tether.Profile{}},
		Shadows:    &fakeShadows{m: map[string]*tether.Shadow{}},
		Commands:   cmds,
		Presence:   pres,
		Quarantine: fakeQuarantine{},
		Provision:  &fakeProvision{},
		Users:      newFakeUsers(),
		APIKeys:    newFakeAPIKeys(),
	}, cmds, pres
}

// fakeProfiles keeps profiles in a map; the profile "in-use" cannot be
// deleted.
type fakeProfiles struct {
	mu sync.Mutex
	m  map[string]*tether.Profile
}

var _ httpapi.Profiles = (*fakeProfiles)(nil)

func (f *fakeProfiles) Create(_ context.Context, tenant string, p tether.Profile) (*tether.Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !tether.ValidID(p.ID) {
		return nil, tether.Errorf(tether.EINVALID, "bad profile id %q", p.ID)
	}
	if f.m[p.ID] != nil {
		return nil, tether.Errorf(tether.ECONFLICT, "profile %s exists", p.ID)
	}
	p.TenantID = tenant
	f.m[p.ID] = &p
	return &p, nil
}

func (f *fakeProfiles) Put(_ context.Context, tenant string, p tether.Profile) (*tether.Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p.TenantID = tenant
	f.m[p.ID] = &p
	return &p, nil
}

func (f *fakeProfiles) Get(_ context.Context, _, id string) (*tether.Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.m[id]; p != nil {
		return p, nil
	}
	return nil, tether.Errorf(tether.ENOTFOUND, "no profile %s", id)
}

func (f *fakeProfiles) List(context.Context, string) ([]*tether.Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Profile
	for _, id := range sortedKeys(f.m) {
		out = append(out, f.m[id])
	}
	return out, nil
}

func (f *fakeProfiles) Delete(_ context.Context, _, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "in-use" {
		return tether.Errorf(tether.ECONFLICT, "devices use profile %s", id)
	}
	if f.m[id] == nil {
		return tether.Errorf(tether.ENOTFOUND, "no profile %s", id)
	}
	delete(f.m, id)
	return nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// fakeShadows keeps shadows in a map and merges top-level fields.
type fakeShadows struct {
	mu sync.Mutex
	m  map[string]*tether.Shadow
}

var _ httpapi.Shadows = (*fakeShadows)(nil)

func (f *fakeShadows) get(tenant, device, name string) *tether.Shadow {
	if sh := f.m[device+"/"+name]; sh != nil {
		return sh
	}
	return &tether.Shadow{TenantID: tenant, DeviceID: device, Name: name,
		State: tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}}}
}

func (f *fakeShadows) Get(_ context.Context, tenant, device, name string) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := *f.get(tenant, device, name)
	return &sh, nil
}

func (f *fakeShadows) Update(_ context.Context, tenant, device, name string, u tether.ShadowUpdate) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := f.get(tenant, device, name)
	if u.Version != 0 && u.Version != sh.Version {
		return nil, tether.Errorf(tether.ECONFLICT, "version %d is not the shadow's current version %d", u.Version, sh.Version)
	}
	for k, v := range u.State.Desired {
		sh.State.Desired[k] = v
	}
	for k, v := range u.State.Reported {
		sh.State.Reported[k] = v
	}
	sh.Version++
	f.m[device+"/"+name] = sh
	out := *sh
	return &out, nil
}

func (f *fakeShadows) Names(_ context.Context, _, device string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, k := range sortedKeys(f.m) {
		if d, n, _ := strings.Cut(k, "/"); d == device && n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

func (f *fakeShadows) Delete(_ context.Context, _, device, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[device+"/"+name] == nil {
		return tether.Errorf(tether.ENOTFOUND, "no shadow %s", name)
	}
	delete(f.m, device+"/"+name)
	return nil
}

// fakeCommands sends commands as the command service does, in miniature:
// offered to its transport at once (sent if taken, else queued), done on
// a reply. Its guardrails: "order_pizza" once per device; "reboot" for
// admins only; params {"bad":…} invalid; a device "broken" has its
// circuit open.
type fakeCommands struct {
	mu        sync.Mutex
	transport interface{ Deliver(*tether.Command) bool }
	cmds      []*tether.Command
	byKey     map[string]*tether.Command
	changed   chan struct{} // closed and replaced on every change
	delivered []string
	seq       int64
}

var _ httpapi.Commands = (*fakeCommands)(nil)

func newFakeCommands() *fakeCommands {
	return &fakeCommands{byKey: map[string]*tether.Command{}, changed: make(chan struct{})}
}

// rateLimited is the refusal error of the rate guardrail; it says how
// long to wait.
type rateLimited struct{ err *tether.Error }

func (e rateLimited) Error() string           { return e.err.Error() }
func (e rateLimited) Unwrap() error           { return e.err }
func (rateLimited) RetryAfter() time.Duration { return 90 * time.Minute }

func (f *fakeCommands) Send(_ context.Context, tenant, device string, r tether.CommandRequest) (*tether.Command, bool, error) {
	f.mu.Lock()
	if r.IdempotencyKey != "" && f.byKey[device+"/"+r.IdempotencyKey] != nil {
		defer f.mu.Unlock()
		c := *f.byKey[device+"/"+r.IdempotencyKey]
		return &c, false, nil
	}
	if device == "ghost" {
		f.mu.Unlock()
		return nil, false, tether.Errorf(tether.ENOTFOUND, "no device %s", device)
	}
	f.seq++
	now := time.Now().UTC()
	c := &tether.Command{TenantID: tenant, DeviceID: device, ID: fmt.Sprintf("c%d", f.seq), Name: r.Name, Params: r.Params,
		OneWay: r.OneWay, Seq: f.seq, Status: tether.CommandQueued, IdempotencyKey: r.IdempotencyKey, Source: r.Source,
		Timeout: tether.Duration(r.Timeout), ExpiresAt: now.Add(time.Hour), CreatedAt: now, UpdatedAt: now}
	var refused error
	switch {
	case r.Name == "":
		refused = tether.Errorf(tether.EINVALID, "a command needs a name")
	case bytes.Contains(r.Params, []byte(`"bad"`)):
		refused = tether.Errorf(tether.EINVALID, "params: bad is not allowed")
	case r.Name == "reboot" && r.Role != tether.RoleAdmin:
		refused = tether.Errorf(tether.EFORBIDDEN, "role %s may not send reboot", r.Role)
	case r.Name == "order_pizza" && f.count(device, "order_pizza") > 0:
		refused = rateLimited{tether.Errorf(tether.ETOOMANY, "order_pizza: at most 1 per 1h0m0s")}
	case device == "broken":
		refused = tether.Errorf(tether.EUNAVAILABLE, "the circuit breaker of %s is open", device)
	}
	if refused != nil {
		c.Status, c.Reason = tether.CommandRejected, tether.ErrorMessage(refused)
	}
	f.cmds = append(f.cmds, c)
	if r.IdempotencyKey != "" {
		f.byKey[device+"/"+r.IdempotencyKey] = c
	}
	f.changedLocked()
	out := *c
	f.mu.Unlock()
	if refused != nil {
		return &out, true, refused
	}
	// The real service offers outside its lock too: Deliver may block
	// briefly on the server's.
	if f.transport != nil && f.transport.Deliver(&out) {
		f.mu.Lock()
		if c.Status == tether.CommandQueued {
			c.Status = tether.CommandSent
		}
		f.changedLocked()
		out = *c
		f.mu.Unlock()
	}
	return &out, true, nil
}

func (f *fakeCommands) count(device, name string) int {
	n := 0
	for _, c := range f.cmds {
		if c.DeviceID == device && c.Name == name && c.Status != tether.CommandRejected {
			n++
		}
	}
	return n
}

func (f *fakeCommands) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCommands) find(device, id string) (*tether.Command, error) {
	for _, c := range f.cmds {
		if c.DeviceID == device && c.ID == id {
			return c, nil
		}
	}
	return nil, tether.Errorf(tether.ENOTFOUND, "device %s has no command %s", device, id)
}

func (f *fakeCommands) Confirm(_ context.Context, _, device, id, by string) (*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(device, id)
	if err != nil {
		return nil, err
	}
	if c.Status != tether.CommandAwaitingConfirmation {
		return nil, tether.Errorf(tether.ECONFLICT, "command %s is %s, not awaiting confirmation", id, c.Status)
	}
	c.Status, c.ConfirmedBy = tether.CommandQueued, by
	out := *c
	return &out, nil
}

func (f *fakeCommands) Get(_ context.Context, _, device, id string) (*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(device, id)
	if err != nil {
		return nil, err
	}
	out := *c
	return &out, nil
}

func (f *fakeCommands) List(_ context.Context, _, device string, flt tether.CommandFilter) ([]*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Command
	for _, c := range f.cmds {
		if c.DeviceID == device && (flt.Status == "" || c.Status == flt.Status) && c.Seq > flt.After && len(out) < flt.Limit {
			cc := *c
			out = append(out, &cc)
		}
	}
	return out, nil
}

func (f *fakeCommands) Wait(ctx context.Context, _, device, id string) (*tether.Command, error) {
	for {
		f.mu.Lock()
		c, err := f.find(device, id)
		if err != nil {
			f.mu.Unlock()
			return nil, err
		}
		out, changed := *c, f.changed
		f.mu.Unlock()
		if tether.CommandDone(out.Status) {
			return &out, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return &out, nil
		}
	}
}

func (f *fakeCommands) Pending(_ context.Context, _, device string) ([]*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Command
	for _, c := range f.cmds {
		switch c.Status {
		case tether.CommandQueued, tether.CommandSent, tether.CommandDelivered:
			if c.DeviceID == device {
				cc := *c
				out = append(out, &cc)
			}
		}
	}
	return out, nil
}

func (f *fakeCommands) Delivered(_ context.Context, _, device, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(device, id)
	if err != nil {
		return err
	}
	f.delivered = append(f.delivered, id)
	if !tether.CommandDone(c.Status) {
		c.Status = tether.CommandDelivered
		if c.OneWay {
			c.Status = tether.CommandSucceeded
		}
		f.changedLocked()
	}
	return nil
}

func (f *fakeCommands) Reply(_ context.Context, _, device, id string, r tether.CommandReply) (*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(device, id)
	if err != nil {
		return nil, err
	}
	if tether.CommandDone(c.Status) {
		out := *c
		return &out, tether.Errorf(tether.ECONFLICT, "command %s is %s already", id, c.Status)
	}
	c.Status, c.Result = tether.CommandSucceeded, r.Result
	if r.Status == tether.CommandFailed {
		c.Status, c.Reason = tether.CommandFailed, r.Error
	}
	f.changedLocked()
	out := *c
	return &out, nil
}

// add stores a command as it is, for tests that need one in some state.
func (f *fakeCommands) add(c tether.Command) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	c.Seq = f.seq
	f.cmds = append(f.cmds, &c)
}

func (f *fakeCommands) deliveredIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.delivered...)
}

// fakePresence records whom it saw.
type fakePresence struct {
	mu   sync.Mutex
	seen []string
}

var _ httpapi.Presence = (*fakePresence)(nil)

func (f *fakePresence) Seen(d *tether.Device, transport string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, d.ID+"/"+transport)
}

func (f *fakePresence) Get(_ context.Context, tenant, device string) (*tether.Presence, error) {
	return &tether.Presence{TenantID: tenant, DeviceID: device, Status: tether.PresenceOffline, Reason: tether.ReasonNeverConnected}, nil
}

func (f *fakePresence) seenBy() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// fakeQuarantine has two points, whatever is asked, and a count of 7.
type fakeQuarantine struct{}

var _ httpapi.Quarantine = fakeQuarantine{}

func (fakeQuarantine) Quarantined(_ context.Context, _, _ string, from, _ time.Time, limit int) ([]tether.QuarantinedPoint, error) {
	pts := []tether.QuarantinedPoint{
		{Key: "temp", Time: from, Value: 900.0, Reason: tether.QuarantineAboveMax},
		{Key: "temp", Time: from.Add(time.Second), Value: "hot", Reason: tether.QuarantineType},
	}
	return pts[:min(limit, len(pts))], nil
}

func (fakeQuarantine) QuarantineCount(context.Context, string, string) (int64, error) { return 7, nil }

// importError names bad rows, as the provisioning service's does.
type importError struct{ rows []tether.RowError }

func (e *importError) Error() string {
	return fmt.Sprintf("row %d: %s", e.rows[0].Row, e.rows[0].Error)
}
func (e *importError) Unwrap() error                { return tether.Errorf(tether.EINVALID, "%s", e.Error()) }
func (e *importError) RowErrors() []tether.RowError { return e.rows }

const testProvisioningKey = "pk_test.secret"

// fakeProvision imports rows whose IDs are valid (all or none) and
// registers devices that present testProvisioningKey.
type fakeProvision struct {
	mu    sync.Mutex
	keys  []*tether.ProvisioningKey
	calls int
}

var _ httpapi.Provision = (*fakeProvision)(nil)

func (f *fakeProvision) ParseCSV(r io.Reader) ([]tether.DeviceImport, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, tether.Errorf(tether.EINVALID, "csv: %v", err)
	}
	var rows []tether.DeviceImport
	for i, rec := range recs {
		if i == 0 {
			continue // the header
		}
		if len(rec) < 3 {
			return nil, &importError{[]tether.RowError{{Row: i, Error: "too few columns"}}}
		}
		rows = append(rows, tether.DeviceImport{ID: rec[0], Name: rec[1], Profile: rec[2]})
	}
	return rows, nil
}

func (f *fakeProvision) ParseJSON(r io.Reader) ([]tether.DeviceImport, error) {
	var rows []tether.DeviceImport
	if err := json.NewDecoder(r).Decode(&rows); err != nil {
		return nil, tether.Errorf(tether.EINVALID, "json: %v", err)
	}
	return rows, nil
}

func (f *fakeProvision) Import(_ context.Context, _ string, rows []tether.DeviceImport) ([]httpapi.ImportedDevice, error) {
	var bad []tether.RowError
	for i, r := range rows {
		if !tether.ValidID(r.ID) {
			bad = append(bad, tether.RowError{Row: i + 1, ID: r.ID, Error: "bad id"})
		}
	}
	if bad != nil {
		return nil, &importError{bad}
	}
	out := make([]httpapi.ImportedDevice, len(rows))
	for i, r := range rows {
		out[i] = httpapi.ImportedDevice{Row: i + 1, ID: r.ID, Token: r.ID + ".secret"}
	}
	return out, nil
}

func (f *fakeProvision) CreateKey(_ context.Context, tenant, profile string, maxUses int, expiresAt *time.Time) (*tether.ProvisioningKey, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if profile == "" {
		return nil, "", tether.Errorf(tether.EINVALID, "a provisioning key needs a profile")
	}
	f.calls++
	k := &tether.ProvisioningKey{TenantID: tenant, ID: "k" + strconv.Itoa(f.calls), ProfileID: profile, MaxUses: maxUses, ExpiresAt: expiresAt}
	f.keys = append(f.keys, k)
	return k, "pk_" + k.ID + ".s" + strconv.Itoa(f.calls), nil
}

func (f *fakeProvision) Keys(context.Context, string) ([]*tether.ProvisioningKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*tether.ProvisioningKey(nil), f.keys...), nil
}

func (f *fakeProvision) RevokeKey(_ context.Context, _, id string) error {
	if id == "nope" {
		return tether.Errorf(tether.ENOTFOUND, "no provisioning key %s", id)
	}
	return nil
}

func (f *fakeProvision) RotateKey(_ context.Context, tenant, id string) (*tether.ProvisioningKey, string, error) {
	if id == "nope" {
		return nil, "", tether.Errorf(tether.ENOTFOUND, "no provisioning key %s", id)
	}
	return &tether.ProvisioningKey{TenantID: tenant, ID: id, ProfileID: "fridge"}, "pk_" + id + ".rotated", nil
}

func (f *fakeProvision) Register(_ context.Context, key string, r httpapi.RegisterRequest) (*tether.Device, string, error) {
	if key != testProvisioningKey {
		return nil, "", tether.Errorf(tether.EUNAUTHORIZED, "unknown, revoked, expired or used-up provisioning key")
	}
	if r.DeviceID == "taken" {
		return nil, "", tether.Errorf(tether.ECONFLICT, "device %s exists", r.DeviceID)
	}
	d := fakeDevice(r.DeviceID)
	d.Name, d.Labels, d.ProfileID = r.Name, r.Labels, "fridge"
	return d, r.DeviceID + ".devsecret", nil
}
