package lang_test

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/rules/lang"
)

// where parses "SELECT * FROM telemetry WHERE cond" and returns the WHERE.
func where(t *testing.T, cond string) *lang.Expr {
	t.Helper()
	q, err := lang.Parse("SELECT * FROM telemetry WHERE " + cond)
	if err != nil {
		t.Fatalf("Parse(%q): %v", cond, err)
	}
	return q.Where
}

// projection parses "SELECT expr AS v FROM telemetry" and returns it.
func projection(t *testing.T, expr string) *lang.Expr {
	t.Helper()
	q, err := lang.Parse("SELECT " + expr + " AS v FROM telemetry")
	if err != nil {
		t.Fatalf("Parse(%q): %v", expr, err)
	}
	return q.Projections[0].Expr
}

func telemetryEnv() map[string]any {
	return map[string]any{
		"device": map[string]any{
			"id": "arm-7", "name": "Arm 7", "profile": "robot-arm",
			"labels": map[string]any{"line": "L2", "site": "north"},
		},
		"ts":        time.Date(2025, 3, 14, 22, 30, 0, 0, time.UTC), // a Friday
		"vibration": 4.5,
		"cycles":    1200,
		"mode":      "eco-auto",
		"fan":       map[string]any{"rpm": 900.0},
		"values":    map[string]any{"vibration": 4.5, "temp-1": 21.5},
		"raw":       `{"a": {"b": [1, 2, 3]}}`,
		"tags":      []any{"x", "y"},
	}
}

