package telemetry

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/tether-iot/tether"
)

// cborMaxDepth bounds the nesting of a CBOR payload (arrays, maps and tags
// together) before it is converted, which bounds the converter's recursion;
// [Decode] then applies [Limits.MaxDepth], which is lower.
const cborMaxDepth = 32

// cborDecoding checks well-formedness and decodes the scalar items. NaN and
// infinities are let through here, to be refused where they are found.
var cborDecoding = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels: cborMaxDepth,
		IndefLength:     cbor.IndefLengthAllowed,
		UTF8:            cbor.UTF8RejectInvalid,
		TimeTag:         cbor.DecTagOptional,
	}.DecMode()
	if err != nil {
		panic(err) // the options are constant
	}
	return dm
}()

// CBORToJSON converts a CBOR telemetry payload (RFC 8949) into the JSON that
// [Decode] reads, so that one decoder holds the payload rules whatever the
// format a device sends. Map keys keep their order, which is the order of
// the points.
//
// It takes maps with text keys, arrays, integers, floats, booleans, null
// (which Decode then refuses as it refuses JSON null) and text. Tag 0 (an
// RFC 3339 time) and tag 1 (seconds since the epoch) become RFC 3339
// strings, which Decode reads as a ts; tag 55799 (self-described CBOR) is
// skipped. Anything else is refused with an *[Error] naming where it is:
// byte strings, non-text keys, other tags, NaN and infinities, undefined
// and other simple values ([ReasonBadValue], [ReasonBadKey]); a payload
// that is not one well-formed CBOR item, or is nested deeper than 32, is
// [ReasonMalformedCBOR]. A payload over lim.MaxPayload, or one whose JSON
// would be, is [ReasonTooLarge].
func CBORToJSON(data []byte, lim Limits) ([]byte, error) {
	lim = lim.withDefaults()
	if len(data) > lim.MaxPayload {
		return nil, &Error{ReasonTooLarge, fmt.Sprintf("payload is %d bytes; payloads may be at most %d bytes", len(data), lim.MaxPayload)}
	}
	if len(data) == 0 {
		return nil, &Error{ReasonMalformedCBOR, "the payload is empty; send a CBOR map"}
	}
	if err := cborDecoding.Wellformed(data); err != nil {
		return nil, &Error{ReasonMalformedCBOR, "the payload is not one well-formed CBOR item: " + strings.TrimPrefix(err.Error(), "cbor: ")}
	}
	c := cborConverter{data: data, max: lim.MaxPayload, out: make([]byte, 0, min(len(data)+len(data)/2, lim.MaxPayload))}
	if err := c.item(); err != nil {
		return nil, err
	}
	if len(c.out) > c.max {
		return nil, c.tooLarge()
	}
	if c.off != len(data) {
		// Wellformed has checked there is exactly one item.
		return nil, &Error{ReasonMalformedCBOR, "data after the CBOR item"}
	}
	return c.out, nil
}

// DecodeCBOR is [Decode] for a CBOR payload: [CBORToJSON], then Decode of
// the JSON with the same limits.
func DecodeCBOR(payload []byte, now time.Time, lim Limits) ([]tether.Point, error) {
	js, err := CBORToJSON(payload, lim)
	if err != nil {
		return nil, err
	}
	return Decode(js, now, lim)
}

// cborConverter walks a well-formed CBOR item and writes its JSON.
type cborConverter struct {
	data []byte
	off  int
	out  []byte
	max  int // the bound of out: the payload limit
	path []cborPathElem
}

// cborPathElem is one step into the payload: a map key, or an array index.
type cborPathElem struct {
	key   string
	index int
	isKey bool
}

// where names the current position for a refusal: "[0].temp".
func (c *cborConverter) where() string {
	if len(c.path) == 0 {
		return "the top level"
	}
	var b strings.Builder
	for _, p := range c.path {
		if p.isKey {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(quote([]byte(p.key)))
		} else {
			fmt.Fprintf(&b, "[%d]", p.index)
		}
	}
	return b.String()
}

func (c *cborConverter) refuse(reason, format string, args ...any) error {
	return &Error{reason, fmt.Sprintf(format, args...) + " at " + c.where()}
}

