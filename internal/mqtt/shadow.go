package mqtt

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"strings"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-iot/tether"
)

// shadowOp is a device's request on its shadow topics: update or get of
// its classic shadow (name "") or a named one.
type shadowOp struct {
	name string
	op   string // "update" or "get"
}

// shadowTopic parses the part of a topic after devices/<id>/:
// shadow/update, shadow/get, shadow/name/<name>/update or …/get.
func (h *hook) shadowTopic(rest string) (shadowOp, bool) {
	if h.opts.Shadows == nil {
		return shadowOp{}, false
	}
	rest, ok := strings.CutPrefix(rest, "shadow/")
	if !ok {
		return shadowOp{}, false
	}
	var name string
	if named, ok := strings.CutPrefix(rest, "name/"); ok {
		if name, rest, ok = strings.Cut(named, "/"); !ok || name == "" {
			return shadowOp{}, false
		}
	}
	if rest != "update" && rest != "get" {
		return shadowOp{}, false
	}
	return shadowOp{name: name, op: rest}, true
}

// shadowBase is the topic of a device's shadow, to which /update, /get,
// /delta and their answers are appended.
func shadowBase(deviceID, name string) string {
	if name == "" {
		return "devices/" + deviceID + "/shadow"
	}
	return "devices/" + deviceID + "/shadow/name/" + name
}

// shadowAnswer is an accepted answer: the shadow, with the request's
// client token.
type shadowAnswer struct {
	*tether.Shadow
	ClientToken string `json:"client_token,omitempty"`
}

// shadowRequest answers a device's shadow update or get on
// …/update/accepted (the shadow) or …/update/rejected ({"code",
// "message","client_token"}), and …/get/accepted or …/get/rejected; an
// MQTT 5 request with a response topic inside the device's tree gets the
// answer there too, with its correlation data. A device may only update
// its reported state: desired is the applications'. The request itself
// goes to no subscriber.
func (h *hook) shadowRequest(cl *mochi.Client, d *tether.Device, pk packets.Packet, r shadowOp) (packets.Packet, error) {
	base := shadowBase(d.ID, r.name) + "/" + r.op
	within := "devices/" + d.ID + "/"
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.PublishTimeout)
	defer cancel()
	var (
		sh    *tether.Shadow
		err   error
		token string
	)
	switch r.op {
	case "update":
		var u tether.ShadowUpdate
		switch {
		case json.Unmarshal(pk.Payload, &u) != nil:
			err = tether.Errorf(tether.EINVALID, `the update is not a JSON object such as {"state":{"reported":{…}}}`)
		case u.State.Desired != nil:
			token = u.ClientToken
			err = tether.Errorf(tether.EFORBIDDEN, "a device may only update its reported state")
		default:
			token = u.ClientToken
			sh, err = h.opts.Shadows.Update(ctx, d.TenantID, d.ID, r.name, u)
		}
	default:
		// The payload is optional; a JSON object may carry a client token.
		var g struct {
			ClientToken string `json:"client_token"`
		}
		if json.Unmarshal(pk.Payload, &g) == nil {
			token = g.ClientToken
		}
		sh, err = h.opts.Shadows.Get(ctx, d.TenantID, d.ID, r.name)
	}
	if err != nil {
		if c := tether.ErrorCode(err); c == tether.EINTERNAL || c == tether.EUNAVAILABLE {
			h.log.Error("mqtt shadow "+r.op, "device", d.ID, "shadow", truncate(r.name), "err", err)
		}
		h.answer(base+"/rejected", pk, within, problem(err, token))
		return pk, packets.CodeSuccessIgnore
	}
	h.answer(base+"/accepted", pk, within, shadowAnswer{Shadow: sh, ClientToken: token})
	return pk, packets.CodeSuccessIgnore
}

