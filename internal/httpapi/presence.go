package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tether-iot/tether"
)

func (s *Server) getPresence(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	// A device never seen has no presence row and reads as offline, so an
	// unknown one is checked here to be 404.
	if _, err := s.reg.Device(r.Context(), k.TenantID, id); err != nil {
		return err
	}
	p, err := s.sv.Presence.Get(r.Context(), k.TenantID, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

// quarantine lists a device's quarantined points (the last 24 hours
// unless from and to say otherwise) and counts all of them.
func (s *Server) quarantine(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	if _, err := s.reg.Device(r.Context(), k.TenantID, id); err != nil {
		return err
	}
	q := r.URL.Query()
	var err error
	to := s.now().UTC()
	if v := q.Get("to"); v != "" {
		if to, err = parseTime("to", v); err != nil {
			return err
		}
	}
	from := to.Add(-24 * time.Hour)
	if v := q.Get("from"); v != "" {
		if from, err = parseTime("from", v); err != nil {
			return err
		}
	}
	if !from.Before(to) {
		return tether.Errorf(tether.EINVALID, "from (%s) must be before to (%s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return tether.Errorf(tether.EINVALID, "limit %q must be a number from 1 to 10000", v)
		}
		limit = n
	}
	pts, err := s.sv.Quarantine.Quarantined(r.Context(), k.TenantID, id, from, to, limit)
	if err != nil {
		return err
	}
	count, err := s.sv.Quarantine.QuarantineCount(r.Context(), k.TenantID, id)
	if err != nil {
		return err
	}
	if pts == nil {
		pts = []tether.QuarantinedPoint{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Device string                    `json:"device"`
		From   time.Time                 `json:"from"`
		To     time.Time                 `json:"to"`
		Count  int64                     `json:"count"`
		Points []tether.QuarantinedPoint `json:"points"`
	}{id, from, to, count, pts})
}
