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
	"github.com/tether-iot/tether/internal/stream"
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
	// DefaultMaxSocketOperations bounds the operations (subscriptions,
	// mostly) one WebSocket runs at once.
	DefaultMaxSocketOperations = 32
	// DefaultRecheck is how often a WebSocket running subscriptions
	// authenticates its caller again.
	DefaultRecheck = 30 * time.Second
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
	// MaxSocketOperations bounds the operations one WebSocket runs at
	// once; zero takes the Default.
	MaxSocketOperations int
	// Recheck is how often a WebSocket that runs an operation (a
	// subscription, mostly) authenticates its caller again, closing the
	// socket when the caller signed out, its key or user was deleted or
	// its role no longer allows the API; zero takes the Default. Every
	// operation authenticates its caller too.
	Recheck time.Duration
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
	o.MaxSocketOperations = cmp.Or(o.MaxSocketOperations, DefaultMaxSocketOperations)
	o.Recheck = cmp.Or(o.Recheck, DefaultRecheck)
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
		Implementation: socketImplementation{},
		InitFunc:       h.initWebSocket,
		InitTimeout:    10 * time.Second,
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
//
// The same credentials authenticate every operation again, and, while
// operations run, every Recheck: a socket outlives neither its caller's
// sign-out nor the deletion of its key or user.
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
	s := &socket{r: r, cancel: cancel}
	ctx = context.WithValue(ctx, socketKey{}, s)
	if p, err := h.o.Authenticate(r); err == nil {
		ctx = WithPrincipal(ctx, p)
	} else {
		if tether.ErrorCode(err) == tether.EINTERNAL {
			h.log.Error("graphql: authenticate", "err", err)
		}
		ctx = context.WithValue(ctx, upgradeErrKey{}, err)
	}
	var rechecks sync.WaitGroup
	rechecks.Go(func() { h.recheckSocket(ctx, s) })
	h.exec.ServeHTTP(w, r.WithContext(ctx))
	cancel()
	rechecks.Wait()
}

// socket is one GraphQL WebSocket: the credentials that authenticated
// it, which authenticate each of its operations again, the operations it
// runs, and how it ends.
type socket struct {
	r      *http.Request      // the upgrade request, with its cookie or Authorization header
	cancel context.CancelFunc // ends the socket's context, on which gqlgen closes it

	mu    sync.Mutex
	token string            // the connection_init payload's bearer token, if it authenticated the socket
	was   *tether.Principal // who connected; nil until connection_init is accepted
	ops   int               // operations running
	// code and reason are the close frame's when the handler ends the
	// socket; gqlgen's own is always 1000 "terminated".
	code   int
	reason string
}

type socketKey struct{}

func socketOf(ctx context.Context) *socket {
	s, _ := ctx.Value(socketKey{}).(*socket)
	return s
}

// connected records who connected, and with which token ("" for the
// upgrade request's credentials).
func (s *socket) connected(p *tether.Principal, token string) {
	s.mu.Lock()
	s.was, s.token = p, token
	s.mu.Unlock()
}

// acquire counts an operation starting, unless limit are running.
func (s *socket) acquire(limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops >= limit {
		return false
	}
	s.ops++
	return true
}

func (s *socket) release() {
	s.mu.Lock()
	s.ops--
	s.mu.Unlock()
}

// end closes the socket with code and reason (the first end's win).
func (s *socket) end(code int, reason string) {
	s.mu.Lock()
	if s.code == 0 {
		s.code, s.reason = code, reason
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *socket) closing() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.reason
}

// reauthenticate authenticates the socket's caller again, with the
// credentials it connected with, and checks that it may still call the
// API as the caller it connected as.
func (h *Handler) reauthenticate(ctx context.Context, s *socket) (*tether.Principal, error) {
	s.mu.Lock()
	token, was := s.token, s.was
	s.mu.Unlock()
	var (
		p   *tether.Principal
		err error
	)
	if token != "" {
		p, err = h.authenticateToken(ctx, token)
	} else {
		p, err = h.o.Authenticate(s.r.WithContext(ctx))
	}
	switch {
	case err != nil:
	case !tether.RoleAtLeast(p.Role, tether.RoleViewer):
		err = tether.Errorf(tether.EFORBIDDEN, "%s has role %q, which may not call the API", p.Name, p.Role)
	case was != nil && (p.TenantID != was.TenantID || p.Kind != was.Kind || p.ID != was.ID):
		err = tether.Errorf(tether.EUNAUTHORIZED, "the credentials now name another caller; connect again")
	}
	return p, err
}

// recheckSocket authenticates the socket's caller again every Recheck
// while the socket runs operations (an idle one is checked by its next
// operation), and ends the socket with 1008 (policy violation) when the
// caller may no longer call the API, or 1011 when it could not be
// checked.
func (h *Handler) recheckSocket(ctx context.Context, s *socket) {
	t := time.NewTicker(h.o.Recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		idle := s.was == nil || s.ops == 0
		s.mu.Unlock()
		if idle {
			continue
		}
		_, err := h.reauthenticate(ctx, s)
		if err == nil || ctx.Err() != nil {
			continue
		}
		switch tether.ErrorCode(err) {
		case tether.EUNAUTHORIZED, tether.EFORBIDDEN:
			h.log.Info("graphql: WebSocket closed: its caller may no longer call the API", "err", err)
			s.end(websocketPolicyViolation, stream.RevokedReason)
		default:
			h.log.Error("graphql: authenticate again", "err", err)
			s.end(websocketInternalError, "the credentials could not be checked again; reconnect")
		}
		return
	}
}