// ShadowChanged tells the device whose shadow changed (every shadow
// event, from any node) what it should change: when the desired state
// changed and differs from the reported one, the delta goes to
// devices/<id>/shadow[/name/<name>]/delta as {"state":<delta>,
// "version":n}, at QoS 1.
//
// Whether desired changed is judged against the last desired state this
// gateway saw for the shadow; the first event it sees for a shadow
// (after a start) counts as a change, so a device may get a delta twice,
// never none.
func (g *Gateway) ShadowChanged(sh *tether.Shadow) {
	if sh == nil || !tether.ValidID(sh.DeviceID) || (sh.Name != "" && !tether.ValidID(sh.Name)) {
		return
	}
	h := g.hook
	if h.closing.Load() {
		return
	}
	if !h.desired.changed(sh.TenantID+"/"+sh.DeviceID+"/"+sh.Name, sh.State.Desired) || len(sh.State.Delta) == 0 {
		return
	}
	body, err := json.Marshal(struct {
		State   map[string]any `json:"state"`
		Version int64          `json:"version"`
	}{sh.State.Delta, sh.Version})
	if err != nil {
		h.log.Error("mqtt shadow delta", "device", sh.DeviceID, "err", err)
		return
	}
	h.publish(shadowBase(sh.DeviceID, sh.Name)+"/delta", body, nil)
}

// maxDesired bounds the shadows whose desired state the gateway
// remembers; past it, it forgets them all (each then sends at most one
// delta more than needed).
const maxDesired = 100_000

// desiredIndex remembers a hash of each shadow's last desired state.
type desiredIndex struct {
	max int
	mu  sync.Mutex
	m   map[string]uint64
}

func newDesiredIndex(max int) *desiredIndex {
	return &desiredIndex{max: max, m: map[string]uint64{}}
}

// changed records a shadow's desired state and reports whether it
// differs from the one recorded before.
func (x *desiredIndex) changed(key string, desired map[string]any) bool {
	if desired == nil {
		desired = map[string]any{}
	}
	b, err := json.Marshal(desired) // map keys sorted: one encoding per state
	if err != nil {
		return true
	}
	f := fnv.New64a()
	_, _ = f.Write(b)
	sum := f.Sum64()
	x.mu.Lock()
	defer x.mu.Unlock()
	old, ok := x.m[key]
	if ok && old == sum {
		return false
	}
	if !ok && len(x.m) >= x.max {
		clear(x.m)
	}
	x.m[key] = sum
	return true
}

// problem is a rejected answer.
type problemAnswer struct {
	Code        string `json:"code"`
	Message     string `json:"message"`
	ClientToken string `json:"client_token,omitempty"`
}

func problem(err error, token string) problemAnswer {
	return problemAnswer{Code: tether.ErrorCode(err), Message: tether.ErrorMessage(err), ClientToken: token}
}

// answer publishes the answer to a request on topic, with the request's
// correlation data; and on its MQTT 5 response topic too if it has one
// under within (the requester's own tree). Elsewhere it would let a
// client make the gateway publish where the client itself may not.
func (h *hook) answer(topic string, req packets.Packet, within string, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		h.log.Error("mqtt answer", "topic", truncate(topic), "err", err)
		return
	}
	props := &packets.Properties{CorrelationData: req.Properties.CorrelationData}
	h.publish(topic, b, props)
	if rt := req.Properties.ResponseTopic; rt != "" && rt != topic {
		if strings.HasPrefix(rt, within) && mochi.IsValidFilter(rt, true) {
			h.publish(rt, b, props)
		} else {
			h.log.Debug("mqtt response topic ignored: outside the client's tree", "topic", truncate(rt))
		}
	}
}

// publish publishes a message of the gateway's own at QoS 1 (each
// subscriber gets it at the QoS it subscribed with, at most 1), with
// properties (MQTT 5 subscribers only see them). It goes through the
// broker like any message, so the ACL decides who receives it.
func (h *hook) publish(topic string, payload []byte, props *packets.Properties) bool {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    1, // not used, but a QoS 1 packet must have one to be valid
	}
	if props != nil {
		pk.Properties = *props
	}
	if err := h.srv.InjectPacket(h.inline, pk); err != nil {
		h.log.Debug("mqtt publish", "topic", truncate(topic), "err", err)
		return false
	}
	return true
}
