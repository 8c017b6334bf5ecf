package tether_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestEveryPackageHasADocComment keeps the rule that each package says
// what its job is.
func TestEveryPackageHasADocComment(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 5 {
		t.Fatalf("go list found only %d packages", len(lines))
	}
	for _, line := range lines {
		pkg, doc, _ := strings.Cut(line, "\t")
		t.Run(pkg+" has a package doc comment", func(t *testing.T) {
			if strings.TrimSpace(doc) == "" {
				t.Errorf("package %s has no doc comment", pkg)
			}
		})
	}
}

// TestDependenciesPointInward keeps the architecture: the domain package
// uses the standard library only, and no internal package but cmd/tether
// wires gateways, bus and stores together.
func TestDependenciesPointInward(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	const mod = "github.com/tether-iot/tether"
	deps := func(t *testing.T, pkg string) []string {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	rules := []struct {
		pkg       string
		forbidden []string // import path prefixes
	}{
		{mod, []string{""}}, // anything outside the standard library
		{mod + "/internal/mqtt", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/httpapi", mod + "/internal/registry", mod + "/internal/writer"}},
		{mod + "/internal/httpapi", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/registry", mod + "/internal/writer"}},
		{mod + "/internal/store/sqlite", []string{mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/httpapi", mod + "/internal/registry", mod + "/internal/writer", mod + "/internal/ingest"}},
		{mod + "/internal/bus", []string{mod + "/internal/"}},
		{mod + "/internal/writer", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/httpapi"}},
		{mod + "/internal/registry", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/httpapi"}},
		{mod + "/internal/ingest", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/httpapi"}},
		{mod + "/internal/coap", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/httpapi", mod + "/internal/registry", mod + "/internal/writer"}},
		// The payload decoder and the bus codec sit under every gateway and
		// the writer: they use the domain package only.
		{mod + "/internal/telemetry", []string{mod + "/internal/"}},
		{mod + "/internal/secret", []string{mod + "/internal/"}},
		// Windows and anomaly functions are pure computation.
		{mod + "/internal/rules/window", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/rules/engine", mod + "/internal/rules/lang"}},
		{mod + "/internal/rules/anomaly", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/rules/engine", mod + "/internal/rules/lang"}},
		{mod + "/internal/rules/jsonfloat", []string{mod + "/internal/"}},
		{mod + "/internal/egress", []string{mod + "/internal/"}},
		// The dashboard's server, the simulator (a client of Tether like
		// any other) and the GraphQL edge know none of the node's parts:
		// GraphQL reaches the services through interfaces, and live events
		// through the stream hub.
		{mod + "/internal/web", []string{mod + "/internal/"}},
		{mod + "/internal/simulate", []string{mod + "/internal/"}},
		{mod + "/internal/graphql", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/coap", mod + "/internal/httpapi", mod + "/internal/registry", mod + "/internal/writer"}},
		{mod + "/internal/stream", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/coap", mod + "/internal/httpapi", mod + "/internal/registry", mod + "/internal/writer"}},
		{mod + "/internal/user", []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt", mod + "/internal/coap", mod + "/internal/httpapi", mod + "/internal/registry"}},
	}
	// The device state services sit between the gateways and the store:
	// they know neither, nor the bus (their events go out through an
	// interface), nor the registry.
	for _, svc := range []string{"profile", "shadow", "command", "presence", "provision", "alert",
		"rules", "rules/lang", "rules/window", "rules/anomaly", "rules/engine", "rules/action"} {
		rules = append(rules, struct {
			pkg       string
			forbidden []string
		}{mod + "/internal/" + svc, []string{mod + "/internal/store", mod + "/internal/bus", mod + "/internal/mqtt",
			mod + "/internal/coap", mod + "/internal/httpapi", mod + "/internal/registry", mod + "/internal/writer"}})
	}
	for _, r := range rules {
		t.Run(strings.TrimPrefix(r.pkg, mod+"/")+" depends only inward", func(t *testing.T) {
			for _, d := range deps(t, r.pkg) {
				if d == r.pkg {
					continue
				}
				for _, f := range r.forbidden {
					if strings.HasPrefix(d, f) {
						t.Errorf("%s imports %s", r.pkg, d)
					}
				}
			}
		})
	}
}
