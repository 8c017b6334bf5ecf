package lang_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-iot/tether/internal/rules/lang"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/good and testdata/bad")

// TestGolden parses every testdata/good/*.rule (each must parse; its
// .golden is a dump of the Query) and testdata/bad/*.rule (each must fail;
// its .golden is the error with its position).
func TestGolden(t *testing.T) {
	for _, dir := range []string{"good", "bad"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.rule"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no testdata/%s/*.rule files", dir)
		}
		for _, f := range files {
			name := dir + "/" + strings.TrimSuffix(filepath.Base(f), ".rule")
			t.Run(name, func(t *testing.T) {
				src, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				stmt := strings.TrimSuffix(string(src), "\n")
				q, err := lang.Parse(stmt)
				var got string
				switch {
				case dir == "good" && err != nil:
					t.Fatalf("Parse: %v", err)
				case dir == "bad" && err == nil:
					t.Fatalf("Parse accepted it:\n%s", dump(q))
				case dir == "good":
					got = dump(q)
				default:
					var le *lang.Error
					if !errors.As(err, &le) {
						t.Fatalf("error %T is not a *lang.Error: %v", err, err)
					}
					got = err.Error() + "\n" + pointAt(stmt, le) + "\n"
				}
				golden := strings.TrimSuffix(f, ".rule") + ".golden"
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("got:\n%s\nwant (%s):\n%s", got, golden, want)
				}
			})
		}
	}
}

// pointAt shows the statement line an error is on with a caret under its
// column, so that a golden file shows at a glance where the error points.
func pointAt(stmt string, e *lang.Error) string {
	lines := strings.Split(stmt, "\n")
	if e.Line < 1 || e.Line > len(lines) {
		return fmt.Sprintf("(line %d is outside the statement)", e.Line)
	}
	line := []rune(lines[e.Line-1])
	col := e.Col - 1
	// Long lines show only the part around the column.
	if col > 60 {
		line, col = append([]rune("…"), line[col-50:]...), 51
	}
	if len(line) > col+40 {
		line = append(line[:col+30], []rune("…")...)
	}
	return "| " + string(line) + "\n| " + strings.Repeat(" ", col) + "^"
}

// dump renders a Query readably, with each expression's source and the
// code it was compiled to.
func dump(q *lang.Query) string {
	var b strings.Builder
	ex := func(e *lang.Expr) string {
		if e == nil {
			return "<nil>"
		}
		return fmt.Sprintf("%s  @%d  =>  %s", e.Src, e.Pos, e.Code())
	}
	fmt.Fprintf(&b, "source: %s", q.Source.Kind)
	if q.Source.Topic != "" {
		fmt.Fprintf(&b, " %q", q.Source.Topic)
	}
	b.WriteString("\n")
	for _, p := range q.Projections {
		fmt.Fprintf(&b, "select %q: %s\n", p.Name, ex(p.Expr))
	}
	if q.Where != nil {
		fmt.Fprintf(&b, "where: %s\n", ex(q.Where))
	}
	for _, k := range q.GroupBy {
		fmt.Fprintf(&b, "group by: %s\n", ex(k))
	}
	if w := q.Window; w != nil {
		fmt.Fprintf(&b, "window: %s size=%v slide=%v gap=%v lateness=%v\n", w.Kind, w.Size, w.Slide, w.Gap, w.Lateness)
	}
	if q.Having != nil {
		fmt.Fprintf(&b, "having: %s\n", ex(q.Having))
	}
	for _, a := range q.Aggregates {
		fmt.Fprintf(&b, "aggregate %s: %s of %s", a.Slot, a.Func, ex(a.Arg))
		if a.Func == "percentile" {
			fmt.Fprintf(&b, " p=%v", a.Param)
		}
		b.WriteString("\n")
	}
	for _, s := range q.Stateful {
		fmt.Fprintf(&b, "stateful %s: %s stage=%s params=%v\n", s.Slot, s.Func, s.Stage, s.Params)
		for _, a := range s.Args {
			fmt.Fprintf(&b, "  arg: %s\n", ex(a))
		}
	}
	return b.String()
}
