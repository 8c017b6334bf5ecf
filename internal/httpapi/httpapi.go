// Package httpapi is Tether's REST API under /api/v1: devices and their
// credentials, telemetry queries and latest values, profiles, shadows,
// commands, presence, quarantined points, provisioning, rules, alerts,
// the fleet overview, users and API keys; callers authenticate with an
// API key or a user's session cookie (sign-in, CSRF tokens), and every
// route names the least role that may call it. It also serves the HTTP
// endpoints of devices (ingest, their shadow, command long-poll and
// replies, self-registration with a provisioning key). Errors are RFC 9457 problem details; the mapping from
// [tether.Error] codes to HTTP statuses lives here and nowhere else.
package httpapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
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

	AuthenticateDevice(ctx context.Context, deviceID, token string) (*tether.Device, error)
	AuthenticateCertificate(ctx context.Context, chain []*x509.Certificate) (*tether.Device, error)
	AddCertificate(ctx context.Context, tenant, deviceID, pem string) (*tether.Certificate, error)
	Certificates(ctx context.Context, tenant, deviceID string) ([]*tether.Certificate, error)
	RevokeCertificate(ctx context.Context, tenant, deviceID, fingerprint string) error
	AddCA(ctx context.Context, tenant, pem string) (*tether.CA, error)
	CAs(ctx context.Context, tenant string) ([]*tether.CA, error)
	DeleteCA(ctx context.Context, tenant, id string) error
	RotatePSK(ctx context.Context, tenant, deviceID string) (string, error)
	DeletePSK(ctx context.Context, tenant, deviceID string) error
}

// Ingestor takes a device's telemetry and returns once the bus has it.
type Ingestor interface {
	Accept(ctx context.Context, d *tether.Device, payload []byte) (int, error)
	// AcceptCBOR is Accept for a CBOR payload, converted to the same JSON.
	AcceptCBOR(ctx context.Context, d *tether.Device, payload []byte) (int, error)
	Limits() telemetry.Limits
	Allow(d *tether.Device) (ok bool, retryAfter time.Duration)
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
	Addr string
	// TLSAddr, when set with TLS, serves the same API over HTTPS. Client
	// certificates are requested, and a device may ingest with one.
	TLSAddr string
	TLS     *tls.Config
	Logger  *slog.Logger
	// PublishTimeout bounds how long an ingest request waits for the bus.
	PublishTimeout time.Duration
	// Services are the device-state services; the routes of each one that
	// is nil answer 503.
	Services Services
	// Mount adds handlers by ServeMux pattern beside the API's own routes:
	// the dashboard, GraphQL and live streams, which authenticate their
	// callers with [Server.Authenticate].
	Mount map[string]http.Handler
}

// Server is the HTTP API server.
type Server struct {
	reg   Registry
	tel   Telemetry
	in    Ingestor
	stats Stats
	sv    Services
	log   *slog.Logger
	now   func() time.Time

	mount map[string]http.Handler

	ln, tlsLn net.Listener
	srv       *http.Server
	timeout   time.Duration

	// closing ends long polls and waits when the server shuts down, so
	// that they do not hold the shutdown up.
	closing context.Context
	close   context.CancelFunc

	// polls are the devices' command long-polls waiting for a command,
	// by tenant and device, oldest first; inflight the commands handed
	// to a poll and not yet marked delivered, so that a poll does not
	// pass a device a command another poll is writing to it.
	mu       sync.Mutex
	polls    map[deviceKey][]*poll
	inflight map[string]bool
}

