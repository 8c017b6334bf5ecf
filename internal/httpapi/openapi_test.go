package httpapi_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/stream"
	"github.com/tether-iot/tether/internal/telemetry"
)

// openAPIDoc is the part of an OpenAPI document the tests read.
type openAPIDoc struct {
	OpenAPI  string                                `json:"openapi"`
	Security []map[string][]string                 `json:"security"`
	Paths    map[string]map[string]json.RawMessage `json:"paths"`
}

// operation is one method of a path. Security is a pointer so that an
// explicit "security": [] (no key needed) differs from an absent one
// (the document's global requirement applies).
type operation struct {
	OperationID string                 `json:"operationId"`
	Security    *[]map[string][]string `json:"security"`
	RequestBody *struct {
		Content map[string]json.RawMessage `json:"content"`
	} `json:"requestBody"`
	Responses map[string]json.RawMessage `json:"responses"`
}

// methods are the keys of a path item that name operations.
var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// route is one documented operation.
type route struct {
	method, path string
	op           operation
}

func (r route) String() string { return r.method + " " + r.path }

// loadOpenAPI reads openapi.json and returns its bytes, its generic tree
// (for $ref resolution) and its operations in a stable order.
func loadOpenAPI(t *testing.T) (raw []byte, tree map[string]any, doc openAPIDoc, routes []route) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json does not have the shape of an OpenAPI document: %v", err)
	}
	for path, item := range doc.Paths {
		for key, v := range item {
			if !slices.Contains(methods, key) {
				continue // parameters, summary, description
			}
			var op operation
			if err := json.Unmarshal(v, &op); err != nil {
				t.Fatalf("%s %s: %v", strings.ToUpper(key), path, err)
			}
			routes = append(routes, route{strings.ToUpper(key), path, op})
		}
	}
	slices.SortFunc(routes, func(a, b route) int { return strings.Compare(a.String(), b.String()) })
	return raw, tree, doc, routes
}

