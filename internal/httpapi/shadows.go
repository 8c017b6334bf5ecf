package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/tether-iot/tether"
)

// getShadow answers a device's classic shadow, or the named one of the
// path, with its version as the ETag.
func (s *Server) getShadow(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	// A shadow never written reads as empty, so the device is checked here
	// for an unknown one to be 404 rather than an empty shadow.
	if _, err := s.reg.Device(r.Context(), k.TenantID, id); err != nil {
		return err
	}
	sh, err := s.sv.Shadows.Get(r.Context(), k.TenantID, id, r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeShadow(w, sh)
}

// updateShadow applies a ShadowUpdate (merge patches of desired and
// reported). The version it must apply to comes from the body or from
// If-Match; a stale one is 409 with the current version.
func (s *Server) updateShadow(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var u tether.ShadowUpdate
	if err := decodeBody(r, &u); err != nil {
		return err
	}
	if m := r.Header.Get("If-Match"); m != "" {
		v, ok, err := parseIfMatch(m)
		if err != nil {
			return err
		}
		if ok {
			if u.Version != 0 && u.Version != v {
				return tether.Errorf(tether.EINVALID, "If-Match names version %d but the body version %d", v, u.Version)
			}
			u.Version = v
		}
	}
	return s.applyShadow(r.Context(), w, k.TenantID, r.PathValue("id"), r.PathValue("name"), u)
}

func (s *Server) applyShadow(ctx context.Context, w http.ResponseWriter, tenant, device, name string, u tether.ShadowUpdate) error {
	sh, err := s.sv.Shadows.Update(ctx, tenant, device, name, u)
	if tether.ErrorCode(err) == tether.ECONFLICT {
		de := &detailedError{err: err}
		if cur, gerr := s.sv.Shadows.Get(ctx, tenant, device, name); gerr == nil {
			de.currentVersion = &cur.Version
			w.Header().Set("ETag", etag(cur.Version))
		}
		return de
	}
	if err != nil {
		return err
	}
	return writeShadow(w, sh)
}

func (s *Server) shadowNames(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	if _, err := s.reg.Device(r.Context(), k.TenantID, id); err != nil {
		return err
	}
	names, err := s.sv.Shadows.Names(r.Context(), k.TenantID, id)
	if err != nil {
		return err
	}
	if names == nil {
		names = []string{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Device string   `json:"device"`
		Names  []string `json:"names"`
	}{id, names})
}

func (s *Server) deleteShadow(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.sv.Shadows.Delete(r.Context(), k.TenantID, r.PathValue("id"), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deviceGetShadow is a device reading its own shadow (?name= for a named
// one).
func (s *Server) deviceGetShadow(w http.ResponseWriter, r *http.Request, d *tether.Device) error {
	sh, err := s.sv.Shadows.Get(r.Context(), d.TenantID, d.ID, r.URL.Query().Get("name"))
	if err != nil {
		return err
	}
	return writeShadow(w, sh)
}

// deviceUpdateShadow is a device reporting its state. A device may write
// only reported: what it should be is the apps' to say.
func (s *Server) deviceUpdateShadow(w http.ResponseWriter, r *http.Request, d *tether.Device) error {
	var u tether.ShadowUpdate
	if err := decodeBody(r, &u); err != nil {
		return err
	}
	if u.State.Desired != nil {
		return tether.Errorf(tether.EFORBIDDEN, "a device may update only state.reported, not state.desired")
	}
	return s.applyShadow(r.Context(), w, d.TenantID, d.ID, r.URL.Query().Get("name"), u)
}

func writeShadow(w http.ResponseWriter, sh *tether.Shadow) error {
	w.Header().Set("ETag", etag(sh.Version))
	return writeJSON(w, http.StatusOK, sh)
}

// etag is a shadow version as an entity tag.
func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// parseIfMatch reads If-Match: one entity tag holding a shadow version
// ("3", W/"3" or a bare 3), or * (any version: ok false).
func parseIfMatch(h string) (version int64, ok bool, err error) {
	h = strings.TrimSpace(h)
	if h == "*" {
		return 0, false, nil
	}
	v := strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	n, perr := strconv.ParseInt(v, 10, 64)
	if perr != nil || n < 1 {
		return 0, false, tether.Errorf(tether.EINVALID, "If-Match %q must be one shadow version as an entity tag, like \"3\"", h)
	}
	return n, true, nil
}