// New builds the server and binds its listener, so that Addr is known
// before Serve.
func New(reg Registry, tel Telemetry, in Ingestor, stats Stats, o Options) (*Server, error) {
	if o.PublishTimeout == 0 {
		o.PublishTimeout = 10 * time.Second
	}
	s := &Server{reg: reg, tel: tel, in: in, stats: stats, sv: o.Services, log: o.Logger, now: time.Now, timeout: o.PublishTimeout,
		mount: o.Mount, polls: map[deviceKey][]*poll{}, inflight: map[string]bool{}}
	s.closing, s.close = context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", o.Addr, err)
	}
	s.ln = ln
	if o.TLSAddr != "" && o.TLS != nil {
		// Serve and ServeTLS share one server, and the plain Serve would
		// leave HTTP/2 unconfigured for TLS; offering h2 here keeps
		// curl and browsers from negotiating what is then not served.
		o.TLS = o.TLS.Clone()
		o.TLS.NextProtos = []string{"h2", "http/1.1"}
		if s.tlsLn, err = net.Listen("tcp", o.TLSAddr); err != nil {
			ln.Close()
			return nil, fmt.Errorf("https listen on %s: %w", o.TLSAddr, err)
		}
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
		TLSConfig:         o.TLS,
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// TLSAddr returns the address of the HTTPS listener, or "" without one.
func (s *Server) TLSAddr() string {
	if s.tlsLn == nil {
		return ""
	}
	return s.tlsLn.Addr().String()
}

// Serve serves HTTP and, if configured, HTTPS until Shutdown; it blocks.
func (s *Server) Serve() error {
	errc := make(chan error, 1)
	if s.tlsLn != nil {
		go func() { errc <- s.srv.ServeTLS(s.tlsLn, "", "") }()
	} else {
		errc <- http.ErrServerClosed
	}
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	} else {
		s.srv.Close()
	}
	if terr := <-errc; !errors.Is(terr, http.ErrServerClosed) && err == nil {
		err = terr
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight. Long polls
// and waiting command requests answer at once with what they have.
func (s *Server) Shutdown(ctx context.Context) error {
	s.close()
	return s.srv.Shutdown(ctx)
}

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
	// Every API route names the least role that may call it: a viewer
	// reads, an operator also runs the fleet, an admin also configures.
	add := func(role, pattern string, h handler) { mux.Handle(pattern, s.authorized(role, h)) }
	add(tether.RoleAdmin, "POST /api/v1/devices", s.createDevice)
	add(tether.RoleViewer, "GET /api/v1/devices", s.listDevices)
	add(tether.RoleViewer, "GET /api/v1/devices/{id}", s.getDevice)
	add(tether.RoleAdmin, "PATCH /api/v1/devices/{id}", s.updateDevice)
	add(tether.RoleAdmin, "DELETE /api/v1/devices/{id}", s.deleteDevice)
	add(tether.RoleAdmin, "POST /api/v1/devices/{id}/token", s.rotateToken)
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/telemetry", s.telemetry)
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/latest", s.latest)
	add(tether.RoleViewer, "GET /api/v1/stats", s.getStats)
	add(tether.RoleAdmin, "POST /api/v1/devices/{id}/certificates", s.addCertificate)
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/certificates", s.listCertificates)
	add(tether.RoleAdmin, "DELETE /api/v1/devices/{id}/certificates/{fingerprint}", s.revokeCertificate)
	add(tether.RoleAdmin, "POST /api/v1/devices/{id}/psk", s.rotatePSK)
	add(tether.RoleAdmin, "DELETE /api/v1/devices/{id}/psk", s.deletePSK)
	add(tether.RoleAdmin, "POST /api/v1/cas", s.addCA)
	add(tether.RoleViewer, "GET /api/v1/cas", s.listCAs)
	add(tether.RoleAdmin, "DELETE /api/v1/cas/{id}", s.deleteCA)

	profiles := s.sv.Profiles != nil
	add(tether.RoleAdmin, "POST /api/v1/profiles", needs(profiles, "profile", s.createProfile))
	add(tether.RoleViewer, "GET /api/v1/profiles", needs(profiles, "profile", s.listProfiles))
	add(tether.RoleViewer, "GET /api/v1/profiles/{id}", needs(profiles, "profile", s.getProfile))
	add(tether.RoleAdmin, "PUT /api/v1/profiles/{id}", needs(profiles, "profile", s.putProfile))
	add(tether.RoleAdmin, "DELETE /api/v1/profiles/{id}", needs(profiles, "profile", s.deleteProfile))

	shadows := s.sv.Shadows != nil
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/shadow", needs(shadows, "shadow", s.getShadow))
	add(tether.RoleOperator, "PATCH /api/v1/devices/{id}/shadow", needs(shadows, "shadow", s.updateShadow))
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/shadows", needs(shadows, "shadow", s.shadowNames))
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/shadows/{name}", needs(shadows, "shadow", s.getShadow))
	add(tether.RoleOperator, "PATCH /api/v1/devices/{id}/shadows/{name}", needs(shadows, "shadow", s.updateShadow))
	add(tether.RoleAdmin, "DELETE /api/v1/devices/{id}/shadows/{name}", needs(shadows, "shadow", s.deleteShadow))

	// An operator may send commands; the command's definition in the
	// profile may narrow who further.
	commands := s.sv.Commands != nil
	add(tether.RoleOperator, "POST /api/v1/devices/{id}/commands", needs(commands, "command", s.sendCommand))
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/commands", needs(commands, "command", s.listCommands))
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/commands/{cid}", needs(commands, "command", s.getCommand))
	add(tether.RoleOperator, "POST /api/v1/devices/{id}/commands/{cid}/confirm", needs(commands, "command", s.confirmCommand))

	add(tether.RoleViewer, "GET /api/v1/devices/{id}/presence", needs(s.sv.Presence != nil, "presence", s.getPresence))
	add(tether.RoleViewer, "GET /api/v1/devices/{id}/quarantine", needs(s.sv.Quarantine != nil, "quarantine", s.quarantine))

	provision := s.sv.Provision != nil
	add(tether.RoleAdmin, "POST /api/v1/devices/import", needs(provision, "provisioning", s.importDevices))
	add(tether.RoleAdmin, "POST /api/v1/provisioning-keys", needs(provision, "provisioning", s.createProvisioningKey))
	add(tether.RoleAdmin, "GET /api/v1/provisioning-keys", needs(provision, "provisioning", s.listProvisioningKeys))
	add(tether.RoleAdmin, "DELETE /api/v1/provisioning-keys/{id}", needs(provision, "provisioning", s.revokeProvisioningKey))
	add(tether.RoleAdmin, "POST /api/v1/provisioning-keys/{id}/rotate", needs(provision, "provisioning", s.rotateProvisioningKey))
	s.ruleRoutes(add)
	s.ruleDevRoutes(add)
	s.alertRoutes(add)
	s.userRoutes(mux, add)
	s.fleetRoutes(add)

	// Devices, not programs, call these, with their own credentials.
	device := func(pattern string, h func(http.ResponseWriter, *http.Request, *tether.Device) error) {
		mux.Handle(pattern, s.deviceAuthenticated(h))
	}
	mux.HandleFunc("POST /api/v1/ingest", s.ingest)
	device("GET /api/v1/device/shadow", needs(s.sv.Shadows != nil, "shadow", s.deviceGetShadow))
	device("POST /api/v1/device/shadow", needs(s.sv.Shadows != nil, "shadow", s.deviceUpdateShadow))
	device("GET /api/v1/device/commands", needs(s.sv.Commands != nil, "command", s.pollCommands))
	device("POST /api/v1/device/commands/{cid}/reply", needs(s.sv.Commands != nil, "command", s.replyCommand))
	// A device that has no credential yet registers itself with its
	// profile's provisioning key.
	mux.HandleFunc("POST /api/v1/provision", s.provision)
	for pattern, h := range s.mount {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.problem(w, r, tether.Errorf(tether.ENOTFOUND, "no API route %s %s; see /api/v1/openapi.json", r.Method, r.URL.Path))
	})
	return mux
}

