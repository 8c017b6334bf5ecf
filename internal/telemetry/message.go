package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tether-iot/tether"
)

// MessageVersion is the value of "v" that [MarshalMessage] writes and the
// only one [UnmarshalMessage] reads.
const MessageVersion = 1

// MarshalMessage encodes a message in the bus format described in the
// package documentation. It fails for a point of an unknown kind, a number
// that JSON cannot hold (NaN, ±Inf), a time that Unix nanoseconds cannot
// hold (before 1677 or after 2262), or a string that is not valid UTF-8, so
// that every message it writes reads back exactly.
func MarshalMessage(m tether.Message) ([]byte, error) {
	b, err := AppendMessage(make([]byte, 0, messageSize(m)), m)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// AppendMessage is [MarshalMessage] appending to b, so that a caller can
// reuse one buffer for many messages. On error it returns b as it was.
func AppendMessage(b []byte, m tether.Message) ([]byte, error) {
	out, err := appendMessage(b, m)
	if err != nil {
		return b, err
	}
	return out, nil
}

// messageSize returns about how many bytes MarshalMessage writes for m:
// enough for most messages, so that the buffer need not grow.
func messageSize(m tether.Message) int {
	n := 96 + len(m.ID) + len(m.TenantID) + len(m.DeviceID)
	for i := range m.Points {
		n += 48 + len(m.Points[i].Key) + len(m.Points[i].Str) + len(m.Points[i].Quarantine)
	}
	return n
}

func appendMessage(b []byte, m tether.Message) ([]byte, error) {
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, MessageVersion, 10)
	var err error
	b = append(b, `,"id":`...)
	if b, err = appendString(b, m.ID, "id"); err != nil {
		return nil, err
	}
	b = append(b, `,"tenant":`...)
	if b, err = appendString(b, m.TenantID, "tenant"); err != nil {
		return nil, err
	}
	b = append(b, `,"device":`...)
	if b, err = appendString(b, m.DeviceID, "device"); err != nil {
		return nil, err
	}
	rx, ok := unixNano(m.ReceivedAt)
	if !ok {
		return nil, fmt.Errorf("telemetry: marshal message: received time %v cannot be Unix nanoseconds", m.ReceivedAt)
	}
	b = append(b, `,"rx":`...)
	b = strconv.AppendInt(b, rx, 10)
	b = append(b, `,"points":[`...)
	for i := range m.Points {
		p := &m.Points[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"k":`...)
		if b, err = appendString(b, p.Key, "key"); err != nil {
			return nil, fmt.Errorf("%w of point %d", err, i)
		}
		t, ok := unixNano(p.Time)
		if !ok {
			return nil, fmt.Errorf("telemetry: marshal message: time %v of point %d cannot be Unix nanoseconds", p.Time, i)
		}
		b = append(b, `,"t":`...)
		b = strconv.AppendInt(b, t, 10)
		switch p.Kind {
		case tether.KindNumber:
			if math.IsNaN(p.Num) || math.IsInf(p.Num, 0) {
				return nil, fmt.Errorf("telemetry: marshal message: point %d (%q) is %v, which JSON cannot hold", i, p.Key, p.Num)
			}
			b = append(b, `,"n":`...)
			b = strconv.AppendFloat(b, p.Num, 'g', -1, 64)
		case tether.KindBool:
			b = append(b, `,"b":`...)
			b = strconv.AppendBool(b, p.Num != 0)
		case tether.KindString:
			b = append(b, `,"s":`...)
			if b, err = appendString(b, p.Str, "string value"); err != nil {
				return nil, fmt.Errorf("%w of point %d", err, i)
			}
		default:
			return nil, fmt.Errorf("telemetry: marshal message: point %d (%q) has unknown kind %d", i, p.Key, p.Kind)
		}
		// Written only when set, so that a message without quarantined
		// points is encoded exactly as before the field existed.
		if p.Quarantine != "" {
			b = append(b, `,"q":`...)
			if b, err = appendString(b, p.Quarantine, "quarantine reason"); err != nil {
				return nil, fmt.Errorf("%w of point %d", err, i)
			}
		}
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	return b, nil
}

// unixNano returns t as Unix nanoseconds, and false if it does not fit.
func unixNano(t time.Time) (int64, bool) {
	ns := t.UnixNano()
	return ns, time.Unix(0, ns).Equal(t)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. what names s in the error for
// invalid UTF-8.
func appendString(b []byte, s, what string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return b, fmt.Errorf("telemetry: marshal message: the %s %q is not valid UTF-8", what, trunc(s))
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

// Fields of a message, as bits of a set that tracks which were seen.
const (
	fieldV = 1 << iota
	fieldID
	fieldTenant
	fieldDevice
	fieldRx
	fieldPoints
	allFields = fieldV | fieldID | fieldTenant | fieldDevice | fieldRx | fieldPoints
)

// maxSkipDepth bounds the nesting of unknown fields that UnmarshalMessage
// skips.
const maxSkipDepth = 64

// UnmarshalMessage decodes a message in the bus format described in the
// package documentation. It fails for malformed JSON, a version other than
// [MessageVersion], a missing or repeated field, and a point without
// exactly one value. Unknown fields are ignored, so that later versions of
// the format may add optional fields without a new version. Times are
// returned in UTC; a message without points has nil Points.
func UnmarshalMessage(b []byte) (tether.Message, error) {
	m, err := unmarshalMessage(b)
	if err != nil {
		// A message of another version may differ anywhere, so the
		// version is the better explanation of any failure.
		if verr := checkVersion(b); verr != nil {
			return tether.Message{}, verr
		}
		// The walk stops at the first problem; a syntax error further on
		// is the better explanation.
		if merr := malformed(b, "message"); merr != nil {
			return tether.Message{}, fmt.Errorf("telemetry: unmarshal message: %s", merr.Message)
		}
		return tether.Message{}, fmt.Errorf("telemetry: unmarshal message: %w", err)
	}
	return m, nil
}

var errSyntax = errors.New("malformed JSON")

func unmarshalMessage(b []byte) (tether.Message, error) {
	var (
		m    tether.Message
		seen int
		s    = scanner{data: b}
	)
	s.ws()
	err := s.members(func(name []byte) error {
		var (
			field int
			ok    bool
		)
		switch string(name) {
		case "v":
			field = fieldV
			var num []byte
			if num, ok = s.number(); !ok {
				return errors.New(`"v" is not a number`)
			}
			if string(num) != "1" {
				return fmt.Errorf("version %s is not supported; this build reads version %d", trunc(string(num)), MessageVersion)
			}
		case "id":
			field = fieldID
			m.ID, ok = stringValue(&s)
		case "tenant":
			field = fieldTenant
			m.TenantID, ok = stringValue(&s)
		case "device":
			field = fieldDevice
			m.DeviceID, ok = stringValue(&s)
		case "rx":
			field = fieldRx
			m.ReceivedAt, ok = timeValue(&s)
		case "points":
			field = fieldPoints
			var err error
			if m.Points, err = points(&s); err != nil {
				return err
			}
			ok = true
		default:
			ok = s.skip(maxSkipDepth)
		}
		if !ok {
			return fmt.Errorf("field %q is malformed", trunc(string(name)))
		}
		if seen&field != 0 {
			return fmt.Errorf("field %q is repeated", name)
		}
		seen |= field
		return nil
	})
	if err != nil {
		return m, err
	}
	s.ws()
	if s.i != len(s.data) {
		return m, errSyntax
	}
	if seen != allFields {
		for _, f := range []struct {
			bit  int
			name string
		}{{fieldV, "v"}, {fieldID, "id"}, {fieldTenant, "tenant"}, {fieldDevice, "device"}, {fieldRx, "rx"}, {fieldPoints, "points"}} {
			if seen&f.bit == 0 {
				return m, fmt.Errorf("missing field %q", f.name)
			}
		}
	}
	return m, nil
}

// checkVersion returns an error if b is an object whose top-level "v" is
// present and not 1. It is the slow path of a failed UnmarshalMessage.
func checkVersion(b []byte) error {
	s := scanner{data: b}
	s.ws()
	if !s.eat('{') {
		return nil
	}
	for {
		s.ws()
		raw, escaped, ok := s.str()
		if !ok {
			return nil
		}
		s.ws()
		if !s.eat(':') {
			return nil
		}
		s.ws()
		if name, _ := unescape(raw, escaped); name == "v" {
			start := s.i
			if !s.skip(maxSkipDepth) {
				return nil
			}
			if v := string(bytes.TrimSpace(b[start:s.i])); v != "1" {
				return fmt.Errorf("telemetry: unmarshal message: version %s is not supported; this build reads version %d", trunc(v), MessageVersion)
			}
			return nil
		}
		if !s.skip(maxSkipDepth) {
			return nil
		}
		s.ws()
		if !s.eat(',') {
			return nil
		}
	}
}

func stringValue(s *scanner) (string, bool) {
	raw, escaped, ok := s.str()
	if !ok {
		return "", false
	}
	return unescape(raw, escaped)
}

// timeValue reads Unix nanoseconds, an integer.
func timeValue(s *scanner) (time.Time, bool) {
	raw, ok := s.number()
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns).UTC(), true
}

// points reads the array of points.
func points(s *scanner) ([]tether.Point, error) {
	if !s.eat('[') {
		return nil, errors.New(`field "points" is not an array`)
	}
	s.ws()
	if s.eat(']') {
		return nil, nil
	}
	// Every point is an object; the count of '{' bounds their number.
	pts := make([]tether.Point, 0, bytes.Count(s.data[s.i:], []byte{'{'}))
	for {
		s.ws()
		p, err := point(s)
		if err != nil {
			return nil, fmt.Errorf("point %d: %w", len(pts), err)
		}
		pts = append(pts, p)
		s.ws()
		if s.eat(']') {
			return pts, nil
		}
		if !s.eat(',') {
			return nil, errSyntax
		}
	}
}

// Fields of a point, as bits of a set that tracks which were seen.
const (
	pointK = 1 << iota
	pointT
	pointValue
	pointQ
)

// members reads a JSON object, calling member with each name while the
// scanner stands at the start of its value; member must read the value.
// The name is the input's bytes where it has no escapes, so that matching
// it against the known names allocates nothing; member must not keep it.
func (s *scanner) members(member func(name []byte) error) error {
	if !s.eat('{') {
		return errors.New("not an object")
	}
	s.ws()
	if s.eat('}') {
		return nil
	}
	for {
		s.ws()
		name, escaped, ok := s.str()
		if !ok {
			return errSyntax
		}
		if escaped {
			unescaped, ok := unescape(name, escaped)
			if !ok {
				return errSyntax
			}
			name = []byte(unescaped)
		}
		s.ws()
		if !s.eat(':') {
			return errSyntax
		}
		s.ws()
		if err := member(name); err != nil {
			return err
		}
		s.ws()
		if s.eat('}') {
			return nil
		}
		if !s.eat(',') {
			return errSyntax
		}
	}
}

func point(s *scanner) (tether.Point, error) {
	var (
		p    tether.Point
		seen int
	)
	err := s.members(func(name []byte) error {
		var (
			field int
			ok    bool
		)
		switch string(name) {
		case "k":
			field = pointK
			p.Key, ok = stringValue(s)
		case "t":
			field = pointT
			p.Time, ok = timeValue(s)
		case "n":
			field = pointValue
			p.Kind = tether.KindNumber
			var num []byte
			if num, ok = s.number(); ok {
				var err error
				p.Num, err = strconv.ParseFloat(string(num), 64)
				ok = err == nil
			}
		case "b":
			field = pointValue
			p.Kind = tether.KindBool
			switch {
			case s.literal("true"):
				p.Num, ok = 1, true
			case s.literal("false"):
				ok = true
			}
		case "s":
			field = pointValue
			p.Kind = tether.KindString
			p.Str, ok = stringValue(s)
		case "q":
			field = pointQ
			p.Quarantine, ok = stringValue(s)
		default:
			ok = s.skip(maxSkipDepth)
		}
		if !ok {
			return fmt.Errorf("field %q is malformed", trunc(string(name)))
		}
		if seen&field != 0 {
			if field == pointValue {
				return errors.New(`more than one of "n", "b" and "s"`)
			}
			return fmt.Errorf("field %q is repeated", name)
		}
		seen |= field
		return nil
	})
	if err != nil {
		return p, err
	}
	switch {
	case seen&pointK == 0:
		return p, errors.New(`missing field "k"`)
	case seen&pointT == 0:
		return p, errors.New(`missing field "t"`)
	case seen&pointValue == 0:
		return p, errors.New(`missing a value: one of "n", "b" or "s"`)
	}
	return p, nil
}
