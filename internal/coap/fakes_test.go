package coap_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/coap"
)

// fakeShadows keeps shadows in memory. It merges reported top-level keys
// (null deletes), refuses a stale version with ECONFLICT, a reported
// document over 256 bytes with ETOOLARGE and a reported key "bad" with
// EINVALID, as the shadow service would.
type fakeShadows struct {
	mu      sync.Mutex
	shadows map[string]*tether.Shadow // by device/name
	updates []shadowCall
}

type shadowCall struct {
	tenant, device, name string
	update               tether.ShadowUpdate
}

func newFakeShadows() *fakeShadows { return &fakeShadows{shadows: map[string]*tether.Shadow{}} }

func (f *fakeShadows) getLocked(tenant, id, name string) *tether.Shadow {
	sh := f.shadows[id+"/"+name]
	if sh == nil {
		sh = &tether.Shadow{TenantID: tenant, DeviceID: id, Name: name,
			State:    tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}},
			Metadata: tether.ShadowMetadata{Desired: map[string]any{}, Reported: map[string]any{}}}
		f.shadows[id+"/"+name] = sh
	}
	return sh
}

// clone copies a shadow through JSON, so the gateway never shares the
// fake's maps.
func clone(sh *tether.Shadow) *tether.Shadow {
	b, err := json.Marshal(sh)
	if err != nil {
		panic(err)
	}
	var c tether.Shadow
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return &c
}

func (f *fakeShadows) Get(_ context.Context, tenant, id, name string) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clone(f.getLocked(tenant, id, name)), nil
}

func (f *fakeShadows) Update(_ context.Context, tenant, id, name string, u tether.ShadowUpdate) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, shadowCall{tenant, id, name, u})
	sh := f.getLocked(tenant, id, name)
	if u.Version != 0 && u.Version != sh.Version {
		return nil, tether.Errorf(tether.ECONFLICT, "version %d is stale; the shadow is at version %d", u.Version, sh.Version)
	}
	if b, _ := json.Marshal(u.State.Reported); len(b) > 256 {
		return nil, tether.Errorf(tether.ETOOLARGE, "the reported document is %d bytes; at most 256", len(b))
	}
	if _, ok := u.State.Reported["bad"]; ok {
		return nil, tether.Errorf(tether.EINVALID, "state.reported.bad is not allowed")
	}
	for k, v := range u.State.Reported {
		if v == nil {
			delete(sh.State.Reported, k)
		} else {
			sh.State.Reported[k] = v
		}
	}
	sh.Version++
	return clone(sh), nil
}

// setDesired sets a desired key of a shadow and returns the new shadow.
func (f *fakeShadows) setDesired(id, name, key string, v any) *tether.Shadow {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := f.getLocked("default", id, name)
	sh.State.Desired[key] = v
	sh.Version++
	return clone(sh)
}

func (f *fakeShadows) calls() []shadowCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.updates)
}

// fakeCommands is the device side of a command service: commands in
// order, Ready offering the queued and sent ones to the gateway.
type fakeCommands struct {
	mu        sync.Mutex
	transport *coap.Gateway
	cmds      []*tether.Command
	delivered []string
	replies   map[string]tether.CommandReply
	readies   []readyCall
}

type readyCall struct {
	tenant, device string
	resumed        bool
}

var _ coap.CommandReadier = (*fakeCommands)(nil)

func newFakeCommands() *fakeCommands {
	return &fakeCommands{replies: map[string]tether.CommandReply{}}
}

func (f *fakeCommands) setTransport(g *coap.Gateway) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.transport = g
}

// add queues a command for a device and returns it.
func (f *fakeCommands) add(device, id, name, params string) *tether.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &tether.Command{TenantID: "default", DeviceID: device, ID: id, Name: name, Status: tether.CommandQueued, Seq: int64(len(f.cmds) + 1)}
	if params != "" {
		c.Params = json.RawMessage(params)
	}
	f.cmds = append(f.cmds, c)
	cp := *c
	return &cp
}

func (f *fakeCommands) find(device, id string) *tether.Command {
	for _, c := range f.cmds {
		if c.DeviceID == device && c.ID == id {
			return c
		}
	}
	return nil
}

func (f *fakeCommands) Pending(_ context.Context, _, device string) ([]*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*tether.Command
	for _, c := range f.cmds {
		if c.DeviceID == device && !tether.CommandDone(c.Status) {
			cp := *c
			out = append(out, &cp)
		}
	}
	return out, nil
}

func (f *fakeCommands) Delivered(_ context.Context, _, device, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delivered = append(f.delivered, id)
	if c := f.find(device, id); c != nil && (c.Status == tether.CommandQueued || c.Status == tether.CommandSent) {
		c.Status = tether.CommandDelivered
	}
	return nil
}

func (f *fakeCommands) Reply(_ context.Context, _, device, id string, r tether.CommandReply) (*tether.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(device, id)
	if c == nil {
		return nil, tether.Errorf(tether.ENOTFOUND, "no command %s", id)
	}
	cp := *c
	if tether.CommandDone(c.Status) {
		return &cp, tether.Errorf(tether.ECONFLICT, "the command is %s", c.Status)
	}
	if r.Status != "" && r.Status != tether.CommandSucceeded && r.Status != tether.CommandFailed {
		return nil, tether.Errorf(tether.EINVALID, "status %q: succeeded or failed", r.Status)
	}
	f.replies[id] = r
	c.Status = tether.CommandSucceeded
	if r.Status != "" {
		c.Status = r.Status
	}
	cp = *c
	return &cp, nil
}

// Ready offers the device's queued (and, unless resumed, sent) commands in
// order, stopping at the first the gateway does not take.
func (f *fakeCommands) Ready(_ context.Context, tenant, device string, resumed bool) {
	f.mu.Lock()
	f.readies = append(f.readies, readyCall{tenant, device, resumed})
	g := f.transport
	var offer []*tether.Command
	for _, c := range f.cmds {
		if c.DeviceID == device && (c.Status == tether.CommandQueued || (!resumed && c.Status == tether.CommandSent)) {
			offer = append(offer, c)
		}
	}
	f.mu.Unlock()
	for _, c := range offer {
		f.mu.Lock()
		cp := *c
		f.mu.Unlock()
		if !g.Deliver(&cp) {
			return
		}
		f.mu.Lock()
		if c.Status == tether.CommandQueued {
			c.Status = tether.CommandSent
		}
		f.mu.Unlock()
	}
}

func (f *fakeCommands) deliveredIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.delivered)
}

func (f *fakeCommands) readyCalls() []readyCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.readies)
}

func (f *fakeCommands) replyOf(id string) (tether.CommandReply, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.replies[id]
	return r, ok
}

func (f *fakeCommands) status(device, id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.find(device, id); c != nil {
		return c.Status
	}
	return ""
}

// fakePresence counts the requests it is told of, by device and transport.
type fakePresence struct {
	mu   sync.Mutex
	seen map[string]int
}

func (p *fakePresence) Seen(d *tether.Device, transport string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]int{}
	}
	p.seen[d.ID+"/"+transport]++
}

func (p *fakePresence) count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[key]
}

func tetherReply(status string) tether.CommandReply { return tether.CommandReply{Status: status} }