// WebSocket close codes the handler sends: RFC 6455's, and
// graphql-transport-ws's for a refused caller.
const (
	websocketPolicyViolation = 1008
	websocketInternalError   = 1011
	websocketUnauthorized    = 4401
	websocketForbidden       = 4403
)

// socketImplementation is gqlgen's coder/websocket adapter, whose close
// frame carries the code and reason the handler chose for the socket.
type socketImplementation struct {
	transport.CoderWebsocketImplementation
}

func (i socketImplementation) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	c, err := i.CoderWebsocketImplementation.Accept(w, r, o)
	if err != nil {
		return nil, err
	}
	s := socketOf(r.Context())
	if s == nil {
		return c, nil
	}
	return &socketConn{WebsocketConn: c, s: s}, nil
}

// socketConn is a WebSocket connection whose close frame is the
// socket's, if the handler ended it.
type socketConn struct {
	transport.WebsocketConn
	s *socket
}

var (
	_ transport.WebsocketReadLimiter   = (*socketConn)(nil)
	_ transport.WebsocketReadDeadliner = (*socketConn)(nil)
)

func (c *socketConn) WriteClose(code int, reason string) error {
	if sc, sr := c.s.closing(); sc != 0 {
		code, reason = sc, sr
	}
	return c.WebsocketConn.WriteClose(code, reason)
}

// SetReadLimit and SetReadDeadline pass gqlgen's limits on: it looks for
// them on the connection it is given.
func (c *socketConn) SetReadLimit(n int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(n)
	}
}

func (c *socketConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
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

type upgradeErrKey struct{}

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
		if s := socketOf(ctx); s != nil {
			s.connected(p, token)
		}
		return WithPrincipal(ctx, p), nil, nil
	}
	if p := principal(ctx); p != nil {
		if s := socketOf(ctx); s != nil {
			s.connected(p, "")
		}
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
// other operation its own cache of what its fields read. An operation
// over a WebSocket is authenticated again first (see [Handler.socketOperation]).
func (h *Handler) aroundOperation(ctx context.Context, next gql.OperationHandler) gql.ResponseHandler {
	oc := gql.GetOperationContext(ctx)
	subscription := oc.Operation != nil && oc.Operation.Operation == ast.Subscription
	if s := socketOf(ctx); s != nil {
		var refused gql.ResponseHandler
		if ctx, refused = h.socketOperation(ctx, s); refused != nil {
			return refused
		}
	} else if subscription {
		return gql.OneShot(&gql.Response{Errors: gqlerror.List{{
			Message:    "a subscription needs a WebSocket: connect to this URL with the graphql-transport-ws protocol",
			Extensions: map[string]any{"code": codeNeedWebSocket},
		}}})
	}
	if subscription {
		return next(ctx)
	}
	return next(withCache(ctx))
}

// socketOperation admits an operation of a WebSocket: it authenticates
// the caller again, with the credentials the socket connected with, so
// that the operation runs as the caller is now (a role changed since the
// socket opened applies), and counts the operation against the socket's
// limit until it ends. It returns the operation's context, carrying the
// caller for the resolvers and the stream hub, or what to answer
// instead. A caller that may no longer call the API is answered an error
// and the socket is closed (4401 Unauthorized, 4403 Forbidden).
func (h *Handler) socketOperation(ctx context.Context, s *socket) (context.Context, gql.ResponseHandler) {
	p, err := h.reauthenticate(ctx, s)
	if err != nil {
		code, reason := websocketUnauthorized, "Unauthorized"
		switch tether.ErrorCode(err) {
		case tether.EUNAUTHORIZED:
		case tether.EFORBIDDEN:
			code, reason = websocketForbidden, "Forbidden"
		default:
			h.log.Error("graphql: authenticate again", "err", err)
			code, reason = websocketInternalError, "the credentials could not be checked again; reconnect"
		}
		return ctx, answerThen(errorResponse(err), func() { s.end(code, reason) })
	}
	if !s.acquire(h.o.MaxSocketOperations) {
		return ctx, gql.OneShot(errorResponse(tether.Errorf(tether.ETOOMANY,
			"this WebSocket already runs %d operations, the most one may; complete one first or open another connection", h.o.MaxSocketOperations)))
	}
	// The transport ends an operation's context when the operation ends,
	// however it ends.
	context.AfterFunc(ctx, s.release)
	return stream.WithCaller(WithPrincipal(ctx, p), p), nil
}

// errorResponse is a response of err alone, with its code in
// extensions.code.
func errorResponse(err error) *gql.Response {
	return &gql.Response{Errors: gqlerror.List{{
		Message:    tether.ErrorMessage(err),
		Extensions: map[string]any{"code": tether.ErrorCode(err)},
	}}}
}

// answerThen answers resp and, once the transport has sent it, calls
// then.
func answerThen(resp *gql.Response, then func()) gql.ResponseHandler {
	sent := false
	return func(context.Context) *gql.Response {
		if !sent {
			sent = true
			return resp
		}
		then()
		return nil
	}
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
