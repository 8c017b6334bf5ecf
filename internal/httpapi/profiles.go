package httpapi

import (
	"net/http"

	"github.com/tether-iot/tether"
)

// decodeProfile reads a profile body. The tenant comes from the API key
// and the timestamps from the service, so a profile read with GET can be
// sent back changed with PUT as it is.
func decodeProfile(r *http.Request, k *tether.Principal) (tether.Profile, error) {
	var p tether.Profile
	if err := decodeBody(r, &p); err != nil {
		return p, err
	}
	if p.TenantID != "" && p.TenantID != k.TenantID {
		return p, tether.Errorf(tether.EINVALID, "tenant_id %q is not the API key's tenant", p.TenantID)
	}
	p.TenantID = k.TenantID
	return p, nil
}

func (s *Server) createProfile(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	p, err := decodeProfile(r, k)
	if err != nil {
		return err
	}
	created, err := s.sv.Profiles.Create(r.Context(), k.TenantID, p)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/profiles/"+created.ID)
	return writeJSON(w, http.StatusCreated, created)
}

func (s *Server) listProfiles(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	ps, err := s.sv.Profiles.List(r.Context(), k.TenantID)
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []*tether.Profile{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Profiles []*tether.Profile `json:"profiles"`
	}{ps})
}

func (s *Server) getProfile(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	p, err := s.sv.Profiles.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

func (s *Server) putProfile(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	p, err := decodeProfile(r, k)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if p.ID != "" && p.ID != id {
		return tether.Errorf(tether.EINVALID, "the body's id %q is not the path's %q; a profile's id cannot change", p.ID, id)
	}
	p.ID = id
	put, err := s.sv.Profiles.Put(r.Context(), k.TenantID, p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, put)
}

func (s *Server) deleteProfile(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.sv.Profiles.Delete(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
