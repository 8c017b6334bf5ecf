package lang

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm/runtime"
)

// functions are the functions rule expressions may call, by their expr
// name. expr's own builtins are all disabled: several loop (map, filter,
// reduce…), allocate without bound (repeat, ranges) or read the clock
// (now), and the ones kept here treat a missing value (nil) uniformly.
var functions = map[string]func(args ...any) (any, error){
	"_lower":      stringFunc("lower", strings.ToLower),
	"_upper":      stringFunc("upper", strings.ToUpper),
	"_contains":   containsFunc,
	"_startsWith": prefixFunc("startsWith", strings.HasPrefix),
	"_endsWith":   prefixFunc("endsWith", strings.HasSuffix),
	"_len":        lenFunc,
	"_abs":        absFunc,
	"_round":      roundFunc,
	"_floor":      mathFunc("floor", math.Floor),
	"_ceil":       mathFunc("ceil", math.Ceil),
	"_json":       jsonFunc,
	"_sprintf":    sprintfFunc,
	"_hour":       timeFunc("hour", func(t time.Time) any { return t.Hour() }),
	"_weekday":    timeFunc("weekday", func(t time.Time) any { return int(t.Weekday()) }),

	// Operators made nil-safe by nilSafe below.
	"_lt":  compare(runtime.Less),
	"_le":  compare(runtime.LessOrEqual),
	"_gt":  compare(runtime.More),
	"_ge":  compare(runtime.MoreOrEqual),
	"_add": arith(runtime.Add),
	"_sub": arith(runtime.Subtract),
	"_mul": arith(runtime.Multiply),
	"_div": arith(func(a, b any) any { return runtime.Divide(a, b) }),
	"_mod": arith(func(a, b any) any { return runtime.Modulo(a, b) }),
	"_pow": arith(func(a, b any) any { return runtime.Exponent(a, b) }),
	"_neg": func(args ...any) (any, error) {
		if args[0] == nil {
			return nil, nil
		}
		return runtime.Negate(args[0]), nil
	},
}

// compileFuncs is the set of function names, for identifier checks.
var compileFuncs = func() map[string]bool {
	m := map[string]bool{}
	for name := range functions {
		m[name] = true
	}
	return m
}()

// compileOptions configure every expr compilation.
var compileOptions = func() []expr.Option {
	opts := []expr.Option{
		// A map environment whose keys are not known in advance: missing
		// keys read as nil, and identifiers load with a fast map lookup.
		expr.Env(map[string]any{}),
		expr.AllowUndefinedVariables(),
		expr.DisableAllBuiltins(),
		expr.MaxNodes(maxNodes),
		expr.Patch(nilSafe{}),
	}
	bool2 := new(func(any, any) bool)
	for name, fn := range functions {
		switch name {
		case "_lt", "_le", "_gt", "_ge", "_contains", "_startsWith", "_endsWith":
			// Typed, so that expr knows these are conditions.
			opts = append(opts, expr.Function(name, fn, bool2))
			continue
		}
		opts = append(opts, expr.Function(name, fn))
	}
	return opts
}()

// nilSafe rewrites operators so that a missing value (nil) does not make
// the rule fail: a comparison with nil is false, arithmetic with nil is
// nil, nil is false where a boolean is needed (and, or, not, ?:). This is
// the useful reading of sparse telemetry, where each message carries only
// some keys; it is SQL's NULL, simplified to two-valued logic.
type nilSafe struct{}

var opFuncs = map[string]string{"<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge",
	"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod", "**": "_pow", "^": "_pow"}

func (nilSafe) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "and", "&&", "or", "||":
			n.Left = orFalse(n.Left)
			n.Right = orFalse(n.Right)
			return
		}
		fn, ok := opFuncs[n.Operator]
		if !ok || isLiteral(n.Left) && isLiteral(n.Right) {
			return
		}
		ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: []ast.Node{n.Left, n.Right}})
	case *ast.UnaryNode:
		switch n.Operator {
		case "not", "!":
			n.Node = orFalse(n.Node)
		case "-":
			if !isLiteral(n.Node) {
				ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: "_neg"}, Arguments: []ast.Node{n.Node}})
			}
		}
	case *ast.ConditionalNode:
		n.Cond = orFalse(n.Cond)
	}
}