// newServer returns a server over fakes whose every call succeeds, so a
// request that reaches a handler answers with a success status unless the
// request itself is wrong (or names a thing the fakes do not have).
func newServer(t *testing.T) *httpapi.Server {
	t.Helper()
	sv, _, _ := fakeServices()
	// The live streams are mounted as cmd/tether mounts them, on a
	// closed hub: it answers 503 at once, where a live SSE stream would
	// never end the synchronous call.
	hub := stream.NewHub(stream.Options{})
	hub.Close()
	var srv *httpapi.Server
	auth := func(r *http.Request) (*tether.Principal, error) { return srv.Authenticate(r) }
	srv, err := httpapi.New(fakeRegistry{}, fakeTelemetry{}, fakeIngestor{}, fakeStats{}, httpapi.Options{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Services: sv,
		Mount: map[string]http.Handler{"GET /api/v1/stream": hub.WebSocket(auth), "GET /api/v1/stream/sse": hub.SSE(auth)},
	})
	if err != nil {
		t.Fatal(err)
	}
	// New binds a listener, which only Serve's shutdown closes.
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
	return srv
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// call sends method and a documented path, with its parameters set to
// "x", through h, with the API key if withKey.
func call(h http.Handler, method, path string, withKey bool) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x"), nil)
	if withKey {
		req.Header.Set("Authorization", "Bearer "+testKey)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// send sends a documented operation an empty body of a media type, with
// the credential it requires: a device token or a provisioning key where
// the operation says so, else the API key.
func send(h http.Handler, r route, mediaType string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(r.method, pathParam.ReplaceAllString(r.path, "x"), nil)
	auth := testKey
	requires := func(scheme string) bool {
		return r.op.Security != nil && slices.ContainsFunc(*r.op.Security, func(s map[string][]string) bool { return s[scheme] != nil })
	}
	switch {
	case requires("deviceToken"):
		auth = "pump-1.devsecret"
	case requires("provisioningKey"):
		auth = testProvisioningKey
	}
	req.Header.Set("Authorization", "Bearer "+auth)
	req.Header.Set("Content-Type", mediaType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// unrouted reports whether the mux found no handler for the request: a
// 405, or the catch-all's 404 problem for unknown /api/ paths.
func unrouted(rec *httptest.ResponseRecorder) bool {
	if rec.Code == http.StatusMethodNotAllowed {
		return true
	}
	var p httpapi.Problem
	return rec.Code == http.StatusNotFound &&
		json.Unmarshal(rec.Body.Bytes(), &p) == nil && strings.HasPrefix(p.Detail, "no API route")
}

func TestOpenAPI(t *testing.T) {
	raw, tree, doc, routes := loadOpenAPI(t)
	h := newServer(t).Handler()

	t.Run("the document is OpenAPI 3.1 JSON", func(t *testing.T) {
		if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
			t.Errorf("openapi is %q, want 3.1.x", doc.OpenAPI)
		}
		if len(routes) == 0 {
			t.Fatal("the document has no operations")
		}
	})

	t.Run("the document is indented with two spaces as json.Indent does it", func(t *testing.T) {
		var want bytes.Buffer
		if err := json.Indent(&want, bytes.TrimSpace(raw), "", "  "); err != nil {
			t.Fatal(err)
		}
		want.WriteByte('\n')
		if !bytes.Equal(raw, want.Bytes()) {
			t.Error("openapi.json is not tidy; reformat it with json.Indent (two spaces, one trailing newline)")
		}
	})

	t.Run("the server serves this document", func(t *testing.T) {
		rec := call(h, "GET", "/api/v1/openapi.json", false)
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), raw) {
			t.Errorf("GET /api/v1/openapi.json: status %d, body differs from openapi.json: %t", rec.Code, !bytes.Equal(rec.Body.Bytes(), raw))
		}
	})

	t.Run("every operation has a unique operationId and a 2xx response", func(t *testing.T) {
		seen := map[string]string{}
		for _, r := range routes {
			if r.op.OperationID == "" {
				t.Errorf("%s has no operationId", r)
			} else if other, dup := seen[r.op.OperationID]; dup {
				t.Errorf("%s and %s share operationId %q", other, r, r.op.OperationID)
			}
			seen[r.op.OperationID] = r.String()
			// A WebSocket's success is 101 Switching Protocols.
			if !slices.ContainsFunc(slices.Collect(maps.Keys(r.op.Responses)), func(s string) bool { return len(s) == 3 && s[0] == '2' || s == "101" }) {
				t.Errorf("%s has no 2xx (or 101) response", r)
			}
		}
	})

	t.Run("every $ref resolves and every component is referenced", func(t *testing.T) {
		refs := map[string]bool{}
		walkRefs(tree, func(ref string) { refs[ref] = true })
		for ref := range refs {
			if _, err := resolve(tree, ref); err != nil {
				t.Errorf("$ref %q: %v", ref, err)
			}
		}
		components, _ := tree["components"].(map[string]any)
		for _, kind := range []string{"schemas", "responses", "parameters", "headers", "requestBodies"} {
			group, _ := components[kind].(map[string]any)
			for name := range group {
				if ref := "#/components/" + kind + "/" + name; !refs[ref] {
					t.Errorf("%s is never referenced", ref)
				}
			}
		}
	})

	for _, r := range routes {
		t.Run(fmt.Sprintf("%s is served and answers with a documented status", r), func(t *testing.T) {
			rec := call(h, r.method, r.path, true)
			if unrouted(rec) {
				t.Fatalf("the server has no route for it: %d %s", rec.Code, rec.Body)
			}
			if _, ok := r.op.Responses[strconv.Itoa(rec.Code)]; !ok {
				t.Errorf("status %d is not among its responses; body %s", rec.Code, rec.Body)
			}
		})
	}

	for _, r := range routes {
		needsKey := len(doc.Security) > 0
		if r.op.Security != nil {
			needsKey = len(*r.op.Security) > 0
		}
		name := fmt.Sprintf("%s answers without an API key", r)
		if needsKey {
			name = fmt.Sprintf("%s refuses a request without an API key with 401", r)
		}
		t.Run(name, func(t *testing.T) {
			rec := call(h, r.method, r.path, false)
			switch {
			case needsKey && rec.Code != http.StatusUnauthorized:
				t.Errorf("status %d, want 401; body %s", rec.Code, rec.Body)
			case needsKey && r.op.Responses["401"] == nil:
				t.Error("401 is not among its responses")
			case !needsKey && r.op.RequestBody != nil && rec.Code != http.StatusBadRequest && rec.Code/100 != 2:
				// One that reads a body (signing in) cannot succeed
				// without one, but must not ask for a key either.
				t.Errorf("status %d, want 2xx or 400 for the missing body; body %s", rec.Code, rec.Body)
			case !needsKey && r.op.RequestBody == nil && rec.Code/100 != 2:
				t.Errorf("status %d, want 2xx; body %s", rec.Code, rec.Body)
			}
		})
	}

	t.Run("every media type a request body documents is read, and where 415 is documented another is refused with it", func(t *testing.T) {
		for _, r := range routes {
			if r.op.RequestBody == nil {
				continue
			}
			for _, mt := range slices.Sorted(maps.Keys(r.op.RequestBody.Content)) {
				if rec := send(h, r, mt); rec.Code == http.StatusUnsupportedMediaType || rec.Code == http.StatusUnauthorized {
					t.Errorf("%s with Content-Type %s: status %d; body %s", r, mt, rec.Code, rec.Body)
				}
			}
			if r.op.Responses["415"] != nil {
				if rec := send(h, r, "text/plain"); rec.Code != http.StatusUnsupportedMediaType {
					t.Errorf("%s with Content-Type text/plain: status %d, want 415; body %s", r, rec.Code, rec.Body)
				}
			}
		}
	})

	t.Run("the Problem schema lists every error code", func(t *testing.T) {
		schema, err := resolve(tree, "#/components/schemas/Problem/properties/code/enum")
		if err != nil {
			t.Fatal(err)
		}
		enum, _ := schema.([]any)
		for _, code := range []string{tether.EINVALID, tether.ENOTFOUND, tether.ECONFLICT, tether.EUNAUTHORIZED, tether.EFORBIDDEN,
			tether.ETOOLARGE, tether.ETOOMANY, tether.EUNSUPPORTED, tether.EUNAVAILABLE, tether.EINTERNAL} {
			if !slices.Contains(enum, any(code)) {
				t.Errorf("code %q is not in the enum %v", code, enum)
			}
		}
	})

	// The converse check is partial: the mux cannot list its patterns, so
	// a route on a path the document lacks altogether goes unnoticed, but
	// a method missing from a documented path does not. A path that
	// another documented path's template also matches is served by that
	// one (GET /api/v1/devices/import is the device "import"), so it is
	// documented there.
	t.Run("methods the document leaves out of a path are not served", func(t *testing.T) {
		for path, item := range doc.Paths {
			for _, m := range []string{"get", "post", "put", "patch", "delete"} {
				if _, ok := item[m]; ok || documentedElsewhere(doc, path, m) {
					continue
				}
				if rec := call(h, strings.ToUpper(m), path, true); !unrouted(rec) {
					t.Errorf("%s %s is served (%d) but not documented", strings.ToUpper(m), path, rec.Code)
				}
			}
		}
	})
}

// documentedElsewhere reports whether another documented path's template
// matches path literally and documents method m.
func documentedElsewhere(doc openAPIDoc, path, m string) bool {
	for other, item := range doc.Paths {
		if _, ok := item[m]; !ok || other == path || !strings.Contains(other, "{") {
			continue
		}
		parts := pathParam.Split(other, -1)
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		if regexp.MustCompile("^" + strings.Join(parts, "[^/]+") + "$").MatchString(path) {
			return true
		}
	}
	return false
}

// walkRefs calls f with every "$ref" value in v.
func walkRefs(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "$ref" {
				f(s)
				continue
			}
			walkRefs(e, f)
		}
	case []any:
		for _, e := range v {
			walkRefs(e, f)
		}
	}
}

