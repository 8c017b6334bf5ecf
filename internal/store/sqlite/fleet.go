package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/tether-iot/tether"
)

// FleetCounts is the domain's fleet overview, which the API reads. A
// device without a presence row has never connected and counts as
// offline.
type FleetCounts = tether.FleetCounts

// FleetCounts returns the counts of the tenant's fleet overview, in one
// statement and so from one snapshot. Each count walks one index range
// (devices_tenant_id, presence_status, alerts_status) without reading a
// table row: SQLite keeps no row counts, so a count costs a step per
// entry, about 4 ms for 100,000 devices (BenchmarkDashboardDeviceList in
// cmd/tether measures it through the API).
func (db *DB) FleetCounts(ctx context.Context, tenantID string) (FleetCounts, error) {
	var c FleetCounts
	err := db.read.QueryRowContext(ctx, fleetCountsSQL, tenantID).
		Scan(&c.Devices, &c.Online, &c.Stale, &c.ActiveAlerts, &c.AcknowledgedAlerts)
	if err != nil {
		return FleetCounts{}, fmt.Errorf("fleet counts of %s: %w", tenantID, err)
	}
	c.Offline = c.Devices - c.Online - c.Stale
	return c, nil
}

// fleetCountsSQL is the query of FleetCounts; its one parameter is the
// tenant.
const fleetCountsSQL = `SELECT
	(SELECT count(*) FROM devices WHERE tenant_id = ?1),
	(SELECT count(*) FROM presence WHERE tenant_id = ?1 AND status = 'online'),
	(SELECT count(*) FROM presence WHERE tenant_id = ?1 AND status = 'stale'),
	(SELECT count(*) FROM alerts WHERE tenant_id = ?1 AND status = 'active'),
	(SELECT count(*) FROM alerts WHERE tenant_id = ?1 AND status = 'acknowledged')`

// MaxDeviceQuery is the longest search text [tether.DeviceFilter.Query]
// may be: a device name is at most 256 bytes, so a longer text matches
// nothing.
const MaxDeviceQuery = 256

// searchCondition returns the condition on devices d of a device search
// and its arguments: the ID starts with q or the name contains q, both
// with SQLite's LIKE, which ignores the case of ASCII letters only (other
// letters match as they are). q's own % and _ match themselves.
//
// No index serves a name substring, so a search is a check per device as
// Devices walks the tenant's devices in ID order, and stops once a page is
// full: a common text fills the page at once, a text that matches nothing
// walks all of them. At 100,000 devices that is about 13 ms
// (BenchmarkDashboardDeviceList, q=miss). An index of (tenant, id, name)
// saved a quarter of it (the name read from the index rather than the
// row), too little for a second copy of every name. A trigram index
// (FTS5) would find rare matches at once but returns them out of ID
// order, to be sorted before a page is cut, which is slow for a common
// text; it is the step to take for fleets of millions.
func searchCondition(q string) (string, []any, error) {
	if len(q) > MaxDeviceQuery {
		return "", nil, tether.Errorf(tether.EINVALID, "the search text is %d bytes; at most %d", len(q), MaxDeviceQuery)
	}
	esc := likeEscaper.Replace(q)
	return `(d.id LIKE ? ESCAPE '\' OR d.name LIKE ? ESCAPE '\')`, []any{esc + "%", "%" + esc + "%"}, nil
}

// likeEscaper escapes LIKE's wildcards and its escape character.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
