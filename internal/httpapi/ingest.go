package httpapi

import (
	"context"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// ingest takes a device's telemetry over HTTP: the same payload as on
// MQTT (one JSON object, or a JSON array of objects each with its own ts:
// the batch form), as application/json or as application/cbor (RFC 8949,
// converted by [telemetry.CBORToJSON] so that the payload rules are the
// JSON decoder's), from a device authenticated by its token (Authorization:
// Bearer <token>) or, over HTTPS, its client certificate. It answers 202
// only once the bus has stored the message.
func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	if err := s.doIngest(w, r); err != nil {
		s.problem(w, r, err)
	}
}

func (s *Server) doIngest(w http.ResponseWriter, r *http.Request) error {
	d, err := s.ingestDevice(r)
	if err != nil {
		if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether-devices"`)
		}
		return err
	}
	s.seen(d)
	if ok, wait := s.in.Allow(d); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
		return tether.Errorf(tether.ETOOMANY, "device %s is over its publish rate; the message was dropped", d.ID)
	}
	isCBOR, err := ingestFormat(r.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	limit := s.in.Limits().MaxPayload
	if limit <= 0 { // the default, as for every zero limit
		limit = telemetry.DefaultLimits().MaxPayload
	}
	if r.ContentLength > int64(limit) {
		return tether.Errorf(tether.ETOOLARGE, "the payload is %d bytes; at most %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return tether.Errorf(tether.ETOOLARGE, "the payload is over %d bytes", limit)
		}
		return tether.Errorf(tether.EINVALID, "reading the body: %v", err)
	}
	accept := s.in.Accept
	if isCBOR {
		accept = s.in.AcceptCBOR
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	n, err := accept(ctx, d, body)
	if err != nil {
		if tether.ErrorCode(err) == tether.EUNAVAILABLE {
			w.Header().Set("Retry-After", "1")
		}
		return err
	}
	return writeJSON(w, http.StatusAccepted, struct {
		Points int `json:"points"`
	}{n})
}

// ingestFormat reads an ingest request's Content-Type: JSON, also when
// there is none, or CBOR; anything else is refused with EUNSUPPORTED.
func ingestFormat(ct string) (isCBOR bool, err error) {
	if ct == "" {
		return false, nil
	}
	switch mt, _, err := mime.ParseMediaType(ct); {
	case err != nil:
	case mt == "application/json":
		return false, nil
	case mt == "application/cbor":
		return true, nil
	}
	return false, tether.Errorf(tether.EUNSUPPORTED, "Content-Type %q is neither application/json nor application/cbor", ct)
}

// ingestDevice authenticates the device of an ingest request: by its
// token, or else by its TLS client certificate. Both may be given; then
// they must name the same device. An API key is refused with 403: it is
// valid, but programs do not send telemetry in a device's name.
func (s *Server) ingestDevice(r *http.Request) (*tether.Device, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var byCert *tether.Device
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		d, err := s.reg.AuthenticateCertificate(ctx, r.TLS.PeerCertificates)
		if err != nil {
			return nil, err
		}
		byCert = d
	}
	token := bearer(r)
	if token == "" {
		if byCert == nil {
			return nil, tether.Errorf(tether.EUNAUTHORIZED, "a device credential is required: send Authorization: Bearer <device token>, or a client certificate over HTTPS")
		}
		return byCert, nil
	}
	d, err := s.reg.AuthenticateDevice(ctx, "", token)
	if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
		if _, kerr := s.reg.AuthenticateAPIKey(ctx, token); kerr == nil {
			return nil, tether.Errorf(tether.EFORBIDDEN, "an API key cannot send telemetry; use the device's token or certificate")
		}
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "unknown device or wrong token")
	}
	if err != nil {
		return nil, err
	}
	if byCert != nil && byCert.ID != d.ID {
		return nil, tether.Errorf(tether.EFORBIDDEN, "the token is device %s's but the certificate is device %s's", d.ID, byCert.ID)
	}
	return d, nil
}
