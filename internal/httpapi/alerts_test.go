package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/alert"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// The alert service fits the API as it is: main needs no adapter.
var _ httpapi.Alerts = (*alert.Service)(nil)

// otherTenantKey is an admin key of another tenant.
const otherTenantKey = "ak_other.secret"

// tenantsRegistry is fakeRegistry with an admin key of a second tenant.
type tenantsRegistry struct{ fakeRegistry }

func (r tenantsRegistry) AuthenticateAPIKey(ctx context.Context, key string) (*tether.APIKey, error) {
	if key == otherTenantKey {
		return &tether.APIKey{TenantID: "other", ID: "ak_other", Role: tether.RoleAdmin}, nil
	}
	return r.fakeRegistry.AuthenticateAPIKey(ctx, key)
}

type nopBus struct{}

func (nopBus) PublishEvent(context.Context, string, string, string, []byte) error { return nil }

// newAlertAPI runs the API over a real alert service on a real SQLite
// file, and returns it with the service.
func newAlertAPI(t *testing.T) (*stateAPI, *alert.Service) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, id := range []string{tether.DefaultTenantID, "other"} {
		if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	svc := alert.New(db, nopBus{}, alert.Options{})
	srv, err := httpapi.New(tenantsRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: httpapi.Services{Alerts: svc},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &stateAPI{url: serve(t, srv), srv: srv}, svc
}

func TestAlertsAPI(t *testing.T) {
	ctx := context.Background()
	api, svc := newAlertAPI(t)
	raise := func(t *testing.T, device string) *tether.Alert {
		t.Helper()
		a, err := svc.Signal(ctx, tether.DefaultTenantID, "r1", device, tether.RuleAction{AlertType: "overheat", Severity: "critical"},
			true, time.Now(), map[string]any{"temp": 95.0})
		if err != nil || a == nil {
			t.Fatalf("Signal = %+v, %v", a, err)
		}
		return a
	}

	t.Run("follows an alert through acknowledge and clear, with who and when", func(t *testing.T) {
		al := raise(t, "d1")
		var got tether.Alert
		r := api.do(t, "GET", "/api/v1/alerts/"+al.ID, testKey, "")
		if r.status != http.StatusOK {
			t.Fatalf("GET: %d %s", r.status, r.body)
		}
		r.decode(t, &got)
		if got.ID != al.ID || got.Status != tether.AlertActive || got.Values["temp"] != 95.0 {
			t.Errorf("GET = %+v", got)
		}

		r = api.do(t, "POST", "/api/v1/alerts/"+al.ID+"/acknowledge", testKey, "")
		r.decode(t, &got)
		if r.status != http.StatusOK || got.Status != tether.AlertAcknowledged || got.AcknowledgedBy != "api:ak_test" || got.AcknowledgedAt == nil {
			t.Fatalf("acknowledge: %d %+v", r.status, got)
		}
		r = api.do(t, "POST", "/api/v1/alerts/"+al.ID+"/clear", testKey, "")
		r.decode(t, &got)
		if r.status != http.StatusOK || got.Status != tether.AlertCleared || got.ClearedBy != "api:ak_test" || got.ClearedAt == nil {
			t.Fatalf("clear: %d %+v", r.status, got)
		}
		r = api.do(t, "POST", "/api/v1/alerts/"+al.ID+"/acknowledge", testKey, "")
		if r.status != http.StatusConflict || r.problem(t).Code != tether.ECONFLICT {
			t.Errorf("acknowledge a cleared alert: %d %s", r.status, r.body)
		}
	})

	t.Run("lists alerts by status and device, in pages", func(t *testing.T) {
		raise(t, "d2")
		raise(t, "d3")
		var page struct {
			Alerts    []tether.Alert `json:"alerts"`
			NextAfter string         `json:"next_after"`
		}
		api.do(t, "GET", "/api/v1/alerts?status=open&limit=1", testKey, "").decode(t, &page)
		if len(page.Alerts) != 1 || page.Alerts[0].DeviceID != "d3" || page.NextAfter != page.Alerts[0].ID {
			t.Fatalf("first page %+v", page)
		}
		api.do(t, "GET", "/api/v1/alerts?status=open&limit=1&after="+page.NextAfter, testKey, "").decode(t, &page)
		if len(page.Alerts) != 1 || page.Alerts[0].DeviceID != "d2" {
			t.Fatalf("second page %+v", page)
		}
		page.NextAfter = ""
		api.do(t, "GET", "/api/v1/alerts?device=d1", testKey, "").decode(t, &page)
		if len(page.Alerts) != 1 || page.Alerts[0].Status != tether.AlertCleared || page.NextAfter != "" {
			t.Errorf("device d1: %+v", page)
		}
		for _, q := range []string{"status=loud", "limit=0", "limit=x"} {
			if r := api.do(t, "GET", "/api/v1/alerts?"+q, testKey, ""); r.status != http.StatusBadRequest {
				t.Errorf("?%s: %d %s", q, r.status, r.body)
			}
		}
	})

	t.Run("another tenant sees none of them", func(t *testing.T) {
		al := raise(t, "d4")
		for _, req := range [][2]string{{"GET", "/api/v1/alerts/" + al.ID}, {"POST", "/api/v1/alerts/" + al.ID + "/acknowledge"}, {"POST", "/api/v1/alerts/" + al.ID + "/clear"}} {
			if r := api.do(t, req[0], req[1], otherTenantKey, ""); r.status != http.StatusNotFound {
				t.Errorf("%s %s by another tenant: %d %s", req[0], req[1], r.status, r.body)
			}
		}
		var page struct{ Alerts []tether.Alert }
		api.do(t, "GET", "/api/v1/alerts", otherTenantKey, "").decode(t, &page)
		if len(page.Alerts) != 0 {
			t.Errorf("the other tenant lists %+v", page.Alerts)
		}
	})

	t.Run("manages channels and never returns a secret", func(t *testing.T) {
		r := api.do(t, "POST", "/api/v1/alert-channels", testKey,
			`{"kind":"webhook","url":"https://example.com/hook","secret":"s3cret","min_severity":"warning","rate_per_minute":5}`)
		if r.status != http.StatusCreated || strings.Contains(string(r.body), "s3cret") {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		var ch struct {
			ID            string `json:"id"`
			Kind          string `json:"kind"`
			URL           string `json:"url"`
			RatePerMinute int    `json:"rate_per_minute"`
			Dropped       uint64 `json:"dropped"`
		}
		r.decode(t, &ch)
		if ch.ID == "" || ch.Kind != "webhook" || ch.RatePerMinute != 5 || r.header.Get("Location") != "/api/v1/alert-channels/"+ch.ID {
			t.Errorf("created %+v, Location %q", ch, r.header.Get("Location"))
		}
		r = api.do(t, "POST", "/api/v1/alert-channels", testKey,
			`{"kind":"email","smtp_addr":"mail.example.com:25","from":"a@example.com","to":["b@example.com"]}`)
		if r.status != http.StatusCreated {
			t.Fatalf("create e-mail: %d %s", r.status, r.body)
		}
		for _, body := range []string{`{"kind":"webhook","url":"http://example.com/x","secret":"k"}`, `{"kind":"pager"}`, `{"kind":"webhook","colour":"red"}`} {
			if r := api.do(t, "POST", "/api/v1/alert-channels", testKey, body); r.status != http.StatusBadRequest {
				t.Errorf("create %s: %d %s", body, r.status, r.body)
			}
		}
		r = api.do(t, "GET", "/api/v1/alert-channels", testKey, "")
		var list struct{ Channels []map[string]any }
		r.decode(t, &list)
		if len(list.Channels) != 2 || strings.Contains(string(r.body), "s3cret") || strings.Contains(string(r.body), "secret") {
			t.Errorf("list: %s", r.body)
		}
		if r := api.do(t, "GET", "/api/v1/alert-channels/"+ch.ID, testKey, ""); r.status != http.StatusOK || strings.Contains(string(r.body), "s3cret") {
			t.Errorf("get: %d %s", r.status, r.body)
		}
		if r := api.do(t, "GET", "/api/v1/alert-channels/"+ch.ID, otherTenantKey, ""); r.status != http.StatusNotFound {
			t.Errorf("get by another tenant: %d %s", r.status, r.body)
		}
		if r := api.do(t, "DELETE", "/api/v1/alert-channels/"+ch.ID, otherTenantKey, ""); r.status != http.StatusNotFound {
			t.Errorf("delete by another tenant: %d %s", r.status, r.body)
		}
		if r := api.do(t, "DELETE", "/api/v1/alert-channels/"+ch.ID, testKey, ""); r.status != http.StatusNoContent {
			t.Errorf("delete: %d %s", r.status, r.body)
		}
		if r := api.do(t, "GET", "/api/v1/alert-channels/"+ch.ID, testKey, ""); r.status != http.StatusNotFound {
			t.Errorf("get after the delete: %d %s", r.status, r.body)
		}
	})
}

func TestAlertsAPIWithoutTheService(t *testing.T) {
	api := newStateAPI(t)
	if r := api.do(t, "GET", "/api/v1/alerts", testKey, ""); r.status != http.StatusServiceUnavailable || r.problem(t).Code != tether.EUNAVAILABLE {
		t.Errorf("GET /api/v1/alerts without the alert service: %d %s", r.status, r.body)
	}
}
