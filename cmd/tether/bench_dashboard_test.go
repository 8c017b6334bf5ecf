package main_test

// The dashboard's API benchmarks: what its device list, overview and
// device page ask of a node holding a large fleet and a long history.
// Each request goes over HTTP to a node running in-process, one at a
// time, as one dashboard user's would; the figures are its response
// times, p50 and p99 over many requests.
//
//	go test -run '^$' -bench 'Dashboard' -benchtime 1x ./cmd/tether/
//	go test -run '^$' -bench 'DashboardDeviceList' -benchtime 1x ./cmd/tether/ -args -dashboard.devices 20000

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

var (
	dashDevices  = flag.Int("dashboard.devices", 100_000, "device list benchmark: devices of the tenant")
	dashRequests = flag.Int("dashboard.requests", 200, "device list benchmark: measured requests of each query")
	dashDays     = flag.Int("dashboard.days", 30, "history benchmark: days of 1 s data of the device's one key")
)

// BenchmarkDashboardDeviceList measures the device list and the overview
// of the dashboard on a tenant of *dashDevices devices (imported through
// the bulk import API, 10,000 per request): pages of 50, the first, a
// deep one by cursor, by presence status, by label, by profile and by
// search, and the fleet overview. A tenth of the devices have a profile,
// 30% are online and 5% stale (the rest never connected or went
// offline), each has one of ten sites and one in 10,000 a rare label.
func BenchmarkDashboardDeviceList(b *testing.B) {
	n := startBenchNode(b, nil, nil)
	start := time.Now()
	importFleet(b, n, *dashDevices)
	b.Logf("imported %d devices and set their presence in %s", *dashDevices, time.Since(start).Round(time.Millisecond))

	deep := fmt.Sprintf("fleet-%06d", *dashDevices*9/10)
	cases := []struct {
		name, path string
		// want is the page size the query must return: a check that it
		// selects what it claims, not a figure.
		want int
	}{
		{"page=first", "/api/v1/devices?limit=50", 50},
		{"page=deep", "/api/v1/devices?limit=50&cursor=" + deep, 50},
		{"status=online", "/api/v1/devices?limit=50&status=online", 50},
		{"status=offline", "/api/v1/devices?limit=50&status=offline", 50},
		{"labels=dense", "/api/v1/devices?limit=50&labels=site%3Dsite-3", 50},
		{"labels=sparse", "/api/v1/devices?limit=50&labels=zone%3Drare", min(50, *dashDevices/10_000)},
		{"profile", "/api/v1/devices?limit=50&profile=thermostat", 50},
		{"q=name", "/api/v1/devices?limit=50&q=" + url.QueryEscape("hall 7"), 50},
		{"q=id-prefix", "/api/v1/devices?limit=50&q=fleet-0099", min(50, countPrefix(*dashDevices, "fleet-0099"))},
		{"q=miss", "/api/v1/devices?limit=50&q=zebra", 0},
		{"fleet", "/api/v1/fleet", -1},
	}
	table := [][]string{}
	for _, c := range cases {
		b.Run(fmt.Sprintf("devices=%d/%s", *dashDevices, c.name), func(b *testing.B) {
			check := func(body []byte) error {
				if c.want < 0 {
					var f fleetBody
					if err := json.Unmarshal(body, &f); err != nil {
						return err
					}
					if f.Devices.Total != *dashDevices {
						return fmt.Errorf("fleet counts %d devices, want %d", f.Devices.Total, *dashDevices)
					}
					return nil
				}
				var page struct {
					Devices []json.RawMessage `json:"devices"`
				}
				if err := json.Unmarshal(body, &page); err != nil {
					return err
				}
				if len(page.Devices) != c.want {
					return fmt.Errorf("%d devices, want %d", len(page.Devices), c.want)
				}
				return nil
			}
			p50, p99 := timeRequests(b, n, c.path, 10, *dashRequests, check)
			b.ReportMetric(ms(p50), "p50-ms")
			b.ReportMetric(ms(p99), "p99-ms")
			b.ReportMetric(0, "ns/op") // many requests per op; the quantiles are the figures
			table = append(table, []string{c.name, "`" + c.path + "`", fmt.Sprintf("%.2f", ms(p50)), fmt.Sprintf("%.2f", ms(p99))})
		})
	}
	fmt.Printf("\nDASHBOARD DEVICE LIST: %d devices, %d requests per query, one at a time\n\n", *dashDevices, *dashRequests)
	printTable([]string{"query", "request", "p50 ms", "p99 ms"}, table)
}