func (c *cborConverter) tooLarge() error {
	return &Error{ReasonTooLarge, fmt.Sprintf("the CBOR payload converts to more than %d bytes of JSON; payloads may be at most %d bytes", c.max, c.max)}
}

// head reads the initial byte and argument of the item at c.off (RFC 8949
// §3). For an indefinite length, arg is 0 and indefinite is true.
func (c *cborConverter) head() (major, info byte, arg uint64, next int, indefinite bool, err error) {
	d, off := c.data, c.off
	if off >= len(d) {
		return 0, 0, 0, 0, false, errCBORTruncated
	}
	major, info = d[off]>>5, d[off]&0x1f
	off++
	switch {
	case info < 24:
		arg = uint64(info)
	case info <= 27:
		n := 1 << (info - 24)
		if len(d)-off < n {
			return 0, 0, 0, 0, false, errCBORTruncated
		}
		for _, b := range d[off : off+n] {
			arg = arg<<8 | uint64(b)
		}
		off += n
	case info == 31:
		indefinite = true
	default:
		return 0, 0, 0, 0, false, errors.New("reserved additional information")
	}
	return major, info, arg, off, indefinite, nil
}

var errCBORTruncated = errors.New("truncated")

// decode decodes the item at c.off into v with fxamacker/cbor and moves
// past it.
func (c *cborConverter) decode(v any) error {
	rest, err := cborDecoding.UnmarshalFirst(c.data[c.off:], v)
	if err != nil {
		return err
	}
	c.off = len(c.data) - len(rest)
	return nil
}

// item converts the item at c.off.
func (c *cborConverter) item() error {
	// Checked before each item, the output outgrows the limit by at most
	// one item's JSON, a bounded multiple of its CBOR.
	if len(c.out) > c.max {
		return c.tooLarge()
	}
	major, info, arg, next, indefinite, err := c.head()
	if err != nil {
		return &Error{ReasonMalformedCBOR, "the payload is not well-formed CBOR: " + err.Error()}
	}
	switch major {
	case 0: // unsigned integer
		c.out = strconv.AppendUint(c.out, arg, 10)
		c.off = next
	case 1: // negative integer: -1 - arg
		if arg == math.MaxUint64 {
			c.out = append(c.out, "-18446744073709551616"...)
		} else {
			c.out = append(c.out, '-')
			c.out = strconv.AppendUint(c.out, arg+1, 10)
		}
		c.off = next
	case 2:
		return c.refuse(ReasonBadValue, "a byte string is not a value; send a number, a boolean or text")
	case 3:
		var s string
		if err := c.decode(&s); err != nil {
			return c.refuse(ReasonMalformedCBOR, "text that is not valid UTF-8")
		}
		c.out = cborAppendJSONString(c.out, s)
	case 4:
		c.off = next
		return c.array(arg, indefinite)
	case 5:
		c.off = next
		return c.mapItems(arg, indefinite)
	case 6:
		return c.tag(arg, next)
	case 7:
		return c.simple(info)
	}
	return nil
}

// isBreak reports whether the byte at c.off ends an indefinite length.
func (c *cborConverter) isBreak() bool { return c.off < len(c.data) && c.data[c.off] == 0xff }

func (c *cborConverter) array(n uint64, indefinite bool) error {
	c.out = append(c.out, '[')
	c.path = append(c.path, cborPathElem{})
	for i := 0; indefinite || uint64(i) < n; i++ {
		if indefinite && c.isBreak() {
			c.off++
			break
		}
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.path[len(c.path)-1] = cborPathElem{index: i}
		if err := c.item(); err != nil {
			return err
		}
	}
	c.path = c.path[:len(c.path)-1]
	c.out = append(c.out, ']')
	return nil
}

func (c *cborConverter) mapItems(n uint64, indefinite bool) error {
	c.out = append(c.out, '{')
	c.path = append(c.path, cborPathElem{})
	for i := 0; indefinite || uint64(i) < n; i++ {
		if indefinite && c.isBreak() {
			c.off++
			break
		}
		if i > 0 {
			c.out = append(c.out, ',')
		}
		if c.off >= len(c.data) || c.data[c.off]>>5 != 3 {
			return c.refuse(ReasonBadKey, "a map key that is not text (key %d of the map)", i)
		}
		var k string
		if err := c.decode(&k); err != nil {
			return c.refuse(ReasonMalformedCBOR, "a map key that is not valid UTF-8 (key %d of the map)", i)
		}
		c.out = cborAppendJSONString(c.out, k)
		c.out = append(c.out, ':')
		c.path[len(c.path)-1] = cborPathElem{key: k, isKey: true}
		if err := c.item(); err != nil {
			return err
		}
	}
	c.path = c.path[:len(c.path)-1]
	c.out = append(c.out, '}')
	return nil
}