func isLiteral(n ast.Node) bool {
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.StringNode, *ast.BoolNode:
		return true
	}
	return false
}

// orFalse makes n ?? false, unless n is surely a boolean.
func orFalse(n ast.Node) ast.Node {
	switch m := n.(type) {
	case *ast.BoolNode:
		return n
	case *ast.BinaryNode:
		switch m.Operator {
		case "==", "!=", "and", "or", "&&", "||", "in", "not in", "matches", "contains", "startsWith", "endsWith":
			return n
		}
	case *ast.CallNode:
		if id, ok := m.Callee.(*ast.IdentifierNode); ok {
			switch id.Value {
			case "_lt", "_le", "_gt", "_ge", "_contains", "_startsWith", "_endsWith":
				return n
			}
		}
	}
	b := &ast.BinaryNode{Operator: "??", Left: n, Right: &ast.BoolNode{Value: false}}
	b.SetLocation(n.Location())
	return b
}

func compare(op func(a, b any) bool) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if args[0] == nil || args[1] == nil {
			return false, nil
		}
		return op(args[0], args[1]), nil
	}
}

func arith(op func(a, b any) any) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if args[0] == nil || args[1] == nil {
			return nil, nil
		}
		return op(args[0], args[1]), nil
	}
}

func wantArgs(name string, args []any, min, max int) error {
	if len(args) < min || len(args) > max {
		if min == max {
			return fmt.Errorf("%s takes %d argument(s), not %d", name, min, len(args))
		}
		return fmt.Errorf("%s takes %d to %d arguments, not %d", name, min, max, len(args))
	}
	return nil
}

func stringFunc(name string, f func(string) string) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if err := wantArgs(name, args, 1, 1); err != nil {
			return nil, err
		}
		switch s := args[0].(type) {
		case nil:
			return nil, nil
		case string:
			return f(s), nil
		}
		return nil, fmt.Errorf("%s wants a string, not %s", name, typeName(args[0]))
	}
}

func containsFunc(args ...any) (any, error) {
	if err := wantArgs("contains", args, 2, 2); err != nil {
		return nil, err
	}
	switch h := args[0].(type) {
	case nil:
		return false, nil
	case string:
		n, ok := args[1].(string)
		if !ok {
			return false, nil
		}
		return strings.Contains(h, n), nil
	case []any:
		for _, v := range h {
			if runtime.Equal(v, args[1]) {
				return true, nil
			}
		}
		return false, nil
	case map[string]any:
		k, ok := args[1].(string)
		if !ok {
			return false, nil
		}
		_, ok = h[k]
		return ok, nil
	}
	return nil, fmt.Errorf("contains wants a string, an array or a map, not %s", typeName(args[0]))
}

func prefixFunc(name string, f func(s, p string) bool) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if err := wantArgs(name, args, 2, 2); err != nil {
			return nil, err
		}
		s, ok1 := args[0].(string)
		p, ok2 := args[1].(string)
		if args[0] == nil || args[1] == nil {
			return false, nil
		}
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%s wants two strings", name)
		}
		return f(s, p), nil
	}
}

func lenFunc(args ...any) (any, error) {
	if err := wantArgs("len", args, 1, 1); err != nil {
		return nil, err
	}
	switch v := args[0].(type) {
	case nil:
		return 0, nil
	case string:
		return utf8.RuneCountInString(v), nil
	case []any:
		return len(v), nil
	case map[string]any:
		return len(v), nil
	}
	return nil, fmt.Errorf("len wants a string, an array or a map, not %s", typeName(args[0]))
}

// number converts a numeric value to float64.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case float32:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func absFunc(args ...any) (any, error) {
	if err := wantArgs("abs", args, 1, 1); err != nil {
		return nil, err
	}
	switch n := args[0].(type) {
	case nil:
		return nil, nil
	case int:
		if n < 0 {
			return -n, nil
		}
		return n, nil
	}
	f, ok := number(args[0])
	if !ok {
		return nil, fmt.Errorf("abs wants a number, not %s", typeName(args[0]))
	}
	return math.Abs(f), nil
}