// resolve follows a local JSON pointer reference, "#/a/b".
func resolve(tree map[string]any, ref string) (any, error) {
	pointer, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("not a reference within the document")
	}
	var v any = tree
	for _, tok := range strings.Split(pointer, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q is not inside an object", tok)
		}
		if v, ok = m[tok]; !ok {
			return nil, fmt.Errorf("no %q", tok)
		}
	}
	return v, nil
}

const testKey = "ak_test.secret"

// fakeRegistry knows one admin key, testKey, and answers every device
// call with the same device.
type fakeRegistry struct{}

var _ httpapi.Registry = fakeRegistry{}

func fakeDevice(id string) *tether.Device {
	return &tether.Device{TenantID: tether.DefaultTenantID, ID: id, Labels: map[string]string{}, Metadata: map[string]any{}}
}

// testOperatorKey and testViewerKey are keys of the roles below admin.
const (
	testOperatorKey = "ak_op.secret"
	testViewerKey   = "ak_view.secret"
)

func (fakeRegistry) AuthenticateAPIKey(_ context.Context, key string) (*tether.APIKey, error) {
	switch key {
	case testKey:
		return &tether.APIKey{TenantID: tether.DefaultTenantID, ID: "ak_test", Role: tether.RoleAdmin}, nil
	case testOperatorKey:
		return &tether.APIKey{TenantID: tether.DefaultTenantID, ID: "ak_op", Role: tether.RoleOperator}, nil
	case testViewerKey:
		return &tether.APIKey{TenantID: tether.DefaultTenantID, ID: "ak_view", Role: tether.RoleViewer}, nil
	}
	return nil, tether.Errorf(tether.EUNAUTHORIZED, "wrong API key")
}

