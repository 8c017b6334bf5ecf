package sqlite

// These tests read SQLite's query plans of the dashboard's queries, which
// the API cannot show: each must walk an index range in the order it
// returns rows, so that its cost follows the page, not the fleet.

import (
	"context"
	"strings"
	"testing"

	"github.com/tether-iot/tether"
)

// queryPlan returns the lines of EXPLAIN QUERY PLAN of query.
func queryPlan(t *testing.T, db *DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.read.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// badPlanSteps are plan steps that cost in proportion to the tenant's
// devices or alerts rather than to a page: a scan of a whole table or
// index, and a sort of the rows found.
var badPlanSteps = []string{"SCAN ", "TEMP B-TREE"}

func TestDashboardQueryPlans(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	defer db.Close()

	for _, c := range []struct {
		name   string
		filter tether.DeviceFilter
		// uses is an index the plan must name.
		uses string
	}{
		{"the first page walks the tenant's devices in ID order", tether.DeviceFilter{}, "devices_tenant_id"},
		{"a deep page starts at the cursor", tether.DeviceFilter{After: "dev-050000"}, "devices_tenant_id (tenant_id=? AND id>?)"},
		{"online walks presence by status", tether.DeviceFilter{Status: tether.PresenceOnline}, "presence_status"},
		{"stale walks presence by status", tether.DeviceFilter{Status: tether.PresenceStale}, "presence_status"},
		{"offline checks each device's presence by key", tether.DeviceFilter{Status: tether.PresenceOffline}, "PRIMARY KEY (device_id=?)"},
		{"a label walks the label index", tether.DeviceFilter{Labels: map[string]string{"site": "north"}}, "device_labels_selector"},
		{"two labels walk one label's index", tether.DeviceFilter{Labels: map[string]string{"site": "north", "kind": "pump"}}, "device_labels_selector"},
		{"a profile walks the profile index", tether.DeviceFilter{Profile: "pumps"}, "devices_profile"},
		{"a search walks the tenant's devices in ID order", tether.DeviceFilter{Query: "pump"}, "devices_tenant_id"},
		{"a search with a label walks the label index", tether.DeviceFilter{Query: "pump", Labels: map[string]string{"site": "north"}}, "device_labels_selector"},
		{"a search with a status walks presence by status", tether.DeviceFilter{Query: "pump", Status: tether.PresenceOnline}, "presence_status"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := c.filter
			f.TenantID, f.Limit = tether.DefaultTenantID, 51
			query, args, err := db.devicesSQL(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, queryPlan(t, db, query, args...), c.uses)
		})
	}

	t.Run("the fleet counts read only index ranges", func(t *testing.T) {
		plan := queryPlan(t, db, fleetCountsSQL, tether.DefaultTenantID)
		checkPlan(t, plan, "alerts_status")
		for _, line := range plan {
			if strings.HasPrefix(line, "SEARCH") && !strings.Contains(line, "COVERING INDEX") {
				t.Errorf("%q reads table rows; the counts need only an index", line)
			}
		}
	})
}

// checkPlan fails the test if plan has a bad step or does not name uses.
func checkPlan(t *testing.T, plan []string, uses string) {
	t.Helper()
	all := strings.Join(plan, "\n")
	for _, line := range plan {
		for _, bad := range badPlanSteps {
			// The one row of a SELECT without FROM is no scan of data.
			if strings.Contains(line, bad) && line != "SCAN CONSTANT ROW" {
				t.Errorf("the plan has %q:\n%s", bad, all)
			}
		}
	}
	if !strings.Contains(all, uses) {
		t.Errorf("the plan does not use %s:\n%s", uses, all)
	}
}
