package httpapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/tether-iot/tether"
)

// deviceView is a device as the API shows it.
type deviceView struct {
	*tether.Device
	// Profile is shown also when empty (the device's own field is left
	// out then), so that "no profile" is visible.
	Profile         string `json:"profile"`
	RefusedMessages uint64 `json:"refused_messages"`
}

func (s *Server) view(d *tether.Device) deviceView {
	return deviceView{Device: d, Profile: d.ProfileID, RefusedMessages: s.stats.Refused(d.ID)}
}

type deviceInput struct {
	ID       string            `json:"id"`
	Name     *string           `json:"name"`
	Labels   map[string]string `json:"labels"`
	Metadata map[string]any    `json:"metadata"`
	Profile  *string           `json:"profile"`
}

func (s *Server) createDevice(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var in deviceInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	d := tether.Device{ID: in.ID, Labels: in.Labels, Metadata: in.Metadata}
	if in.Name != nil {
		d.Name = *in.Name
	}
	if in.Profile != nil {
		d.ProfileID = *in.Profile
	}
	dev, token, err := s.reg.CreateDevice(r.Context(), k.TenantID, d)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/devices/"+dev.ID)
	return writeJSON(w, http.StatusCreated, struct {
		Device deviceView `json:"device"`
		Token  string     `json:"token"`
	}{s.view(dev), token})
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return tether.Errorf(tether.EINVALID, "limit %q must be a number from 1 to 1000", v)
		}
		limit = n
	}
	labels, err := parseSelector(q.Get("labels"))
	if err != nil {
		return err
	}
	status := q.Get("status")
	switch status {
	case "", tether.PresenceOnline, tether.PresenceStale, tether.PresenceOffline:
	default:
		return tether.Errorf(tether.EINVALID, "status %q must be online, stale or offline", status)
	}
	// q is the dashboard's search box: an ID prefix or a part of the name.
	search := strings.TrimSpace(q.Get("q"))
	if len(search) > maxSearch {
		return tether.Errorf(tether.EINVALID, "q is %d bytes; at most %d", len(search), maxSearch)
	}
	devs, err := s.reg.Devices(r.Context(), tether.DeviceFilter{
		TenantID: k.TenantID, Labels: labels, Profile: q.Get("profile"), Status: status, Query: search,
		After: q.Get("cursor"), Limit: limit + 1,
	})
	if err != nil {
		return err
	}
	next := ""
	if len(devs) > limit {
		devs = devs[:limit]
		next = devs[limit-1].ID
	}
	views := make([]deviceView, len(devs))
	for i, d := range devs {
		views[i] = s.view(d)
	}
	return writeJSON(w, http.StatusOK, struct {
		Devices    []deviceView `json:"devices"`
		NextCursor string       `json:"next_cursor,omitempty"`
	}{views, next})
}

// maxSearch bounds the search text of a device listing: a device name is
// at most 256 bytes, so a longer text could match nothing.
const maxSearch = 256

// The bounds of a label selector: a device's, [tether.ValidateDeviceFields]'s.
// A selector with more labels, or with a label no device can have,
// selects nothing, and each of its labels is a join in the store's query.
const (
	maxSelectorLabels = 64
	maxLabelValue     = 256
)

// parseSelector parses a label selector "k=v,k2=v2": at most
// maxSelectorLabels pairs, each key an ID given once, each value at most
// maxLabelValue bytes.
func parseSelector(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	// Counted before splitting, so that a huge selector is not split.
	if n := strings.Count(s, ",") + 1; n > maxSelectorLabels {
		return nil, tether.Errorf(tether.EINVALID, "labels has %d pairs; at most %d labels in a selector", n, maxSelectorLabels)
	}
	out := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case !ok || k == "":
			return nil, tether.Errorf(tether.EINVALID, "labels %q must be key=value pairs separated by commas", shorten(s, 100))
		case !tether.ValidID(k):
			return nil, tether.Errorf(tether.EINVALID, "label key %q must be 1 to 64 letters, digits, '-' or '_'", shorten(k, 40))
		case len(v) > maxLabelValue:
			return nil, tether.Errorf(tether.EINVALID, "label %q is %d bytes; at most %d", k, len(v), maxLabelValue)
		}
		if _, dup := out[k]; dup {
			return nil, tether.Errorf(tether.EINVALID, "label %q is given twice in labels", k)
		}
		out[k] = v
	}
	return out, nil
}

// shorten cuts text quoted in an error message to n bytes.
func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	d, err := s.reg.Device(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.view(d))
}

func (s *Server) updateDevice(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var in deviceInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.ID != "" && in.ID != r.PathValue("id") {
		return tether.Errorf(tether.EINVALID, "a device's id cannot be changed")
	}
	d, err := s.reg.UpdateDevice(r.Context(), k.TenantID, r.PathValue("id"), tether.DeviceUpdate{
		Name: in.Name, Labels: in.Labels, Metadata: in.Metadata, Profile: in.Profile,
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.view(d))
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.reg.DeleteDevice(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	token, err := s.reg.RotateToken(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Token string `json:"token"`
	}{token})
}

func (s *Server) getStats(w http.ResponseWriter, _ *http.Request, _ *tether.Principal) error {
	return writeJSON(w, http.StatusOK, s.stats.Stats())
}
