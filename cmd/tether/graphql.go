package main

import (
	"context"
	"net/http"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/graphql"
)

// mountGraphQL builds the GraphQL API over the same services as the REST
// API and adds it to the HTTP API's mounts: /api/graphql (queries,
// mutations, subscriptions over WebSocket, GraphiQL for a browser) and
// /api/graphiql (the GraphiQL page alone). Callers authenticate as they
// do with the REST API; the server exists by the time a request arrives.
func (m *Main) mountGraphQL(mount map[string]http.Handler) (map[string]http.Handler, error) {
	sv := m.services
	o := graphql.Options{
		Devices:   m.Registry,
		Telemetry: m.DB,
		Shadows:   sv.Shadows,
		Presence:  sv.Presence,
		Commands:  sv.Commands,
		Profiles:  sv.Profiles,
		Authenticate: func(r *http.Request) (*tether.Principal, error) {
			return m.HTTP.Authenticate(r)
		},
		Logger: m.log.With("component", "graphql"),
	}
	// The rules engine's services exist unless it failed to start; an
	// interface holding a nil pointer would not read as absent.
	if sv.Alerts != nil {
		o.Alerts = sv.Alerts
	}
	if sv.Rules != nil {
		o.Rules = sv.Rules
	}
	if m.Stream != nil {
		o.Stream = m.Stream
	}
	h, err := graphql.New(o)
	if err != nil {
		return nil, err
	}
	m.graphQL = h
	if mount == nil {
		mount = map[string]http.Handler{}
	}
	mount["/api/graphql"] = h
	mount["GET /api/graphiql"] = h.GraphiQL()
	return mount, nil
}

// closeGraphQL ends the GraphQL WebSockets; the HTTP server's shutdown
// does not wait for connections it handed over to them.
func (m *Main) closeGraphQL(ctx context.Context) error {
	if m.graphQL == nil {
		return nil
	}
	return m.graphQL.Close(ctx)
}
