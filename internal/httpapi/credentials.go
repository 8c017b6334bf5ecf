package httpapi

import (
	"net/http"

	"github.com/tether-iot/tether"
)

type pemInput struct {
	PEM string `json:"pem"`
}

func (s *Server) addCertificate(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var in pemInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	c, err := s.reg.AddCertificate(r.Context(), k.TenantID, r.PathValue("id"), in.PEM)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, c)
}

func (s *Server) listCertificates(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	cs, err := s.reg.Certificates(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Certificates []*tether.Certificate `json:"certificates"`
	}{cs})
}

func (s *Server) revokeCertificate(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.reg.RevokeCertificate(r.Context(), k.TenantID, r.PathValue("id"), r.PathValue("fingerprint")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotatePSK(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	id := r.PathValue("id")
	psk, err := s.reg.RotatePSK(r.Context(), k.TenantID, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, struct {
		Identity string `json:"identity"`
		PSK      string `json:"psk"`
	}{id, psk})
}

func (s *Server) deletePSK(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.reg.DeletePSK(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) addCA(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var in pemInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	ca, err := s.reg.AddCA(r.Context(), k.TenantID, in.PEM)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, ca)
}

func (s *Server) listCAs(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	cas, err := s.reg.CAs(r.Context(), k.TenantID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		CAs []*tether.CA `json:"cas"`
	}{cas})
}

func (s *Server) deleteCA(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.reg.DeleteCA(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