// countPrefix is how many of importFleet's first n device IDs start with
// prefix.
func countPrefix(n int, prefix string) int {
	c := 0
	for i := range n {
		if strings.HasPrefix(fleetID(i), prefix) {
			c++
		}
	}
	return c
}

func fleetID(i int) string { return fmt.Sprintf("fleet-%06d", i) }

// importFleet creates a profile and count devices through the bulk
// import API, then gives 30% of them an online presence and 5% a stale
// one, straight in the store (as a connection would), many at once so
// that their commits are grouped.
func importFleet(b *testing.B, n *node, count int) {
	b.Helper()
	if status, _, raw := n.api("POST", "/api/v1/profiles", "", map[string]any{"id": "thermostat", "name": "Thermostat"}, nil); status != http.StatusCreated {
		b.Fatalf("create profile: %d %s", status, raw)
	}
	const chunk = 10_000
	for from := 0; from < count; from += chunk {
		var csv bytes.Buffer
		csv.WriteString("id,name,profile,labels\n")
		for i := from; i < min(from+chunk, count); i++ {
			profile := ""
			if i%10 == 0 {
				profile = "thermostat"
			}
			labels := fmt.Sprintf("site=site-%d", i%10)
			if i%10_000 == 5 {
				labels += ";zone=rare"
			}
			fmt.Fprintf(&csv, "%s,Thermostat %d Hall %d,%s,%s\n", fleetID(i), i, i%50, profile, labels)
		}
		req, err := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/v1/devices/import", &csv)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("import from row %d: %d %.500s", from, resp.StatusCode, raw)
		}
	}

	ctx := context.Background()
	at := time.Now()
	ids := make(chan int)
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				id := fleetID(i)
				p, err := n.DB.ConnectPresence(ctx, tether.DefaultTenantID, id, "mqtt", tether.ReasonConnected, "bench", at)
				if err == nil && i%20 == 3 {
					_, _, err = n.DB.UpdatePresence(ctx, tether.DefaultTenantID, id, p.Seq, []string{tether.PresenceOnline},
						tether.PresenceStale, tether.ReasonSilent, at)
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		}()
	}
	// Devices i%20 in 0..6 are online (35%), 3 of those then stale (5%).
	for i := range count {
		if i%20 < 7 {
			ids <- i
		}
	}
	close(ids)
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
}

// timeRequests GETs path warm times, then measured times, one at a time,
// checks each answer and returns the median and 99th percentile of the
// measured ones.
func timeRequests(b *testing.B, n *node, path string, warm, measured int, check func([]byte) error) (p50, p99 time.Duration) {
	b.Helper()
	client := &http.Client{}
	lat := make([]time.Duration, 0, measured)
	for i := range warm + measured {
		req, err := http.NewRequest("GET", "http://"+n.HTTP.Addr()+path, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminKey)
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d %.500s", path, resp.StatusCode, body)
		}
		if err := check(body); err != nil {
			b.Fatalf("GET %s: %v", path, err)
		}
		if i >= warm {
			lat = append(lat, d)
		}
	}
	return quantiles(lat)
}

