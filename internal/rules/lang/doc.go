// Package lang parses Tether's rule language: one SQL-like statement that
// says what a rule reads, filters, groups, windows and returns. [Parse]
// checks a statement and compiles every expression in it once, into
// expr-lang/expr programs, when the rule is saved; the engine then
// evaluates the compiled [Expr]s per input with [Expr.Eval] and
// [Expr.Bool]. Windows, aggregates and anomaly functions keep state, which
// is the engine's (and packages window and anomaly's) business: lang
// replaces each such call by a slot variable and lists it in
// [Query.Aggregates] or [Query.Stateful].
//
// # Grammar
//
// Keywords are case-insensitive; whitespace and comments (-- to the end of
// the line, /* … */) separate tokens.
//
//	statement  = "SELECT" projection { "," projection }
//	             "FROM" source
//	             [ "WHERE" expr ]
//	             [ "GROUP BY" groupItems [ "ALLOWED LATENESS" duration ] ]
//	             [ "HAVING" expr ] [ ";" ]
//	projection = "*" | expr [ "AS" name ]
//	source     = "telemetry" | "presence" | "shadow" | "command" | "alert"
//	           | string                       (an MQTT topic filter: 'factory/+/temp')
//	groupItems = key { "," key } [ "," window ] | window
//	window     = "TUMBLING(" duration ")"
//	           | "HOPPING(" duration "," duration ")"     (size, slide)
//	           | "SESSION(" duration ")"                 (gap)
//	duration   = number unit { number unit }            (units ms s m h d: 30s, 1h30m, 1.5h)
//
// An expr is an expr-lang/expr expression with SQL spellings translated
// outside strings: = is ==, <> is !=, AND OR NOT are and or not, IS NULL
// and IS NOT NULL compare with nil, NULL TRUE FALSE are nil true false,
// x IN (a, b) is x in [a, b], and 'single quoted' strings are SQL strings
// (a quote is written twice, a backslash is a backslash). "Double quoted" and
// `backquoted` strings are expr's. expr's operators (contains, startsWith,
// endsWith, matches, ?:, ??, [i], [a:b]) work as in expr.
//
// Functions: lower, upper, contains, startsWith, endsWith, len, abs,
// round(x[, digits]), floor, ceil, json (parse a JSON text), sprintf,
// hour(ts[, zone]), weekday(ts[, zone]) (0 = Sunday); aggregates avg, min,
// max, sum, count(* | x), stddev, first, last, percentile(x, p) — only
// with a window, only in SELECT and HAVING, never nested; and the stateful
// functions zscore(x[, n]), ewma_dev(x[, alpha]), rate(x),
// mad_outlier(x[, n[, k]]), time_to_threshold(x, threshold[, seconds]),
// whose parameters after x are number constants ([StatefulCall.Params]).
// Nothing else: expr's builtins are disabled, closures (#) and ranges (..)
// are refused, so no expression loops.
//
// A missing value is nil (the environment is a map; an absent key reads as
// nil, a member of nil is nil). Comparisons with nil are false, arithmetic
// with nil is nil, and nil is false where a condition is needed, so a rule
// over sparse telemetry does not fail on the messages that lack a key.
//
// Limits: a statement is at most 4 KiB; an expression at most 1000 syntax
// nodes; at most 32 aggregates and 16 stateful calls; windows from 100ms
// to 7 days; hopping windows at most 64 open per key; lateness at most a
// day. docs/rules.md is the user's reference, with examples.
//
// # Evaluation environments
//
// lang only compiles; the engine builds the environments: for telemetry
// device {id, name, profile, labels}, ts, every value by key (dotted keys
// nested), values (flat), message_id; for presence, shadow, command and
// alert, device and event; for MQTT, topic and payload. A windowed result
// has device, window_start, window_end, each projection by name, each
// GROUP BY key written as a plain name (site) by that name, and the slots
// _aggN and _fnN. Windowed projections and HAVING may use only those names,
// which Parse checks.
//
// Stateful calls of [StageInput] are evaluated per input, before WHERE
// (one call written in WHERE and SELECT shares a slot and a state); those
// of [StageResult] on a result, after the aggregates. A call nested in
// another's argument comes first in [Query.Stateful].
package lang
