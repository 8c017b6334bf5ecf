package coap

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// refusal is an error response: its code, the diagnostic payload, and the
// options that go with some codes.
type refusal struct {
	code codes.Code
	msg  string // the diagnostic payload, for the device's developer
	// maxAge, when set, is the Max-Age option in seconds: how long to wait
	// before sending again (4.29, 5.03).
	maxAge    uint32
	hasMaxAge bool
	// size1, when not 0, is the Size1 option of a 4.13: the limit in bytes.
	size1 int64
	// reason is a short word for the debug log.
	reason string
}

// maxDiagnostic bounds a diagnostic payload, so that a response always fits
// in one datagram whatever the block size.
const maxDiagnostic = 200

// refusalFor maps an error to its response; this is the only place where
// Tether's error codes become CoAP codes.
func refusalFor(err error) refusal {
	var bad *telemetry.Error
	if errors.As(err, &bad) {
		r := refusal{code: codes.BadRequest, msg: bad.Reason + ": " + bad.Message, reason: bad.Reason}
		if tether.ErrorCode(err) == tether.ETOOLARGE {
			r.code = codes.RequestEntityTooLarge
		}
		return r
	}
	msg := tether.ErrorMessage(err)
	switch tether.ErrorCode(err) {
	case tether.EINVALID:
		return refusal{code: codes.BadRequest, msg: msg, reason: "invalid"}
	case tether.EUNAUTHORIZED:
		return refusal{code: codes.Unauthorized, msg: msg, reason: "unauthorized"}
	case tether.EFORBIDDEN:
		return refusal{code: codes.Forbidden, msg: msg, reason: "forbidden"}
	case tether.ENOTFOUND:
		return refusal{code: codes.NotFound, msg: msg, reason: "not_found"}
	case tether.ECONFLICT:
		return refusal{code: codes.Conflict, msg: msg, reason: "conflict"}
	case tether.ETOOLARGE:
		return refusal{code: codes.RequestEntityTooLarge, msg: msg, reason: "too_large"}
	case tether.EUNAVAILABLE:
		return refusal{code: codes.ServiceUnavailable, msg: msg, maxAge: busRetryAfter, hasMaxAge: true, reason: "unavailable"}
	}
	return refusal{code: codes.ServiceUnavailable, msg: "internal error; send it again later", maxAge: busRetryAfter, hasMaxAge: true, reason: "internal"}
}

// tooLarge refuses a body of size bytes (at least) over the limit.
func (g *Gateway) tooLarge(size int64) refusal {
	return refusal{
		code:   codes.RequestEntityTooLarge,
		msg:    fmt.Sprintf("too_large: the payload is at least %d bytes; payloads may be at most %d bytes", size, g.maxPayload),
		size1:  int64(g.maxPayload),
		reason: telemetry.ReasonTooLarge,
	}
}

// tooManyRequests refuses a request over the device's publish rate.
func tooManyRequests(retryAfter time.Duration) refusal {
	secs := math.Ceil(retryAfter.Seconds())
	if secs < 1 {
		secs = 1
	}
	if secs > math.MaxUint32 {
		secs = math.MaxUint32
	}
	return refusal{
		code:      codes.TooManyRequests,
		msg:       fmt.Sprintf("over the device's publish rate; send again in %.0f s", secs),
		maxAge:    uint32(secs),
		hasMaxAge: true,
		reason:    "rate_limited",
	}
}

// unavailable refuses a request the gateway cannot serve now.
func unavailable(msg string) refusal {
	return refusal{code: codes.ServiceUnavailable, msg: msg, maxAge: busRetryAfter, hasMaxAge: true, reason: "unavailable"}
}

// reply answers a request with a refusal and logs it at debug. d is the
// device when it is known.
func (g *Gateway) reply(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, d *tether.Device, ref refusal) {
	path, _ := r.Path()
	attrs := []any{"path", path, "code", ref.code.String(), "reason", ref.reason, "remote", w.Conn().RemoteAddr().String()}
	if d != nil {
		attrs = append(attrs, "device", d.ID)
	}
	g.log.Debug("coap request refused", attrs...)
	// SetResponse fails when the request's No-Response option (RFC 7967)
	// suppresses this class of response: then nothing is sent but, for a
	// confirmable request, the empty acknowledgement.
	if err := w.SetResponse(ref.code, message.TextPlain, nil); err != nil {
		return
	}
	setRefusalOptions(w.Message(), ref)
}

func setRefusalOptions(m *pool.Message, ref refusal) {
	if ref.hasMaxAge {
		m.SetOptionUint32(message.MaxAge, ref.maxAge)
	}
	if ref.size1 > 0 {
		m.SetOptionUint32(message.Size1, uint32(min(ref.size1, math.MaxUint32)))
	}
	if ref.msg != "" {
		m.SetBody(bytesReader(diagnostic(ref.msg)))
	}
}

// diagnostic cuts a message to maxDiagnostic bytes on a character boundary.
func diagnostic(msg string) []byte {
	if len(msg) <= maxDiagnostic {
		return []byte(msg)
	}
	cut := maxDiagnostic - len("…")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return []byte(msg[:cut] + "…")
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