// BenchmarkDashboardHistory measures the device page's history queries on
// one device with *dashDays days of one key sampled every second (30 days:
// 2,592,000 points), written straight into the store in large batches:
// the whole range in 720 buckets of 1 h (average), one day in 720 buckets
// of 2 min and the last hour raw (3,600 points), the most a chart of 720
// points would ask; then the same three ranges as the dashboard asks for
// them (web/src/timeseries.ts: the smallest width it offers that gives at
// most 500 buckets, so 3 h for 30 days, 5 min for a day, 10 s for an hour).
func BenchmarkDashboardHistory(b *testing.B) {
	n := startBenchNode(b, nil, nil)
	const device = "history-1"
	if status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]any{"id": device}, nil); status != http.StatusCreated {
		b.Fatalf("create device: %d %s", status, raw)
	}
	end := time.Now().UTC().Truncate(time.Hour)
	begin := end.Add(-time.Duration(*dashDays) * 24 * time.Hour)
	start := time.Now()
	points := writeHistory(b, n, device, begin, end)
	b.Logf("wrote %d points in %s", points, time.Since(start).Round(time.Millisecond))

	span := func(d time.Duration) string {
		return "from=" + end.Add(-d).Format(time.RFC3339) + "&to=" + end.Format(time.RFC3339)
	}
	days := time.Duration(*dashDays) * 24 * time.Hour
	type historyCase struct {
		name, query string
		runs        int
		want        int // samples in the answer
	}
	cases := []historyCase{
		{fmt.Sprintf("range=%dd/bucket=%s/agg=avg", *dashDays, shortDuration(days/720)), span(days) + "&agg=avg&bucket=" + (days / 720).String(), 21, 720},
		{"range=1d/bucket=2m/agg=avg", span(24*time.Hour) + "&agg=avg&bucket=2m", 101, 720},
		{"range=1h/raw", span(time.Hour) + "&limit=3600", 101, 3600},
	}
	for _, r := range []struct {
		label string
		d     time.Duration
		runs  int
	}{{fmt.Sprintf("%dd", *dashDays), days, 21}, {"1d", 24 * time.Hour, 101}, {"1h", time.Hour, 101}} {
		w := dashboardBucket(r.d)
		// Buckets start at multiples of their width since the epoch.
		first, last := end.Add(-r.d).Unix()/int64(w/time.Second), (end.Unix()-1)/int64(w/time.Second)
		cases = append(cases, historyCase{fmt.Sprintf("range=%s/bucket=%s/agg=avg/as=dashboard", r.label, shortDuration(w)),
			span(r.d) + "&agg=avg&limit=1000&bucket=" + shortDuration(w), r.runs, int(last - first + 1)})
	}
	table := [][]string{}
	for _, c := range cases {
		b.Run(fmt.Sprintf("points=%d/%s", points, c.name), func(b *testing.B) {
			path := "/api/v1/devices/" + device + "/telemetry?keys=temp&" + c.query
			p50, p99 := timeRequests(b, n, path, 2, c.runs, func(body []byte) error {
				var out struct {
					Series []struct {
						Samples []json.RawMessage `json:"samples"`
					} `json:"series"`
				}
				if err := json.Unmarshal(body, &out); err != nil {
					return err
				}
				if len(out.Series) != 1 || len(out.Series[0].Samples) != c.want {
					return fmt.Errorf("%d series, want 1 of %d samples", len(out.Series), c.want)
				}
				return nil
			})
			b.ReportMetric(ms(p50), "p50-ms")
			b.ReportMetric(ms(p99), "p99-ms")
			b.ReportMetric(0, "ns/op")
			table = append(table, []string{c.name, fmt.Sprint(c.want), fmt.Sprint(c.runs), fmt.Sprintf("%.1f", ms(p50)), fmt.Sprintf("%.1f", ms(p99))})
		})
	}
	fmt.Printf("\nDASHBOARD HISTORY: one device, %d days of one key every 1 s (%d points)\n\n", *dashDays, points)
	printTable([]string{"query", "samples", "runs", "p50 ms", "p99 ms"}, table)
}

// writeHistory stores a point of key temp every second from begin to end
// for the device, through the store's batch write (the storage writer's
// path, without the bus), one day per transaction and an hour per
// message. It returns the number of points.
func writeHistory(b *testing.B, n *node, device string, begin, end time.Time) int {
	b.Helper()
	ctx := context.Background()
	total := 0
	for day := begin; day.Before(end); day = day.Add(24 * time.Hour) {
		var msgs []tether.Message
		for hour := day; hour.Before(day.Add(24*time.Hour)) && hour.Before(end); hour = hour.Add(time.Hour) {
			m := tether.Message{ID: "hist-" + hour.Format(time.RFC3339), TenantID: tether.DefaultTenantID, DeviceID: device,
				ReceivedAt: hour.Add(time.Hour), Points: make([]tether.Point, 0, 3600)}
			for t := hour; t.Before(hour.Add(time.Hour)); t = t.Add(time.Second) {
				// A daily cycle around 21 °C with a little jitter.
				s := float64(t.Unix())
				v := 21 + 3*math.Sin(2*math.Pi*s/86400) + 0.1*math.Sin(s)
				m.Points = append(m.Points, tether.Point{Key: "temp", Time: t, Kind: tether.KindNumber, Num: v})
			}
			msgs = append(msgs, m)
		}
		stored, err := n.DB.WriteMessages(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		total += stored
	}
	return total
}

// dashboardBucket is the bucket width the dashboard asks for a history
// range (chooseBucket in web/src/timeseries.ts): the smallest width it
// offers that gives at most 500 buckets. It is never 0 here: the
// dashboard asks raw points only for ranges up to 500 s.
func dashboardBucket(d time.Duration) time.Duration {
	for _, w := range []time.Duration{time.Second, 10 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute,
		time.Hour, 3 * time.Hour, 6 * time.Hour, 24 * time.Hour} {
		if w >= d/500 {
			return w
		}
	}
	return 24 * time.Hour
}

// shortDuration formats d without zero minutes and seconds: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// printTable prints a Markdown table.
func printTable(header []string, rows [][]string) {
	fmt.Printf("| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for _, r := range rows {
		fmt.Printf("| %s |\n", strings.Join(r, " | "))
	}
	fmt.Println()
}
