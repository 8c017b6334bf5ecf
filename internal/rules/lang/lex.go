package lang

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// tokKind is the kind of a statement token.
type tokKind int

const (
	tEOF    tokKind = iota
	tIdent          // identifier or keyword: letters, digits, _ and $, not starting with a digit
	tNumber         // 42, 1.5, 1e3, 0x1f, 1_000
	tString         // 'sql', "expr", `raw`
	tOp             // punctuation and operators
)

// token is one lexeme of the statement. Pos and End are byte offsets in
// the original statement; Val is the decoded value of a string.
type token struct {
	Kind     tokKind
	Pos, End int
	Text     string // the original text
	Val      string // tString: the decoded value
	Space    bool   // whitespace or a comment precedes it
}

// twoCharOps are the operators longer than one character, longest first
// where it matters.
var multiCharOps = []string{"<>", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "..", "**"}

// lex splits a statement into tokens. Comments (-- to the end of the line,
// /* … */) count as whitespace.
func lex(src string) ([]token, *Error) {
	var toks []token
	i := 0
	space := false
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			space = true
			continue
		case c == '-' && strings.HasPrefix(src[i:], "--"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
			space = true
			continue
		case c == '/' && strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, errorAt(src, i, "comment not terminated")
			}
			i += 2 + end + 2
			space = true
			continue
		}
		start := i
		t := token{Pos: start, Space: space}
		space = false
		r, size := utf8.DecodeRuneInString(src[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return nil, errorAt(src, i, "invalid UTF-8 encoding")
		case isIdentStart(r):
			i += size
			for i < len(src) {
				r, size := utf8.DecodeRuneInString(src[i:])
				if !isIdentStart(r) && !unicode.IsDigit(r) {
					break
				}
				i += size
			}
			t.Kind = tIdent
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(src) && src[i+1] >= '0' && src[i+1] <= '9' && (len(toks) == 0 || !endsOperand(toks[len(toks)-1])):
			i = scanNumber(src, i)
			t.Kind = tNumber
		case c == '\'':
			// SQL string: '' is a quote, a backslash is just a backslash.
			var b strings.Builder
			i++
			for {
				if i >= len(src) {
					return nil, errorAt(src, start, "string not terminated")
				}
				if src[i] == '\'' {
					if i+1 < len(src) && src[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(src[i])
				i++
			}
			t.Kind, t.Val = tString, b.String()
		case c == '"':
			// expr string: backslash escapes, no line breaks; expr decodes it.
			i++
			for {
				if i >= len(src) || src[i] == '\n' {
					return nil, errorAt(src, start, "string not terminated")
				}
				if src[i] == '\\' {
					i += 2
					continue
				}
				if src[i] == '"' {
					i++
					break
				}
				i++
			}
			if i > len(src) {
				return nil, errorAt(src, start, "string not terminated")
			}
			t.Kind = tString
		case c == '`':
			end := strings.IndexByte(src[i+1:], '`')
			if end < 0 {
				return nil, errorAt(src, start, "string not terminated")
			}
			i += 1 + end + 1
			t.Kind, t.Val = tString, src[start+1:i-1]
		default:
			t.Kind = tOp
			op := ""
			for _, m := range multiCharOps {
				if strings.HasPrefix(src[i:], m) {
					op = m
					break
				}
			}
			if op == "" {
				if !strings.ContainsRune("()[]{},;:+-*/%^<>=!?|&.#", r) {
					return nil, errorAt(src, start, "unexpected character %q", r)
				}
				op = string(r)
			}
			i += len(op)
		}
		t.End = i
		t.Text = src[start:i]
		toks = append(toks, t)
	}
	toks = append(toks, token{Kind: tEOF, Pos: len(src), End: len(src), Space: space})
	return toks, nil
}

// isIdentStart matches expr's idea of a letter in an identifier.
func isIdentStart(r rune) bool {
	return r == '_' || r == '$' || unicode.IsLetter(r)
}

// scanNumber returns the end of the number starting at i. It is generous
// (expr reports a malformed number precisely).
func scanNumber(src string, i int) int {
	if strings.HasPrefix(src[i:], "0x") || strings.HasPrefix(src[i:], "0X") ||
		strings.HasPrefix(src[i:], "0b") || strings.HasPrefix(src[i:], "0B") ||
		strings.HasPrefix(src[i:], "0o") || strings.HasPrefix(src[i:], "0O") {
		i += 2
		for i < len(src) && (isHex(src[i]) || src[i] == '_') {
			i++
		}
		return i
	}
	for i < len(src) && (isDigit(src[i]) || src[i] == '_') {
		i++
	}
	// A fraction, but not the range operator "..".
	if i+1 < len(src) && src[i] == '.' && isDigit(src[i+1]) {
		i++
		for i < len(src) && (isDigit(src[i]) || src[i] == '_') {
			i++
		}
	} else if i < len(src) && src[i] == '.' && !(i+1 < len(src) && src[i+1] == '.') && (i+1 >= len(src) || !isIdentByte(src[i+1])) {
		i++ // "1." is a float
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		j := i + 1
		if j < len(src) && (src[j] == '+' || src[j] == '-') {
			j++
		}
		if j < len(src) && isDigit(src[j]) {
			i = j
			for i < len(src) && isDigit(src[i]) {
				i++
			}
		}
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// endsOperand reports whether t can end an operand, so that what follows
// is postfix (member access, index) or a binary operator.
func endsOperand(t token) bool {
	switch t.Kind {
	case tNumber, tString:
		return true
	case tIdent:
		switch strings.ToLower(t.Text) {
		case "and", "or", "not", "in", "is", "matches", "contains", "startswith", "endswith", "let", "if", "else":
			return false
		}
		return true
	case tOp:
		return t.Text == ")" || t.Text == "]" || t.Text == "}"
	}
	return false
}

// isKeyword reports whether t is the (case-insensitive) keyword kw.
func (t token) isKeyword(kw string) bool {
	return t.Kind == tIdent && strings.EqualFold(t.Text, kw)
}

// is reports whether t is the operator op.
func (t token) is(op string) bool { return t.Kind == tOp && t.Text == op }
