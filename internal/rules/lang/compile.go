package lang

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// Expr is one compiled expression of a statement.
type Expr struct {
	Src string // the expression as written in the statement
	Pos int    // byte offset of Src in the statement

	code string      // what expr compiled: SQL spellings translated, calls replaced by slots
	prog *vm.Program // compiled once
	stmt string      // the whole statement, to place runtime errors
	pmap []span      // code offsets → statement offsets
}

// span maps code[Out:Out+N] to stmt[Orig:Orig+N]; N == 0 marks translated
// text, all of which maps to Orig.
type span struct{ Out, Orig, N int }

// Code returns the expr-lang source the expression was compiled from: the
// SQL spellings translated (= to ==, AND to and, 'x' to "x"), member
// access made nil-safe (a.b to a?.b) and each aggregate or stateful call
// replaced by its slot variable. It is meant for traces and tests.
func (e *Expr) Code() string { return e.code }

// vms reuses expr virtual machines: Eval then allocates nothing beyond
// what the expression itself does.
var vms = sync.Pool{New: func() any { return new(vm.VM) }}

// Eval evaluates the expression over env. A key missing from env reads as
// nil. Errors are *Error, placed in the statement.
func (e *Expr) Eval(env map[string]any) (any, error) {
	m := vms.Get().(*vm.VM)
	out, err := m.Run(e.prog, env)
	vms.Put(m)
	if err != nil {
		return nil, e.runtimeError(err)
	}
	return out, nil
}

// Bool evaluates a condition. A nil result (a missing value) is false; a
// result that is neither a boolean nor nil is an error.
func (e *Expr) Bool(env map[string]any) (bool, error) {
	v, err := e.Eval(env)
	if err != nil {
		return false, err
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case nil:
		return false, nil
	}
	return false, errorAt(e.stmt, e.Pos, "%s is %s, not true or false", e.Src, typeName(v))
}

func (e *Expr) runtimeError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return errorAt(e.stmt, e.origPos(fe.From), "%s", fe.Message)
	}
	return errorAt(e.stmt, e.Pos, "%v", err)
}

// origPos maps a rune offset in code to a byte offset in the statement.
func (e *Expr) origPos(runeOff int) int {
	off := 0
	for n := 0; n < runeOff && off < len(e.code); n++ {
		_, size := utf8.DecodeRuneInString(e.code[off:])
		off += size
	}
	k := sort.Search(len(e.pmap), func(i int) bool { return e.pmap[i].Out > off }) - 1
	if k < 0 {
		return e.Pos
	}
	s := e.pmap[k]
	if d := off - s.Out; d < s.N {
		return s.Orig + d
	}
	return s.Orig
}

// ctx says where an expression is and so what it may contain.
type ctx struct {
	clause    string // SELECT, WHERE, GROUP BY, HAVING: for messages
	stage     string // Stage of stateful calls here
	aggs      bool   // aggregate calls allowed (SELECT, HAVING)
	inAgg     bool   // inside an aggregate's argument
	stateful  bool   // stateful calls allowed
	condition bool   // must be a boolean
	// resultNames, when not nil, lists the identifiers a windowed result
	// provides besides device, window_start, window_end and the slots;
	// other identifiers are an error, since they would always be nil.
	resultNames map[string]bool
}

// Function families.
var (
	aggregateFuncs = map[string]bool{"avg": true, "min": true, "max": true, "sum": true, "count": true,
		"stddev": true, "first": true, "last": true, "percentile": true}
	// statefulArity is the number of constant parameters each stateful
	// call accepts after its value: [min, max].
	statefulArity = map[string][2]int{"zscore": {0, 1}, "ewma_dev": {0, 1}, "rate": {0, 0},
		"mad_outlier": {0, 2}, "time_to_threshold": {1, 2}}
	statefulUsage = map[string]string{
		"zscore":            "zscore(x) or zscore(x, samples)",
		"ewma_dev":          "ewma_dev(x) or ewma_dev(x, alpha)",
		"rate":              "rate(x)",
		"mad_outlier":       "mad_outlier(x), mad_outlier(x, samples) or mad_outlier(x, samples, k)",
		"time_to_threshold": "time_to_threshold(x, threshold) or time_to_threshold(x, threshold, window_seconds)",
	}
	// loopFuncs are expr builtins that iterate or take closures.
	loopFuncs = map[string]bool{"map": true, "filter": true, "all": true, "any": true, "one": true,
		"none": true, "reduce": true, "sortby": true, "groupby": true, "find": true, "findindex": true,
		"findlast": true, "findlastindex": true, "sort": true, "repeat": true}
)

