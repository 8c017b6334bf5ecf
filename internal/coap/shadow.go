package coap

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// getShadow serves the device's shadow (named by name=, the classic one
// without it), and registers or deregisters an observer of its desired
// state.
func (g *Gateway) getShadow(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	g.getObservable(w, r, g.shadowRes, requestParam(r, "name"))
}

// postShadow updates the reported state of the device's shadow and answers
// 2.04 with the shadow.
func (g *Gateway) postShadow(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	d, ok := g.admit(w, r)
	if !ok {
		return
	}
	name := requestParam(r, "name")
	if err := checkShadowName(name); err != nil {
		g.reply(w, r, d, refusalFor(err))
		return
	}
	format, ok := accepted(r)
	if !ok {
		g.reply(w, r, d, refusal{code: codes.NotAcceptable, msg: "/shadow is application/json (50) or application/cbor (60)", reason: "accept"})
		return
	}
	js, ref := g.readJSON(r)
	if ref != nil {
		g.reply(w, r, d, *ref)
		return
	}
	var u tether.ShadowUpdate
	if err := decodeStrict(js, &u, "a shadow update"); err != nil {
		g.reply(w, r, d, refusalFor(err))
		return
	}
	if u.State.Desired != nil {
		g.reply(w, r, d, refusal{code: codes.Forbidden, msg: "a device updates state.reported only; state.desired is the applications'", reason: "desired"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	sh, err := g.shadows.Update(ctx, d.TenantID, d.ID, name, u)
	cancel()
	if err != nil {
		g.reply(w, r, d, g.serviceRefusal("shadow update", d, err))
		return
	}
	body, err := encodeShadow(sh, format)
	if err != nil {
		g.log.Error("coap shadow", "device", d.ID, "err", err)
		g.reply(w, r, d, unavailable("the shadow could not be encoded"))
		return
	}
	_ = w.SetResponse(codes.Changed, format, bytesReader(body))
}

// checkShadowName refuses a name= that cannot name a shadow.
func checkShadowName(name string) error {
	if name != "" && !tether.ValidID(name) {
		return tether.Errorf(tether.EINVALID, "name= is not a shadow name: 1 to 64 of A-Z a-z 0-9 _ -; leave it out for the device's classic shadow")
	}
	return nil
}

// renderShadow is the representation of /shadow: the whole shadow. For an
// observer it is the shadow [Gateway.ShadowChanged] announced, or else the
// stored one; a notification of a shadow older than the one the observer
// has is skipped.
func (g *Gateway) renderShadow(ctx context.Context, v view) ([]byte, error) {
	if err := checkShadowName(v.param); err != nil {
		return nil, err
	}
	var sh *tether.Shadow
	if v.obs != nil {
		var stale bool
		if sh, stale = g.obs.takeShadow(v.obs); stale {
			return nil, errSkip
		}
	}
	if sh == nil {
		var err error
		if sh, err = g.shadows.Get(ctx, v.device.TenantID, v.device.ID, v.param); err != nil {
			return nil, fmt.Errorf("shadow of %s: %w", v.device.ID, err)
		}
	}
	body, err := encodeShadow(sh, v.format)
	if err != nil {
		return nil, err
	}
	if v.obs != nil {
		g.obs.sentShadow(v.obs, sh, desiredKey(sh))
	}
	return body, nil
}

// ShadowChanged is called with each new version of a shadow (every shadow
// event): the device's observers of that shadow are notified with the
// whole shadow when its desired state differs from the one they were last
// sent, so a device's own reported updates do not come back to it. It
// does not block.
func (g *Gateway) ShadowChanged(sh *tether.Shadow) {
	if g.shadows == nil || sh == nil {
		return
	}
	g.obs.shadowChanged(sh, g.shadowRes, desiredKey(sh))
}

// desiredKey is the canonical JSON of a shadow's desired state (encoding/json
// sorts map keys), to tell whether it changed.
func desiredKey(sh *tether.Shadow) string {
	if len(sh.State.Desired) == 0 {
		return "{}"
	}
	b, err := json.Marshal(sh.State.Desired)
	if err != nil {
		return ""
	}
	return string(b)
}

// shadowEncoding writes the CBOR of a shadow: times as tag 0 (RFC 3339),
// floats as short as they stay exact, map keys sorted so that one shadow
// has one ETag.
var shadowEncoding = func() cbor.EncMode {
	em, err := cbor.EncOptions{
		Time:          cbor.TimeRFC3339Nano,
		TimeTag:       cbor.EncTagRequired,
		ShortestFloat: cbor.ShortestFloat16,
		Sort:          cbor.SortCanonical,
	}.EncMode()
	if err != nil {
		panic(err) // the options are constant
	}
	return em
}()

// encodeShadow encodes a shadow as JSON or CBOR (the same fields).
func encodeShadow(sh *tether.Shadow, format message.MediaType) ([]byte, error) {
	var b []byte
	var err error
	if format == message.AppCBOR {
		b, err = shadowEncoding.Marshal(sh)
	} else {
		b, err = json.Marshal(sh)
	}
	if err != nil {
		return nil, fmt.Errorf("encode the shadow: %w", err)
	}
	return b, nil
}
