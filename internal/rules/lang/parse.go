package lang

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits that bound what one statement may cost. They are part of the
// language (docs/rules.md lists them), not tuning knobs.
const (
	maxStatementBytes = 4096 // statement length
	maxNodes          = 1000 // expr AST nodes per expression
	maxAggregates     = 32   // distinct aggregate calls per statement
	maxStateful       = 16   // anomaly/prediction calls per statement
	maxOpenWindows    = 64   // hopping windows open at once per key (size/slide)
	minWindow         = 100 * time.Millisecond
	maxWindow         = 7 * 24 * time.Hour
	maxLateness       = 24 * time.Hour
)

// Source kinds.
const (
	SourceTelemetry = "telemetry"
	SourcePresence  = "presence"
	SourceShadow    = "shadow"
	SourceCommand   = "command"
	SourceAlert     = "alert"
	SourceMQTT      = "mqtt"
)

// Query is a parsed and compiled statement.
type Query struct {
	Source      Source
	Projections []Projection // SELECT list, in order; "SELECT *" is one Projection{Name: "*"} with a nil Expr
	Where       *Expr        // nil: every input
	GroupBy     []*Expr      // keys; the identifier `device` means device.id
	Window      *WindowSpec  // nil: no window (results per input)
	Having      *Expr        // nil: every result; allowed with or without a window
	// Aggregates lists every distinct aggregate call of SELECT and HAVING
	// in order of appearance; each call is replaced in its expression by
	// the variable named by its Slot. The same call written twice shares
	// one slot.
	Aggregates []*Aggregate
	// Stateful lists every anomaly/prediction call, replaced by its Slot
	// variable, in evaluation order: a call nested in another's argument
	// comes first.
	Stateful []*StatefulCall
}

// Source is what a rule reads.
type Source struct {
	Kind  string // telemetry, presence, shadow, command, alert or mqtt
	Topic string // mqtt: the topic filter, written FROM 'factory/+/temp'
}

// Projection is one item of the SELECT list.
type Projection struct {
	Name string // the AS alias, else the expression text
	Expr *Expr  // nil for *
}

// WindowSpec is the window of GROUP BY.
type WindowSpec struct {
	Kind     string        // "tumbling" | "hopping" | "session"
	Size     time.Duration // tumbling, hopping
	Slide    time.Duration // hopping
	Gap      time.Duration // session
	Lateness time.Duration // ALLOWED LATENESS, default 0
}

// Aggregate is one aggregate call, computed over a window.
type Aggregate struct {
	Func  string  // avg min max sum count stddev first last percentile
	Arg   *Expr   // evaluated per input; nil for count(*)
	Param float64 // percentile's p (0-100)
	Slot  string  // "_agg0", "_agg1", … the variable that replaces the call
}

// StatefulCall is one anomaly-detection or prediction call site.
type StatefulCall struct {
	Func   string    // zscore, ewma_dev, rate, mad_outlier, time_to_threshold
	Args   []*Expr   // the value expression
	Params []float64 // the constant parameters as written (defaults are the function's)
	Slot   string    // "_fn0", …
	Stage  string    // "input" (per input, before WHERE) or "result" (on a window's or HAVING's result)
}

// Stages of a stateful call.
const (
	StageInput  = "input"
	StageResult = "result"
)

// Parse parses a statement and compiles its expressions, once, when the
// rule is saved. Errors are *Error, placed in stmt.
func Parse(stmt string) (*Query, error) {
	q, err := parse(stmt)
	if err != nil {
		return nil, err
	}
	return q, nil
}

// parser holds the state of one Parse.
type parser struct {
	src   string
	toks  []token
	match []int // index of the matching bracket, -1 if none
	q     *Query
	aggs  map[string]*Aggregate    // by call, to share slots
	fns   map[string]*StatefulCall // by call and stage, to share slots

	hasLateness bool
	lateness    time.Duration
	latenessPos int // where ALLOWED LATENESS was written
}

// clause keywords end an expression at nesting depth 0.
func (p *parser) clauseAt(i int) string {
	t := p.toks[i]
	if t.Kind != tIdent || p.isMember(i) {
		return ""
	}
	switch strings.ToUpper(t.Text) {
	case "SELECT", "FROM", "WHERE", "HAVING":
		return strings.ToUpper(t.Text)
	case "GROUP":
		if p.toks[i+1].isKeyword("BY") {
			return "GROUP BY"
		}
	case "ALLOWED":
		if p.toks[i+1].isKeyword("LATENESS") {
			return "ALLOWED LATENESS"
		}
	}
	return ""
}