func TestConditions(t *testing.T) {
	tests := []struct {
		name string
		cond string
		want bool
	}{
		{"an equality with = holds", "device.profile = 'robot-arm'", true},
		{"<> means not equal", "device.profile <> 'robot-arm'", false},
		{"AND, OR and NOT combine in any case", "vibration > 4 and NOT (mode = 'off') Or false", true},
		{"a dotted key reads a nested value", "fan.rpm = 900", true},
		{"a comparison with a missing value is false", "temperature > 30", false},
		{"its negation is true: missing counts as false", "NOT (temperature > 30)", true},
		{"a missing value is NULL", "temperature IS NULL AND vibration IS NOT NULL", true},
		{"a member of a missing map is missing, not an error", "nothing.at.all = 1", false},
		{"an index of a missing array is missing", "nothing[3] IS NULL", true},
		{"a missing value in AND is false", "flag AND true", false},
		{"a missing value in OR is false", "flag OR vibration > 4", true},
		{"a missing value in a conditional is false", "(flag ? 1 : 2) = 2", true},
		{"arithmetic with a missing value is missing", "temperature * 2 IS NULL", true},
		{"unary minus of a missing value is missing", "-temperature IS NULL", true},
		{"IN takes an SQL list", "device.labels.line IN ('L1', 'L2')", true},
		{"NOT IN is its negation", "device.labels.line NOT IN ('L1', 'L2')", false},
		{"values holds the flat keys", "values['temp-1'] > 21", true},
		{"expr's operators work", "mode startsWith 'eco' and mode contains 'auto' and mode matches '^eco'", true},
		{"contains() finds a substring", "contains(mode, 'auto')", true},
		{"contains() finds an array element", "contains(tags, 'y')", true},
		{"contains() of a missing value is false", "contains(nothing, 'y')", false},
		{"startsWith() and endsWith() are functions too", "startsWith(device.id, 'arm-') and endsWith(device.id, '-7')", true},
		{"lower() and upper() convert", "lower(device.name) = 'arm 7' and upper(mode) = 'ECO-AUTO'", true},
		{"len() counts characters, not bytes", "len('Küche') = 5", true},
		{"len() of a missing value is 0", "len(nothing) = 0", true},
		{"abs() keeps integers whole", "abs(-3) = 3", true},
		{"round() rounds half away from zero", "round(2.5) = 3 and round(-2.5) = -3", true},
		{"round() takes digits", "round(3.14159, 2) = 3.14", true},
		{"floor() and ceil() round down and up", "floor(2.7) = 2 and ceil(2.1) = 3", true},
		{"json() parses a JSON text", "json(raw).a.b[2] = 3", true},
		{"sprintf() formats", "sprintf('%s/%.1f', device.id, vibration) = 'arm-7/4.5'", true},
		{"hour() is in UTC by default", "hour(ts) = 22", true},
		{"hour() takes a time zone", "hour(ts, 'Europe/Paris') = 23", true},
		{"weekday() counts from Sunday = 0", "weekday(ts) = 5", true},
		{"weekday() in a time zone east of UTC can be the next day", "weekday(ts, 'Asia/Tokyo') = 6", true},
		{"hour() reads RFC 3339 text", "hour('2025-01-01T07:00:00Z') = 7", true},
		{"hour() reads Unix seconds", "hour(3600) = 1", true},
		{"integer and float compare", "cycles > 1199.5", true},
		{"a comparison on constants folds", "1 < 2", true},
		{"nil coalescing supplies a default", "(temperature ?? 20) = 20", true},
		{"a stateful call's value in WHERE is a number, not a condition", "rate(1) IS NULL", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := where(t, tt.cond).Bool(telemetryEnv())
			if err != nil {
				t.Fatalf("Bool: %v", err)
			}
			if got != tt.want {
				t.Errorf("%s = %v, want %v", tt.cond, got, tt.want)
			}
		})
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		name string
		expr string
		want any
	}{
		{"arithmetic mixes integers and floats", "cycles * 2 + vibration", 2404.5},
		{"a missing value propagates through arithmetic", "temperature * 1.8 + 32", nil},
		{"a missing value stays missing in functions", "round(temperature, 1)", nil},
		{"json() of a missing value is missing", "json(nothing)", nil},
		{"SQL strings double their quotes", "'it''s'", "it's"},
		{"a backslash in an SQL string is literal", `'a\d'`, `a\d`},
		{"expr strings keep their escapes", `"a\tb"`, "a\tb"},
		{"division is floating point", "cycles / 1000", 1.2},
		{"division by zero is infinite", "vibration / 0", math.Inf(1)},
		{"the conditional operator works", "vibration > 4 ? 'high' : 'ok'", "high"},
		{"a missing member is nil", "device.labels.floor", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := projection(t, tt.expr).Eval(telemetryEnv())
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if got != tt.want {
				t.Errorf("%s = %#v, want %#v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	tests := []struct {
		name    string
		stmt    string
		env     map[string]any
		line    int
		col     int
		message string
	}{
		{
			name: "comparing a string with a number fails at the operator",
			stmt: "SELECT *\nFROM telemetry\nWHERE mode > 3",
			env:  map[string]any{"mode": "eco"}, line: 3, col: 12, message: "invalid operation",
		},
		{
			name: "a non-boolean WHERE fails at the expression",
			stmt: "SELECT * FROM telemetry WHERE mode",
			env:  map[string]any{"mode": "eco"}, line: 1, col: 31, message: "mode is a string, not true or false",
		},
		{
			name: "a malformed JSON text fails at the call",
			stmt: "SELECT * FROM telemetry WHERE json(raw).a = 1",
			env:  map[string]any{"raw": "{"}, line: 1, col: 31, message: "json:",
		},
		{
			name: "a huge sprintf width is refused",
			stmt: "SELECT * FROM telemetry WHERE sprintf('%999999999d', 1) = ''",
			env:  map[string]any{}, line: 1, col: 31, message: "at most 100",
		},
		{
			name: "an unknown time zone is an error",
			stmt: "SELECT * FROM telemetry WHERE hour(ts, 'Mars/Olympus') = 1",
			env:  map[string]any{"ts": time.Now()}, line: 1, col: 31, message: "unknown time zone",
		},
		{
			name: "lower() of a number is an error",
			stmt: "SELECT * FROM telemetry WHERE lower(x) = 'a'",
			env:  map[string]any{"x": 1.5}, line: 1, col: 31, message: "lower wants a string",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := lang.Parse(tt.stmt)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			_, err = q.Where.Bool(tt.env)
			var le *lang.Error
			if !errors.As(err, &le) {
				t.Fatalf("error %v (%T) is not a *lang.Error", err, err)
			}
			if le.Line != tt.line || le.Col != tt.col || !strings.Contains(le.Msg, tt.message) {
				t.Errorf("got %v, want line %d, column %d: …%s…", err, tt.line, tt.col, tt.message)
			}
		})
	}
}

func TestSlotsReplaceCalls(t *testing.T) {
	q, err := lang.Parse("SELECT avg(v) AS a, zscore(avg(v)) AS z FROM telemetry GROUP BY device, TUMBLING(1m) HAVING a > 2 AND max(v) < 10")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a windowed result reads aggregates from their slots", func(t *testing.T) {
		env := map[string]any{"_agg0": 3.0, "_agg1": 9.0, "a": 3.0}
		ok, err := q.Having.Bool(env)
		if err != nil || !ok {
			t.Fatalf("HAVING = %v, %v; want true", ok, err)
		}
		env["_agg1"] = 11.0
		if ok, _ := q.Having.Bool(env); ok {
			t.Fatal("HAVING held with max 11")
		}
	})
	t.Run("a stateful call's argument reads the aggregate slot", func(t *testing.T) {
		if len(q.Stateful) != 1 || q.Stateful[0].Stage != lang.StageResult {
			t.Fatalf("Stateful = %+v", q.Stateful)
		}
		v, err := q.Stateful[0].Args[0].Eval(map[string]any{"_agg0": 3.0})
		if err != nil || v != 3.0 {
			t.Fatalf("arg = %v, %v", v, err)
		}
		v, err = q.Projections[1].Expr.Eval(map[string]any{"_fn0": 1.5})
		if err != nil || v != 1.5 {
			t.Fatalf("projection = %v, %v", v, err)
		}
	})
}

