package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/tether-iot/tether"
)

// feed is a channel per key (a device), so that a test reads only what
// concerns its own device.
type feed[T any] struct {
	mu    sync.Mutex
	chans map[string]chan T
}

func (f *feed[T]) ch(key string) chan T {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.chans == nil {
		f.chans = map[string]chan T{}
	}
	c := f.chans[key]
	if c == nil {
		c = make(chan T, 100)
		f.chans[key] = c
	}
	return c
}

// fakeShadows keeps shadows in memory: reported and desired merged one
// level deep, delta the desired keys whose value reported does not have.
type fakeShadows struct {
	mu sync.Mutex
	m  map[string]*tether.Shadow
}

func (f *fakeShadows) current(tenant, id, name string) *tether.Shadow {
	if f.m == nil {
		f.m = map[string]*tether.Shadow{}
	}
	k := tenant + "/" + id + "/" + name
	if f.m[k] == nil {
		f.m[k] = &tether.Shadow{TenantID: tenant, DeviceID: id, Name: name,
			State: tether.ShadowState{Desired: map[string]any{}, Reported: map[string]any{}}}
	}
	return f.m[k]
}

func (f *fakeShadows) Get(_ context.Context, tenant, id, name string) (*tether.Shadow, error) {
	if name != "" && !tether.ValidID(name) {
		return nil, tether.Errorf(tether.EINVALID, "bad shadow name")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *f.current(tenant, id, name)
	return &c, nil
}

func (f *fakeShadows) Update(_ context.Context, tenant, id, name string, u tether.ShadowUpdate) (*tether.Shadow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := f.current(tenant, id, name)
	if u.Version != 0 && u.Version != sh.Version {
		return nil, tether.Errorf(tether.ECONFLICT, "version %d is stale; the shadow is at version %d", u.Version, sh.Version)
	}
	for k, v := range u.State.Reported {
		sh.State.Reported[k] = v
	}
	for k, v := range u.State.Desired {
		sh.State.Desired[k] = v
	}
	sh.State.Delta = map[string]any{}
	for k, v := range sh.State.Desired {
		if !reflect.DeepEqual(sh.State.Reported[k], v) {
			sh.State.Delta[k] = v
		}
	}
	sh.Version++
	c := *sh
	return &c, nil
}

type readyCall struct {
	tenant  string
	resumed bool
}

type replyCall struct {
	tenant, id string
	reply      tether.CommandReply
}

// fakeCommands records what the gateway tells the command service. A
// reply to the command "unknown" is not found, to "down" unavailable.
type fakeCommands struct {
	ready     feed[readyCall]
	delivered feed[string] // "<tenant>/<command id>"
	replies   feed[replyCall]
}

func (f *fakeCommands) Ready(_ context.Context, tenant, id string, resumed bool) {
	f.ready.ch(id) <- readyCall{tenant, resumed}
}

func (f *fakeCommands) Delivered(_ context.Context, tenant, id, cid string) error {
	f.delivered.ch(id) <- tenant + "/" + cid
	return nil
}

func (f *fakeCommands) Reply(_ context.Context, tenant, id, cid string, r tether.CommandReply) (*tether.Command, error) {
	switch cid {
	case "unknown":
		return nil, tether.Errorf(tether.ENOTFOUND, "no command %s", cid)
	case "down":
		return nil, tether.Errorf(tether.EUNAVAILABLE, "the store is down")
	}
	f.replies.ch(id) <- replyCall{tenant, cid, r}
	return &tether.Command{TenantID: tenant, DeviceID: id, ID: cid, Status: tether.CommandSucceeded}, nil
}

type presenceEvent struct {
	connected bool
	seq       int64
	reason    string
}

// fakePresence numbers connections and records each event.
type fakePresence struct {
	seq    atomic.Int64
	events feed[presenceEvent]
}

func (f *fakePresence) Connected(_ context.Context, d *tether.Device, transport string) (int64, error) {
	if transport != "mqtt" {
		return 0, fmt.Errorf("transport %q", transport)
	}
	s := f.seq.Add(1)
	f.events.ch(d.ID) <- presenceEvent{connected: true, seq: s}
	return s, nil
}

func (f *fakePresence) Disconnected(_ context.Context, d *tether.Device, seq int64, reason string) error {
	f.events.ch(d.ID) <- presenceEvent{seq: seq, reason: reason}
	return nil
}

// fakeProvisioner knows one key, "pk_good.secret", of tenant t1.
type fakeProvisioner struct {
	mu      sync.Mutex
	devices map[string]*tether.Device
}

const goodKey = "pk_good.secret"

func (f *fakeProvisioner) Register(_ context.Context, key, id, name string, labels map[string]string) (*tether.Device, string, error) {
	if key != goodKey {
		return nil, "", tether.Errorf(tether.EUNAUTHORIZED, "unknown, revoked, expired or used-up provisioning key")
	}
	if !tether.ValidID(id) {
		return nil, "", tether.Errorf(tether.EINVALID, "bad device id")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.devices == nil {
		f.devices = map[string]*tether.Device{}
	}
	if f.devices[id] != nil {
		return nil, "", tether.Errorf(tether.ECONFLICT, "device %s exists", id)
	}
	d := &tether.Device{TenantID: "t1", ID: id, Name: name, Labels: labels}
	f.devices[id] = d
	return d, id + ".token", nil
}

// fakeApps knows the API keys "app1.secret" (tenant t1) and "app2.secret"
// (tenant t2).
type fakeApps struct{}

func (fakeApps) AuthenticateAPIKey(_ context.Context, key string) (*tether.APIKey, error) {
	switch key {
	case "app1.secret":
		return &tether.APIKey{TenantID: "t1", ID: "app1", Role: tether.RoleAdmin}, nil
	case "app2.secret":
		return &tether.APIKey{TenantID: "t2", ID: "app2", Role: tether.RoleAdmin}, nil
	}
	return nil, tether.Errorf(tether.EUNAUTHORIZED, "unknown API key")
}

type fakeServices struct {
	shadows  *fakeShadows
	commands *fakeCommands
	presence *fakePresence
	prov     *fakeProvisioner
}

// startServices starts a gateway (lab mode on) with every service faked,
// and registers the devices named (besides d1 and d2).
func startServices(t *testing.T, change func(*Options), devices ...string) (*testGateway, *fakeServices) {
	t.Helper()
	s := &fakeServices{shadows: &fakeShadows{}, commands: &fakeCommands{}, presence: &fakePresence{}, prov: &fakeProvisioner{}}
	tg := startGateway(t, func(o *Options) {
		o.AllowAnonymous = true
		o.Shadows, o.Commands, o.Presence, o.Provisioner, o.Apps = s.shadows, s.commands, s.presence, s.prov, fakeApps{}
		if change != nil {
			change(o)
		}
	})
	for _, id := range devices {
		tg.auth.add(id, time.Unix(1700000000, 0))
	}
	return tg, s
}

// next waits for the next value on a feed's channel.
func next[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	return receive(t, ch, what)
}

// on3 waits for a 3.1.1 message and checks its topic.
func on3(t *testing.T, c *client3, topic string) []byte {
	t.Helper()
	m := receive(t, c.msgs, topic)
	if m.Topic() != topic {
		t.Fatalf("message on %s (%q), want one on %s", m.Topic(), m.Payload(), topic)
	}
	return m.Payload()
}

// on5 waits for a 5.0 message and checks its topic.
func on5(t *testing.T, c *client5, topic string) *paho5.Publish {
	t.Helper()
	m := receive(t, c.msgs, topic)
	if m.Topic != topic {
		t.Fatalf("message on %s (%q), want one on %s", m.Topic, m.Payload, topic)
	}
	return m
}

// publishProps publishes from a 5.0 client with a response topic and
// correlation data, and returns the acknowledgement's reason code.
func (c *client5) publishProps(t *testing.T, topic string, qos byte, payload, responseTopic, correlation string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: qos, Payload: []byte(payload),
		Properties: &paho5.PublishProperties{ResponseTopic: responseTopic, CorrelationData: []byte(correlation)}})
	if pr == nil && qos > 0 {
		t.Fatalf("publish %s: %v", topic, err)
	}
	if pr == nil {
		return 0
	}
	return pr.ReasonCode
}

// decode reads a JSON answer into a map.
func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return m
}

// connectRawWith opens a raw 5.0 connection with the CONNECT given (a
// will, a client ID) and reads its CONNACK.
func connectRawWith(t *testing.T, addr string, cp *packets.Connect) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	if cp.Properties == nil {
		cp.Properties = &packets.Properties{}
	}
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	pk, err := packets.ReadPacket(conn)
	if err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if ca, ok := pk.Content.(*packets.Connack); !ok || ca.ReasonCode != 0 {
		t.Fatalf("got %v, want a successful CONNACK", pk)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn
}