// Tags that are understood (RFC 8949 §3.4).
const (
	cborTagTimeString   = 0
	cborTagTimeEpoch    = 1
	cborTagSelfDescribe = 55799
)

func (c *cborConverter) tag(number uint64, next int) error {
	switch number {
	case cborTagSelfDescribe:
		c.off = next
		return c.item()
	case cborTagTimeString:
		c.off = next
		if c.off >= len(c.data) || c.data[c.off]>>5 != 3 {
			return c.refuse(ReasonBadValue, "a time (tag 0) that is not text")
		}
		var t time.Time
		if err := c.decode(&t); err != nil {
			return c.refuse(ReasonBadValue, "a time (tag 0) that is not RFC 3339")
		}
		return c.writeTime(t, number)
	case cborTagTimeEpoch:
		c.off = next
		t, err := c.epoch()
		if err != nil {
			return err
		}
		return c.writeTime(t, number)
	}
	return c.refuse(ReasonBadValue, "tag %d is not supported; only the time tags 0 and 1 are", number)
}

// epoch reads the content of a tag 1: seconds since the epoch, an integer
// or a float.
func (c *cborConverter) epoch() (time.Time, error) {
	const maxSecs = 253402300799 // 9999-12-31T23:59:59Z
	bad := func() (time.Time, error) {
		return time.Time{}, c.refuse(ReasonBadValue, "a time (tag 1) that is not a finite number of seconds from the years 0 to 9999")
	}
	major, info, arg, next, _, err := c.head()
	if err != nil {
		return bad()
	}
	switch {
	case major == 0 && arg <= maxSecs:
		c.off = next
		return time.Unix(int64(arg), 0), nil
	case major == 1 && arg < maxSecs+62167219200: // back to year 0
		c.off = next
		return time.Unix(-1-int64(arg), 0), nil
	case major == 7 && info >= 25 && info <= 27:
		var f float64
		if err := c.decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > maxSecs+62167219200 {
			return bad()
		}
		sec := math.Floor(f)
		return time.Unix(int64(sec), int64(math.Round((f-sec)*1e9))), nil
	}
	return bad()
}

// writeTime writes a time as an RFC 3339 string in UTC.
func (c *cborConverter) writeTime(t time.Time, tag uint64) error {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return c.refuse(ReasonBadValue, "a time (tag %d) outside the years 0 to 9999", tag)
	}
	c.out = cborAppendJSONString(c.out, t.UTC().Format(time.RFC3339Nano))
	return nil
}

func (c *cborConverter) simple(info byte) error {
	switch info {
	case 20:
		c.out = append(c.out, "false"...)
	case 21:
		c.out = append(c.out, "true"...)
	case 22:
		c.out = append(c.out, "null"...)
	case 23:
		return c.refuse(ReasonBadValue, "undefined is not a value")
	case 25, 26, 27:
		var f float64
		if err := c.decode(&f); err != nil {
			return c.refuse(ReasonMalformedCBOR, "a float that cannot be read")
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return c.refuse(ReasonBadValue, "NaN and infinities are not values")
		}
		c.out = strconv.AppendFloat(c.out, f, 'g', -1, 64)
		return nil
	default:
		return c.refuse(ReasonBadValue, "simple value %d is not a value", info)
	}
	c.off++
	return nil
}

// cborAppendJSONString appends s, valid UTF-8, as a JSON string.
func cborAppendJSONString(out []byte, s string) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	for i := 0; i < len(s); {
		b := s[i]
		if b >= utf8.RuneSelf {
			_, n := utf8.DecodeRuneInString(s[i:])
			out = append(out, s[i:i+n]...)
			i += n
			continue
		}
		switch {
		case b == '"' || b == '\\':
			out = append(out, '\\', b)
		case b < 0x20:
			out = append(out, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
		default:
			out = append(out, b)
		}
		i++
	}
	return append(out, '"')
}
