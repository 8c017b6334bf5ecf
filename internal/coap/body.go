package coap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// readJSON returns a request body that is a JSON document: application/json
// (also when Content-Format is absent) as it is, application/cbor converted
// by [telemetry.CBORToJSON], so that a CBOR device sends the same documents.
// It refuses any other format (4.15) and a body over the payload limit
// (4.13).
func (g *Gateway) readJSON(r *pool.Message) ([]byte, *refusal) {
	cbor := false
	switch cf, err := r.ContentFormat(); {
	case errors.Is(err, message.ErrOptionNotFound), err == nil && cf == message.AppJSON:
	case err == nil && cf == message.AppCBOR:
		cbor = true
	case err != nil:
		return nil, &refusal{code: codes.BadRequest, msg: "the Content-Format option is malformed", reason: "content_format"}
	default:
		return nil, &refusal{
			code:   codes.UnsupportedMediaType,
			msg:    fmt.Sprintf("Content-Format %d is not supported; send application/json (50) or application/cbor (60)", cf),
			reason: "content_format",
		}
	}
	payload, err := r.ReadBody()
	if err != nil {
		return nil, &refusal{code: codes.BadRequest, msg: "the payload could not be read", reason: "read"}
	}
	if len(payload) > g.maxPayload {
		ref := g.tooLarge(int64(len(payload)))
		return nil, &ref
	}
	if !cbor {
		return payload, nil
	}
	js, err := telemetry.CBORToJSON(payload, g.in.Limits())
	if err != nil {
		ref := refusalFor(err)
		if tether.ErrorCode(err) == tether.ETOOLARGE {
			ref.size1 = int64(g.maxPayload)
		}
		return nil, &ref
	}
	return js, nil
}

// decodeStrict decodes one JSON document into v, refusing fields v does
// not have (a typo is reported, not ignored) and anything after the
// document. what names the document in the error.
func decodeStrict(js []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return tether.Errorf(tether.EINVALID, "the payload is not %s: %v", what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return tether.Errorf(tether.EINVALID, "the payload is not %s: data after the document", what)
	}
	return nil
}

// serviceRefusal answers an error of a service: the device's own errors
// (EINVALID, ENOTFOUND, ECONFLICT, ETOOLARGE, …) are mapped by
// refusalFor; anything else is logged, as the device cannot do anything
// about it, and answered 5.03.
func (g *Gateway) serviceRefusal(what string, d *tether.Device, err error) refusal {
	switch tether.ErrorCode(err) {
	case tether.EINVALID, tether.ENOTFOUND, tether.ECONFLICT, tether.ETOOLARGE, tether.EFORBIDDEN, tether.EUNAVAILABLE:
		return refusalFor(err)
	}
	g.log.Error("coap "+what, "device", d.ID, "err", err)
	return unavailable(what + " failed; try again later")
}
