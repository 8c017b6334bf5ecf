package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/tether-iot/tether"
)

// FleetCounts is the domain's fleet overview, as [Fleet] answers it.
type FleetCounts = tether.FleetCounts

// Fleet is what the API needs for the fleet overview.
type Fleet interface {
	FleetCounts(ctx context.Context, tenant string) (FleetCounts, error)
	// Messages counts the telemetry messages and their points this node
	// accepted since it started, of every tenant.
	Messages() (received, points uint64)
}

// fleetRoutes adds the fleet overview's route through add.
func (s *Server) fleetRoutes(add addRoute) {
	add(tether.RoleViewer, "GET /api/v1/fleet", needs(s.sv.Fleet != nil, "fleet", s.fleet))
}

// fleetView is the fleet overview as the API shows it. The message
// counters only grow; a client derives a rate from two reads and their
// times.
type fleetView struct {
	Devices struct {
		Total   int64 `json:"total"`
		Online  int64 `json:"online"`
		Stale   int64 `json:"stale"`
		Offline int64 `json:"offline"`
	} `json:"devices"`
	Alerts struct {
		Active       int64 `json:"active"`
		Acknowledged int64 `json:"acknowledged"`
	} `json:"alerts"`
	// Messages are node-wide and since the node started, not the tenant's:
	// the node counts ingest per device, not per tenant, until the metrics
	// issue gives every tenant its own counters.
	Messages struct {
		Received uint64 `json:"received"`
		Points   uint64 `json:"points"`
	} `json:"messages"`
	Time time.Time `json:"time"`
}

func (s *Server) fleet(w http.ResponseWriter, r *http.Request, p *tether.Principal) error {
	// The counters are read with the time they are shown with, before the
	// counts, so that a rate from two reads divides by the right interval.
	var v fleetView
	v.Time = s.now().UTC()
	v.Messages.Received, v.Messages.Points = s.sv.Fleet.Messages()
	c, err := s.sv.Fleet.FleetCounts(r.Context(), p.TenantID)
	if err != nil {
		return err
	}
	v.Devices.Total, v.Devices.Online, v.Devices.Stale, v.Devices.Offline = c.Devices, c.Online, c.Stale, c.Offline
	v.Alerts.Active, v.Alerts.Acknowledged = c.ActiveAlerts, c.AcknowledgedAlerts
	return writeJSON(w, http.StatusOK, v)
}
