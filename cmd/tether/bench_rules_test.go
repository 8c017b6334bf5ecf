package main_test

import (
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkRules measures ingest with 0, 10 and 100 enabled rules, in one
// run: the fan-in load (1,000 devices, QoS 1) at its offered rate and at
// capacity, with the rules engine consuming the same telemetry as its own
// bus consumer. Half the rules are filters and projections, half windows
// (tumbling and hopping, with HAVING, one in ten with a z-score); their
// conditions match rarely, as production rules do, so the figure is the
// cost of evaluating, not of actions. The ratio is each row's points
// stored per second over the row without rules.
func BenchmarkRules(b *testing.B) {
	stored := map[string]map[int]float64{}
	var modes []loadMode
	for _, mode := range []loadMode{offered, capacity} {
		modes = append(modes, mode)
		stored[string(mode)] = map[int]float64{}
		for _, rules := range []int{0, 10, 100} {
			b.Run(fmt.Sprintf("load=%s/rules=%d", mode, rules), func(b *testing.B) {
				r := fanInTether(b, 1, mode, func(n *node) { createBenchRules(b, n, rules) })
				stored[string(mode)][rules] = r.points
			})
		}
	}
	fmt.Printf("\nRULES: ingest with 0, 10 and 100 rules, fan-in QoS 1 from %d devices, %s measured\n\n", *loadDevices, *loadDuration)
	fmt.Printf("| load | rules | points stored/s | ratio to no rules |\n| --- | ---: | ---: | ---: |\n")
	for _, mode := range modes {
		base := stored[string(mode)][0]
		for _, rules := range []int{0, 10, 100} {
			v := stored[string(mode)][rules]
			ratio := "—"
			if base > 0 {
				ratio = fmt.Sprintf("%.2f", v/base)
			}
			fmt.Printf("| %s | %d | %.0f | %s |\n", mode, rules, v, ratio)
		}
	}
	fmt.Println()
}

// createBenchRules saves n rules over the API, a mix of per-message
// filters and windows over the load's keys (k00…).
func createBenchRules(b *testing.B, n *node, count int) {
	b.Helper()
	for i := range count {
		k := fmt.Sprintf("k%02d", i%*loadKeys)
		var stmt string
		switch i % 4 {
		case 0:
			stmt = fmt.Sprintf("SELECT %s, device.id AS d FROM telemetry WHERE %s > 1000000", k, k)
		case 1:
			stmt = fmt.Sprintf("SELECT %s * 2 AS twice FROM telemetry WHERE %s > 1000000 AND device.labels.site = 'north'", k, k)
		case 2:
			stmt = fmt.Sprintf("SELECT avg(%s) AS a, max(%s) AS m FROM telemetry GROUP BY device, TUMBLING(1m) HAVING a > 1000000", k, k)
		default:
			if i%10 == 3 {
				stmt = fmt.Sprintf("SELECT %s FROM telemetry WHERE zscore(%s, 30) > 1000", k, k)
			} else {
				stmt = fmt.Sprintf("SELECT avg(%s) AS a FROM telemetry GROUP BY device, HOPPING(5m, 1m) HAVING a > 1000000", k)
			}
		}
		rule := map[string]any{"id": fmt.Sprintf("bench-%03d", i), "name": "bench", "statement": stmt,
			"actions": []map[string]any{{"type": "nats", "topic": "bench"}}}
		if status, _, raw := n.api("POST", "/api/v1/rules", "", rule, nil); status != http.StatusCreated {
			b.Fatalf("rule %d: %d %s", i, status, raw)
		}
	}
}
