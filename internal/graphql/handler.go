package graphql

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	gql "github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tether-iot/tether"
)

// Defaults of the limits in [Options].
const (
	DefaultMaxDepth      = 8
	DefaultMaxComplexity = 1000
	DefaultMaxBody       = 1 << 20
	// DefaultMaxFields bounds the fields of one operation with its
	// fragments expanded, which keeps a document of fragments that spread
	// each other many times from costing exponential work.
	DefaultMaxFields = 2000
)

// Options configure a [Handler].
type Options struct {
	// Devices and Telemetry are required; every other service is
	// optional, and the fields that need one that is nil answer an error
	// with code unavailable.
	Devices   Devices
	Telemetry Telemetry
	Shadows   Shadows
	Presence  Presence
	Alerts    Alerts
	Commands  Commands
	Rules     Rules
	Profiles  Profiles
	// Stream feeds the subscriptions.
	Stream Subscriber

	// Authenticate returns the caller of a request (the REST API's
	// authentication: a bearer API key, or a session cookie with, on an
	// unsafe method, its CSRF token). Required.
	Authenticate func(*http.Request) (*tether.Principal, error)
	// AuthenticateToken returns the owner of the bearer token a WebSocket
	// client sends in its connection_init payload ({"Authorization":
	// "Bearer <key>"}). Nil checks the token with Authenticate, as a
	// request's Authorization header.
	AuthenticateToken func(ctx context.Context, token string) (*tether.Principal, error)

	Logger *slog.Logger

	// The limits of an operation; zero takes the Default.
	MaxDepth      int
	MaxComplexity int
	MaxFields     int
	// MaxBody bounds a request body and a WebSocket message, in bytes.
	MaxBody int64
	// Endpoint is where the handler is mounted, for the GraphiQL page;
	// default /api/graphql.
	Endpoint string
}

// Handler serves the GraphQL API: queries and mutations over HTTP GET
// and POST, subscriptions over WebSocket, and the GraphiQL page to a
// browser.
type Handler struct {
	o        Options
	log      *slog.Logger
	exec     *handler.Server
	graphiql http.Handler

	// closing ends the WebSockets when the handler closes; sockets counts
	// them so that Close can wait for them.
	closing context.Context
	close   context.CancelFunc
	sockets sync.WaitGroup
}

// registerCodes tells gqlgen that the limits' errors are the query's
// fault, like a validation error: HTTP 422 and a WebSocket error message.
// gqlgen keeps the kinds in a package variable, written once here.
var registerCodes sync.Once

// Error codes of refused operations, in an error's extensions.code. A
// resolver's error has the tether error code (forbidden, not_found, ...)
// there instead.
const (
	CodeTooDeep       = "QUERY_TOO_DEEP"
	CodeTooLarge      = "QUERY_TOO_LARGE"
	CodeTooComplex    = "COMPLEXITY_LIMIT_EXCEEDED"
	codeNeedWebSocket = "SUBSCRIPTION_NEEDS_WEBSOCKET"
)

// New builds the handler.
func New(o Options) (*Handler, error) {
	if o.Devices == nil || o.Telemetry == nil || o.Authenticate == nil {
		return nil, errors.New("graphql: Devices, Telemetry and Authenticate are required")
	}
	o.MaxDepth = cmp.Or(o.MaxDepth, DefaultMaxDepth)
	o.MaxComplexity = cmp.Or(o.MaxComplexity, DefaultMaxComplexity)
	o.MaxFields = cmp.Or(o.MaxFields, DefaultMaxFields)
	o.MaxBody = cmp.Or(o.MaxBody, DefaultMaxBody)
	o.Endpoint = cmp.Or(o.Endpoint, "/api/graphql")
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	registerCodes.Do(func() {
		for _, c := range []string{CodeTooDeep, CodeTooLarge, CodeTooComplex} {
			errcode.RegisterErrorType(c, errcode.KindProtocol)
		}
	})

	h := &Handler{o: o, log: o.Logger}
	h.closing, h.close = context.WithCancel(context.Background())
	cfg := Config{Resolvers: &resolver{o: &h.o, log: h.log, now: time.Now}}
	cfg.Directives.Auth = authDirective
	setComplexity(&cfg.Complexity)

	srv := handler.New(NewExecutableSchema(cfg))
	srv.AddTransport(transport.Websocket{
		InitFunc:    h.initWebSocket,
		InitTimeout: 10 * time.Second,
		// graphql-ws (legacy) clients get a keep-alive; graphql-transport-ws
		// clients a ping they must answer within two intervals, so that a
		// dead peer's subscriptions end.
		KeepAlivePingInterval: 25 * time.Second,
		PingPongInterval:      30 * time.Second,
		PayloadReadLimit:      &h.o.MaxBody,
	})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(smallQueries{lru.New[*ast.QueryDocument](1000)})
	srv.Use(extension.Introspection{})
	// The cheap limits first: the complexity walk expands fragments.
	srv.Use(limits{maxDepth: o.MaxDepth, maxFields: o.MaxFields})
	srv.Use(complexityLimit(o.MaxComplexity))
	srv.AroundOperations(h.aroundOperation)
	srv.AroundFields(h.aroundField)
	srv.SetRecoverFunc(func(ctx context.Context, v any) error {
		h.log.Error("graphql: panic", "path", gql.GetPath(ctx).String(), "panic", v)
		return &gqlerror.Error{Message: "internal error", Extensions: map[string]any{"code": tether.EINTERNAL}}
	})
	h.exec = srv
	h.graphiql = graphiqlHandler(o.Endpoint)
	return h, nil
}