func TestGroupByDeviceMeansItsID(t *testing.T) {
	q, err := lang.Parse("SELECT avg(x) AS a FROM telemetry GROUP BY device, TUMBLING(1m)")
	if err != nil {
		t.Fatal(err)
	}
	v, err := q.GroupBy[0].Eval(telemetryEnv())
	if err != nil || v != "arm-7" {
		t.Fatalf("key = %v, %v; want arm-7", v, err)
	}
	if q.GroupBy[0].Src != "device" {
		t.Errorf("Src = %q, want device", q.GroupBy[0].Src)
	}
}

func TestEvalIsSafeConcurrently(t *testing.T) {
	e := where(t, "device.profile = 'robot-arm' AND vibration > 4.2 AND lower(mode) contains 'eco'")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := telemetryEnv()
			for i := 0; i < 500; i++ {
				ok, err := e.Bool(env)
				if err != nil || !ok {
					t.Errorf("Bool = %v, %v", ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestErrorPositions(t *testing.T) {
	t.Run("Error formats its line and column", func(t *testing.T) {
		e := &lang.Error{Pos: 10, Line: 2, Col: 3, Msg: "boom"}
		if got := e.Error(); got != "line 2, column 3: boom" {
			t.Errorf("Error() = %q", got)
		}
	})
	t.Run("Pos is a byte offset and Col counts characters", func(t *testing.T) {
		stmt := "SELECT x FROM telemetry WHERE name = 'Küche' AND ) x"
		_, err := lang.Parse(stmt)
		var le *lang.Error
		if !errors.As(err, &le) {
			t.Fatalf("error %v", err)
		}
		if stmt[le.Pos] != ')' || le.Col != le.Pos { // one two-byte character before it
			t.Errorf("Pos %d (%q), Col %d", le.Pos, stmt[le.Pos:], le.Col)
		}
	})
}