// handler is an API route's handler, run with the caller once
// authorized; an error it returns is answered as a problem.
type handler func(http.ResponseWriter, *http.Request, *tether.Principal) error

// addRoute registers an API route that callers of at least role may call.
type addRoute func(role, pattern string, h handler)

// authorized authenticates the caller and runs h if its role is at least
// role.
func (s *Server) authorized(role string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.Authenticate(r)
		if err == nil && !tether.RoleAtLeast(p.Role, role) {
			err = tether.Errorf(tether.EFORBIDDEN, "%s has role %s; this needs %s", p.Name, p.Role, role)
		}
		if err != nil {
			if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
			}
			s.problem(w, r, err)
			return
		}
		if err := h(w, r, p); err != nil {
			s.problem(w, r, err)
		}
	})
}

// Authenticate returns the caller of an API request: the bearer API
// key's owner or, without a bearer key, the user signed in with the
// session cookie (whose unsafe requests must carry the session's CSRF
// token, see auth.go). Other APIs mounted on the server (GraphQL, live
// streams) authenticate with it too.
func (s *Server) Authenticate(r *http.Request) (*tether.Principal, error) {
	token := bearer(r)
	if token == "" && s.sv.Users != nil {
		if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
			return s.sessionPrincipal(r, c.Value)
		}
		return nil, errNotSignedIn
	}
	key, err := s.reg.AuthenticateAPIKey(r.Context(), token)
	if err != nil {
		return nil, err
	}
	return &tether.Principal{TenantID: key.TenantID, Kind: tether.PrincipalAPIKey, ID: key.ID, Name: "API key " + key.ID, Role: key.Role}, nil
}

