package main_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

// fleetBody is the body of GET /api/v1/fleet.
type fleetBody struct {
	Devices struct {
		Total, Online, Stale, Offline int
	}
	Alerts struct {
		Active, Acknowledged int
	}
	Messages struct {
		Received, Points uint64
	}
	Time time.Time
}

// TestTheDashboardsOverviewAndSearch drives what the dashboard's overview
// and device list ask of a running node: a device connects over MQTT and
// sends telemetry, the overview counts it online and its messages, and the
// search finds devices by ID prefix and by part of the name.
func TestTheDashboardsOverviewAndSearch(t *testing.T) {
	n := startNode(t, nil)
	for _, d := range []struct{ id, name string }{
		{"pump-01", "Pump North"}, {"pump-02", "Pump South"}, {"valve-01", "Backup pump valve"}, {"fridge-01", "Kitchen fridge"},
	} {
		if status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]any{"id": d.id, "name": d.name}, nil); status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", d.id, status, raw)
		}
	}
	_, token := n.createDevice("sensor-01")
	fleet := func() fleetBody {
		t.Helper()
		var f fleetBody
		if status, _, raw := n.api("GET", "/api/v1/fleet", "", nil, &f); status != http.StatusOK {
			t.Fatalf("fleet: %d %s", status, raw)
		}
		return f
	}
	before := fleet()

	c, err := connect3(t, n.MQTT.Addr(), "sensor-01", token)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.Publish("devices/sensor-01/telemetry", 1, false, `{"temp": 21.5, "hum": 40}`)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	waitFor(t, "the overview to count the device online", func() bool { return fleet().Devices.Online == 1 })

	t.Run("the overview counts the devices by presence and the node's messages", func(t *testing.T) {
		f := fleet()
		if f.Devices.Total != 5 || f.Devices.Online != 1 || f.Devices.Stale != 0 || f.Devices.Offline != 4 {
			t.Errorf("devices %+v, want 5 with 1 online and 4 offline", f.Devices)
		}
		if before.Devices.Offline != 5 {
			t.Errorf("before connecting: devices %+v, want all 5 offline (never connected)", before.Devices)
		}
		if got := f.Messages.Received - before.Messages.Received; got != 1 {
			t.Errorf("%d messages received since the first read, want 1", got)
		}
		if got := f.Messages.Points - before.Messages.Points; got != 2 {
			t.Errorf("%d points received since the first read, want 2", got)
		}
		if !f.Time.After(before.Time) {
			t.Errorf("time %s is not after the first read's %s", f.Time, before.Time)
		}
	})

	search := func(query url.Values) []string {
		t.Helper()
		var page struct {
			Devices []struct {
				ID string `json:"id"`
			} `json:"devices"`
			NextCursor string `json:"next_cursor"`
		}
		if status, _, raw := n.api("GET", "/api/v1/devices?"+query.Encode(), "", nil, &page); status != http.StatusOK {
			t.Fatalf("search %s: %d %s", query.Encode(), status, raw)
		}
		ids := []string{}
		for _, d := range page.Devices {
			ids = append(ids, d.ID)
		}
		if page.NextCursor != "" {
			ids = append(ids, "next:"+page.NextCursor)
		}
		return ids
	}
	for _, c := range []struct {
		name  string
		query url.Values
		want  []string
	}{
		{"the search finds an ID prefix and a part of a name, in any case", url.Values{"q": {"PUMP"}},
			[]string{"pump-01", "pump-02", "valve-01"}},
		{"the search combines with the status filter", url.Values{"q": {"sensor"}, "status": {"online"}},
			[]string{"sensor-01"}},
		{"the search pages with the cursor", url.Values{"q": {"pump"}, "limit": {"2"}},
			[]string{"pump-01", "pump-02", "next:pump-02"}},
		{"the next page follows the cursor", url.Values{"q": {"pump"}, "limit": {"2"}, "cursor": {"pump-02"}},
			[]string{"valve-01"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := search(c.query); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}