func (fakeRegistry) CreateDevice(_ context.Context, _ string, d tether.Device) (*tether.Device, string, error) {
	return fakeDevice(d.ID), d.ID + ".secret", nil
}

func (fakeRegistry) Device(_ context.Context, _, id string) (*tether.Device, error) {
	return fakeDevice(id), nil
}

func (fakeRegistry) Devices(context.Context, tether.DeviceFilter) ([]*tether.Device, error) {
	return []*tether.Device{fakeDevice("x")}, nil
}

func (fakeRegistry) UpdateDevice(_ context.Context, _, id string, _ tether.DeviceUpdate) (*tether.Device, error) {
	return fakeDevice(id), nil
}

func (fakeRegistry) DeleteDevice(context.Context, string, string) error { return nil }

func (fakeRegistry) RotateToken(_ context.Context, _, id string) (string, error) {
	return id + ".secret", nil
}

// A device token is "<id>.devsecret"; certificates are refused.
func (fakeRegistry) AuthenticateDevice(_ context.Context, _, token string) (*tether.Device, error) {
	id, secret, _ := strings.Cut(token, ".")
	if secret != "devsecret" || !tether.ValidID(id) {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "wrong token")
	}
	return fakeDevice(id), nil
}

func (fakeRegistry) AuthenticateCertificate(context.Context, []*x509.Certificate) (*tether.Device, error) {
	return nil, tether.Errorf(tether.EUNAUTHORIZED, "no certificates here")
}

func (fakeRegistry) AddCertificate(_ context.Context, _, id, _ string) (*tether.Certificate, error) {
	return &tether.Certificate{DeviceID: id, Fingerprint: "ab"}, nil
}

func (fakeRegistry) Certificates(context.Context, string, string) ([]*tether.Certificate, error) {
	return []*tether.Certificate{}, nil
}

func (fakeRegistry) RevokeCertificate(context.Context, string, string, string) error { return nil }

func (fakeRegistry) AddCA(context.Context, string, string) (*tether.CA, error) {
	return &tether.CA{ID: "ab"}, nil
}

func (fakeRegistry) CAs(context.Context, string) ([]*tether.CA, error) { return []*tether.CA{}, nil }

func (fakeRegistry) DeleteCA(context.Context, string, string) error { return nil }

func (fakeRegistry) RotatePSK(context.Context, string, string) (string, error) {
	return "0123456789abcdef0123456789abcdef", nil
}

func (fakeRegistry) DeletePSK(context.Context, string, string) error { return nil }

// fakeIngestor takes everything.
type fakeIngestor struct{}

var _ httpapi.Ingestor = fakeIngestor{}

func (fakeIngestor) Accept(context.Context, *tether.Device, []byte) (int, error) { return 1, nil }
func (fakeIngestor) AcceptCBOR(context.Context, *tether.Device, []byte) (int, error) {
	return 1, nil
}
func (fakeIngestor) Limits() telemetry.Limits                   { return telemetry.DefaultLimits() }
func (fakeIngestor) Allow(*tether.Device) (bool, time.Duration) { return true, 0 }

// fakeTelemetry has no points.
type fakeTelemetry struct{}

var _ httpapi.Telemetry = fakeTelemetry{}

func (fakeTelemetry) Telemetry(context.Context, tether.TelemetryQuery) ([]tether.Series, error) {
	return nil, nil
}

func (fakeTelemetry) Latest(context.Context, string, string) ([]tether.Latest, error) {
	return nil, nil
}

// fakeStats counts nothing.
type fakeStats struct{}

var _ httpapi.Stats = fakeStats{}

func (fakeStats) Refused(string) uint64 { return 0 }
func (fakeStats) Stats() any            { return struct{}{} }
