package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/ingest"
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

func (in *decodingIngestor) AcceptCBOR(ctx context.Context, d *tether.Device, payload []byte) (int, error) {
	js, err := telemetry.CBORToJSON(payload, in.limits)
	if err != nil {
		return 0, err
	}
	return in.Accept(ctx, d, js)
}

func (in *decodingIngestor) Limits() telemetry.Limits { return in.limits }

func (in *decodingIngestor) Allow(*tether.Device) (bool, time.Duration) {
	if in.deny {
		return false, 1500 * time.Millisecond
	}
	return true, 0
}

func ingestServer(t testing.TB, in *decodingIngestor) *httpapi.Server {
	t.Helper()
	srv, err := httpapi.New(fakeRegistry{}, fakeTelemetry{}, in, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func ingestHandler(t testing.TB, in *decodingIngestor) http.Handler {
	t.Helper()
	srv := ingestServer(t, in)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv.Handler()
}

// serve runs srv on its listener until the test ends and returns its base
// URL.
func serve(t *testing.T, srv *httpapi.Server) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + srv.Addr()
}

// CBOR payloads of the tests.
const (
	// {"temp": 21.5 (a half float), "on": true}
	cborObject = "\xa2\x64temp\xf9\x4d\x60\x62on\xf5"
	// [{"a": 1, "ts": 1(1700000000)}, {"a": 2, "ts": 1(1700000001)}]
	cborBatch = "\x82\xa2\x61a\x01\x62ts\xc1\x1a\x65\x53\xf1\x00\xa2\x61a\x02\x62ts\xc1\x1a\x65\x53\xf1\x01"
)

func TestIngest(t *testing.T) {
	small := telemetry.DefaultLimits()
	small.MaxPayload = 64
	busDown := errors.Join(errors.New("bus down"), tether.Errorf(tether.EUNAVAILABLE, "the message could not be stored; send it again"))
	const dev = "pump-1.devsecret"
	tests := []struct {
		name        string
		auth        string
		contentType string
		body        string
		in          *decodingIngestor
		status      int
		reason      string
		header      string // a header the answer must carry
		ingested    string // what the ingest path got, for a 202; the body when empty
	}{
		{name: "a device's message is accepted with 202", auth: dev, body: `{"temp":21.5}`, status: 202},
		{name: "the batch form is accepted", auth: dev, body: `[{"ts":1700000000000,"a":1},{"ts":1700000001000,"a":2}]`, status: 202},
		{name: "application/json with a charset is accepted", auth: dev, contentType: "application/json; charset=utf-8", body: `{"a":1}`, status: 202},
		{name: "a CBOR payload is accepted with 202 and ingested as its JSON, in key order", auth: dev, contentType: "application/cbor",
			body: cborObject, status: 202, ingested: `{"temp":21.5,"on":true}`},
		{name: "a CBOR batch with tag 1 times is accepted", auth: dev, contentType: "application/cbor",
			body: cborBatch, status: 202, ingested: `[{"a":1,"ts":"2023-11-14T22:13:20Z"},{"a":2,"ts":"2023-11-14T22:13:21Z"}]`},
		{name: "no credential is 401", body: `{"a":1}`, status: 401, header: "WWW-Authenticate"},
		{name: "a wrong token is 401", auth: "pump-1.wrong", body: `{"a":1}`, status: 401},
		{name: "an API key is 403", auth: testKey, body: `{"a":1}`, status: 403},
		{name: "a payload over the limit is 413", auth: dev, body: `{"a":"` + strings.Repeat("x", 100) + `"}`,
			in: &decodingIngestor{limits: small}, status: 413},
		{name: "a CBOR payload over the limit is 413", auth: dev, contentType: "application/cbor",
			body: "\xa1\x61a\x78\x64" + strings.Repeat("x", 100), in: &decodingIngestor{limits: small}, status: 413},
		{name: "a CBOR payload whose JSON would be over the limit is 413", auth: dev, contentType: "application/cbor",
			body: "\xa1\x61a\x78\x30" + strings.Repeat("\x01", 48), in: &decodingIngestor{limits: small}, status: 413, reason: "too_large"},
		{name: "a body that is not JSON is 400", auth: dev, body: `{"a":`, status: 400, reason: "malformed_json"},
		{name: "a body that is not CBOR is 400", auth: dev, contentType: "application/cbor", body: "\xa1\x64te", status: 400, reason: "malformed_cbor"},
		{name: "JSON sent as CBOR is 400", auth: dev, contentType: "application/cbor", body: `{"a":1}`, status: 400, reason: "malformed_cbor"},
		{name: "a content type other than JSON or CBOR is 415", auth: dev, contentType: "text/plain", body: `{"a":1}`, status: 415},
		{name: "a malformed content type is 415", auth: dev, contentType: "application/", body: `{"a":1}`, status: 415},
		{name: "JSON that breaks a telemetry rule is 422 with its reason", auth: dev, body: `{}`, status: 422, reason: "no_values"},
		{name: "CBOR that breaks a telemetry rule is 422 with the same reason", auth: dev, contentType: "application/cbor",
			body: "\xa1\x61a\xf6", status: 422, reason: "bad_value"},
		{name: "a CBOR value JSON cannot hold is 422", auth: dev, contentType: "application/cbor",
			body: "\xa1\x63raw\x42\x01\x02", status: 422, reason: "bad_value"},
		{name: "a device over its publish rate is 429 with Retry-After", auth: dev, body: `{"a":1}`,
			in: &decodingIngestor{limits: telemetry.DefaultLimits(), deny: true}, status: 429, header: "Retry-After"},
		{name: "a CBOR message over the publish rate is 429 too", auth: dev, contentType: "application/cbor", body: cborObject,
			in: &decodingIngestor{limits: telemetry.DefaultLimits(), deny: true}, status: 429, header: "Retry-After"},
		{name: "a bus failure is 503 with Retry-After", auth: dev, body: `{"a":1}`,
			in: &decodingIngestor{limits: telemetry.DefaultLimits(), busErr: busDown}, status: 503, header: "Retry-After"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in == nil {
				in = &decodingIngestor{limits: telemetry.DefaultLimits()}
			}
			url := serve(t, ingestServer(t, in))
			req, err := http.NewRequest("POST", url+"/api/v1/ingest", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tt.auth)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			answer, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, answer)
			}
			if tt.header != "" && resp.Header.Get(tt.header) == "" {
				t.Errorf("no %s header", tt.header)
			}
			if tt.status == 202 {
				want := tt.ingested
				if want == "" {
					want = tt.body
				}
				if len(in.got) != 1 || in.got[0] != want {
					t.Errorf("ingested %q, want %q", in.got, want)
				}
				return
			}
			if len(in.got) != 0 {
				t.Errorf("a refused request was ingested: %q", in.got)
			}
			var p httpapi.Problem
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if err := json.Unmarshal(answer, &p); err != nil || p.Status != tt.status || p.Detail == "" {
				t.Errorf("problem %+v, %v", p, err)
			}
			if p.Reason != tt.reason {
				t.Errorf("reason %q, want %q", p.Reason, tt.reason)
			}
		})
	}
}

