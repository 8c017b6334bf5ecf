package coap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// postTelemetry hands a telemetry payload to the ingest path and answers
// 2.04 only once the bus has stored it.
func (g *Gateway) postTelemetry(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	d, err := g.authenticate(r.Context(), w.Conn(), r)
	if err != nil {
		g.reply(w, r, nil, g.authRefusal(err))
		return
	}
	if ok, retryAfter := g.in.Allow(d); !ok {
		g.reply(w, r, d, tooManyRequests(retryAfter))
		return
	}
	cbor := false
	switch cf, err := r.ContentFormat(); {
	case errors.Is(err, message.ErrOptionNotFound), err == nil && cf == message.AppJSON:
	case err == nil && cf == message.AppCBOR:
		cbor = true
	case err != nil:
		g.reply(w, r, d, refusal{code: codes.BadRequest, msg: "the Content-Format option is malformed", reason: "content_format"})
		return
	default:
		g.reply(w, r, d, refusal{
			code:   codes.UnsupportedMediaType,
			msg:    fmt.Sprintf("Content-Format %d is not supported; send application/json (50) or application/cbor (60)", cf),
			reason: "content_format",
		})
		return
	}
	payload, err := r.ReadBody()
	if err != nil {
		g.reply(w, r, d, refusal{code: codes.BadRequest, msg: "the payload could not be read", reason: "read"})
		return
	}
	if len(payload) > g.maxPayload {
		g.reply(w, r, d, g.tooLarge(int64(len(payload))))
		return
	}
	if g.closing.Load() {
		g.reply(w, r, d, unavailable("the server is shutting down; send it again later"))
		return
	}
	ctx, cancel := context.WithTimeout(g.acceptCtx, g.timeout)
	defer cancel()
	// The payload rules are the JSON decoder's, whatever the format.
	accept := g.in.Accept
	if cbor {
		accept = g.in.AcceptCBOR
	}
	if _, err := accept(ctx, d, payload); err != nil {
		g.reply(w, r, d, g.ingestRefusal(err))
		return
	}
	// No payload: 2.04 says all there is to say. Block1 of the last block
	// is echoed by go-coap.
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
}

// ingestRefusal answers a payload the ingest path did not take: refused
// by the payload rules (4.00, or 4.13 with Size1 when too large), or not
// stored by the bus (5.03, send it again; ingest logs bus failures, so
// they are not logged here).
func (g *Gateway) ingestRefusal(err error) refusal {
	var bad *telemetry.Error
	if !errors.As(err, &bad) {
		return unavailable("the message could not be stored; send it again later")
	}
	ref := refusalFor(err)
	if bad.Reason == telemetry.ReasonTooLarge {
		ref.size1 = int64(g.maxPayload)
	}
	return ref
}

// authenticate returns the device a request comes from: the DTLS session's
// PSK identity, or the token in the t= query.
func (g *Gateway) authenticate(ctx context.Context, cc *udpClient.Conn, r *pool.Message) (*tether.Device, error) {
	queries, err := r.Queries()
	if err != nil && !errors.Is(err, message.ErrOptionNotFound) {
		return nil, tether.Errorf(tether.EINVALID, "the Uri-Query options are malformed")
	}
	token, err := parseQuery(queries)
	if err != nil {
		return nil, err
	}
	if s := g.sessions.get(cc); s != nil && s.identity != "" {
		d := g.sessions.device(s)
		if d == nil {
			return nil, tether.Errorf(tether.EUNAUTHORIZED, "the DTLS session's device is gone; connect again")
		}
		if token != "" {
			if id, _, _ := strings.Cut(token, "."); id != d.ID {
				return nil, tether.Errorf(tether.EFORBIDDEN, "t= names another device than this DTLS session's identity")
			}
		}
		return d, nil
	}
	if token == "" {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "no credential: add the device token as the query t=<device>.<secret>, or use DTLS with the device's pre-shared key")
	}
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	d, err := g.auth.AuthenticateDevice(ctx, "", token)
	if err != nil {
		return nil, fmt.Errorf("coap authenticate: %w", err)
	}
	return d, nil
}

// authRefusal answers a failed authentication; a failure to check the
// credential at all is logged, as the device cannot do anything about it.
func (g *Gateway) authRefusal(err error) refusal {
	switch tether.ErrorCode(err) {
	case tether.EUNAUTHORIZED, tether.EFORBIDDEN, tether.EINVALID:
		return refusalFor(err)
	}
	g.log.Error("coap authenticate", "err", err)
	return unavailable("the credential could not be checked; send it again later")
}

// maxToken bounds the t= value: a device token is far shorter.
const maxToken = 512

// parseQuery returns the device token from a request's Uri-Query options,
// "" when there is none. Only t=<token> is understood, at most once;
// anything else is refused, so that a typo is reported instead of being
// read as a missing credential.
func parseQuery(queries []string) (string, error) {
	token, seen := "", false
	for _, q := range queries {
		k, v, ok := strings.Cut(q, "=")
		switch {
		case k != "t":
			name := k
			if len(name) > 32 || !printable(name) {
				name = "?"
			}
			return "", tether.Errorf(tether.EINVALID, "unknown query parameter %q; only t=<device token> is understood", name)
		case !ok || v == "":
			return "", tether.Errorf(tether.EINVALID, "t= is empty; give the device token as t=<device>.<secret>")
		case seen:
			return "", tether.Errorf(tether.EINVALID, "t= is given twice")
		case len(v) > maxToken:
			return "", tether.Errorf(tether.EINVALID, "t= is %d bytes; a device token is at most %d", len(v), maxToken)
		}
		token, seen = v, true
	}
	return token, nil
}

func printable(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
