package httpapi

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// maxBuckets bounds a bucketed query so one request cannot ask the store
// for millions of rows; the client picks a coarser bucket instead.
const maxBuckets = 10000

// maxKeys bounds the keys one query may name, so that keys × limit stays a
// sensible response.
const maxKeys = 100

func (s *Server) telemetry(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	if _, err := s.reg.Device(r.Context(), k.TenantID, id); err != nil {
		return err
	}
	q, err := s.parseQuery(r)
	if err != nil {
		return err
	}
	q.TenantID, q.DeviceID = k.TenantID, id
	series, err := s.tel.Telemetry(r.Context(), q)
	if err != nil {
		return err
	}
	if series == nil {
		series = []tether.Series{}
	}
	resp := struct {
		Device string          `json:"device"`
		From   time.Time       `json:"from"`
		To     time.Time       `json:"to"`
		Agg    string          `json:"agg,omitempty"`
		Bucket string          `json:"bucket,omitempty"`
		Series []tether.Series `json:"series"`
	}{Device: id, From: q.From, To: q.To, Agg: q.Agg, Series: series}
	if q.Bucket > 0 {
		resp.Bucket = q.Bucket.String()
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) parseQuery(r *http.Request) (tether.TelemetryQuery, error) {
	v := r.URL.Query()
	var q tether.TelemetryQuery
	var err error
	q.To = s.now().UTC()
	if t := v.Get("to"); t != "" {
		if q.To, err = parseTime("to", t); err != nil {
			return q, err
		}
	}
	q.From = q.To.Add(-time.Hour)
	if f := v.Get("from"); f != "" {
		if q.From, err = parseTime("from", f); err != nil {
			return q, err
		}
	}
	if !q.From.Before(q.To) {
		return q, tether.Errorf(tether.EINVALID, "from (%s) must be before to (%s)", q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	if keys := v.Get("keys"); keys != "" {
		q.Keys = strings.Split(keys, ",")
		if len(q.Keys) > maxKeys {
			return q, tether.Errorf(tether.EINVALID, "keys names %d keys; at most %d per request", len(q.Keys), maxKeys)
		}
	}
	q.Agg = v.Get("agg")
	if b := v.Get("bucket"); b != "" {
		if q.Bucket, err = time.ParseDuration(b); err != nil || q.Bucket < time.Second {
			return q, tether.Errorf(tether.EINVALID, "bucket %q must be a duration of at least 1s, like 1m or 1h", b)
		}
	}
	switch {
	case q.Agg == "" && q.Bucket == 0:
	case q.Agg != "" && q.Bucket == 0:
		q.Bucket = time.Minute
		fallthrough
	default:
		if q.Agg == "" {
			q.Agg = "avg"
		}
		if !slices.Contains(tether.Aggregations, q.Agg) {
			return q, tether.Errorf(tether.EINVALID, "agg %q must be one of %s", q.Agg, strings.Join(tether.Aggregations, ", "))
		}
		if n := q.To.Sub(q.From) / q.Bucket; n > maxBuckets {
			return q, tether.Errorf(tether.EINVALID, "from-to over bucket %s is %d buckets; at most %d, so pick a larger bucket", q.Bucket, n, maxBuckets)
		}
	}
	q.Limit = 1000
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			return q, tether.Errorf(tether.EINVALID, "limit %q must be a number from 1 to 10000", l)
		}
		q.Limit = n
	}
	return q, nil
}

// parseTime reads RFC 3339 or epoch milliseconds, like device payloads.
func parseTime(name, s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, tether.Errorf(tether.EINVALID, "%s %q must be RFC 3339 (2024-05-01T12:00:00Z) or epoch milliseconds", name, s)
	}
	return t.UTC(), nil
}

func (s *Server) latest(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	if _, err := s.reg.Device(r.Context(), k.TenantID, id); err != nil {
		return err
	}
	vals, err := s.tel.Latest(r.Context(), k.TenantID, id)
	if err != nil {
		return err
	}
	if vals == nil {
		vals = []tether.Latest{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Device string          `json:"device"`
		Values []tether.Latest `json:"values"`
	}{id, vals})
}
