package main

import (
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/ingest"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// fleetAPI gives the API the fleet overview: the store's counts of a
// tenant's devices and alerts, and this node's ingest counters.
type fleetAPI struct {
	*sqlite.DB
	ingest *ingest.Ingestor
}

var _ httpapi.Fleet = fleetAPI{}

// Messages returns the messages and points this node accepted since it
// started, of every tenant: the ingestor counts per device and in total,
// not per tenant.
func (f fleetAPI) Messages() (received, points uint64) {
	s := f.ingest.Stats()
	return s.Accepted, s.Points
}