// isMember reports whether token i is a member name (after . or ?.).
func (p *parser) isMember(i int) bool {
	return i > 0 && (p.toks[i-1].is(".") || p.toks[i-1].is("?."))
}

// isEnd reports whether token i ends the statement (EOF or a final ;).
func (p *parser) isEnd(i int) bool {
	return p.toks[i].Kind == tEOF || p.toks[i].is(";") && p.toks[i+1].Kind == tEOF
}

// scan returns the index of the first token from i, at depth 0, that
// starts a clause or ends the statement.
func (p *parser) scan(i int) int {
	for ; !p.isEnd(i); i++ {
		if p.clauseAt(i) != "" {
			return i
		}
		if m := p.match[i]; m > i {
			i = m
		}
	}
	return i
}

// split splits tokens [lo, hi) at depth-0 commas.
func (p *parser) split(lo, hi int) [][2]int {
	var parts [][2]int
	start := lo
	for i := lo; i < hi; i++ {
		if p.toks[i].is(",") {
			parts = append(parts, [2]int{start, i})
			start = i + 1
		} else if m := p.match[i]; m > i {
			i = m
		}
	}
	return append(parts, [2]int{start, hi})
}

func (p *parser) errAt(i int, format string, args ...any) *Error {
	return errorAt(p.src, p.toks[i].Pos, format, args...)
}

// describe names token i for an error message.
func (p *parser) describe(i int) string {
	t := p.toks[i]
	if t.Kind == tEOF {
		return "end of statement"
	}
	return strconv.Quote(t.Text)
}

