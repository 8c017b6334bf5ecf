package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/tether-iot/tether"
)

// AlertChannel is a notification channel as the alert service keeps it.
type AlertChannel = tether.AlertChannel

// Alerts is what the API needs of the alert service.
type Alerts interface {
	Get(ctx context.Context, tenant, id string) (*tether.Alert, error)
	List(ctx context.Context, tenant string, f tether.AlertFilter) ([]*tether.Alert, error)
	Acknowledge(ctx context.Context, tenant, id, by string) (*tether.Alert, error)
	Clear(ctx context.Context, tenant, id, by string) (*tether.Alert, error)

	AddChannel(ctx context.Context, tenant string, c AlertChannel) (*AlertChannel, error)
	Channels(ctx context.Context, tenant string) ([]AlertChannel, error)
	GetChannel(ctx context.Context, tenant, id string) (*AlertChannel, error)
	DeleteChannel(ctx context.Context, tenant, id string) error
	// ChannelStats counts a channel's notifications since the node
	// started.
	ChannelStats(tenant, id string) (sent, failed, dropped uint64)
}

// alertRoutes adds the alert routes through add.
func (s *Server) alertRoutes(add addRoute) {
	ok := s.sv.Alerts != nil
	add(tether.RoleViewer, "GET /api/v1/alerts", needs(ok, "alert", s.listAlerts))
	add(tether.RoleViewer, "GET /api/v1/alerts/{id}", needs(ok, "alert", s.getAlert))
	add(tether.RoleOperator, "POST /api/v1/alerts/{id}/acknowledge", needs(ok, "alert", s.acknowledgeAlert))
	add(tether.RoleOperator, "POST /api/v1/alerts/{id}/clear", needs(ok, "alert", s.clearAlert))
	add(tether.RoleAdmin, "POST /api/v1/alert-channels", needs(ok, "alert", s.createAlertChannel))
	add(tether.RoleAdmin, "GET /api/v1/alert-channels", needs(ok, "alert", s.listAlertChannels))
	add(tether.RoleAdmin, "GET /api/v1/alert-channels/{id}", needs(ok, "alert", s.getAlertChannel))
	add(tether.RoleAdmin, "DELETE /api/v1/alert-channels/{id}", needs(ok, "alert", s.deleteAlertChannel))
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	q := r.URL.Query()
	f := tether.AlertFilter{Status: q.Get("status"), DeviceID: q.Get("device"), RuleID: q.Get("rule"), After: q.Get("after"), Limit: 100}
	switch f.Status {
	case "", "open", tether.AlertActive, tether.AlertAcknowledged, tether.AlertCleared:
	default:
		return tether.Errorf(tether.EINVALID, "status %q is none of open, active, acknowledged, cleared", f.Status)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return tether.Errorf(tether.EINVALID, "limit %q must be a number from 1 to 1000", v)
		}
		f.Limit = n
	}
	as, err := s.sv.Alerts.List(r.Context(), k.TenantID, f)
	if err != nil {
		return err
	}
	if as == nil {
		as = []*tether.Alert{}
	}
	resp := struct {
		Alerts    []*tether.Alert `json:"alerts"`
		NextAfter string          `json:"next_after,omitempty"`
	}{Alerts: as}
	if len(as) == f.Limit {
		resp.NextAfter = as[len(as)-1].ID
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) getAlert(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	a, err := s.sv.Alerts.Get(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a)
}

func (s *Server) acknowledgeAlert(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	a, err := s.sv.Alerts.Acknowledge(r.Context(), k.TenantID, r.PathValue("id"), k.Source())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a)
}

func (s *Server) clearAlert(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	a, err := s.sv.Alerts.Clear(r.Context(), k.TenantID, r.PathValue("id"), k.Source())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a)
}

// alertChannelInput is the body that creates a channel.
type alertChannelInput struct {
	Kind          string   `json:"kind"`
	URL           string   `json:"url"`
	Secret        string   `json:"secret"`
	SMTPAddr      string   `json:"smtp_addr"`
	From          string   `json:"from"`
	To            []string `json:"to"`
	MinSeverity   string   `json:"min_severity"`
	RatePerMinute int      `json:"rate_per_minute"`
}

// alertChannelView is a channel as the API shows it: never with its
// secret, with its counters.
type alertChannelView struct {
	ID            string   `json:"id"`
	Kind          string   `json:"kind"`
	URL           string   `json:"url,omitempty"`
	SMTPAddr      string   `json:"smtp_addr,omitempty"`
	From          string   `json:"from,omitempty"`
	To            []string `json:"to,omitempty"`
	MinSeverity   string   `json:"min_severity,omitempty"`
	RatePerMinute int      `json:"rate_per_minute"`
	Sent          uint64   `json:"sent"`
	Failed        uint64   `json:"failed"`
	Dropped       uint64   `json:"dropped"`
}

func (s *Server) channelView(tenant string, c *AlertChannel) alertChannelView {
	v := alertChannelView{ID: c.ID, Kind: c.Kind, URL: c.URL, SMTPAddr: c.SMTPAddr, From: c.From, To: c.To,
		MinSeverity: c.MinSeverity, RatePerMinute: c.RatePerMinute}
	v.Sent, v.Failed, v.Dropped = s.sv.Alerts.ChannelStats(tenant, c.ID)
	return v
}

func (s *Server) createAlertChannel(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	var in alertChannelInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	c, err := s.sv.Alerts.AddChannel(r.Context(), k.TenantID, AlertChannel{Kind: in.Kind, URL: in.URL, Secret: in.Secret,
		SMTPAddr: in.SMTPAddr, From: in.From, To: in.To, MinSeverity: in.MinSeverity, RatePerMinute: in.RatePerMinute})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/alert-channels/"+c.ID)
	return writeJSON(w, http.StatusCreated, s.channelView(k.TenantID, c))
}

func (s *Server) listAlertChannels(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	cs, err := s.sv.Alerts.Channels(r.Context(), k.TenantID)
	if err != nil {
		return err
	}
	views := make([]alertChannelView, len(cs))
	for i := range cs {
		views[i] = s.channelView(k.TenantID, &cs[i])
	}
	return writeJSON(w, http.StatusOK, struct {
		Channels []alertChannelView `json:"channels"`
	}{views})
}

func (s *Server) getAlertChannel(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	c, err := s.sv.Alerts.GetChannel(r.Context(), k.TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.channelView(k.TenantID, c))
}

func (s *Server) deleteAlertChannel(w http.ResponseWriter, r *http.Request, k *tether.Principal) error {
	if err := s.sv.Alerts.DeleteChannel(r.Context(), k.TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