// TestIngestCountsRefusals runs the real ingest path: a payload refused
// by the payload rules is counted by reason, whether it came as JSON or as
// CBOR, and so is CBOR the conversion refuses.
func TestIngestCountsRefusals(t *testing.T) {
	in := ingest.New(nopPublisher{}, telemetry.Limits{}, 0, slog.New(slog.DiscardHandler))
	srv, err := httpapi.New(fakeRegistry{}, fakeTelemetry{}, in, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, srv)
	post := func(contentType, body string) int {
		t.Helper()
		req, err := http.NewRequest("POST", url+"/api/v1/ingest", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer pump-1.devsecret")
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, r := range []struct {
		contentType, body string
		want              int
	}{
		{"application/json", `{"a":null}`, 422},
		{"application/cbor", "\xa1\x61a\xf6", 422},            // {"a": null}
		{"application/cbor", "\xa2\x62ts\x61x\x61a\x01", 422}, // {"ts": "x", "a": 1}
		{"application/cbor", cborObject, 202},
		{"application/cbor", "\xa1\x61a", 400}, // truncated: malformed_cbor
		{"application/json", `{"a":1}`, 202},
	} {
		if got := post(r.contentType, r.body); got != r.want {
			t.Fatalf("%s %q: status %d, want %d", r.contentType, r.body, got, r.want)
		}
	}
	want := map[string]uint64{"bad_value": 2, "bad_ts": 1, "malformed_cbor": 1}
	if got := in.Stats().Refused; !maps.Equal(got, want) {
		t.Errorf("refusals counted %v, want %v", got, want)
	}
	if got := in.Stats().Accepted; got != 2 {
		t.Errorf("%d messages accepted, want 2", got)
	}
	if got := in.Refused("pump-1"); got != 4 {
		t.Errorf("%d refusals counted for pump-1, want 4", got)
	}
}

// nopPublisher is a bus that stores everything at once.
type nopPublisher struct{}

func (nopPublisher) PublishTelemetry(context.Context, string, string, string, []byte) error {
	return nil
}

// FuzzIngest sends any body with any Content-Type through the ingest
// handler: it never answers 5xx; it answers 415 exactly when the type is
// neither JSON (or none) nor CBOR; otherwise it answers 202 exactly when
// the payload decoder for that type accepts the body.
func FuzzIngest(f *testing.F) {
	for _, s := range []struct{ contentType, body string }{
		{"", `{"a":1}`},
		{"application/json", `[{"ts":1,"a":1}]`},
		{"application/json; charset=utf-8", `{"a":{"b":[1]}}`},
		{"", `{`},
		{"", ``},
		{"application/json", `null`},
		{"", `{"ts":"2024-01-01T00:00:00Z","x":"y"}`},
		{"application/cbor", cborObject},
		{"application/cbor", cborBatch},
		{"application/cbor", "\xbf\x61a\x9f\x01\xff\x61b\x7f\x62hi\x61!\xff\xff"}, // indefinite lengths
		{"application/cbor", "\xd9\xd9\xf7\xa1\x61a\x01"},                         // self-described
		{"application/cbor", "\xa1\x61a\xf9\x7e\x00"},                             // NaN
		{"application/cbor", "\xa1\x01\x02"},                                      // an integer key
		{"application/cbor", "\xa1\x61a\xf6"},                                     // null
		{"application/cbor", ""},
		{"application/cbor", `{"a":1}`},
		{"text/plain", `{"a":1}`},
	} {
		f.Add(s.contentType, []byte(s.body))
	}
	in := &decodingIngestor{limits: telemetry.DefaultLimits()}
	h := ingestHandler(f, in)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req := httptest.NewRequest("POST", "/api/v1/ingest", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer pump-1.devsecret")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		mt, _, mterr := mime.ParseMediaType(contentType)
		var err error
		switch {
		case contentType == "" || mterr == nil && mt == "application/json":
			_, err = telemetry.Decode(body, time.Now(), in.limits)
		case mterr == nil && mt == "application/cbor":
			_, err = telemetry.DecodeCBOR(body, time.Now(), in.limits)
		default:
			if rec.Code != http.StatusUnsupportedMediaType {
				t.Fatalf("status %d for Content-Type %q, want 415", rec.Code, contentType)
			}
			return
		}
		switch {
		case rec.Code >= 500:
			t.Fatalf("status %d for %q %q", rec.Code, contentType, body)
		case (err == nil) != (rec.Code == 202):
			t.Fatalf("status %d for %q %q, decoder says %v", rec.Code, contentType, body, err)
		}
	})
}