// smallQueries caches the parsed documents of queries of up to 8 KiB:
// the queries a client sends again and again are small, and a cache of
// big ones would hold up to a thousand bodies' worth of memory.
type smallQueries struct {
	gql.Cache[*ast.QueryDocument]
}

func (c smallQueries) Add(ctx context.Context, query string, doc *ast.QueryDocument) {
	if len(query) <= 8<<10 {
		c.Cache.Add(ctx, query, doc)
	}
}

// GraphiQL returns the GraphiQL page alone, for another path
// (/api/graphiql).
func (h *Handler) GraphiQL() http.Handler { return http.HandlerFunc(h.serveGraphiQL) }

// serveGraphiQL writes the GraphiQL page. It holds no data, so it needs
// no caller; the queries it sends are authenticated as any other. It
// loads GraphiQL from a CDN, pinned by subresource integrity (see
// graphiql.go).
func (h *Handler) serveGraphiQL(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.graphiql.ServeHTTP(w, r)
}

// ServeHTTP serves the API. A browser asking for HTML gets GraphiQL; a
// WebSocket upgrade is authenticated by its request or its
// connection_init; any other request needs a caller, or is answered 401
// as a problem.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u := r.Header.Get("Upgrade"); u != "" {
		if !strings.EqualFold(u, "websocket") {
			writeError(w, tether.Errorf(tether.EINVALID, "only an upgrade to a WebSocket is served here, not to %q", u))
			return
		}
		h.serveWebSocket(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		if r.URL.Query().Get("query") == "" && strings.Contains(r.Header.Get("Accept"), "text/html") {
			h.serveGraphiQL(w, r)
			return
		}
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s is not allowed; send a query with GET or POST, or subscribe over a WebSocket", r.Method))
		return
	}
	if r.ContentLength > h.o.MaxBody {
		writeError(w, tether.Errorf(tether.ETOOLARGE, "the request body is over %d bytes", h.o.MaxBody))
		return
	}
	p, err := h.o.Authenticate(r)
	if err == nil && !tether.RoleAtLeast(p.Role, tether.RoleViewer) {
		err = tether.Errorf(tether.EFORBIDDEN, "%s has role %q, which may not call the API", p.Name, p.Role)
	}
	if err != nil {
		if tether.ErrorCode(err) == tether.EINTERNAL {
			h.log.Error("graphql: authenticate", "err", err)
		}
		writeError(w, err)
		return
	}
	if r.Method == http.MethodPost {
		// Read here, so that a body over the limit is a 413 problem and
		// not gqlgen's 200 with an error.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBody))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, tether.Errorf(tether.ETOOLARGE, "the request body is over %d bytes", h.o.MaxBody))
			return
		case err != nil:
			writeError(w, tether.Errorf(tether.EINVALID, "reading the request body: %v", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	h.exec.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
}

// serveWebSocket serves a WebSocket. The upgrade request's credentials
// (a session cookie, as browsers cannot set headers on a WebSocket, or an
// Authorization header) authenticate it; failing that, the
// connection_init payload must. The WebSocket library refuses an upgrade
// whose Origin is not the Host, so that another site's page cannot use a
// browser's cookie.
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, tether.Errorf(tether.EFORBIDDEN, "a WebSocket from origin %q to host %q is refused; open it from a page of this host", r.Header.Get("Origin"), r.Host))
		return
	}
	h.sockets.Add(1)
	defer h.sockets.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(h.closing, cancel)
	defer stop()
	ctx = context.WithValue(ctx, webSocketKey{}, true)
	if p, err := h.o.Authenticate(r); err == nil {
		ctx = WithPrincipal(ctx, p)
	} else {
		if tether.ErrorCode(err) == tether.EINTERNAL {
			h.log.Error("graphql: authenticate", "err", err)
		}
		ctx = context.WithValue(ctx, upgradeErrKey{}, err)
	}
	h.exec.ServeHTTP(w, r.WithContext(ctx))
}

// sameOrigin reports whether a request has no Origin (not from a
// browser) or one whose host is the request's. The WebSocket library
// checks the same; checking first answers a problem rather than its log
// line.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

type (
	webSocketKey  struct{}
	upgradeErrKey struct{}
)

