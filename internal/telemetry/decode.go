package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tether-iot/tether"
)

// Limits bound what [Decode] accepts. A zero or negative field means its
// default (see [DefaultLimits]), so callers may set only what they change.
type Limits struct {
	MaxPayload int           // bytes of the whole payload; default 256 KiB
	MaxKeyLen  int           // bytes of a flattened, dotted key; default 128
	MaxPoints  int           // points in one payload, over a whole batch; default 10000
	MaxDepth   int           // nesting depth of objects, the top-level object being 1; default 8
	MaxFuture  time.Duration // how far after now a ts may be; default 1h
	MinTime    time.Time     // the earliest ts accepted; default 2000-01-01T00:00:00Z
}

// DefaultLimits returns the limits used for every zero field of a [Limits].
func DefaultLimits() Limits {
	return Limits{
		MaxPayload: 256 << 10,
		MaxKeyLen:  128,
		MaxPoints:  10000,
		MaxDepth:   8,
		MaxFuture:  time.Hour,
		MinTime:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxPayload <= 0 {
		l.MaxPayload = d.MaxPayload
	}
	if l.MaxKeyLen <= 0 {
		l.MaxKeyLen = d.MaxKeyLen
	}
	if l.MaxPoints <= 0 {
		l.MaxPoints = d.MaxPoints
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxFuture <= 0 {
		l.MaxFuture = d.MaxFuture
	}
	if l.MinTime.IsZero() {
		l.MinTime = d.MinTime
	}
	return l
}

// Reasons a payload is refused, as [Error.Reason]. They are stable: edges
// use them as metric labels.
const (
	ReasonTooLarge      = "too_large"
	ReasonMalformedJSON = "malformed_json"
	// ReasonMalformedCBOR: a payload sent as CBOR is not one well-formed
	// CBOR item (see [CBORToJSON]).
	ReasonMalformedCBOR = "malformed_cbor"
	ReasonNotObject     = "not_object"
	ReasonNoValues      = "no_values"
	ReasonBadValue      = "bad_value"
	ReasonBadKey        = "bad_key"
	ReasonKeyTooLong    = "key_too_long"
	ReasonTooDeep       = "too_deep"
	ReasonTooManyPoints = "too_many_points"
	ReasonBadTS         = "bad_ts"
	ReasonTSOutOfRange  = "ts_out_of_range"
	// ReasonDuplicatePoint: a batch has two values of one key at one time.
	// Storage keeps one value per key and time, so accepting it would lose
	// one of them silently.
	ReasonDuplicatePoint = "duplicate_point"
)

// Error is why a payload was refused. Reason is a short snake_case word
// used as a counter label (too_large, malformed_json, malformed_cbor,
// not_object, no_values, bad_value, bad_key, key_too_long, too_deep,
// too_many_points, bad_ts, ts_out_of_range, duplicate_point); Message is
// one line for the device's developer naming what to fix.
type Error struct {
	Reason  string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string { return "telemetry: " + e.Reason + ": " + e.Message }

// Unwrap returns the [tether.Error] an edge maps to its protocol's status:
// [tether.ETOOLARGE] for too_large and too_many_points, [tether.EINVALID]
// for every other reason, with the same message.
func (e *Error) Unwrap() error {
	code := tether.EINVALID
	if e.Reason == ReasonTooLarge || e.Reason == ReasonTooManyPoints {
		code = tether.ETOOLARGE
	}
	return &tether.Error{Code: code, Message: e.Message}
}

// Decode parses a device's telemetry payload into points.
//
// The payload is a JSON object of named values, or a JSON array (a batch)
// of such objects:
//
//	{"temp": 21.5, "on": true, "mode": "eco", "ts": "2024-05-01T10:00:00Z"}
//	[{"temp": 21.5, "ts": 1714557600000}, {"temp": 21.7, "ts": 1714557660000}]
//
// Numbers become [tether.KindNumber], booleans [tether.KindBool] (Num 0 or
// 1) and strings [tether.KindString]. Nested objects are flattened to
// dotted keys: {"a":{"b":1}} is the key "a.b". A top-level "ts" is the
// time of every value of its object: an RFC 3339 string, or a JSON number
// of milliseconds since the Unix epoch (a fraction keeps sub-millisecond
// precision down to the nanosecond). Values without a ts get now. A
// nested "ts" ({"a":{"ts":1}}) is an ordinary value with the key "a.ts".
// All times are returned in UTC. A flattened name may be used once per
// object: {"a":1,"a":{"b":2}} and {"a.b":1,"a":{"b":2}} are refused as
// duplicate keys, like {"a":1,"a":2}. null and arrays are not values: a
// payload holding one is refused, as is a number beyond float64 (1e400).
//
// Points come out in payload order: element by element, and within an
// element in the order its keys appear, depth first.
//
// Decode accepts the whole payload or nothing: any problem is returned as
// an *[Error] naming the first problem in the payload (counting batch
// elements from 0) and no points.
func Decode(payload []byte, now time.Time, lim Limits) ([]tether.Point, error) {
	lim = lim.withDefaults()
	if len(payload) > lim.MaxPayload {
		return nil, &Error{ReasonTooLarge, fmt.Sprintf("payload is %d bytes; payloads may be at most %d bytes", len(payload), lim.MaxPayload)}
	}
	d := decoder{
		scanner: scanner{data: payload},
		names:   names{list: make([]string, 0, linearNames)},
		lim:     lim,
		now:     now.UTC(),
		latest:  now.Add(lim.MaxFuture),
		elem:    -1,
	}
	if err := d.payload(); err != nil {
		// The scanner stops at the first problem, which may come before a
		// syntax error further on. A payload that is not JSON at all is
		// reported as such, whatever else is wrong with it, with the
		// standard library's description of the syntax error.
		if merr := malformed(payload, "payload"); merr != nil {
			return nil, merr
		}
		return nil, err
	}
	if d.elem > 0 {
		if err := duplicatePoint(d.pts); err != nil {
			return nil, err
		}
	}
	return d.pts, nil
}

// duplicatePoint refuses a batch with two values of one key at one time,
// typically elements that have no ts of their own and so all get the time
// of arrival.
func duplicatePoint(pts []tether.Point) *Error {
	type point struct {
		key string
		ts  int64
	}
	seen := make(map[point]struct{}, len(pts))
	for _, p := range pts {
		k := point{p.Key, p.Time.UnixNano()}
		if _, dup := seen[k]; dup {
			return &Error{ReasonDuplicatePoint, fmt.Sprintf("key %s has two values at ts %s; in a batch, give each element its own ts",
				quote([]byte(p.Key)), p.Time.Format(time.RFC3339Nano))}
		}
		seen[k] = struct{}{}
	}
	return nil
}

// malformed returns a malformed_json error if payload is not valid UTF-8
// JSON, and nil if it is. what names the payload in the message.
func malformed(payload []byte, what string) *Error {
	if !utf8.Valid(payload) {
		off := 0
		for off < len(payload) {
			r, n := utf8.DecodeRune(payload[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return &Error{ReasonMalformedJSON, fmt.Sprintf("%s is not valid UTF-8 (byte %d)", what, off)}
	}
	var raw json.RawMessage
	err := json.Unmarshal(payload, &raw)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &Error{ReasonMalformedJSON, fmt.Sprintf("%s is not valid JSON: %s (byte %d)", what, se.Error(), se.Offset)}
	}
	return &Error{ReasonMalformedJSON, what + " is not valid JSON: " + err.Error()}
}

// decoder holds the state of one Decode call.
type decoder struct {
	scanner
	lim    Limits
	now    time.Time
	latest time.Time // now + MaxFuture
	pts    []tether.Point

	elem      int // index of the batch element being read, or -1 for a single object
	elemStart int // index in pts of the current element's first point
	prevStart int // index in pts of the previous element's first point
	prevLen   int // number of points of the previous element

	key   []byte // the flattened key being read
	names names  // the flattened names of the current element
}

func (d *decoder) fail(reason, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if d.elem >= 0 {
		msg = fmt.Sprintf("element %d of the batch: %s", d.elem, msg)
	}
	return &Error{reason, msg}
}

func (d *decoder) syntax() *Error {
	return &Error{ReasonMalformedJSON, fmt.Sprintf("payload is not valid JSON (byte %d)", d.i)}
}

func (d *decoder) payload() *Error {
	// Every value needs at least a ':' so the count of colons bounds the
	// number of points from above; one allocation for all of them.
	n := bytes.Count(d.data, []byte{':'})
	d.pts = make([]tether.Point, 0, min(n, d.lim.MaxPoints))

	d.ws()
	switch d.peek() {
	case '{':
		if err := d.element(); err != nil {
			return err
		}
	case '[':
		d.i++
		d.ws()
		if d.eat(']') {
			return &Error{ReasonNoValues, "the batch is empty; send at least one object with values"}
		}
		for d.elem = 0; ; d.elem++ {
			d.ws()
			if c := d.peek(); c != '{' {
				if t := jsonType(c); t != "" {
					return &Error{ReasonNotObject, fmt.Sprintf("element %d of the batch is %s; each element must be an object of values", d.elem, t)}
				}
				return d.syntax()
			}
			if err := d.element(); err != nil {
				return err
			}
			d.ws()
			if d.eat(']') {
				break
			}
			if !d.eat(',') {
				return d.syntax()
			}
		}
	default:
		if t := jsonType(d.peek()); t != "" {
			return &Error{ReasonNotObject, fmt.Sprintf("payload is %s; it must be a JSON object of values or an array of such objects", t)}
		}
		return d.syntax()
	}
	d.ws()
	if d.i != len(d.data) {
		return d.syntax()
	}
	return nil
}

// jsonType names the type of the JSON value starting with c, or returns ""
// if no value starts with c.
func jsonType(c byte) string {
	switch {
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '[':
		return "an array"
	case c == '{':
		return "an object"
	case c == '-' || '0' <= c && c <= '9':
		return "a number"
	}
	return ""
}

// element reads one top-level object and gives its points their time.
func (d *decoder) element() *Error {
	d.elemStart = len(d.pts)
	d.names.reset()
	d.key = d.key[:0]
	ts, hasTS, err := d.object(1)
	if err != nil {
		return err
	}
	if len(d.pts) == d.elemStart {
		if hasTS {
			return d.fail(ReasonNoValues, "the object has a ts but no values")
		}
		return d.fail(ReasonNoValues, "the object is empty; send at least one value")
	}
	if !hasTS {
		ts = d.now
	}
	for i := d.elemStart; i < len(d.pts); i++ {
		d.pts[i].Time = ts
	}
	d.prevStart, d.prevLen = d.elemStart, len(d.pts)-d.elemStart
	return nil
}

// object reads an object whose flattened key is d.key, at nesting depth
// depth. Only at depth 1 is a "ts" member the timestamp, returned as ts
// and hasTS.
func (d *decoder) object(depth int) (ts time.Time, hasTS bool, err *Error) {
	if !d.eat('{') {
		return ts, false, d.syntax()
	}
	d.ws()
	if d.eat('}') {
		if depth == 1 {
			return ts, false, nil // element reports it
		}
		return ts, false, d.fail(ReasonNoValues, "object %s is empty; send values or leave the key out", quote(d.key))
	}
	for {
		d.ws()
		raw, escaped, ok := d.str()
		if !ok {
			return ts, false, d.syntax()
		}
		d.ws()
		if !d.eat(':') {
			return ts, false, d.syntax()
		}
		d.ws()
		mark := len(d.key)
		if depth == 1 && isTS(raw, escaped) {
			if hasTS {
				return ts, false, d.fail(ReasonBadKey, `duplicate key "ts"`)
			}
			if ts, err = d.timestamp(); err != nil {
				return ts, false, err
			}
			hasTS = true
		} else {
			if err := d.pushKey(raw, escaped); err != nil {
				return ts, false, err
			}
			if err := d.value(depth); err != nil {
				return ts, false, err
			}
		}
		d.key = d.key[:mark]
		d.ws()
		if d.eat('}') {
			return ts, hasTS, nil
		}
		if !d.eat(',') {
			return ts, false, d.syntax()
		}
	}
}

// isTS reports whether a key read by str is "ts", however it is escaped.
func isTS(raw []byte, escaped bool) bool {
	if !escaped {
		return string(raw) == "ts"
	}
	k, ok := unescape(raw, escaped)
	return ok && k == "ts"
}

// pushKey appends an object member's key to the flattened key and checks
// it.
func (d *decoder) pushKey(raw []byte, escaped bool) *Error {
	parent := len(d.key)
	start := parent
	if parent > 0 {
		d.key = append(d.key, '.')
		start++
	}
	if escaped {
		k, ok := unescape(raw, escaped)
		if !ok {
			return d.syntax()
		}
		d.key = append(d.key, k...)
	} else {
		d.key = append(d.key, raw...)
	}
	seg := d.key[start:]
	switch {
	case len(seg) == 0 && parent == 0:
		return d.fail(ReasonBadKey, "a key is empty; keys must have at least one character")
	case len(seg) == 0:
		return d.fail(ReasonBadKey, "a key inside %s is empty; keys must have at least one character", quote(d.key[:parent]))
	case hasControl(seg):
		return d.fail(ReasonBadKey, "key %s contains a control character", quote(d.key))
	case len(d.key) > d.lim.MaxKeyLen:
		return d.fail(ReasonKeyTooLong, "key %s is %d bytes; keys may be at most %d bytes", quote(d.key), len(d.key), d.lim.MaxKeyLen)
	}
	return nil
}

// hasControl reports whether b holds a C0 or C1 control character or DEL.
// b is valid UTF-8, in which C1 controls are 0xC2 0x80 to 0xC2 0x9F.
func hasControl(b []byte) bool {
	for i, c := range b {
		if c < 0x20 || c == 0x7f || c == 0xc2 && i+1 < len(b) && b[i+1] < 0xa0 {
			return true
		}
	}
	return false
}

// value reads the value of the member whose flattened key is d.key.
func (d *decoder) value(depth int) *Error {
	switch c := d.peek(); {
	case c == '{':
		if depth >= d.lim.MaxDepth {
			return d.fail(ReasonTooDeep, "key %s is an object nested %d deep; objects may be nested at most %d deep", quote(d.key), depth+1, d.lim.MaxDepth)
		}
		if !d.names.add(d.key, "") {
			return d.fail(ReasonBadKey, "duplicate key %s", quote(d.key))
		}
		_, _, err := d.object(depth + 1)
		return err
	case c == '"':
		raw, escaped, ok := d.str()
		if !ok {
			return d.syntax()
		}
		s, ok := unescape(raw, escaped)
		if !ok {
			return d.syntax()
		}
		return d.add(tether.KindString, 0, s)
	case c == 't':
		if !d.literal("true") {
			return d.syntax()
		}
		return d.add(tether.KindBool, 1, "")
	case c == 'f':
		if !d.literal("false") {
			return d.syntax()
		}
		return d.add(tether.KindBool, 0, "")
	case c == 'n':
		if !d.literal("null") {
			return d.syntax()
		}
		return d.fail(ReasonBadValue, "key %s is null; send a value or leave the key out", quote(d.key))
	case c == '[':
		return d.fail(ReasonBadValue, "key %s is an array; arrays are not supported as values, use an object or separate keys", quote(d.key))
	default:
		raw, ok := d.number()
		if !ok {
			return d.syntax()
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil && !math.IsInf(f, 0) {
			return d.syntax()
		}
		if math.IsInf(f, 0) {
			return d.fail(ReasonBadValue, "key %s: the number %s does not fit a 64-bit float", quote(d.key), trunc(string(raw)))
		}
		return d.add(tether.KindNumber, f, "")
	}
}

// add appends a point with the key d.key to the current element.
func (d *decoder) add(kind tether.Kind, num float64, str string) *Error {
	if len(d.pts) >= d.lim.MaxPoints {
		return d.fail(ReasonTooManyPoints, "the payload has more than %d values; send at most %d values per payload", d.lim.MaxPoints, d.lim.MaxPoints)
	}
	var key string
	// In a batch, elements usually repeat the previous element's keys in
	// the same order; reusing its key string saves an allocation per point.
	if j := len(d.pts) - d.elemStart; j < d.prevLen && d.pts[d.prevStart+j].Key == string(d.key) {
		key = d.pts[d.prevStart+j].Key
	} else {
		key = string(d.key)
	}
	if !d.names.add(d.key, key) {
		return d.fail(ReasonBadKey, "duplicate key %s", quote(d.key))
	}
	d.pts = append(d.pts, tether.Point{Key: key, Kind: kind, Num: num, Str: str})
	return nil
}

// names is a set of the flattened names of one element: the keys of its
// values and of its nested objects. No name may be used twice, so that
// {"a":1,"a":2}, {"a":1,"a":{"b":2}} and {"a.b":1,"a":{"b":2}} are all
// duplicates. Elements are usually small, so the set is a linear list
// until it holds linearNames names, and a map from then on.
type names struct {
	list []string
	m    map[string]struct{}
}

const linearNames = 16

func (n *names) reset() {
	n.list = n.list[:0]
	if n.m != nil {
		clear(n.m)
	}
}

// add adds the name b, which is s if s is not empty, and reports false if
// it is in the set already.
func (n *names) add(b []byte, s string) bool {
	if len(n.list) < linearNames {
		for _, name := range n.list {
			if name == string(b) {
				return false
			}
		}
		if s == "" {
			s = string(b)
		}
		n.list = append(n.list, s)
		return true
	}
	if n.m == nil {
		n.m = make(map[string]struct{}, 4*linearNames)
	}
	if len(n.m) == 0 { // the element just got large
		for _, name := range n.list {
			n.m[name] = struct{}{}
		}
	}
	if _, dup := n.m[string(b)]; dup {
		return false
	}
	if s == "" {
		s = string(b)
	}
	n.m[s] = struct{}{}
	return true
}

// timestamp reads the value of a top-level "ts".
func (d *decoder) timestamp() (time.Time, *Error) {
	var (
		t   time.Time
		raw []byte // the ts as the device sent it, for messages
	)
	switch c := d.peek(); {
	case c == '"':
		var escaped, ok bool
		raw, escaped, ok = d.str()
		if !ok {
			return t, d.syntax()
		}
		s, ok := unescape(raw, escaped)
		if !ok {
			return t, d.syntax()
		}
		var err error
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return t, d.fail(ReasonBadTS, "ts %s is neither RFC 3339 nor epoch milliseconds", quote([]byte(s)))
		}
		raw = d.data[d.i-len(raw)-2 : d.i] // with its quotes
	case c == '-' || '0' <= c && c <= '9':
		var ok bool
		if raw, ok = d.number(); !ok {
			return t, d.syntax()
		}
		if t, ok = epochMillis(raw); !ok {
			return t, d.fail(ReasonTSOutOfRange, "ts %s is out of range; ts is epoch milliseconds", trunc(string(raw)))
		}
		if t.Before(d.lim.MinTime) {
			hint := "ts is epoch milliseconds"
			if n := t.UnixMilli(); n >= 0 && n < 1e13 {
				// The device probably sent seconds.
				if s := time.UnixMilli(n * 1000); !s.Before(d.lim.MinTime) && !s.After(d.latest) {
					hint = "ts is epoch milliseconds, not seconds"
				}
			}
			return t, d.fail(ReasonTSOutOfRange, "ts %s is %s, before %s; %s", trunc(string(raw)), t.UTC().Format(time.RFC3339Nano), d.lim.MinTime.UTC().Format(time.RFC3339), hint)
		}
	default:
		if t := jsonType(c); t != "" {
			return time.Time{}, d.fail(ReasonBadTS, "ts is %s; send an RFC 3339 string or epoch milliseconds", t)
		}
		return t, d.syntax()
	}
	t = t.UTC()
	switch {
	case t.Before(d.lim.MinTime):
		return t, d.fail(ReasonTSOutOfRange, "ts %s is before %s", trunc(string(raw)), d.lim.MinTime.UTC().Format(time.RFC3339))
	case t.After(d.latest):
		return t, d.fail(ReasonTSOutOfRange, "ts %s is %s, more than %s after the server's time %s", trunc(string(raw)), t.Format(time.RFC3339Nano), d.lim.MaxFuture, d.now.Format(time.RFC3339))
	}
	return t, nil
}

// maxEpochMillis bounds a numeric ts before it is converted, so that the
// conversion cannot overflow: 1e15 ms is the year 33658.
const maxEpochMillis = 1e15

// epochMillis converts a JSON number of milliseconds since the Unix epoch
// to a time. A plain decimal (the usual form) is converted exactly, to the
// nanosecond; other forms (exponents, negative numbers) go through float64.
func epochMillis(raw []byte) (time.Time, bool) {
	intPart, frac, plain := raw, []byte(nil), true
	if i := bytes.IndexByte(raw, '.'); i >= 0 {
		intPart, frac = raw[:i], raw[i+1:]
	}
	for _, c := range intPart {
		plain = plain && '0' <= c && c <= '9'
	}
	for _, c := range frac {
		plain = plain && '0' <= c && c <= '9'
	}
	if plain && len(intPart) <= 15 {
		var ms, ns int64
		for _, c := range intPart {
			ms = ms*10 + int64(c-'0')
		}
		// Digits past the sixth of the fraction are below a nanosecond.
		for i := range 6 {
			ns *= 10
			if i < len(frac) {
				ns += int64(frac[i] - '0')
			}
		}
		return time.UnixMilli(ms).Add(time.Duration(ns)), true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || math.Abs(f) >= maxEpochMillis {
		return time.Time{}, false
	}
	sec := math.Floor(f / 1000)
	ns := math.Round((f - sec*1000) * 1e6)
	return time.Unix(int64(sec), int64(ns)), true
}

// quote returns a key or value for a message, cut to about 40 bytes.
func quote(b []byte) string {
	return strconv.Quote(trunc(string(b)))
}

// trunc cuts s to at most 40 bytes on a rune boundary, marking the cut.
func trunc(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
