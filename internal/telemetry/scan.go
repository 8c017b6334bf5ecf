package telemetry

import (
	"encoding/json"
	"unicode/utf8"
)

// scanner is a strict, single-pass JSON reader over a byte slice. It
// validates every token it consumes (string escapes, UTF-8, the number
// grammar, literals), so a document it walks to the end is valid JSON; the
// decoders build on it instead of json.Decoder's token API because that
// allocates for every token and is several times slower (see bench_test.go).
//
// Every method checks bounds and reports failure with ok == false instead of
// panicking; the callers turn that into their own error.
type scanner struct {
	data []byte
	i    int
}

// ws skips insignificant white space.
func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end of the input.
func (s *scanner) peek() byte {
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

// eat consumes c if it is the next byte.
func (s *scanner) eat(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string starting at its opening quote and returns its raw
// contents between the quotes. escaped reports whether the contents hold a
// backslash escape and so need unescape.
func (s *scanner) str() (raw []byte, escaped, ok bool) {
	if !s.eat('"') {
		return nil, false, false
	}
	start := s.i
	ascii := true
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			raw = s.data[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(raw) {
				return nil, false, false
			}
			return raw, escaped, true
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.data) {
				return nil, false, false
			}
			switch s.data[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.data) {
					return nil, false, false
				}
				for _, h := range s.data[s.i+2 : s.i+6] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				s.i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			s.i++
		}
	}
	return nil, false, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number reads a number by the JSON grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and returns its text.
func (s *scanner) number() (raw []byte, ok bool) {
	start := s.i
	s.eat('-')
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return nil, false
	}
	if s.eat('.') && s.digits() == 0 {
		return nil, false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return s.data[start:s.i], true
}

// digits consumes decimal digits and returns how many.
func (s *scanner) digits() int {
	start := s.i
	for s.i < len(s.data) && '0' <= s.data[s.i] && s.data[s.i] <= '9' {
		s.i++
	}
	return s.i - start
}

// literal consumes lit (true, false or null).
func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.i < len(lit) || string(s.data[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// skip consumes one value of any type, validating it. Arrays and objects
// are walked with an explicit stack of open brackets rather than recursion,
// so that deep nesting cannot exhaust the goroutine stack; maxDepth caps
// the stack.
func (s *scanner) skip(maxDepth int) bool {
	var stack []byte // the closing bracket of every open container
	for {
		// A value.
		s.ws()
		switch c := s.peek(); {
		case c == '{' || c == '[':
			if len(stack) >= maxDepth {
				return false
			}
			s.i++
			s.ws()
			if c == '{' {
				stack = append(stack, '}')
				if s.eat('}') {
					stack = stack[:len(stack)-1]
					break
				}
				if !s.member() {
					return false
				}
				continue
			}
			stack = append(stack, ']')
			if s.eat(']') {
				stack = stack[:len(stack)-1]
				break
			}
			continue
		case c == '"':
			if _, _, ok := s.str(); !ok {
				return false
			}
		case c == 't':
			if !s.literal("true") {
				return false
			}
		case c == 'f':
			if !s.literal("false") {
				return false
			}
		case c == 'n':
			if !s.literal("null") {
				return false
			}
		default:
			if _, ok := s.number(); !ok {
				return false
			}
		}
		// After a value: close containers, or move on to the next element.
		for {
			if len(stack) == 0 {
				return true
			}
			s.ws()
			closer := stack[len(stack)-1]
			if s.eat(closer) {
				stack = stack[:len(stack)-1]
				continue
			}
			if !s.eat(',') {
				return false
			}
			if closer == '}' {
				s.ws()
				if !s.member() {
					return false
				}
			}
			break
		}
	}
}

// member consumes an object member's key and colon, leaving the scanner
// before its value.
func (s *scanner) member() bool {
	if _, _, ok := s.str(); !ok {
		return false
	}
	s.ws()
	return s.eat(':')
}

// unescape returns the contents of a string read by str. Escaped contents
// are rare in telemetry, so they go through encoding/json, which already
// gets surrogate pairs and invalid escapes right.
func unescape(raw []byte, escaped bool) (string, bool) {
	if !escaped {
		return string(raw), true
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	q = append(q, '"')
	var out string
	if err := json.Unmarshal(q, &out); err != nil {
		return "", false
	}
	return out, true
}