// initWebSocket authenticates a WebSocket at its connection_init: by the
// payload's Authorization, if it has one, else by the upgrade request. A
// connection without a caller is refused (4403 Forbidden, as
// graphql-transport-ws has it).
func (h *Handler) initWebSocket(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	refuse := func(err error) (context.Context, *transport.InitPayload, error) {
		ctx = transport.WithWebsocketCloseCode(ctx, 4403)
		return transport.AppendCloseReason(ctx, "Forbidden"), nil, errors.New(tether.ErrorMessage(err))
	}
	if auth := payload.Authorization(); auth != "" {
		token := auth
		if len(auth) > 7 && strings.EqualFold(auth[:7], "Bearer ") {
			token = auth[7:]
		}
		p, err := h.authenticateToken(ctx, token)
		if err != nil {
			return refuse(err)
		}
		return WithPrincipal(ctx, p), nil, nil
	}
	if principal(ctx) != nil {
		return ctx, nil, nil
	}
	err, _ := ctx.Value(upgradeErrKey{}).(error)
	if err == nil || tether.ErrorCode(err) == tether.EINTERNAL {
		err = tether.Errorf(tether.EUNAUTHORIZED, "sign in, or send {\"Authorization\": \"Bearer <API key>\"} as the connection_init payload")
	}
	return refuse(err)
}

func (h *Handler) authenticateToken(ctx context.Context, token string) (*tether.Principal, error) {
	if h.o.AuthenticateToken != nil {
		return h.o.AuthenticateToken(ctx, token)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, h.o.Endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("graphql: token request: %w", err)
	}
	r.Header.Set("Authorization", "Bearer "+token)
	return h.o.Authenticate(r)
}

// Close ends the WebSockets (their subscriptions complete) and waits,
// until ctx ends, for them to close.
func (h *Handler) Close(ctx context.Context) error {
	h.close()
	done := make(chan struct{})
	go func() {
		h.sockets.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("graphql: WebSockets still open at shutdown: %w", ctx.Err())
	}
}

// aroundOperation refuses a subscription that did not come over a
// WebSocket (HTTP would answer only its first event) and gives every
// other operation its own cache of what its fields read.
func (h *Handler) aroundOperation(ctx context.Context, next gql.OperationHandler) gql.ResponseHandler {
	oc := gql.GetOperationContext(ctx)
	if oc.Operation != nil && oc.Operation.Operation == ast.Subscription {
		if ctx.Value(webSocketKey{}) == nil {
			return gql.OneShot(&gql.Response{Errors: gqlerror.List{{
				Message:    "a subscription needs a WebSocket: connect to this URL with the graphql-transport-ws protocol",
				Extensions: map[string]any{"code": codeNeedWebSocket},
			}}})
		}
		return next(ctx)
	}
	return next(withCache(ctx))
}

// aroundField turns a resolver's error into what the caller sees: a
// tether error's message with its code in extensions.code; an internal
// error is logged and shown as "internal error".
func (h *Handler) aroundField(ctx context.Context, next gql.Resolver) (any, error) {
	res, err := next(ctx)
	if err != nil {
		err = h.public(ctx, err)
	}
	return res, err
}

func (h *Handler) public(ctx context.Context, err error) error {
	var ge *gqlerror.Error
	if errors.As(err, &ge) {
		return err
	}
	code := tether.ErrorCode(err)
	if code == tether.EINTERNAL && ctx.Err() == nil {
		h.log.Error("graphql: resolver", "path", gql.GetPath(ctx).String(), "err", err)
	}
	return &gqlerror.Error{Message: tether.ErrorMessage(err), Path: gql.GetPath(ctx), Extensions: map[string]any{"code": code}}
}

// statuses are the HTTP statuses of the errors the handler answers
// before GraphQL runs (the caller's credentials, the body's size); every
// other error is a GraphQL error in a 200 or 422 response.
var statuses = map[string]int{
	tether.EUNAUTHORIZED: http.StatusUnauthorized,
	tether.EFORBIDDEN:    http.StatusForbidden,
	tether.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	tether.ETOOMANY:      http.StatusTooManyRequests,
	tether.EINVALID:      http.StatusBadRequest,
	tether.EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// writeError answers err as an RFC 9457 problem, as the REST API does.
func writeError(w http.ResponseWriter, err error) {
	code := tether.ErrorCode(err)
	status, ok := statuses[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if code == tether.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
	}
	writeProblem(w, status, code, tether.ErrorMessage(err))
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
		Code   string `json:"code"`
	}{"about:blank", http.StatusText(status), status, detail, code})
}

type principalKey struct{}

// WithPrincipal returns ctx carrying the caller.
func WithPrincipal(ctx context.Context, p *tether.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principal(ctx context.Context) *tether.Principal {
	p, _ := ctx.Value(principalKey{}).(*tether.Principal)
	return p
}

// authorize returns the caller if its role is at least role.
func authorize(ctx context.Context, role string) (*tether.Principal, error) {
	p := principal(ctx)
	if p == nil {
		return nil, tether.Errorf(tether.EUNAUTHORIZED, "sign in or send Authorization: Bearer <API key>")
	}
	if !tether.RoleAtLeast(p.Role, role) {
		return nil, tether.Errorf(tether.EFORBIDDEN, "%s has role %s; this needs %s", p.Name, p.Role, role)
	}
	return p, nil
}

// authDirective is @auth(role): the field runs only for a caller with at
// least the role.
func authDirective(ctx context.Context, _ any, next gql.Resolver, role string) (any, error) {
	if _, err := authorize(ctx, role); err != nil {
		return nil, err
	}
	return next(ctx)
}