func mathFunc(name string, f func(float64) float64) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if err := wantArgs(name, args, 1, 1); err != nil {
			return nil, err
		}
		if args[0] == nil {
			return nil, nil
		}
		x, ok := number(args[0])
		if !ok {
			return nil, fmt.Errorf("%s wants a number, not %s", name, typeName(args[0]))
		}
		return f(x), nil
	}
}

// roundFunc is round(x) or round(x, digits), half away from zero.
func roundFunc(args ...any) (any, error) {
	if err := wantArgs("round", args, 1, 2); err != nil {
		return nil, err
	}
	if args[0] == nil {
		return nil, nil
	}
	x, ok := number(args[0])
	if !ok {
		return nil, fmt.Errorf("round wants a number, not %s", typeName(args[0]))
	}
	if len(args) == 1 {
		return math.Round(x), nil
	}
	d, ok := number(args[1])
	if !ok || d != math.Trunc(d) || d < -15 || d > 15 {
		return nil, fmt.Errorf("round's digits must be a whole number from -15 to 15")
	}
	p := math.Pow(10, d)
	return math.Round(x*p) / p, nil
}

// jsonFunc parses a JSON text. A value that is already decoded (a map or
// an array, as an MQTT payload that was JSON) is returned as it is.
func jsonFunc(args ...any) (any, error) {
	if err := wantArgs("json", args, 1, 1); err != nil {
		return nil, err
	}
	var b []byte
	switch v := args[0].(type) {
	case nil:
		return nil, nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	case map[string]any, []any:
		return v, nil
	default:
		return nil, fmt.Errorf("json wants a string, not %s", typeName(args[0]))
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("json: %v", err)
	}
	return out, nil
}

// maxSprintfWidth bounds widths and precisions in sprintf formats, since
// fmt allocates them: %999999999d would take a gigabyte.
const maxSprintfWidth = 100

func sprintfFunc(args ...any) (any, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("sprintf takes a format and values")
	}
	f, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("sprintf's format must be a string, not %s", typeName(args[0]))
	}
	if err := checkFormat(f); err != nil {
		return nil, err
	}
	return fmt.Sprintf(f, args[1:]...), nil
}

// checkFormat rejects * widths and widths or precisions over
// maxSprintfWidth.
func checkFormat(f string) error {
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		n := 0
		for i++; i < len(f); i++ {
			c := f[i]
			switch {
			case c == '*':
				return fmt.Errorf("sprintf: * widths are not allowed")
			case c >= '0' && c <= '9':
				n = n*10 + int(c-'0')
				if n > maxSprintfWidth {
					return fmt.Errorf("sprintf: widths and precisions are at most %d", maxSprintfWidth)
				}
				continue
			case c == '.' || c == '+' || c == '-' || c == '#' || c == ' ' || c == '[' || c == ']':
				n = 0
				continue
			}
			break
		}
	}
	return nil
}

func timeFunc(name string, f func(time.Time) any) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if err := wantArgs(name, args, 1, 2); err != nil {
			return nil, err
		}
		if args[0] == nil {
			return nil, nil
		}
		t, err := toTime(args[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(args) == 2 {
			tz, ok := args[1].(string)
			if !ok {
				return nil, fmt.Errorf("%s: the time zone must be a name such as 'Europe/Paris'", name)
			}
			loc, err := location(tz)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			t = t.In(loc)
		} else {
			t = t.UTC()
		}
		return f(t), nil
	}
}

// toTime reads a time: a time.Time, an RFC 3339 string or Unix seconds.
func toTime(v any) (time.Time, error) {
	switch t := v.(type) {
	case time.Time:
		return t, nil
	case string:
		p, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", t)
		}
		return p, nil
	}
	if f, ok := number(v); ok && !math.IsNaN(f) && !math.IsInf(f, 0) && math.Abs(f) < 1e11 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("wants a time, not %s", typeName(v))
}

// locations caches time zones; bounded since the names come from rules
// (possibly from data).
var locations struct {
	sync.Mutex
	m map[string]*time.Location
}

const maxLocations = 64

func location(name string) (*time.Location, error) {
	locations.Lock()
	defer locations.Unlock()
	if l, ok := locations.m[name]; ok {
		return l, nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q", name)
	}
	if locations.m == nil {
		locations.m = map[string]*time.Location{}
	}
	if len(locations.m) < maxLocations {
		locations.m[name] = l
	}
	return l, nil
}
