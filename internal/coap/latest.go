package coap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// getLatest serves the device's latest values, and registers or
// deregisters an observer of them.
func (g *Gateway) getLatest(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	g.getObservable(w, r, g.latestRes, "")
}

// getObservable serves a GET of an observable resource (with param, see
// [view]), and registers or deregisters an observer of it.
func (g *Gateway) getObservable(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, res *observable, param string) {
	cc := w.Conn()
	obs, obsErr := r.Observe()
	if obsErr == nil && obs == 1 {
		// Deregistration needs no credential: only this endpoint's own
		// observation under this token is removed.
		g.obs.deregister(cc, string(r.Token()))
	}
	d, ok := g.admit(w, r)
	if !ok {
		return
	}
	format, ok := accepted(r)
	if !ok {
		g.reply(w, r, d, refusal{code: codes.NotAcceptable, msg: "/" + res.name + " is application/json (50) or application/cbor (60)", reason: "accept"})
		return
	}
	token := string(r.Token())
	var o *observer
	var seq uint32
	if obsErr == nil && obs == 0 {
		o = newObserver(cc, token, d, res, format, blockSize(r))
		o.param = param
		var evicted *observer
		if seq, evicted, ok = g.obs.register(o); !ok {
			o = nil // shutting down: answer as a plain GET
		}
		if evicted != nil {
			g.endObservation(evicted, unavailable(fmt.Sprintf("observation ended: the device has more than %d observations", maxObserversPerDevice)))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), renderTimeout)
	body, err := res.render(ctx, view{device: d, format: format, param: param, obs: o})
	cancel()
	if err != nil {
		if o != nil {
			g.obs.remove(o)
		}
		ref := renderRefusal(res, err)
		if ref.code == codes.ServiceUnavailable {
			g.log.Error("coap "+res.name, "device", d.ID, "err", err)
		}
		g.reply(w, r, d, ref)
		return
	}
	code := codes.Content
	tag := etag(body)
	if known(r, tag) {
		// The client has this representation: 2.03 Valid, no body.
		code = codes.Valid
	}
	if err := w.SetResponse(code, format, nil); err != nil {
		// No-Response: the client does not want this response.
		if o != nil {
			g.obs.ready(o)
		}
		return
	}
	// A plain GET's answer is stale as soon as a value arrives: Max-Age 0
	// keeps proxies from caching it. An observer is told of every change.
	maxAge := uint32(0)
	if o != nil {
		maxAge = observeMaxAge
		w.Message().SetObserve(seq)
	}
	if code == codes.Valid {
		w.Message().SetOptionBytes(message.ETag, tag)
		w.Message().SetOptionUint32(message.MaxAge, maxAge)
	} else {
		setRepresentation(w.Message(), body, format, maxAge)
	}
	if o != nil && !responsewriter.AfterWrite(r.Context(), func() { g.obs.ready(o) }) {
		g.obs.ready(o)
	}
}

// renderRefusal answers a representation that could not be rendered: the
// service's refusal for an error it coded as the device's (a bad shadow
// name), 5.03 otherwise.
func renderRefusal(res *observable, err error) refusal {
	switch tether.ErrorCode(err) {
	case tether.EINVALID, tether.ENOTFOUND:
		return refusalFor(err)
	}
	return unavailable("/" + res.name + " could not be read; try again later")
}

// known reports whether a request names the entity tag among its ETags.
func known(r *pool.Message, tag []byte) bool {
	for _, o := range r.Options() {
		if o.ID == message.ETag && bytes.Equal(o.Value, tag) {
			return true
		}
	}
	return false
}

// accepted returns the format a request accepts: JSON unless it asks for
// CBOR; false for anything else.
func accepted(r *pool.Message) (message.MediaType, bool) {
	switch a, err := r.Accept(); {
	case errors.Is(err, message.ErrOptionNotFound), err == nil && a == message.AppJSON:
		return message.AppJSON, true
	case err == nil && a == message.AppCBOR:
		return message.AppCBOR, true
	}
	return 0, false
}

// blockSize returns the block size a client asked for with Block2 in its
// request, or 1024 bytes.
func blockSize(r *pool.Message) blockwise.SZX {
	if v, err := r.GetOptionUint32(message.Block2); err == nil {
		if szx, _, _, err := blockwise.DecodeBlockOption(v); err == nil && szx < blockwise.SZX1024 {
			return szx
		}
	}
	return blockwise.SZX1024
}

// latestItem is one latest value in CBOR, the same fields as in JSON.
type latestItem struct {
	Key   string    `cbor:"key"`
	Time  time.Time `cbor:"ts"`
	Value any       `cbor:"value"`
}

// latestEncoding writes times as tag 0 (RFC 3339) and floats as short as
// they stay exact.
var latestEncoding = func() cbor.EncMode {
	em, err := cbor.EncOptions{
		Time:          cbor.TimeRFC3339Nano,
		TimeTag:       cbor.EncTagRequired,
		ShortestFloat: cbor.ShortestFloat16,
	}.EncMode()
	if err != nil {
		panic(err) // the options are constant
	}
	return em
}()

// renderLatest is the representation of /latest.
func (g *Gateway) renderLatest(ctx context.Context, v view) ([]byte, error) {
	d, format := v.device, v.format
	ls, err := g.latest.Latest(ctx, d.TenantID, d.ID)
	if err != nil {
		return nil, fmt.Errorf("latest values of %s: %w", d.ID, err)
	}
	if format == message.AppCBOR {
		items := make([]latestItem, len(ls))
		for i, l := range ls {
			items[i] = latestItem{Key: l.Key, Time: l.Time.UTC(), Value: l.Value}
		}
		b, err := latestEncoding.Marshal(items)
		if err != nil {
			return nil, fmt.Errorf("encode latest values: %w", err)
		}
		return b, nil
	}
	if ls == nil {
		ls = []tether.Latest{}
	}
	b, err := json.Marshal(ls)
	if err != nil {
		return nil, fmt.Errorf("encode latest values: %w", err)
	}
	return b, nil
}