// deviceAuthenticated authenticates a device as ingest does (token or
// client certificate), records its activity with the presence service and
// runs h with it.
func (s *Server) deviceAuthenticated(h func(http.ResponseWriter, *http.Request, *tether.Device) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := s.ingestDevice(r)
		if err != nil {
			if tether.ErrorCode(err) == tether.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tether-devices"`)
			}
			s.problem(w, r, err)
			return
		}
		s.seen(d)
		if err := h(w, r, d); err != nil {
			s.problem(w, r, err)
		}
	})
}

// seen tells the presence service, if there is one, that the device made
// a request.
func (s *Server) seen(d *tether.Device) {
	if s.sv.Presence != nil {
		s.sv.Presence.Seen(d, "http")
	}
}

// needs returns h if its service is configured (ok), else a handler that
// answers 503 naming the service.
func needs[C any](ok bool, service string, h func(http.ResponseWriter, *http.Request, C) error) func(http.ResponseWriter, *http.Request, C) error {
	if ok {
		return h
	}
	return func(http.ResponseWriter, *http.Request, C) error {
		return tether.Errorf(tether.EUNAVAILABLE, "this node does not run the %s service", service)
	}
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
	tether.ETOOMANY:      http.StatusTooManyRequests,
	tether.EUNSUPPORTED:  http.StatusUnsupportedMediaType,
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
	// Reason is the machine-readable reason a telemetry payload was
	// refused (telemetry.Error's Reason), on ingest only.
	Reason string `json:"reason,omitempty"`
	// Command is the command a guardrail refused, stored with status
	// rejected and its reason.
	Command *tether.Command `json:"command,omitempty"`
	// CurrentVersion is a shadow's version when an update named another.
	CurrentVersion *int64 `json:"current_version,omitempty"`
	// Rows names each bad row of a bulk import.
	Rows []tether.RowError `json:"rows,omitempty"`
}

// detailedError carries what a problem shows beyond the error's code and
// message, and the status when it is not the code's.
type detailedError struct {
	err            error
	status         int
	command        *tether.Command
	currentVersion *int64
}

func (e *detailedError) Error() string { return e.err.Error() }
func (e *detailedError) Unwrap() error { return e.err }

func (s *Server) problem(w http.ResponseWriter, r *http.Request, err error) {
	code := tether.ErrorCode(err)
	status, ok := statuses[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	detail, reason := tether.ErrorMessage(err), ""
	// A telemetry payload that is JSON (or CBOR) but breaks a rule is 422;
	// one that is not JSON (or CBOR) at all is 400; one over the size
	// limit 413.
	var bad *telemetry.Error
	if errors.As(err, &bad) {
		code, detail, reason = tether.EINVALID, bad.Message, bad.Reason
		switch bad.Reason {
		case telemetry.ReasonMalformedJSON, telemetry.ReasonMalformedCBOR:
			status = http.StatusBadRequest
		case telemetry.ReasonTooLarge:
			code, status = tether.ETOOLARGE, http.StatusRequestEntityTooLarge
		default:
			status = http.StatusUnprocessableEntity
		}
	}
	p := Problem{Detail: detail, Code: code, Reason: reason}
	var de *detailedError
	if errors.As(err, &de) {
		if de.status != 0 {
			status = de.status
		}
		p.Command, p.CurrentVersion = de.command, de.currentVersion
	}
	// A bulk import with bad rows is 422 and names them. The rows are
	// the point, so an import error that carries no tether code is still
	// shown as invalid rather than as an internal error.
	var re RowErrors
	if errors.As(err, &re) {
		if code == tether.EINTERNAL {
			p.Code, p.Detail = tether.EINVALID, re.Error()
		}
		code, status, p.Rows = p.Code, http.StatusUnprocessableEntity, re.RowErrors()
	}
	if code == tether.EINTERNAL {
		s.log.Error("api", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	p.Type, p.Title, p.Status = "about:blank", http.StatusText(status), status
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// maxBody bounds a request body of the management API.
const maxBody = 1 << 20

// decodeBody reads a JSON body of at most maxBody bytes into v, refusing
// unknown fields so that a misspelt field is an error rather than
// silently ignored.
func decodeBody(r *http.Request, v any) error { return decodeBodyLimit(r, v, maxBody) }

// decodeBodyLimit is decodeBody with another limit.
func decodeBodyLimit(r *http.Request, v any, limit int64) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
			return tether.Errorf(tether.EINVALID, "Content-Type %q is not application/json", ct)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return tether.Errorf(tether.ETOOLARGE, "the request body is over %d bytes", limit)
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
