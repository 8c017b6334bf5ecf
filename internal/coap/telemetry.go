package coap

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	d, ok := g.admit(w, r)
	if !ok {
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

// admit authenticates a request and takes it from its device's budget
// (every request does: a read costs the store as much as a publish, so a
// device can flood neither), answering the refusal itself if it fails.
func (g *Gateway) admit(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) (*tether.Device, bool) {
	d, err := g.authenticate(r.Context(), w.Conn(), r)
	if err != nil {
		g.reply(w, r, nil, g.authRefusal(err))
		return nil, false
	}
	if ok, retryAfter := g.in.Allow(d); !ok {
		g.reply(w, r, d, tooManyRequests(retryAfter))
		return nil, false
	}
	return d, true
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
// PSK identity, or the token in the t= query. A device that authenticates
// is seen by presence.
func (g *Gateway) authenticate(ctx context.Context, cc *udpClient.Conn, r *pool.Message) (*tether.Device, error) {
	d, err := g.credential(ctx, cc, r)
	if err != nil {
		return nil, err
	}
	if g.presence != nil {
		g.presence.Seen(d, transport)
	}
	return d, nil
}

// transport names CoAP to presence.
const transport = "coap"

func (g *Gateway) credential(ctx context.Context, cc *udpClient.Conn, r *pool.Message) (*tether.Device, error) {
	queries, err := r.Queries()
	if err != nil && !errors.Is(err, message.ErrOptionNotFound) {
		return nil, tether.Errorf(tether.EINVALID, "the Uri-Query options are malformed")
	}
	path, _ := r.Path()
	token, _, err := parseQueryWith(queries, queryParams[path]...)
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

// queryParams are the query parameters a resource understands besides t=.
var queryParams = map[string][]string{
	"/shadow": {"name"},
}

// requestParam returns the value of a resource's query parameter (see
// queryParams), "" when it is absent. Call it once the request
// authenticated, which checked the queries.
func requestParam(r *pool.Message, name string) string {
	queries, _ := r.Queries()
	path, _ := r.Path()
	_, params, _ := parseQueryWith(queries, queryParams[path]...)
	return params[name]
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
	token, _, err := parseQueryWith(queries)
	return token, err
}

// maxParam bounds the value of a query parameter other than t=.
const maxParam = 64

// parseQueryWith is parseQuery for a resource that also understands the
// parameters named in extra (each at most once, not empty), which it
// returns by name.
func parseQueryWith(queries []string, extra ...string) (string, map[string]string, error) {
	token, seen := "", false
	var params map[string]string
	for _, q := range queries {
		k, v, ok := strings.Cut(q, "=")
		if k != "t" && slices.Contains(extra, k) {
			switch {
			case !ok || v == "":
				return "", nil, tether.Errorf(tether.EINVALID, "%s= is empty; leave it out instead", k)
			case params[k] != "":
				return "", nil, tether.Errorf(tether.EINVALID, "%s= is given twice", k)
			case len(v) > maxParam:
				return "", nil, tether.Errorf(tether.EINVALID, "%s= is %d bytes; it may be at most %d", k, len(v), maxParam)
			}
			if params == nil {
				params = map[string]string{}
			}
			params[k] = v
			continue
		}
		switch {
		case k != "t":
			name := k
			if len(name) > 32 || !printable(name) {
				name = "?"
			}
			if len(extra) > 0 {
				return "", nil, tether.Errorf(tether.EINVALID, "unknown query parameter %q; only t=<device token> and %s= are understood", name, strings.Join(extra, "=, "))
			}
			return "", nil, tether.Errorf(tether.EINVALID, "unknown query parameter %q; only t=<device token> is understood", name)
		case !ok || v == "":
			return "", nil, tether.Errorf(tether.EINVALID, "t= is empty; give the device token as t=<device>.<secret>")
		case seen:
			return "", nil, tether.Errorf(tether.EINVALID, "t= is given twice")
		case len(v) > maxToken:
			return "", nil, tether.Errorf(tether.EINVALID, "t= is %d bytes; a device token is at most %d", len(v), maxToken)
		}
		token, seen = v, true
	}
	return token, params, nil
}

func printable(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
