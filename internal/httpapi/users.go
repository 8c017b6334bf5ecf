package httpapi

import (
	"net/http"

	"github.com/tether-iot/tether"
)

// Users and API keys, managed by admins. Both are shown without their
// secrets: a password is never shown, an API key's secret only in the
// answer that creates it.

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	us, err := s.sv.Users.Users(r.Context(), p.TenantID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Users []*tether.User `json:"users"`
	}{us})
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Role     string `json:"role"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	u, err := s.sv.Users.CreateUser(r.Context(), p.TenantID, in.Email, in.Password, in.Role)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, u)
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	var in struct {
		Role     *string `json:"role"`
		Password *string `json:"password"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	u, err := s.sv.Users.UpdateUser(r.Context(), p, r.PathValue("id"), in.Role, in.Password)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, u)
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	if err := s.sv.Users.DeleteUser(r.Context(), p.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	ks, err := s.sv.APIKeys.APIKeys(r.Context(), p.TenantID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		APIKeys []*tether.APIKey `json:"api_keys"`
	}{ks})
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	var in struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	k, key, err := s.sv.APIKeys.CreateAPIKey(r.Context(), p.TenantID, in.Name, in.Role)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, struct {
		APIKey *tether.APIKey `json:"api_key"`
		Key    string         `json:"key"`
	}{k, key})
}

func (s *Server) deleteAPIKey(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	if err := s.sv.APIKeys.DeleteAPIKey(r.Context(), p.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
