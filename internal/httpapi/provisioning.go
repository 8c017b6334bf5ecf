package httpapi

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/tether-iot/tether"
)

// maxImportBody bounds a bulk import: room for tens of thousands of rows.
const maxImportBody = 16 << 20

// importDevices creates every device of a CSV or JSON file, or none: 201
// with each device's token, or 422 naming every bad row.
func (s *Server) importDevices(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	parse := s.sv.Provision.ParseJSON
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return tether.Errorf(tether.EUNSUPPORTED, "Content-Type %q is neither text/csv nor application/json", ct)
		case mt == "text/csv":
			parse = s.sv.Provision.ParseCSV
		case mt == "application/json":
		default:
			return tether.Errorf(tether.EUNSUPPORTED, "Content-Type %q is neither text/csv nor application/json", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxImportBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return tether.Errorf(tether.ETOOLARGE, "the import is over %d bytes; split it", maxImportBody)
		}
		return tether.Errorf(tether.EINVALID, "reading the body: %v", err)
	}
	rows, err := parse(bytes.NewReader(body))
	if err != nil {
		return err
	}
	created, err := s.sv.Provision.Import(r.Context(), k.TenantID, rows)
	if err != nil {
		return err
	}
	if created == nil {
		created = []ImportedDevice{}
	}
	return writeJSON(w, http.StatusCreated, struct {
		Created int              `json:"created"`
		Devices []ImportedDevice `json:"devices"`
	}{len(created), created})
}

// keyView is a provisioning key with its secret, shown once.
type keyView struct {
	*tether.ProvisioningKey
	// Secret is the whole key a device presents, "pk_<id>.<secret>".
	Secret string `json:"secret"`
}

func (s *Server) createProvisioningKey(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var in struct {
		Profile   string     `json:"profile"`
		MaxUses   int        `json:"max_uses"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.MaxUses < 0 {
		return tether.Errorf(tether.EINVALID, "max_uses must be 0 (unlimited) or more")
	}
	key, secret, err := s.sv.Provision.CreateKey(r.Context(), k.TenantID, in.Profile, in.MaxUses, in.ExpiresAt)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/provisioning-keys/"+key.ID)
	return writeJSON(w, http.StatusCreated, keyView{key, secret})
}

func (s *Server) listProvisioningKeys(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	keys, err := s.sv.Provision.Keys(r.Context(), k.TenantID)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []*tether.ProvisioningKey{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Keys []*tether.ProvisioningKey `json:"keys"`
	}{keys})
}

func (s *Server) revokeProvisioningKey(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.sv.Provision.RevokeKey(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateProvisioningKey(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	key, secret, err := s.sv.Provision.RotateKey(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, keyView{key, secret})
}

// provision registers a device that presents its profile's provisioning
// key as a bearer token, once, and answers its own token.
func (s *Server) provision(w http.ResponseWriter, r *http.Request) {
	if err := s.doProvision(w, r); err != nil {
		if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether-provisioning"`)
		}
		s.problem(w, r, err)
	}
}

func (s *Server) doProvision(w http.ResponseWriter, r *http.Request) error {
	key := bearer(r)
	if key == "" {
		return tether.Errorf(tether.EUNAUTHORIZED, "a provisioning key is required: send Authorization: Bearer <provisioning key>")
	}
	if s.sv.Provision == nil {
		return tether.Errorf(tether.EUNAVAILABLE, "this node does not run the provisioning service")
	}
	var in struct {
		ID     string            `json:"id"`
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	d, token, err := s.sv.Provision.Register(r.Context(), key, RegisterRequest{DeviceID: in.ID, Name: in.Name, Labels: in.Labels})
	if err != nil {
		return err
	}
	s.log.Info("device registered itself", "tenant", d.TenantID, "device", d.ID, "profile", d.ProfileID)
	w.Header().Set("Location", "/api/v1/devices/"+d.ID)
	return writeJSON(w, http.StatusCreated, struct {
		Device deviceView `json:"device"`
		Token  string     `json:"token"`
	}{s.view(d), token})
}
