package graphql

import (
	"context"
	"math"
	"time"

	"github.com/99designs/gqlgen/complexity"
	gql "github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// limits refuses, before it runs, an operation whose fields nest deeper
// than maxDepth, that selects more than maxFields fields with its
// fragments expanded, or that has more than maxTelemetryFields
// Device.telemetry fields. The chain of ofType in an introspection query (a
// type's wrappers, such as [Device!]!) is not counted as depth, so that
// GraphiQL's introspection query passes while a query that nests a
// type's fields in its fields' types many times does not.
type limits struct{ maxDepth, maxFields int }

var _ interface {
	gql.HandlerExtension
	gql.OperationContextMutator
} = limits{}

func (limits) ExtensionName() string               { return "TetherLimits" }
func (limits) Validate(gql.ExecutableSchema) error { return nil }
func (l limits) MutateOperationContext(_ context.Context, oc *gql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	w := walker{budget: l.maxFields, stopAt: l.maxDepth}
	w.walk(oc.Operation.SelectionSet, 0)
	switch {
	case w.budget < 0:
		return limitError(CodeTooLarge, "the operation selects over %d fields, counting each fragment where it is spread; select less or split it", l.maxFields)
	case w.depth > l.maxDepth:
		return limitError(CodeTooDeep, "the operation nests fields %d deep at least; at most %d levels are allowed", w.depth, l.maxDepth)
	case w.telemetry > maxTelemetryFields:
		return limitError(CodeTooComplex, "the operation has %d telemetry fields, counting each fragment where it is spread; at most %d, so name several keys in one field instead", w.telemetry, maxTelemetryFields)
	}
	return nil
}

// maxTelemetryFields bounds the Device.telemetry fields of an operation,
// aliases and fragments' spreads included. Each is a store query per
// device it is read of; the cost limit prices their ranges and lengths,
// this bounds how many a document can ask for, however short, since one
// field can name up to maxKeys keys. A field inside a list counts once
// here: the list's cost covers its repetition.
const maxTelemetryFields = 20

func limitError(code, format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	err.Extensions = map[string]any{"code": code}
	return err
}

// walker measures a selection set. It stops descending below stopAt+1
// levels (the operation is refused then anyway) and once its budget of
// fields is spent, so that the walk itself stays cheap.
type walker struct {
	budget, stopAt int
	depth          int
	telemetry      int // Device.telemetry fields
}

func (w *walker) walk(set ast.SelectionSet, depth int) {
	for _, sel := range set {
		if w.budget < 0 {
			return
		}
		switch s := sel.(type) {
		case *ast.Field:
			w.budget--
			// Validation has set the type the field is selected on.
			if s.Name == "telemetry" && s.ObjectDefinition != nil && s.ObjectDefinition.Name == "Device" {
				w.telemetry++
			}
			d := depth
			if s.Name != "ofType" {
				d++
			}
			w.depth = max(w.depth, d)
			if d <= w.stopAt {
				w.walk(s.SelectionSet, d)
			}
		case *ast.InlineFragment:
			w.walk(s.SelectionSet, depth)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				w.walk(s.Definition.SelectionSet, depth)
			}
		}
	}
}

// complexityLimit refuses an operation whose cost is over max. Scalars
// cost nothing: the cost counts what is read, objects and lists of them.
func complexityLimit(max int) gql.HandlerExtension {
	return extension.FixedComplexityLimit(max, complexity.WithFixedScalarValue(0))
}

// Nominal sizes of lists whose size no argument bounds.
const (
	nominalList = 20 // a tenant's rules or profiles, a profile's keys or commands
	nominalKeys = 10 // a device's telemetry keys when a query names none
)

// setComplexity costs each list by the number of items it may return:
// 1 to read it plus that many times the cost of one item. A telemetry
// query costs its keys times the larger of its limit in hundreds of
// samples and its range in days (see [telemetryUnits]), so that fetching
// long series, or aggregating long ranges, of many devices at once is
// refused.
func setComplexity(c *ComplexityRoot) {
	c.Query.Devices = func(child int, first *int, _ *string, _ []*LabelInput, _ *string, _ *string) int {
		return listCost(child, deref(first, 100))
	}
	c.Query.Alerts = func(child int, _ *string, _ *bool, _ *string, _ *string, first *int, _ *string) int {
		return listCost(child, deref(first, 100))
	}
	c.Query.Rules = func(child int) int { return listCost(child, nominalList) }
	c.Query.Profiles = func(child int) int { return listCost(child, nominalList) }
	c.Device.Alerts = func(child int, _ *string, _ *bool, first *int) int { return listCost(child, deref(first, 20)) }
	c.Device.Commands = func(child int, _ *string, _ *int64, first *int) int { return listCost(child, deref(first, 20)) }
	c.Device.Telemetry = func(child int, keys []string, from, to *time.Time, agg *Aggregation, bucket *time.Duration, limit *int) int {
		return listCost(max(child, 1), telemetryUnits(time.Now(), len(keys), from, to, limit, agg != nil || bucket != nil))
	}
	c.Profile.Telemetry = func(child int) int { return listCost(child, nominalList) }
	c.Profile.Commands = func(child int) int { return listCost(child, nominalList) }
}

// telemetryUnits is what one device's telemetry query reads, in units of
// a hundred samples or a day of one key, whichever is more: keys ×
// max(⌈limit/100⌉, ⌈(to−from)/24h⌉) when aggregated, keys × ⌈limit/100⌉
// for raw points. The limit bounds what the query returns, the range what
// the store scans to aggregate it: a query for one bucket of 30 days
// reads 30 days of points, so it costs 30 while its limit alone would
// make it cost 1. Raw points are read in time order up to the limit,
// whatever the range. from and to default as in
// [telemetryQuery]: to is now, from an hour before to. keys is the number
// of keys named; none means every key, nominalKeys.
func telemetryUnits(now time.Time, keys int, from, to *time.Time, limit *int, aggregated bool) int {
	if keys == 0 {
		keys = nominalKeys
	}
	hundreds := (int64(deref(limit, 1000)) + 99) / 100
	if !aggregated {
		return saturate(int64(keys) * max(hundreds, 1))
	}
	end := deref(to, now)
	start := deref(from, end.Add(-time.Hour))
	// Sub saturates, so a range of centuries is about 10^5 days, not an
	// overflow (hence no rounding up by adding 24h−1 first); a reversed
	// range is refused by the resolver and costs 1.
	d := end.Sub(start)
	days := int64(d / (24 * time.Hour))
	if d%(24*time.Hour) > 0 {
		days++
	}
	return saturate(int64(keys) * max(hundreds, days, 1))
}

// listCost is 1 + n×child, saturating rather than overflowing.
func listCost(child, n int) int {
	n, child = min(max(n, 1), math.MaxInt32), min(max(child, 0), math.MaxInt32)
	return saturate(1 + int64(n)*int64(child))
}

func saturate(v int64) int {
	if v > math.MaxInt32 || v < 0 {
		return math.MaxInt32
	}
	return int(v)
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
