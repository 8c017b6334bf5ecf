// Package graphql is Tether's GraphQL API at /api/graphql: devices with
// their latest values, shadows, presence, commands and alerts in one
// query, bucketed telemetry, the mutations the REST API makes with the
// same roles, and live telemetry and events as subscriptions over
// WebSocket (graphql-transport-ws and the legacy graphql-ws). It is
// schema first: schema.graphqls is the contract, gqlgen generates the
// executor (generated.go, models_gen.go) and the resolvers here call the
// node's services through small interfaces. Every query is bounded before
// it runs (depth, complexity, body size) and every field authorizes its
// caller, a [tether.Principal], by role as the REST API does.
package graphql

//go:generate go run github.com/99designs/gqlgen generate --config gqlgen.yml