// helperNames maps the lower-case name a user writes to the expr function.
var helperNames = map[string]string{
	"lower": "_lower", "upper": "_upper", "contains": "_contains", "startswith": "_startsWith",
	"endswith": "_endsWith", "len": "_len", "abs": "_abs", "round": "_round", "floor": "_floor",
	"ceil": "_ceil", "json": "_json", "sprintf": "_sprintf", "hour": "_hour", "weekday": "_weekday",
}

// helperList is for "unknown function" messages.
const helperList = "lower, upper, contains, startsWith, endsWith, len, abs, round, floor, ceil, json, sprintf, hour, weekday; " +
	"aggregates avg, min, max, sum, count, stddev, first, last, percentile; " +
	"zscore, ewma_dev, rate, mad_outlier, time_to_threshold"

// out accumulates translated code and its position map.
type out struct {
	b    strings.Builder
	pmap []span
}

func (o *out) emit(t token, text string, verbatim bool) {
	if t.Space && o.b.Len() > 0 {
		o.b.WriteByte(' ')
	}
	n := 0
	if verbatim {
		n = len(text)
	}
	o.pmap = append(o.pmap, span{Out: o.b.Len(), Orig: t.Pos, N: n})
	o.b.WriteString(text)
}

// compile translates tokens [lo, hi) and compiles them.
func (p *parser) compile(c *ctx, lo, hi int) (*Expr, *Error) {
	var o out
	if err := p.translate(c, lo, hi, &o); err != nil {
		return nil, err
	}
	e := &Expr{
		Src:  strings.TrimSpace(p.src[p.toks[lo].Pos:p.toks[hi-1].End]),
		Pos:  p.toks[lo].Pos,
		code: o.b.String(),
		stmt: p.src,
		pmap: o.pmap,
	}
	if c.clause == "GROUP BY" && hi-lo == 1 && p.toks[lo].Text == "device" {
		// The device as a key means its ID.
		e.code = "device?.id"
		e.pmap = []span{{Out: 0, Orig: p.toks[lo].Pos}}
	}
	prog, err := expr.Compile(e.code, compileOptions...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			msg := fe.Message
			pos := e.origPos(fe.From)
			switch {
			case strings.Contains(msg, "exceeds maximum allowed nodes"):
				msg = fmt.Sprintf("expression is too complex (more than %d nodes)", maxNodes)
			case strings.HasPrefix(msg, "unexpected token "):
				// expr names its token, perhaps a translated one (== for
				// =): name the one the user wrote.
				if strings.Contains(msg, "EOF") {
					msg, pos = "unexpected end of expression", p.toks[hi-1].End
				} else if tok, ok := p.tokenAt(pos); ok {
					msg = "unexpected " + strconv.Quote(tok.Text)
				}
			}
			return nil, errorAt(p.src, pos, "%s", msg)
		}
		return nil, errorAt(p.src, e.Pos, "%v", err)
	}
	e.prog = prog
	node := prog.Node()
	if c.condition {
		if t := node.Type(); t != nil && t.Kind() != reflect.Interface && t.Kind() != reflect.Bool {
			return nil, errorAt(p.src, e.Pos, "%s needs a condition (true or false), but %s is %s", c.clause, e.Src, kindName(t))
		}
	}
	if c.resultNames != nil {
		if err := p.checkResultNames(c, e, node); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// tokenAt returns the token starting at byte offset pos.
func (p *parser) tokenAt(pos int) (token, bool) {
	k := sort.Search(len(p.toks), func(i int) bool { return p.toks[i].Pos >= pos })
	if k < len(p.toks) && p.toks[k].Pos == pos && p.toks[k].Kind != tEOF {
		return p.toks[k], true
	}
	return token{}, false
}

// checkResultNames rejects identifiers a windowed result does not have.
func (p *parser) checkResultNames(c *ctx, e *Expr, node ast.Node) *Error {
	v := &identVisitor{declared: map[string]bool{}}
	ast.Walk(&node, v)
	for _, id := range v.ids {
		name := id.Value
		if c.resultNames[name] || v.declared[name] || isSlotName(name) || compileFuncs[name] {
			continue
		}
		switch name {
		case "device", "window_start", "window_end", "$env":
			continue
		}
		return errorAt(p.src, e.origPos(id.Location().From),
			"%s is not known when the window closes: aggregate it (avg(%s)), GROUP BY it, or use device, window_start, window_end or a projection name", name, name)
	}
	return nil
}

type identVisitor struct {
	ids      []*ast.IdentifierNode
	declared map[string]bool
}

func (v *identVisitor) Visit(n *ast.Node) {
	switch n := (*n).(type) {
	case *ast.IdentifierNode:
		v.ids = append(v.ids, n)
	case *ast.VariableDeclaratorNode:
		v.declared[n.Name] = true
	}
}

// translate appends the expr-lang translation of tokens [lo, hi) to o.
func (p *parser) translate(c *ctx, lo, hi int, o *out) *Error {
	if lo >= hi {
		return p.errAt(lo, "expected an expression")
	}
	closeAs := map[int]string{} // ) of IN ( … ) becomes ]
	for k := lo; k < hi; k++ {
		t := p.toks[k]
		prevOperand := k > lo && endsOperand(p.toks[k-1])
		next := p.toks[k+1]
		if k+1 >= hi {
			next = token{Kind: tEOF, Pos: t.End}
		}
		switch t.Kind {
		case tNumber:
			o.emit(t, t.Text, true)
		case tString:
			if t.Text[0] == '\'' {
				o.emit(t, strconv.Quote(t.Val), false)
			} else {
				o.emit(t, t.Text, true)
			}
		case tOp:
			switch t.Text {
			case "=":
				o.emit(t, "==", false)
			case "<>":
				o.emit(t, "!=", false)
			case "#":
				return p.errAt(k, "# (closures) is not allowed: rule expressions cannot loop")
			case "..":
				return p.errAt(k, "ranges (..) are not allowed: rule expressions cannot loop")
			case ".":
				if next.Kind == tIdent {
					o.emit(t, "?.", false)
				} else {
					o.emit(t, ".", true)
				}
			case "[":
				if prevOperand {
					o.emit(t, "?.[", false)
				} else {
					o.emit(t, "[", true)
				}
			case ")":
				if s, ok := closeAs[k]; ok {
					o.emit(t, s, false)
				} else {
					o.emit(t, ")", true)
				}
			default:
				o.emit(t, t.Text, true)
			}
		case tIdent:
			if p.isMember(k) {
				if next.is("(") {
					return p.errAt(k, "method calls such as .%s() are not supported", t.Text)
				}
				o.emit(t, t.Text, true)
				continue
			}
			lower := strings.ToLower(t.Text)
			switch lower {
			case "and", "or", "not", "true", "false":
				o.emit(t, lower, false)
				continue
			case "null":
				o.emit(t, "nil", false)
				continue
			case "in":
				o.emit(t, "in", false)
				if next.is("(") {
					// SQL's x IN (1, 2) is expr's x in [1, 2].
					o.emit(next, "[", false)
					closeAs[p.match[k+1]] = "]"
					k++
				}
				continue
			case "is":
				if next.isKeyword("NULL") {
					o.emit(t, "==", false)
					o.emit(next, "nil", false)
					k++
					continue
				}
				if next.isKeyword("NOT") && k+2 < hi && p.toks[k+2].isKeyword("NULL") {
					o.emit(t, "!=", false)
					o.emit(p.toks[k+2], "nil", false)
					k += 2
					continue
				}
				return p.errAt(k, "IS is followed by NULL or NOT NULL")
			case "matches", "contains", "startswith", "endswith":
				if prevOperand {
					o.emit(t, map[string]string{"matches": "matches", "contains": "contains",
						"startswith": "startsWith", "endswith": "endsWith"}[lower], false)
					continue
				}
			case "if", "else", "let":
				o.emit(t, lower, false)
				continue
			case "select", "from", "where", "having", "as":
				return p.errAt(k, "unexpected %s", strings.ToUpper(t.Text))
			}
			if isSlotName(t.Text) || compileFuncs[t.Text] {
				return p.errAt(k, "%s is a reserved name", t.Text)
			}
			if !next.is("(") || prevOperand {
				o.emit(t, t.Text, true)
				continue
			}
			end, err := p.call(c, k, lower, o)
			if err != nil {
				return err
			}
			k = end
		default:
			return p.errAt(k, "unexpected %s", p.describe(k))
		}
	}
	return nil
}

// call translates the function call whose name is token k. For aggregate
// and stateful calls it emits the slot and returns the index of the
// closing parenthesis; for helpers it emits the name and returns k.
func (p *parser) call(c *ctx, k int, name string, o *out) (int, *Error) {
	t := p.toks[k]
	closing := p.match[k+1]
	switch {
	case aggregateFuncs[name]:
		return closing, p.aggregate(c, k, name, o)
	case isStateful(name):
		return closing, p.statefulCall(c, k, name, o)
	case helperNames[name] != "":
		o.emit(t, helperNames[name], false)
		return k, nil
	case loopFuncs[name]:
		return 0, p.errAt(k, "%s() is not available: rule expressions cannot loop", t.Text)
	case name == "tumbling" || name == "hopping" || name == "session":
		return 0, p.errAt(k, "%s() is a window: write it last in GROUP BY, e.g. GROUP BY device, %s(1m)", strings.ToUpper(name), strings.ToUpper(name))
	}
	return 0, p.errAt(k, "unknown function %s() (functions: %s)", t.Text, helperList)
}

func isStateful(name string) bool {
	_, ok := statefulArity[name]
	return ok
}

// aggregate handles an aggregate call at token k.
func (p *parser) aggregate(c *ctx, k int, name string, o *out) *Error {
	switch {
	case c.inAgg:
		return p.errAt(k, "%s() inside another aggregate: aggregates cannot be nested", name)
	case c.clause == "WHERE":
		return p.errAt(k, "%s() is not allowed in WHERE, which filters single inputs: test aggregates in HAVING", name)
	case c.clause == "GROUP BY":
		return p.errAt(k, "%s() is not allowed in GROUP BY", name)
	case !c.aggs:
		return p.errAt(k, "%s() is not allowed here", name)
	case p.q.Window == nil:
		return p.errAt(k, "%s() needs a window: add one to GROUP BY, e.g. GROUP BY device, TUMBLING(1m)", name)
	}
	closing := p.match[k+1]
	args := p.split(k+2, closing)
	a := &Aggregate{Func: name}
	star := name == "count" && len(args) == 1 && args[0][1]-args[0][0] == 1 && p.toks[args[0][0]].is("*")
	switch {
	case star:
		// count(*): every input.
	case len(args) >= 1 && args[0][1]-args[0][0] == 1 && p.toks[args[0][0]].is("*"):
		return p.errAt(args[0][0], "* only works in count(*), which counts inputs")
	case name == "percentile":
		if len(args) != 2 {
			return p.errAt(k, "percentile takes two arguments: percentile(x, p) with p from 0 to 100")
		}
		v, err := p.constant(args[1], "p of percentile")
		if err != nil {
			return err
		}
		if v < 0 || v > 100 {
			return p.errAt(args[1][0], "p of percentile must be from 0 to 100, not %v", v)
		}
		a.Param = v
		args = args[:1]
	default:
		if len(args) != 1 || args[0][0] == args[0][1] {
			if name == "count" {
				return p.errAt(k, "count takes one argument: count(*) or count(x)")
			}
			return p.errAt(k, "%s takes one argument: %s(x)", name, name)
		}
	}
	if !star {
		arg, err := p.compile(&ctx{clause: c.clause, stage: StageInput, inAgg: true, stateful: true}, args[0][0], args[0][1])
		if err != nil {
			return err
		}
		a.Arg = arg
	}
	key := name + "\x00" + strconv.FormatFloat(a.Param, 'g', -1, 64)
	if a.Arg != nil {
		key += "\x00" + a.Arg.code
	}
	if prev, ok := p.aggs[key]; ok {
		o.emit(p.toks[k], prev.Slot, false)
		return nil
	}
	if len(p.q.Aggregates) >= maxAggregates {
		return p.errAt(k, "too many aggregates: at most %d per rule", maxAggregates)
	}
	a.Slot = "_agg" + strconv.Itoa(len(p.q.Aggregates))
	p.aggs[key] = a
	p.q.Aggregates = append(p.q.Aggregates, a)
	o.emit(p.toks[k], a.Slot, false)
	return nil
}

// statefulCall handles an anomaly/prediction call at token k.
func (p *parser) statefulCall(c *ctx, k int, name string, o *out) *Error {
	if !c.stateful {
		return p.errAt(k, "%s() is not allowed in %s", name, c.clause)
	}
	closing := p.match[k+1]
	args := p.split(k+2, closing)
	ar := statefulArity[name]
	if args[0][0] == args[0][1] || len(args)-1 < ar[0] || len(args)-1 > ar[1] {
		return p.errAt(k, "wrong number of arguments: %s", statefulUsage[name])
	}
	sc := &StatefulCall{Func: name, Stage: c.stage}
	if c.inAgg {
		sc.Stage = StageInput
	}
	for n, a := range args[1:] {
		what := fmt.Sprintf("argument %d of %s", n+2, name)
		v, err := p.constant(a, what)
		if err != nil {
			return err
		}
		if msg := checkParam(name, n, v); msg != "" {
			return p.errAt(a[0], "%s %s", what, msg)
		}
		sc.Params = append(sc.Params, v)
	}
	sub := *c
	sub.condition = false // the value of zscore(x) in WHERE is x, a number
	arg, err := p.compile(&sub, args[0][0], args[0][1])
	if err != nil {
		return err
	}
	sc.Args = []*Expr{arg}
	if len(p.q.Stateful) >= maxStateful {
		return p.errAt(k, "too many anomaly/prediction calls: at most %d per rule", maxStateful)
	}
	key := sc.Func + "\x00" + sc.Stage + "\x00" + fmt.Sprint(sc.Params) + "\x00" + arg.code
	if prev, ok := p.fns[key]; ok {
		o.emit(p.toks[k], prev.Slot, false)
		return nil
	}
	sc.Slot = "_fn" + strconv.Itoa(len(p.q.Stateful))
	p.fns[key] = sc
	p.q.Stateful = append(p.q.Stateful, sc)
	o.emit(p.toks[k], sc.Slot, false)
	return nil
}

// checkParam validates parameter n (0-based, after the value) of a
// stateful call; it returns the problem.
func checkParam(fn string, n int, v float64) string {
	samples := func() string {
		if v != float64(int(v)) || v < 2 || v > 10000 {
			return "is a number of samples: a whole number from 2 to 10000"
		}
		return ""
	}
	switch fn {
	case "zscore":
		return samples()
	case "ewma_dev":
		if !(v > 0 && v <= 1) {
			return "is the smoothing factor alpha: more than 0, at most 1"
		}
	case "mad_outlier":
		if n == 0 {
			return samples()
		}
		if !(v > 0) {
			return "is the threshold k: more than 0"
		}
	case "time_to_threshold":
		if n == 1 && !(v > 0 && v <= 30*24*3600) {
			return "is the trend window in seconds: more than 0, at most 30 days (2592000)"
		}
	}
	return ""
}

// constant reads a (signed) number literal.
func (p *parser) constant(a [2]int, what string) (float64, *Error) {
	lo, hi := a[0], a[1]
	sign := 1.0
	if hi-lo == 2 && (p.toks[lo].is("-") || p.toks[lo].is("+")) {
		if p.toks[lo].is("-") {
			sign = -1
		}
		lo++
	}
	if hi-lo != 1 || p.toks[lo].Kind != tNumber {
		return 0, p.errAt(a[0], "%s must be a number written out, such as 30 or 0.5", what)
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(p.toks[lo].Text, "_", ""), 64)
	if err != nil {
		n, ierr := strconv.ParseInt(strings.ReplaceAll(p.toks[lo].Text, "_", ""), 0, 64)
		if ierr != nil {
			return 0, p.errAt(lo, "invalid number %s", p.toks[lo].Text)
		}
		v = float64(n)
	}
	return sign * v, nil
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Map:
		return "a map"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a " + t.String()
}

func typeName(v any) string {
	switch v.(type) {
	case int, int64, float64, float32, int32, uint, uint64:
		return "a number"
	case string:
		return "a string"
	case map[string]any:
		return "a map"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}
