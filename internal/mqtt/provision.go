package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-iot/tether"
)

// special is a client that is not a device: a provisioning client (key
// set) or an application.
type special struct {
	id    string // its scoped client ID
	owner string // its username inside the broker (see [owner])
	key   string // a provisioning client's key, checked when it registers
}

// errBadClientID refuses a provisioning client whose client ID cannot be
// a device ID.
var errBadClientID = errors.New("mqtt: the client ID is not a valid device ID")

// identifyProvisioning admits a client that connects with the username
// $provision: its password is a provisioning key, checked only when it
// registers (the provisioning service holds the keys); its client ID is
// the device ID it asks for.
func (h *hook) identifyProvisioning(cl *mochi.Client, pk packets.Packet) (*special, error) {
	if h.opts.Provisioner == nil {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "provisioning over MQTT is off")
	}
	if len(pk.Connect.Password) == 0 {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "a provisioning key is required")
	}
	if !tether.ValidID(cl.ID) || cl.Properties.Props.AssignedClientID != "" {
		return nil, errBadClientID
	}
	return &special{id: provPrefix + cl.ID, key: string(pk.Connect.Password)}, nil
}

// identifyApp authenticates a client that connects with the username $app
// and an API key as password.
func (h *hook) identifyApp(cl *mochi.Client, pk packets.Packet) (*special, error) {
	if h.opts.Apps == nil {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "applications over MQTT are off")
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	k, err := h.opts.Apps.AuthenticateAPIKey(ctx, string(pk.Connect.Password))
	if err != nil {
		return nil, err
	}
	// Scoped by tenant, so that applications of two tenants never share a
	// session; any key of the tenant may resume one.
	return &special{id: appPrefix + k.TenantID + ":" + cl.ID, owner: appUser + "/" + k.TenantID}, nil
}

// provClient is a live provisioning client.
type provClient struct {
	cl    *mochi.Client
	key   string
	timer *time.Timer
}

// provisionLifetime is how long a provisioning connection may last: it
// exists for one request and its answer.
const provisionLifetime = time.Minute

// registerProvisioning records a provisioning client, unless another is
// connected under the same client ID: only one at a time may wait for
// the answer on $provision/<client id>/…, which carries a token.
func (h *hook) registerProvisioning(cl *mochi.Client, key string) bool {
	id := cl.ID[len(provPrefix):]
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.provs[id]; old != nil && !old.cl.Closed() {
		return false
	} else if old != nil {
		old.timer.Stop()
	}
	h.provs[id] = &provClient{cl: cl, key: key, timer: time.AfterFunc(provisionLifetime, func() {
		_ = h.srv.DisconnectClient(cl, packets.ErrMaxConnectTime)
		// In case the broker dropped it without an OnDisconnect.
		h.unregisterProvisioning(cl)
	})}
	return true
}

func (h *hook) unregisterProvisioning(cl *mochi.Client) {
	id := cl.ID[len(provPrefix):]
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.provs[id]; p != nil && p.cl == cl {
		p.timer.Stop()
		delete(h.provs, id)
	}
}

// provisioningKey returns the key a live provisioning client connected
// with.
func (h *hook) provisioningKey(cl *mochi.Client) (string, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if p := h.provs[cl.ID[len(provPrefix):]]; p != nil && p.cl == cl {
		return p.key, true
	}
	return "", false
}

// provisionRequest is the optional payload of a registration.
type provisionRequest struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

// provision registers the device a provisioning client asks for (its
// PUBLISH on $provision/<client id>, which mayPublish admitted) and
// answers on $provision/<client id>/accepted with the device and its
// token, or on …/rejected with why. The request itself goes to no one.
func (h *hook) provision(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.inflight.Add(1)
	defer h.inflight.Done()
	if h.closing.Load() {
		return pk, packets.ErrRejectPacket
	}
	key, ok := h.provisioningKey(cl)
	if !ok {
		return pk, packets.ErrRejectPacket // its connection is being cut
	}
	base := pk.TopicName
	reply := func(outcome string, body any) {
		h.answer(base+"/"+outcome, pk, base+"/", body)
	}
	var req provisionRequest
	if len(pk.Payload) > 0 {
		if err := json.Unmarshal(pk.Payload, &req); err != nil {
			reply("rejected", problem(tether.Errorf(tether.EINVALID, "the request is not a JSON object with name and labels"), ""))
			return pk, packets.CodeSuccessIgnore
		}
	}
	if !h.provisions.Allow(host(cl.Net.Remote)) {
		reply("rejected", problem(tether.Errorf(tether.ETOOMANY, "too many registrations from this address; try again later"), ""))
		return pk, packets.CodeSuccessIgnore
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.PublishTimeout)
	defer cancel()
	id := cl.ID[len(provPrefix):]
	d, tok, err := h.opts.Provisioner.Register(ctx, key, id, req.Name, req.Labels)
	if err != nil {
		if c := tether.ErrorCode(err); c == tether.EINTERNAL || c == tether.EUNAVAILABLE {
			h.log.Error("mqtt provisioning", "device", id, "err", err)
		} else {
			h.log.Debug("mqtt provisioning refused", "device", id, "err", tether.ErrorMessage(err))
		}
		reply("rejected", problem(err, ""))
		return pk, packets.CodeSuccessIgnore
	}
	h.log.Info("mqtt device provisioned itself", "tenant", d.TenantID, "device", d.ID)
	reply("accepted", struct {
		Device *tether.Device `json:"device"`
		Token  string         `json:"token"`
	}{d, tok})
	return pk, packets.CodeSuccessIgnore
}

// PublishRuleResult publishes a rule's result for the apps of its tenant
// on $events/<tenant>/rules/<topic> (QoS 1): inside the tenant's events
// tree, which only the tenant's apps may read, so a rule cannot reach
// devices' topics or another tenant's apps.
func (g *Gateway) PublishRuleResult(tenant, topic string, data []byte) error {
	if g.hook.closing.Load() {
		return errors.New("mqtt: the gateway is closing")
	}
	if tenant == "" || topic == "" || strings.ContainsAny(tenant, "/+#\x00") || strings.ContainsAny(topic, "+#\x00") {
		return tether.Errorf(tether.EINVALID, "republish topic %q is not a topic name", truncate(topic))
	}
	g.hook.publish(eventsTopic+"/"+tenant+"/rules/"+topic, data, nil)
	return nil
}

// PublishEvent publishes a device event (presence, shadow, command: the
// data is its JSON) for the tenant's applications on
// $events/<tenant>/<kind>/<device>. It is published at QoS 1, so that an
// application chooses its guarantee by the QoS it subscribes with, and
// one with a persistent session at QoS 1 misses nothing over a short
// disconnect; the bus remains the durable record.
func (g *Gateway) PublishEvent(tenant, kind, device string, data []byte) {
	if g.hook.closing.Load() {
		return
	}
	for _, level := range []string{tenant, kind, device} {
		if level == "" || strings.ContainsAny(level, "/+#\x00") {
			g.hook.log.Debug("mqtt event not published: not a topic level", "tenant", truncate(tenant), "kind", truncate(kind), "device", truncate(device))
			return
		}
	}
	g.hook.publish(eventsTopic+"/"+tenant+"/"+kind+"/"+device, data, nil)
}