func parse(stmt string) (*Query, *Error) {
	if len(stmt) > maxStatementBytes {
		return nil, errorAt(stmt, maxStatementBytes, "statement is %d bytes long; the limit is %d", len(stmt), maxStatementBytes)
	}
	if !utf8.ValidString(stmt) {
		for i := 0; i < len(stmt); {
			r, n := utf8.DecodeRuneInString(stmt[i:])
			if r == utf8.RuneError && n <= 1 {
				return nil, errorAt(stmt, i, "invalid UTF-8 encoding")
			}
			i += n
		}
	}
	toks, lerr := lex(stmt)
	if lerr != nil {
		return nil, lerr
	}
	p := &parser{src: stmt, toks: toks, q: &Query{}, aggs: map[string]*Aggregate{}, fns: map[string]*StatefulCall{}}
	if err := p.matchBrackets(); err != nil {
		return nil, err
	}

	// Clause structure: find each clause's token range first, because
	// how SELECT's expressions compile depends on the window at the end.
	if !toks[0].isKeyword("SELECT") {
		return nil, p.errAt(0, "a rule starts with SELECT, found %s", p.describe(0))
	}
	selLo := 1
	selHi := p.scan(selLo)
	if !toks[selHi].isKeyword("FROM") {
		return nil, p.errAt(selHi, "expected FROM, found %s", p.describe(selHi))
	}
	if selHi == selLo {
		return nil, p.errAt(selHi, "SELECT needs at least one expression (or *)")
	}
	i, err := p.parseSource(selHi + 1)
	if err != nil {
		return nil, err
	}
	var whereLo, whereHi, groupLo, groupHi, havingLo, havingHi = -1, -1, -1, -1, -1, -1
	if toks[i].isKeyword("WHERE") {
		whereLo = i + 1
		whereHi = p.scan(whereLo)
		i = whereHi
	}
	if p.clauseAt(i) == "GROUP BY" {
		groupLo = i + 2
		groupHi = p.scan(groupLo)
		i = groupHi
		if p.clauseAt(i) == "ALLOWED LATENESS" {
			i, err = p.parseLateness(i + 2)
			if err != nil {
				return nil, err
			}
		}
	}
	if toks[i].isKeyword("HAVING") {
		havingLo = i + 1
		havingHi = p.scan(havingLo)
		i = havingHi
	}
	if !p.isEnd(i) {
		switch c := p.clauseAt(i); c {
		case "":
			return nil, p.errAt(i, "unexpected %s", p.describe(i))
		case "ALLOWED LATENESS":
			return nil, p.errAt(i, "ALLOWED LATENESS follows the window in GROUP BY")
		default:
			return nil, p.errAt(i, "%s is out of place: the order is SELECT … FROM … WHERE … GROUP BY … HAVING …", c)
		}
	}

	// The window first: it decides where aggregates may appear.
	var keys [][2]int
	if groupLo >= 0 {
		if groupLo == groupHi {
			return nil, p.errAt(groupLo, "GROUP BY needs a key or a window")
		}
		items := p.split(groupLo, groupHi)
		for n, it := range items {
			if p.isWindow(it) {
				if n != len(items)-1 {
					return nil, p.errAt(it[0], "the window must be the last item of GROUP BY")
				}
				w, err := p.parseWindow(it)
				if err != nil {
					return nil, err
				}
				w.Lateness = p.lateness
				p.q.Window = w
				continue
			}
			keys = append(keys, it)
		}
	}
	if p.hasLateness && p.q.Window == nil {
		return nil, errorAt(stmt, p.latenessPos, "ALLOWED LATENESS needs a window: GROUP BY …, TUMBLING(1m) ALLOWED LATENESS 10s")
	}

	// Expressions, in the order of the text.
	windowed := p.q.Window != nil
	stage := StageInput
	if windowed {
		stage = StageResult
	}
	names := map[string]bool{}
	for _, k := range keys {
		if k[1]-k[0] == 1 && toks[k[0]].Kind == tIdent {
			names[toks[k[0]].Text] = true
		}
	}
	items := p.split(selLo, selHi)
	for _, it := range items {
		if it[0] == it[1] {
			return nil, p.errAt(it[0], "expected an expression")
		}
		if it[1]-it[0] == 1 && toks[it[0]].is("*") {
			if len(items) > 1 {
				return nil, p.errAt(it[0], "* must be the only item of SELECT")
			}
			if windowed {
				return nil, p.errAt(it[0], "SELECT * cannot be used with a window: name the aggregates, e.g. SELECT avg(temperature) AS t")
			}
			p.q.Projections = append(p.q.Projections, Projection{Name: "*"})
			continue
		}
		lo, hi := it[0], it[1]
		name := ""
		for j := lo; j < hi; j++ {
			if toks[j].isKeyword("AS") && !p.isMember(j) {
				if j != hi-2 || toks[hi-1].Kind != tIdent {
					return nil, p.errAt(j, "AS is followed by one name, e.g. avg(temperature) AS t")
				}
				name = toks[hi-1].Text
				if err := p.checkAlias(hi - 1); err != nil {
					return nil, err
				}
				hi = j
				break
			}
			if m := p.match[j]; m > j {
				j = m
			}
		}
		if lo == hi {
			return nil, p.errAt(lo, "expected an expression before AS")
		}
		c := &ctx{clause: "SELECT", stage: stage, aggs: true, stateful: true, resultNames: nil}
		if windowed {
			c.resultNames = copyNames(names)
		}
		e, err := p.compile(c, lo, hi)
		if err != nil {
			return nil, err
		}
		if name == "" {
			name = e.Src
		}
		for _, pr := range p.q.Projections {
			if pr.Name == name {
				return nil, p.errAt(it[0], "two projections are named %q: give one another name with AS", name)
			}
		}
		p.q.Projections = append(p.q.Projections, Projection{Name: name, Expr: e})
		names[name] = true
	}
	if whereLo >= 0 {
		if whereLo == whereHi {
			return nil, p.errAt(whereLo, "WHERE needs a condition")
		}
		e, err := p.compile(&ctx{clause: "WHERE", stage: StageInput, stateful: true, condition: true}, whereLo, whereHi)
		if err != nil {
			return nil, err
		}
		p.q.Where = e
	}
	for _, k := range keys {
		if k[0] == k[1] {
			return nil, p.errAt(k[0], "expected a GROUP BY key")
		}
		e, err := p.compile(&ctx{clause: "GROUP BY", stage: StageInput}, k[0], k[1])
		if err != nil {
			return nil, err
		}
		p.q.GroupBy = append(p.q.GroupBy, e)
	}
	if havingLo >= 0 {
		if havingLo == havingHi {
			return nil, p.errAt(havingLo, "HAVING needs a condition")
		}
		c := &ctx{clause: "HAVING", stage: StageResult, aggs: true, stateful: true, condition: true}
		if windowed {
			c.resultNames = names
		}
		e, err := p.compile(c, havingLo, havingHi)
		if err != nil {
			return nil, err
		}
		p.q.Having = e
	}
	return p.q, nil
}

