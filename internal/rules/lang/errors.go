package lang

import (
	"fmt"
	"unicode/utf8"
)

// Error is a problem with a statement (or with evaluating one of its
// expressions), placed in the original statement text.
type Error struct {
	Pos  int // byte offset in the statement, 0-based
	Line int // 1-based
	Col  int // 1-based, in characters (runes), not bytes
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Col, e.Msg)
}

// errorAt makes an *Error at byte offset pos of src.
func errorAt(src string, pos int, format string, args ...any) *Error {
	if pos < 0 {
		pos = 0
	}
	if pos > len(src) {
		pos = len(src)
	}
	// Never point into the middle of a character.
	for pos > 0 && pos < len(src) && !utf8.RuneStart(src[pos]) {
		pos--
	}
	line, col := 1, 1
	for _, r := range src[:pos] {
		if r == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &Error{Pos: pos, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}
