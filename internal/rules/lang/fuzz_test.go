package lang_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tether-iot/tether/internal/rules/lang"
)

// FuzzParse checks that Parse never panics, that its errors are placed
// inside the statement, and that what it accepts evaluates without
// panicking. The seed corpus is every golden input (testdata/good and
// testdata/bad) plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"good", "bad"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.rule"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(strings.TrimSuffix(string(b), "\n"))
		}
	}
	f.Fuzz(func(t *testing.T, stmt string) {
		q, err := lang.Parse(stmt)
		if err != nil {
			var le *lang.Error
			if !errors.As(err, &le) {
				t.Fatalf("error %T is not a *lang.Error: %v", err, err)
			}
			if le.Pos < 0 || le.Pos > len(stmt) || le.Line < 1 || le.Col < 1 {
				t.Fatalf("error outside the statement: %+v", le)
			}
			if want := strings.Count(stmt[:le.Pos], "\n") + 1; le.Line != want {
				t.Fatalf("line %d, want %d", le.Line, want)
			}
			if q != nil {
				t.Fatal("Parse returned a query and an error")
			}
			return
		}
		if !utf8.ValidString(stmt) || len(stmt) > 4096 {
			t.Fatalf("accepted an invalid statement")
		}
		var exprs []*lang.Expr
		for _, p := range q.Projections {
			exprs = append(exprs, p.Expr)
		}
		exprs = append(exprs, q.Where, q.Having)
		exprs = append(exprs, q.GroupBy...)
		for _, a := range q.Aggregates {
			exprs = append(exprs, a.Arg)
		}
		for _, s := range q.Stateful {
			exprs = append(exprs, s.Args...)
		}
		env := telemetryEnv()
		for _, e := range exprs {
			if e == nil {
				continue
			}
			if e.Pos < 0 || e.Pos+len(e.Src) > len(stmt) || stmt[e.Pos:e.Pos+len(e.Src)] != e.Src {
				t.Fatalf("Src %q is not at %d of the statement", e.Src, e.Pos)
			}
			// Errors are fine (types mismatch); panics are not.
			_, _ = e.Eval(env)
			_, _ = e.Eval(nil)
			_, _ = e.Bool(map[string]any{})
		}
	})
}