func copyNames(m map[string]bool) map[string]bool {
	c := make(map[string]bool, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// matchBrackets pairs (), [] and {} and reports the first unbalanced one.
func (p *parser) matchBrackets() *Error {
	p.match = make([]int, len(p.toks))
	var stack []int
	for i, t := range p.toks {
		p.match[i] = -1
		if t.Kind != tOp {
			continue
		}
		switch t.Text {
		case "(", "[", "{":
			stack = append(stack, i)
		case ")", "]", "}":
			if len(stack) == 0 {
				return p.errAt(i, "%s without a matching opening bracket", t.Text)
			}
			o := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if want := map[string]string{"(": ")", "[": "]", "{": "}"}[p.toks[o].Text]; want != t.Text {
				return p.errAt(i, "expected %s to close the %s at line %d, column %d, found %s",
					want, p.toks[o].Text, errorAt(p.src, p.toks[o].Pos, "").Line, errorAt(p.src, p.toks[o].Pos, "").Col, t.Text)
			}
			p.match[i], p.match[o] = o, i
		}
	}
	if len(stack) > 0 {
		o := stack[len(stack)-1]
		return p.errAt(o, "%s is never closed", p.toks[o].Text)
	}
	return nil
}

var sourceKinds = []string{SourceTelemetry, SourcePresence, SourceShadow, SourceCommand, SourceAlert}

// parseSource reads FROM's source at token i and returns the next index.
func (p *parser) parseSource(i int) (int, *Error) {
	t := p.toks[i]
	switch t.Kind {
	case tIdent:
		for _, k := range sourceKinds {
			if strings.EqualFold(t.Text, k) {
				p.q.Source = Source{Kind: k}
				return i + 1, nil
			}
		}
		return 0, p.errAt(i, "unknown source %q: use telemetry, presence, shadow, command, alert, or an MQTT topic filter in quotes such as 'factory/+/temp'", t.Text)
	case tString:
		topic := t.Val
		if t.Text[0] == '"' {
			s, err := strconv.Unquote(t.Text)
			if err != nil {
				return 0, p.errAt(i, "invalid string: %v", err)
			}
			topic = s
		}
		if err := checkTopicFilter(topic); err != "" {
			return 0, p.errAt(i, "invalid MQTT topic filter %q: %s", topic, err)
		}
		p.q.Source = Source{Kind: SourceMQTT, Topic: topic}
		return i + 1, nil
	}
	return 0, p.errAt(i, "expected a source after FROM (telemetry, presence, shadow, command, alert or an MQTT topic filter in quotes), found %s", p.describe(i))
}

// checkTopicFilter validates an MQTT topic filter; it returns the problem.
func checkTopicFilter(f string) string {
	if f == "" {
		return "it is empty"
	}
	if len(f) > 1024 {
		return "it is longer than 1024 bytes"
	}
	if strings.ContainsRune(f, 0) {
		return "it contains a NUL character"
	}
	levels := strings.Split(f, "/")
	for n, l := range levels {
		switch {
		case l == "#":
			if n != len(levels)-1 {
				return "# must be the last level"
			}
		case l == "+":
		case strings.ContainsAny(l, "#+"):
			return "+ and # must fill a whole level"
		}
	}
	return ""
}

// isWindow reports whether the GROUP BY item is a window call.
func (p *parser) isWindow(it [2]int) bool {
	t := p.toks[it[0]]
	if t.Kind != tIdent || it[1]-it[0] < 3 || !p.toks[it[0]+1].is("(") || p.match[it[0]+1] != it[1]-1 {
		return false
	}
	switch strings.ToLower(t.Text) {
	case "tumbling", "hopping", "session":
		return true
	}
	return false
}

// parseWindow reads TUMBLING(d), HOPPING(size, slide) or SESSION(gap).
func (p *parser) parseWindow(it [2]int) (*WindowSpec, *Error) {
	kind := strings.ToLower(p.toks[it[0]].Text)
	args := p.split(it[0]+2, it[1]-1)
	want := map[string]int{"tumbling": 1, "hopping": 2, "session": 1}[kind]
	usage := map[string]string{"tumbling": "TUMBLING(1m)", "hopping": "HOPPING(5m, 1m): size, then slide", "session": "SESSION(30s): the gap that ends a session"}[kind]
	if len(args) != want {
		return nil, p.errAt(it[0], "%s takes %d argument(s): %s", strings.ToUpper(kind), want, usage)
	}
	ds := make([]time.Duration, len(args))
	for n, a := range args {
		d, err := p.duration(a[0], a[1])
		if err != nil {
			return nil, err
		}
		if d < minWindow || d > maxWindow {
			return nil, p.errAt(a[0], "a window duration must be between %s and %s, not %s", fmtDuration(minWindow), fmtDuration(maxWindow), fmtDuration(d))
		}
		ds[n] = d
	}
	w := &WindowSpec{Kind: kind}
	switch kind {
	case "tumbling":
		w.Size = ds[0]
	case "session":
		w.Gap = ds[0]
	case "hopping":
		w.Size, w.Slide = ds[0], ds[1]
		if w.Slide > w.Size {
			return nil, p.errAt(args[1][0], "the slide (%s) of a hopping window cannot exceed its size (%s)", fmtDuration(w.Slide), fmtDuration(w.Size))
		}
		if w.Size/w.Slide > maxOpenWindows || w.Size/w.Slide == maxOpenWindows && w.Size%w.Slide != 0 {
			return nil, p.errAt(args[1][0], "HOPPING(%s, %s) keeps more than %d windows open per key: use a longer slide", fmtDuration(w.Size), fmtDuration(w.Slide), maxOpenWindows)
		}
	}
	return w, nil
}

// parseLateness reads the duration after ALLOWED LATENESS at token i; the
// window, parsed later, takes it.
func (p *parser) parseLateness(i int) (int, *Error) {
	end := p.scan(i)
	if end == i {
		return 0, p.errAt(i, "ALLOWED LATENESS needs a duration, e.g. ALLOWED LATENESS 10s")
	}
	d, err := p.duration(i, end)
	if err != nil {
		return 0, err
	}
	if d > maxLateness {
		return 0, p.errAt(i, "allowed lateness must be at most %s, not %s", fmtDuration(maxLateness), fmtDuration(d))
	}
	p.hasLateness, p.lateness, p.latenessPos = true, d, p.toks[i-2].Pos
	return end, nil
}

// duration parses tokens [lo, hi) as a duration such as 1m, 1h30m, 500ms,
// 1.5h or 2d (units ms, s, m, h, d), written without spaces.
func (p *parser) duration(lo, hi int) (time.Duration, *Error) {
	if lo == hi {
		return 0, p.errAt(lo, "expected a duration such as 30s, 1m or 1h30m")
	}
	for j := lo + 1; j < hi; j++ {
		if p.toks[j].Space {
			return 0, p.errAt(j, "a duration is written without spaces, such as 1m30s")
		}
	}
	text := p.src[p.toks[lo].Pos:p.toks[hi-1].End]
	d, ok := parseDuration(text)
	if !ok {
		return 0, p.errAt(lo, "invalid duration %q: write a number and a unit (ms, s, m, h, d), such as 30s, 1m or 1h30m", text)
	}
	return d, nil
}

// parseDuration parses one or more number+unit pairs.
func parseDuration(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	var total float64
	for s != "" {
		i := 0
		for i < len(s) && (isDigit(s[i]) || s[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, false
		}
		n, err := strconv.ParseFloat(s[:i], 64)
		if err != nil {
			return 0, false
		}
		s = s[i:]
		var unit time.Duration
		switch {
		case strings.HasPrefix(s, "ms"):
			unit, s = time.Millisecond, s[2:]
		case strings.HasPrefix(s, "s"):
			unit, s = time.Second, s[1:]
		case strings.HasPrefix(s, "m"):
			unit, s = time.Minute, s[1:]
		case strings.HasPrefix(s, "h"):
			unit, s = time.Hour, s[1:]
		case strings.HasPrefix(s, "d"):
			unit, s = 24*time.Hour, s[1:]
		default:
			return 0, false
		}
		total += n * float64(unit)
		if total > float64(365*24*time.Hour) {
			return 0, false
		}
	}
	return time.Duration(total), true
}

// checkAlias validates the name after AS at token i.
func (p *parser) checkAlias(i int) *Error {
	name := p.toks[i].Text
	switch strings.ToLower(name) {
	case "select", "from", "where", "group", "by", "having", "as", "and", "or", "not", "in", "is", "null", "true", "false", "nil":
		return p.errAt(i, "%s is a keyword and cannot name a projection", name)
	}
	switch name {
	case "device", "window_start", "window_end", "ts":
		return p.errAt(i, "%s is set by the engine and cannot name a projection", name)
	}
	if isSlotName(name) {
		return p.errAt(i, "%s is a reserved name", name)
	}
	return nil
}

// isSlotName reports whether name looks like a slot (_agg3, _fn0), which
// a user may not write.
func isSlotName(name string) bool {
	for _, pre := range []string{"_agg", "_fn"} {
		if rest, ok := strings.CutPrefix(name, pre); ok && rest != "" {
			if _, err := strconv.Atoi(rest); err == nil {
				return true
			}
		}
	}
	return false
}

// fmtDuration writes d as the language does: 1m rather than 1m0s, 7d
// rather than 168h0m0s.
func fmtDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
