package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/telemetry"
)

// decodingIngestor runs the real payload decoder and then fails the way
// busErr says; allow false refuses every message over the rate.
type decodingIngestor struct {
	limits telemetry.Limits
	busErr error
	deny   bool
	got    []string
}

func (in *decodingIngestor) Accept(_ context.Context, _ *tether.Device, payload []byte) (int, error) {
	points, err := telemetry.Decode(payload, time.Now(), in.limits)
	if err != nil {
		return 0, err
	}
	if in.busErr != nil {
		return 0, in.busErr
	}
	in.got = append(in.got, string(payload))
	return len(points), nil
}

func (in *decodingIngestor) Limits() telemetry.Limits { return in.limits }

func (in *decodingIngestor) Allow(*tether.Device) (bool, time.Duration) {
	if in.deny {
		return false, 1500 * time.Millisecond
	}
	return true, 0
}

func ingestHandler(t testing.TB, in *decodingIngestor) http.Handler {
	t.Helper()
	srv, err := httpapi.New(fakeRegistry{}, fakeTelemetry{}, in, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv.Handler()
}

func TestIngest(t *testing.T) {
	small := telemetry.DefaultLimits()
	small.MaxPayload = 64
	busDown := errors.Join(errors.New("bus down"), tether.Errorf(tether.EUNAVAILABLE, "the message could not be stored; send it again"))
	tests := []struct {
		name        string
		auth        string
		contentType string
		body        string
		in          *decodingIngestor
		status      int
		reason      string
		header      string // a header the answer must carry
	}{
		{name: "a device's message is accepted with 202", auth: "pump-1.devsecret", body: `{"temp":21.5}`, status: 202},
		{name: "the batch form is accepted", auth: "pump-1.devsecret", body: `[{"ts":1700000000000,"a":1},{"ts":1700000001000,"a":2}]`, status: 202},
		{name: "application/json with a charset is accepted", auth: "pump-1.devsecret", contentType: "application/json; charset=utf-8", body: `{"a":1}`, status: 202},
		{name: "no credential is 401", body: `{"a":1}`, status: 401, header: "WWW-Authenticate"},
		{name: "a wrong token is 401", auth: "pump-1.wrong", body: `{"a":1}`, status: 401},
		{name: "an API key is 403", auth: testKey, body: `{"a":1}`, status: 403},
		{name: "a payload over the limit is 413", auth: "pump-1.devsecret", body: `{"a":"` + strings.Repeat("x", 100) + `"}`,
			in: &decodingIngestor{limits: small}, status: 413},
		{name: "a body that is not JSON is 400", auth: "pump-1.devsecret", body: `{"a":`, status: 400, reason: "malformed_json"},
		{name: "a content type other than JSON is 415", auth: "pump-1.devsecret", contentType: "text/plain", body: `{"a":1}`, status: 415},
		{name: "JSON that breaks a telemetry rule is 422 with its reason", auth: "pump-1.devsecret", body: `{}`, status: 422, reason: "no_values"},
		{name: "a device over its publish rate is 429 with Retry-After", auth: "pump-1.devsecret", body: `{"a":1}`,
			in: &decodingIngestor{limits: telemetry.DefaultLimits(), deny: true}, status: 429, header: "Retry-After"},
		{name: "a bus failure is 503 with Retry-After", auth: "pump-1.devsecret", body: `{"a":1}`,
			in: &decodingIngestor{limits: telemetry.DefaultLimits(), busErr: busDown}, status: 503, header: "Retry-After"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in == nil {
				in = &decodingIngestor{limits: telemetry.DefaultLimits()}
			}
			req := httptest.NewRequest("POST", "/api/v1/ingest", strings.NewReader(tt.body))
			if tt.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tt.auth)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			ingestHandler(t, in).ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if tt.header != "" && rec.Header().Get(tt.header) == "" {
				t.Errorf("no %s header", tt.header)
			}
			if tt.status == 202 {
				if len(in.got) != 1 || in.got[0] != tt.body {
					t.Errorf("ingested %q, want the body", in.got)
				}
				return
			}
			if len(in.got) != 0 {
				t.Errorf("a refused request was ingested: %q", in.got)
			}
			var p httpapi.Problem
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != tt.status || p.Detail == "" {
				t.Errorf("problem %+v, %v", p, err)
			}
			if p.Reason != tt.reason {
				t.Errorf("reason %q, want %q", p.Reason, tt.reason)
			}
		})
	}
}

// FuzzIngest sends any body through the ingest handler: it never answers
// 5xx, and it answers 202 exactly when the payload decoder accepts the
// body.
func FuzzIngest(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[{"ts":1,"a":1}]`, `{"a":{"b":[1]}}`, `{`, ``, `null`, `{"ts":"2024-01-01T00:00:00Z","x":"y"}`} {
		f.Add(s)
	}
	in := &decodingIngestor{limits: telemetry.DefaultLimits()}
	h := ingestHandler(f, in)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/api/v1/ingest", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer pump-1.devsecret")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		_, err := telemetry.Decode([]byte(body), time.Now(), in.limits)
		switch {
		case rec.Code >= 500:
			t.Fatalf("status %d for %q", rec.Code, body)
		case (err == nil) != (rec.Code == 202):
			t.Fatalf("status %d for %q, decoder says %v", rec.Code, body, err)
		}
	})
}
