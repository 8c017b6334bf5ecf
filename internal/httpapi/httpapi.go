// Package httpapi is Tether's REST API under /api/v1: devices and their
// credentials, telemetry queries and latest values, authenticated with API
// keys. Errors are RFC 9457 problem details; the mapping from
// [tether.Error] codes to HTTP statuses lives here and nowhere else.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/tether-iot/tether"
)

//go:embed openapi.json
var openapiJSON []byte

// Registry is what the API needs of the device registry.
type Registry interface {
	AuthenticateAPIKey(ctx context.Context, key string) (*tether.APIKey, error)
	CreateDevice(ctx context.Context, tenant string, d tether.Device) (*tether.Device, string, error)
	Device(ctx context.Context, tenant, id string) (*tether.Device, error)
	Devices(ctx context.Context, f tether.DeviceFilter) ([]*tether.Device, error)
	UpdateDevice(ctx context.Context, tenant, id string, u tether.DeviceUpdate) (*tether.Device, error)
	DeleteDevice(ctx context.Context, tenant, id string) error
	RotateToken(ctx context.Context, tenant, id string) (string, error)
}

// Telemetry is what the API reads of stored telemetry.
type Telemetry interface {
	Telemetry(ctx context.Context, q tether.TelemetryQuery) ([]tether.Series, error)
	Latest(ctx context.Context, tenantID, deviceID string) ([]tether.Latest, error)
}

// Stats reports counters of the running node.
type Stats interface {
	Refused(deviceID string) uint64
	Stats() any
}

// Options configure a [Server].
type Options struct {
	Addr   string
	Logger *slog.Logger
}

// Server is the HTTP API server.
type Server struct {
	reg   Registry
	tel   Telemetry
	stats Stats
	log   *slog.Logger
	now   func() time.Time

	ln  net.Listener
	srv *http.Server
}

// New builds the server and binds its listener, so that Addr is known
// before Serve.
func New(reg Registry, tel Telemetry, stats Stats, o Options) (*Server, error) {
	s := &Server{reg: reg, tel: tel, stats: stats, log: o.Logger, now: time.Now}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", o.Addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; it blocks.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapiJSON)
	})
	api := func(pattern string, h func(http.ResponseWriter, *http.Request, *tether.APIKey) error) {
		mux.Handle(pattern, s.authenticated(h))
	}
	api("POST /api/v1/devices", s.createDevice)
	api("GET /api/v1/devices", s.listDevices)
	api("GET /api/v1/devices/{id}", s.getDevice)
	api("PATCH /api/v1/devices/{id}", s.updateDevice)
	api("DELETE /api/v1/devices/{id}", s.deleteDevice)
	api("POST /api/v1/devices/{id}/token", s.rotateToken)
	api("GET /api/v1/devices/{id}/telemetry", s.telemetry)
	api("GET /api/v1/devices/{id}/latest", s.latest)
	api("GET /api/v1/stats", s.getStats)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.problem(w, r, tether.Errorf(tether.ENOTFOUND, "no API route %s %s; see /api/v1/openapi.json", r.Method, r.URL.Path))
	})
	return mux
}

// authenticated checks the bearer API key and runs h with it.
func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request, *tether.APIKey) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := s.reg.AuthenticateAPIKey(r.Context(), bearer(r))
		if err == nil && key.Role != tether.RoleAdmin {
			err = tether.Errorf(tether.EFORBIDDEN, "API key %s has role %s, which may not do this", key.ID, key.Role)
		}
		if err != nil {
			if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
			}
			s.problem(w, r, err)
			return
		}
		if err := h(w, r, key); err != nil {
			s.problem(w, r, err)
		}
	})
}

func bearer(r *http.Request) string {
	const prefix = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) > len(prefix) && (h[:len(prefix)] == prefix || h[:len(prefix)] == "bearer ") {
		return h[len(prefix):]
	}
	return ""
}

// statuses maps error codes to HTTP statuses: the only such table.
var statuses = map[string]int{
	tether.EINVALID:      http.StatusBadRequest,
	tether.ENOTFOUND:     http.StatusNotFound,
	tether.ECONFLICT:     http.StatusConflict,
	tether.EUNAUTHORIZED: http.StatusUnauthorized,
	tether.EFORBIDDEN:    http.StatusForbidden,
	tether.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	tether.EUNAVAILABLE:  http.StatusServiceUnavailable,
	tether.EINTERNAL:     http.StatusInternalServerError,
}

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

func (s *Server) problem(w http.ResponseWriter, r *http.Request, err error) {
	code := tether.ErrorCode(err)
	status, ok := statuses[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if code == tether.EINTERNAL {
		s.log.Error("api", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{
		Type: "about:blank", Title: http.StatusText(status), Status: status,
		Detail: tether.ErrorMessage(err), Code: code,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// maxBody bounds a request body of the management API.
const maxBody = 1 << 20

// decodeBody reads a JSON body into v, refusing unknown fields so that a
// misspelt field is an error rather than silently ignored.
func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
			return tether.Errorf(tether.EINVALID, "Content-Type %q is not application/json", ct)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return tether.Errorf(tether.ETOOLARGE, "the request body is over %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return tether.Errorf(tether.EINVALID, "the request body is empty; send a JSON object")
		}
		return tether.Errorf(tether.EINVALID, "the request body is not valid JSON: %v", err)
	}
	if dec.More() {
		return tether.Errorf(tether.EINVALID, "the request body has data after the JSON object")
	}
	return nil
}
