package window_test

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/rules/window"
)

// base is aligned to every window size the tests use (a UTC midnight).
var base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// at returns base plus sec seconds.
func at(sec float64) time.Time { return base.Add(time.Duration(sec * float64(time.Second))) }

// fakeClock is a settable processing clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// point is one input: key, event time (seconds after base) and the
// arguments of the aggregates.
type point struct {
	key  string
	sec  float64
	vals []any
}

// win is a closed window in test notation: seconds after base.
type win struct {
	key        string
	start, end float64
	values     []any
}

func toWins(cs []window.Closed) []win {
	out := []win{}
	for _, c := range cs {
		out = append(out, win{c.Key, c.Start.Sub(base).Seconds(), c.End.Sub(base).Seconds(), c.Values})
	}
	return out
}

func sum(aggs ...string) []window.AggSpec {
	out := []window.AggSpec{}
	for _, a := range aggs {
		out = append(out, window.AggSpec{Func: a})
	}
	return out
}

// closeAll advances key's watermark far ahead and returns what closes.
func closeAll(s *window.Set, key string) []win {
	return toWins(s.Advance(key, at(1e6)))
}

func TestAggregates(t *testing.T) {
	// The classic data set 2, 4, 4, 4, 5, 5, 7, 9 (n = 8), added out of
	// time order: the value at second s is listed as (s, v).
	//   sum = 40, count = 8, avg = 40/8 = 5, min = 2, max = 9
	//   squared deviations from 5: 9+1+1+1+0+0+4+16 = 32
	//   sample stddev = sqrt(32/7) = 2.138089935299395
	//   sorted: 2 4 4 4 5 5 7 9; nearest rank k = ceil(p/100·8):
	//   p0 → k=1 → 2; p12.5 → k=1 → 2; p13 → ceil(1.04)=2 → 4;
	//   p25 → 2 → 4; p50 → 4 → 4; p75 → 6 → 5; p90 → ceil(7.2)=8 → 9; p100 → 8 → 9
	//   first: the earliest time (s=1, v=5); last: the latest (s=58, v=7)
	classic := [][2]float64{{30, 4}, {1, 5}, {10, 2}, {20, 4}, {58, 7}, {40, 9}, {50, 4}, {45, 5}}
	pts := func(vs [][2]float64) []point {
		var out []point
		for _, v := range vs {
			out = append(out, point{"k", v[0], []any{v[1]}})
		}
		return out
	}
	tests := []struct {
		name string
		agg  window.AggSpec
		in   []point
		want any
	}{
		{"sum adds the values", window.AggSpec{Func: "sum"}, pts(classic), 40.0},
		{"count counts the values", window.AggSpec{Func: "count"}, pts(classic), 8.0},
		{"avg divides the sum by the count", window.AggSpec{Func: "avg"}, pts(classic), 5.0},
		{"min is the smallest value", window.AggSpec{Func: "min"}, pts(classic), 2.0},
		{"max is the largest value", window.AggSpec{Func: "max"}, pts(classic), 9.0},
		{"stddev is the sample standard deviation", window.AggSpec{Func: "stddev"}, pts(classic), math.Sqrt(32.0 / 7)},
		{"first is the value with the earliest event time", window.AggSpec{Func: "first"}, pts(classic), 5.0},
		{"last is the value with the latest event time", window.AggSpec{Func: "last"}, pts(classic), 7.0},
		{"percentile 0 is the minimum", window.AggSpec{Func: "percentile", Param: 0}, pts(classic), 2.0},
		{"percentile 12.5 is rank 1", window.AggSpec{Func: "percentile", Param: 12.5}, pts(classic), 2.0},
		{"percentile 13 is rank 2", window.AggSpec{Func: "percentile", Param: 13}, pts(classic), 4.0},
		{"percentile 25 is rank 2", window.AggSpec{Func: "percentile", Param: 25}, pts(classic), 4.0},
		{"percentile 50 is rank 4", window.AggSpec{Func: "percentile", Param: 50}, pts(classic), 4.0},
		{"percentile 75 is rank 6", window.AggSpec{Func: "percentile", Param: 75}, pts(classic), 5.0},
		{"percentile 90 is rank 8", window.AggSpec{Func: "percentile", Param: 90}, pts(classic), 9.0},
		{"percentile 100 is the maximum", window.AggSpec{Func: "percentile", Param: 100}, pts(classic), 9.0},
		// 1..10, p70: k = ceil(70·10/100) = 7 → 7 (no floating-point off-by-one).
		{"percentile 70 of ten values is the seventh", window.AggSpec{Func: "percentile", Param: 70},
			pts([][2]float64{{1, 10}, {2, 9}, {3, 8}, {4, 7}, {5, 6}, {6, 5}, {7, 4}, {8, 3}, {9, 2}, {10, 1}}), 7.0},
		// A single value: sample stddev needs two.
		{"stddev of one value is nil", window.AggSpec{Func: "stddev"}, pts([][2]float64{{1, 3}}), nil},
		// Two values 1 and 3: mean 2, deviations ±1, sqrt((1+1)/(2-1)) = sqrt(2).
		{"stddev of two values divides by one", window.AggSpec{Func: "stddev"}, pts([][2]float64{{1, 1}, {2, 3}}), math.Sqrt2},
		{"avg of no numbers is nil", window.AggSpec{Func: "avg"}, []point{{"k", 1, []any{nil}}}, nil},
		{"count of no arguments is zero", window.AggSpec{Func: "count"}, []point{{"k", 1, []any{nil}}}, 0.0},
		{"count counts non-numeric arguments too", window.AggSpec{Func: "count"},
			[]point{{"k", 1, []any{"on"}}, {"k", 2, []any{true}}, {"k", 3, []any{nil}}}, 2.0},
		// "x" and NaN are skipped: 1 + 2 = 3.
		{"sum skips non-numeric and non-finite values", window.AggSpec{Func: "sum"},
			[]point{{"k", 1, []any{1}}, {"k", 2, []any{"x"}}, {"k", 3, []any{math.NaN()}}, {"k", 4, []any{json.Number("2")}}}, 3.0},
		// int, int64, uint8, float32: 1 + 2 + 3 + 0.5 = 6.5.
		{"sum takes every Go number type", window.AggSpec{Func: "sum"},
			[]point{{"k", 1, []any{1}}, {"k", 2, []any{int64(2)}}, {"k", 3, []any{uint8(3)}}, {"k", 4, []any{float32(0.5)}}}, 6.5},
		{"min of only strings is nil", window.AggSpec{Func: "min"}, []point{{"k", 1, []any{"a"}}}, nil},
		{"last keeps a string", window.AggSpec{Func: "last"},
			[]point{{"k", 2, []any{"open"}}, {"k", 1, []any{"closed"}}}, "open"},
		{"first keeps a bool", window.AggSpec{Func: "first"},
			[]point{{"k", 2, []any{false}}, {"k", 1, []any{true}}}, true},
		{"first on a tie keeps the value added first", window.AggSpec{Func: "first"},
			[]point{{"k", 1, []any{1}}, {"k", 1, []any{2}}}, 1.0},
		{"last on a tie keeps the value added last", window.AggSpec{Func: "last"},
			[]point{{"k", 1, []any{1}}, {"k", 1, []any{2}}}, 2.0},
		{"aggregate names are case-insensitive", window.AggSpec{Func: "AVG"}, pts([][2]float64{{1, 1}, {2, 2}}), 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute, Lateness: time.Minute}, []window.AggSpec{tt.agg}, window.Options{})
			for _, p := range tt.in {
				if s.Add(p.key, at(p.sec), p.vals) {
					t.Fatalf("point at %vs reported late", p.sec)
				}
			}
			got := closeAll(s, "k")
			if len(got) != 1 {
				t.Fatalf("closed %d windows, want 1: %+v", len(got), got)
			}
			g := got[0].values[0]
			if gf, ok := g.(float64); ok {
				if wf, ok := tt.want.(float64); ok && math.Abs(gf-wf) < 1e-12 {
					return
				}
			}
			if g != tt.want {
				t.Errorf("got %#v, want %#v", g, tt.want)
			}
		})
	}
}

func TestTumblingWindowsAreAlignedToTheEpochAndHalfOpen(t *testing.T) {
	tests := []struct {
		name       string
		size       time.Duration
		t          time.Time
		start, end time.Time
	}{
		{"a point just before the minute is in the minute before",
			time.Minute, base.Add(59*time.Second + 999*time.Millisecond), base, base.Add(time.Minute)},
		{"a point on the minute starts the next window",
			time.Minute, base.Add(time.Minute), base.Add(time.Minute), base.Add(2 * time.Minute)},
		{"hour windows start on the UTC hour",
			time.Hour, base.Add(90 * time.Minute), base.Add(time.Hour), base.Add(2 * time.Hour)},
		{"times before 1970 round toward minus infinity",
			time.Minute, time.Date(1969, 12, 31, 23, 59, 30, 0, time.UTC),
			time.Date(1969, 12, 31, 23, 59, 0, 0, time.UTC), time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"7s windows count from the epoch, not from the day",
			7 * time.Second, time.Unix(15, 0), time.Unix(14, 0).UTC(), time.Unix(21, 0).UTC()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := window.New(window.Spec{Kind: window.Tumbling, Size: tt.size}, sum("count"), window.Options{})
			s.Add("k", tt.t, []any{1})
			got := s.Advance("k", tt.t.Add(24*time.Hour))
			if len(got) != 1 || !got[0].Start.Equal(tt.start) || !got[0].End.Equal(tt.end) {
				t.Fatalf("got %+v, want [%s, %s)", got, tt.start, tt.end)
			}
		})
	}
}

func TestTumblingOutOfOrderAndLateData(t *testing.T) {
	// TUMBLING(1m) ALLOWED LATENESS 10s, sum and count.
	type step struct {
		add      *point  // Add this point …
		late     bool    // … expecting this result
		advance  float64 // or Advance to this time (seconds), if add is nil
		closed   []win   // expecting these windows
		lateSeen uint64  // Stats().Late after the step
	}
	p := func(sec, v float64) *point { return &point{"k", sec, []any{v, 1}} }
	steps := []step{
		{add: p(10, 1)},
		{add: p(50, 2)},
		{add: p(65, 4)}, // watermark 65: [0,60) closes at 60+10 = 70, still open
		{advance: 65},
		{add: p(30, 8)}, // out of order, within the lateness: joins [0,60)
		{add: p(69.999, 16)},
		{advance: 69.999},
		// The watermark reaches exactly 70 = end + lateness: [0,60) closes
		// with 1+2+8 = 11 from three points.
		{add: p(70, 32)},
		{advance: 70, closed: []win{{"k", 0, 60, []any{11.0, 3.0}}}},
		{add: p(59, 64), late: true, lateSeen: 1}, // [0,60) is closed
		{add: p(61, 128)}, // [60,120) still open
		// Far ahead: [60,120) has 4 + 16 + 32 + 128 = 180 from four points.
		{advance: 200, closed: []win{{"k", 60, 120, []any{180.0, 4.0}}}, lateSeen: 1},
		{add: p(125, 1), late: true, lateSeen: 2}, // 180+10 ≤ 200: [120,180) is past its close
	}
	s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute, Lateness: 10 * time.Second}, sum("sum", "count"), window.Options{})
	for i, st := range steps {
		if st.add != nil {
			if got := s.Add(st.add.key, at(st.add.sec), st.add.vals); got != st.late {
				t.Fatalf("step %d: Add at %vs returned late=%v, want %v", i, st.add.sec, got, st.late)
			}
		} else {
			got := toWins(s.Advance("k", at(st.advance)))
			want := st.closed
			if want == nil {
				want = []win{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d: Advance(%v) closed %+v, want %+v", i, st.advance, got, want)
			}
		}
		if st.lateSeen != 0 && s.Stats().Late != st.lateSeen {
			t.Fatalf("step %d: Late = %d, want %d", i, s.Stats().Late, st.lateSeen)
		}
	}
}

func TestHoppingWindows(t *testing.T) {
	spec := window.Spec{Kind: window.Hopping, Size: 30 * time.Second, Slide: 10 * time.Second}
	t.Run("a point belongs to every window that covers it", func(t *testing.T) {
		s := window.New(spec, sum("sum"), window.Options{})
		// 5s (1) is in [-20,10) [-10,20) [0,30); 15s (2) in [-10,20) [0,30) [10,40);
		// 25s (4) in [0,30) [10,40) [20,50). Sums: [-20,10) 1, [-10,20) 1+2 = 3,
		// [0,30) 1+2+4 = 7, [10,40) 2+4 = 6, [20,50) 4.
		for _, p := range []point{{"k", 5, []any{1}}, {"k", 15, []any{2}}, {"k", 25, []any{4}}} {
			s.Add(p.key, at(p.sec), p.vals)
		}
		if got := s.Stats().Open; got != 5 {
			t.Fatalf("open windows = %d, want 5", got)
		}
		want := []win{
			{"k", -20, 10, []any{1.0}}, {"k", -10, 20, []any{3.0}}, {"k", 0, 30, []any{7.0}},
			{"k", 10, 40, []any{6.0}}, {"k", 20, 50, []any{4.0}},
		}
		if got := closeAll(s, "k"); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("windows close one by one as the watermark passes their end", func(t *testing.T) {
		s := window.New(spec, sum("count"), window.Options{})
		s.Add("k", at(25), []any{1}) // in [0,30) [10,40) [20,50)
		if got := toWins(s.Advance("k", at(39))); len(got) != 1 || got[0].end != 30 {
			t.Fatalf("Advance(39) closed %+v, want [0,30) only", got)
		}
		if got := toWins(s.Advance("k", at(40))); len(got) != 1 || got[0].end != 40 {
			t.Fatalf("Advance(40) closed %+v, want [10,40)", got)
		}
	})
	t.Run("a late point joins the windows still open and is reported late", func(t *testing.T) {
		s := window.New(spec, sum("sum"), window.Options{})
		s.Add("k", at(25), []any{1})
		s.Add("k", at(35), []any{2})
		// 12s is in [-10,20) and [0,30), both past their end (≤ 35), and in
		// [10,40), open: late, but counted in [10,40).
		if !s.Add("k", at(12), []any{4}) {
			t.Fatal("point at 12s not reported late")
		}
		// 31s is in [10,40) [20,50) [30,60), all open: out of order, not late.
		if s.Add("k", at(31), []any{8}) {
			t.Fatal("point at 31s reported late")
		}
		// [0,30): 1 (12s came too late); [10,40): 1+2+4+8 = 15;
		// [20,50): 1+2+8 = 11; [30,60): 2+8 = 10.
		want := []win{{"k", 0, 30, []any{1.0}}, {"k", 10, 40, []any{15.0}}, {"k", 20, 50, []any{11.0}}, {"k", 30, 60, []any{10.0}}}
		if got := closeAll(s, "k"); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		if s.Stats().Late != 1 {
			t.Fatalf("Late = %d, want 1", s.Stats().Late)
		}
	})
	t.Run("a slide longer than the size leaves gaps that take no points", func(t *testing.T) {
		s := window.New(window.Spec{Kind: window.Hopping, Size: 10 * time.Second, Slide: 30 * time.Second}, sum("count"), window.Options{})
		if s.Add("k", at(15), []any{1}) {
			t.Fatal("a point in a gap reported late")
		}
		if s.Stats().Open != 0 {
			t.Fatalf("open = %d, want 0", s.Stats().Open)
		}
		s.Add("k", at(31), []any{1}) // in [30,40)
		if got := closeAll(s, "k"); len(got) != 1 || got[0].start != 30 {
			t.Fatalf("got %+v, want [30,40)", got)
		}
	})
}

func TestSessionWindows(t *testing.T) {
	aggs := sum("sum", "count", "first", "last")
	tests := []struct {
		name     string
		lateness time.Duration
		in       []point
		late     []bool // Add's result per point
		want     []win
	}{
		{
			// 0 and 5 are 5s apart (< 10): one session [0, 5+10).
			name: "points less than the gap apart make one session",
			in:   []point{{"k", 0, []any{1, 1, 1, 1}}, {"k", 5, []any{2, 1, 2, 2}}},
			want: []win{{"k", 0, 15, []any{3.0, 2.0, 1.0, 2.0}}},
		},
		{
			// 10 is exactly the gap after 0: [0,10) is half-open, so two sessions.
			name: "a point exactly the gap after the last starts a new session",
			in:   []point{{"k", 0, []any{1, 1, 1, 1}}, {"k", 10, []any{2, 1, 2, 2}}},
			want: []win{{"k", 0, 10, []any{1.0, 1.0, 1.0, 1.0}}, {"k", 10, 20, []any{2.0, 1.0, 2.0, 2.0}}},
		},
		{
			// Sessions [0,10) and [15,25); 7 is within 10 of both (7 < 10 and
			// 15-10 < 7): one session [0,25) with 1+2+4 = 7 from three points,
			// first the value at 0 (1), last the value at 15 (2).
			name:     "a point that bridges two sessions merges them",
			lateness: time.Minute,
			in:       []point{{"k", 0, []any{1, 1, 1, 1}}, {"k", 15, []any{2, 1, 2, 2}}, {"k", 7, []any{4, 1, 4, 4}}},
			want:     []win{{"k", 0, 25, []any{7.0, 3.0, 1.0, 2.0}}},
		},
		{
			// Out of order: 20 then 5 then 12. [20,30) and [5,15) are apart;
			// 12 touches both (12 < 15, 20-10 < 12): one session [5,30).
			name:     "out-of-order points build the same session",
			lateness: time.Minute,
			in:       []point{{"k", 20, []any{1, 1, 1, 1}}, {"k", 5, []any{2, 1, 2, 2}}, {"k", 12, []any{4, 1, 4, 4}}},
			want:     []win{{"k", 5, 30, []any{7.0, 3.0, 2.0, 1.0}}},
		},
		{
			// No lateness. [0,10) is past its close once 30 arrives; 5 falls in
			// the closed session (late); 12 would make [12,22), past its close at
			// watermark 30 (late); 25 touches [30,40): [25,40), not late.
			name: "points for closed sessions are late",
			in: []point{{"k", 0, []any{1, 1, 1, 1}}, {"k", 30, []any{2, 1, 2, 2}},
				{"k", 5, []any{4, 1, 4, 4}}, {"k", 12, []any{8, 1, 8, 8}}, {"k", 25, []any{16, 1, 16, 16}}},
			late: []bool{false, false, true, true, false},
			want: []win{{"k", 0, 10, []any{1.0, 1.0, 1.0, 1.0}}, {"k", 25, 40, []any{18.0, 2.0, 16.0, 2.0}}},
		},
		{
			// With lateness 30s, 5 still joins [0,10) (closes at 10+30 = 40 > 30).
			name:     "allowed lateness keeps a session open for out-of-order points",
			lateness: 30 * time.Second,
			in:       []point{{"k", 0, []any{1, 1, 1, 1}}, {"k", 30, []any{2, 1, 2, 2}}, {"k", 5, []any{4, 1, 4, 4}}},
			want:     []win{{"k", 0, 15, []any{5.0, 2.0, 1.0, 4.0}}, {"k", 30, 40, []any{2.0, 1.0, 2.0, 2.0}}},
		},
		{
			name: "sessions are per key",
			in:   []point{{"a", 0, []any{1, 1, 1, 1}}, {"b", 5, []any{2, 1, 2, 2}}},
			want: []win{{"a", 0, 10, []any{1.0, 1.0, 1.0, 1.0}}, {"b", 5, 15, []any{2.0, 1.0, 2.0, 2.0}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := window.New(window.Spec{Kind: window.Session, Gap: 10 * time.Second, Lateness: tt.lateness}, aggs, window.Options{})
			var got []win
			keys := map[string]bool{}
			for i, p := range tt.in {
				late := s.Add(p.key, at(p.sec), p.vals)
				want := tt.late != nil && tt.late[i]
				if late != want {
					t.Fatalf("point %d at %vs: late=%v, want %v", i, p.sec, late, want)
				}
				// Advance after every point, as the engine does.
				got = append(got, toWins(s.Advance(p.key, at(p.sec)))...)
				keys[p.key] = true
			}
			for _, k := range slices.Sorted(func(yield func(string) bool) {
				for k := range keys {
					if !yield(k) {
						return
					}
				}
			}) {
				got = append(got, closeAll(s, k)...)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	t.Run("a point joining a session already past its close is late", func(t *testing.T) {
		s := window.New(window.Spec{Kind: window.Session, Gap: 10 * time.Second}, sum("count"), window.Options{})
		s.Add("k", at(0), []any{1})  // [0,10)
		s.Add("k", at(50), []any{1}) // watermark 50, no Advance in between
		// 3 touches [0,10), whose close (10) has passed: late, even though
		// nobody called Advance yet.
		if !s.Add("k", at(3), []any{1}) {
			t.Fatal("not late")
		}
		if got := toWins(s.Advance("k", at(50))); len(got) != 1 || got[0].values[0] != 1.0 {
			t.Fatalf("got %+v, want [0,10) with one point", got)
		}
	})
}

func TestResultsDoNotDependOnWhenAdvanceIsCalled(t *testing.T) {
	specs := []window.Spec{
		{Kind: window.Tumbling, Size: 10 * time.Second, Lateness: 5 * time.Second},
		{Kind: window.Hopping, Size: 20 * time.Second, Slide: 5 * time.Second, Lateness: 3 * time.Second},
		{Kind: window.Session, Gap: 4 * time.Second, Lateness: 6 * time.Second},
	}
	aggs := []window.AggSpec{{Func: "avg"}, {Func: "min"}, {Func: "max"}, {Func: "sum"}, {Func: "count"},
		{Func: "stddev"}, {Func: "first"}, {Func: "last"}, {Func: "percentile", Param: 90}}
	in := jittered(300, 2)
	for _, spec := range specs {
		t.Run(spec.Kind+" windows give the same results with Advance after every point, at the end, or after a restart per point", func(t *testing.T) {
			every := window.New(spec, aggs, window.Options{})
			end := window.New(spec, aggs, window.Options{})
			restarted := window.New(spec, aggs, window.Options{})
			var gotEvery, gotEnd, gotRestarted []window.Closed
			for _, p := range in {
				l1 := every.Add(p.key, at(p.sec), p.vals)
				l2 := end.Add(p.key, at(p.sec), p.vals)
				l3 := restarted.Add(p.key, at(p.sec), p.vals)
				if l1 != l2 || l1 != l3 {
					t.Fatalf("late differs at %v: %v %v %v", p.sec, l1, l2, l3)
				}
				gotEvery = append(gotEvery, every.Advance(p.key, at(p.sec))...)
				gotRestarted = append(gotRestarted, restarted.Advance(p.key, at(p.sec))...)
				b, err := restarted.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				if restarted, err = window.Restore(spec, aggs, window.Options{}, b); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range []string{"a", "b"} {
				gotEvery = append(gotEvery, every.Advance(k, at(1e6))...)
				gotEnd = append(gotEnd, end.Advance(k, at(1e6))...)
				gotRestarted = append(gotRestarted, restarted.Advance(k, at(1e6))...)
			}
			sortClosed(gotEvery)
			sortClosed(gotEnd)
			sortClosed(gotRestarted)
			if len(gotEvery) == 0 {
				t.Fatal("no windows closed")
			}
			if !reflect.DeepEqual(gotEvery, gotEnd) {
				t.Fatalf("Advance per point and at the end differ:\n%v\n%v", gotEvery, gotEnd)
			}
			if !reflect.DeepEqual(gotEvery, gotRestarted) {
				t.Fatalf("restarting per point changed the results:\n%v\n%v", gotEvery, gotRestarted)
			}
			if every.Stats().Late == 0 {
				t.Fatal("the jittered input has no late points; the test does not test lateness")
			}
		})
	}
}

// jittered returns n points for keys a and b about one per second, moved
// back by up to 7·jitter seconds (so out of order, some of them late), with
// a 30 s jump every eleventh point, from a deterministic sequence.
func jittered(n int, jitter float64) []point {
	var out []point
	x := uint64(42)
	next := func() float64 { // xorshift in [0, 1)
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return float64(x%1_000_000) / 1_000_000
	}
	for i := range n {
		key := "a"
		if i%3 == 0 {
			key = "b"
		}
		sec := float64(i) - next()*jitter*float64(1+i%7) // some far behind: late
		if i%11 == 0 {
			sec += 30 // a gap
		}
		out = append(out, point{key, sec, slices.Repeat([]any{float64(i%13) - 4}, 9)})
	}
	return out
}

func sortClosed(cs []window.Closed) {
	slices.SortStableFunc(cs, func(a, b window.Closed) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if c := a.End.Compare(b.End); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
}

func TestFlushClosesTheWindowsOfSilentKeys(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute}, sum("count"), window.Options{Now: clock.Now})
	s.Add("quiet", at(10), []any{1})
	clock.t = clock.t.Add(50 * time.Second)
	s.Add("busy", at(10), []any{1})
	clock.t = clock.t.Add(20 * time.Second) // quiet silent 70s, busy 20s

	got := toWins(s.Flush(clock.t, time.Minute))
	want := []win{{"quiet", 0, 60, []any{1.0}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Flush closed %+v, want %+v", got, want)
	}
	if got := toWins(s.Flush(clock.t, time.Minute)); len(got) != 0 {
		t.Fatalf("a second Flush closed %+v again", got)
	}
	t.Run("a point for a flushed window is late", func(t *testing.T) {
		if !s.Add("quiet", at(20), []any{1}) {
			t.Fatal("not late")
		}
	})
	t.Run("a point for a later window opens it", func(t *testing.T) {
		if s.Add("quiet", at(70), []any{1}) {
			t.Fatal("late")
		}
		if got := closeAll(s, "quiet"); len(got) != 1 || got[0].start != 60 {
			t.Fatalf("got %+v, want [60,120)", got)
		}
	})
	t.Run("the busy key's window is still open", func(t *testing.T) {
		if got := closeAll(s, "busy"); len(got) != 1 || got[0].values[0] != 1.0 {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("flushed sessions are never emitted twice", func(t *testing.T) {
		s := window.New(window.Spec{Kind: window.Session, Gap: 10 * time.Second, Lateness: time.Hour}, sum("count"), window.Options{Now: clock.Now})
		s.Add("k", at(0), []any{1})
		clock.t = clock.t.Add(time.Hour)
		if got := toWins(s.Flush(clock.t, time.Minute)); len(got) != 1 || got[0].end != 10 {
			t.Fatalf("Flush closed %+v", got)
		}
		if !s.Add("k", at(5), []any{1}) {
			t.Fatal("a point in the flushed session is not late")
		}
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	aggs := []window.AggSpec{{Func: "avg"}, {Func: "min"}, {Func: "max"}, {Func: "sum"}, {Func: "count"},
		{Func: "stddev"}, {Func: "first"}, {Func: "last"}, {Func: "percentile", Param: 50}}
	specs := []window.Spec{
		{Kind: window.Tumbling, Size: 10 * time.Second, Lateness: 5 * time.Second},
		{Kind: window.Hopping, Size: 20 * time.Second, Slide: 5 * time.Second},
		{Kind: window.Session, Gap: 3 * time.Second, Lateness: time.Second},
	}
	// MaxValues 5 so the percentile reservoir samples, MaxOpenPerKey 6 so
	// windows close early and wait in the pending list.
	o := window.Options{MaxValues: 5, MaxOpenPerKey: 6}
	in := jittered(200, 1)
	for _, spec := range specs {
		t.Run(spec.Kind+" state restored mid-stream gives the same results", func(t *testing.T) {
			a := window.New(spec, aggs, o)
			for _, p := range in[:100] {
				a.Add(p.key, at(p.sec), slices.Clone(p.vals))
			}
			b1, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			b, err := window.Restore(spec, aggs, o, b1)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := b.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if string(b1) != string(b2) {
				t.Fatalf("snapshot of the restored set differs:\n%s\n%s", b1, b2)
			}
			if a.Stats().Open != b.Stats().Open || a.Stats().Keys != b.Stats().Keys {
				t.Fatalf("stats differ: %+v %+v", a.Stats(), b.Stats())
			}
			var ra, rb []window.Closed
			for _, p := range in[100:] {
				if a.Add(p.key, at(p.sec), p.vals) != b.Add(p.key, at(p.sec), p.vals) {
					t.Fatal("late differs")
				}
				ra = append(ra, a.Advance(p.key, at(p.sec))...)
				rb = append(rb, b.Advance(p.key, at(p.sec))...)
			}
			ra = append(ra, a.Flush(time.Now().Add(time.Hour), 0)...)
			rb = append(rb, b.Flush(time.Now().Add(time.Hour), 0)...)
			if len(ra) == 0 || !reflect.DeepEqual(ra, rb) {
				t.Fatalf("results differ:\n%v\n%v", ra, rb)
			}
		})
	}
	t.Run("keys that are not valid UTF-8 survive a snapshot unchanged", func(t *testing.T) {
		spec := window.Spec{Kind: window.Tumbling, Size: time.Minute}
		a := window.New(spec, sum("count"), window.Options{MaxOpenPerKey: 1})
		for _, k := range []string{"\xff", "\xfe", "ok"} {
			a.Add(k, at(1), []any{1})
		}
		a.Add("\xff", at(61), []any{1}) // closes [0,60) of "\xff" early: pending
		b, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		r, err := window.Restore(spec, sum("count"), window.Options{MaxOpenPerKey: 1}, b)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, c := range r.Advance("\xfe", at(1e6)) {
			keys = append(keys, c.Key)
		}
		for _, k := range []string{"\xff", "ok"} {
			for _, c := range r.Advance(k, at(1e6)) {
				keys = append(keys, c.Key)
			}
		}
		if want := []string{"\xff", "\xfe", "\xff", "ok"}; !slices.Equal(keys, want) {
			t.Fatalf("keys %q, want %q", keys, want)
		}
	})
	t.Run("infinite sums and string values survive a snapshot", func(t *testing.T) {
		spec := window.Spec{Kind: window.Tumbling, Size: time.Minute}
		aggs := sum("sum", "last")
		a := window.New(spec, aggs, window.Options{})
		a.Add("k", at(1), []any{math.MaxFloat64, "on"})
		a.Add("k", at(2), []any{math.MaxFloat64, "off"})
		b, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		r, err := window.Restore(spec, aggs, window.Options{}, b)
		if err != nil {
			t.Fatal(err)
		}
		got := closeAll(r, "k")
		if len(got) != 1 || !math.IsInf(got[0].values[0].(float64), 1) || got[0].values[1] != "off" {
			t.Fatalf("got %+v", got)
		}
	})
}

func TestRestoreRefusesWhatDoesNotFit(t *testing.T) {
	spec := window.Spec{Kind: window.Tumbling, Size: time.Minute}
	aggs := sum("avg", "count")
	s := window.New(spec, aggs, window.Options{})
	s.Add("a", at(1), []any{1, 1})
	s.Add("b", at(1), []any{1, 1})
	good, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		spec  window.Spec
		aggs  []window.AggSpec
		o     window.Options
		bytes []byte
	}{
		{"another window size", window.Spec{Kind: window.Tumbling, Size: time.Hour}, aggs, window.Options{}, good},
		{"another window kind", window.Spec{Kind: window.Session, Gap: time.Minute}, aggs, window.Options{}, good},
		{"other aggregates", spec, sum("avg", "sum"), window.Options{}, good},
		{"fewer aggregates", spec, sum("avg"), window.Options{}, good},
		{"more keys than MaxKeys", spec, aggs, window.Options{MaxKeys: 1}, good},
		{"not JSON", spec, aggs, window.Options{}, []byte("{")},
		{"another version", spec, aggs, window.Options{}, []byte(`{"version":2}`)},
		{"a misaligned window", spec, aggs, window.Options{}, []byte(strings.Replace(string(good), `"start":1704067200000000000`, `"start":1704067200000000001`, 1))},
		{"an invalid spec", window.Spec{Kind: "sliding"}, aggs, window.Options{}, good},
	}
	for _, tt := range tests {
		t.Run("restore refuses "+tt.name, func(t *testing.T) {
			if _, err := window.Restore(tt.spec, tt.aggs, tt.o, tt.bytes); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := window.Restore(spec, aggs, window.Options{}, good); err != nil {
		t.Fatalf("the good snapshot: %v", err)
	}
}

func TestMemoryBounds(t *testing.T) {
	t.Run("a new key beyond MaxKeys evicts the least recently seen and closes its windows", func(t *testing.T) {
		clock := &fakeClock{t: base}
		s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute}, sum("count"), window.Options{MaxKeys: 2, Now: clock.Now})
		for _, k := range []string{"a", "b", "a", "c"} { // b is the least recent when c comes
			clock.t = clock.t.Add(time.Second)
			s.Add(k, at(1), []any{1})
		}
		st := s.Stats()
		if st.Keys != 2 || st.Evicted != 1 || st.ClosedEarly != 1 {
			t.Fatalf("stats %+v", st)
		}
		got := toWins(s.Advance("c", at(1)))
		if want := []win{{"b", 0, 60, []any{1.0}}}; !reflect.DeepEqual(got, want) {
			t.Fatalf("Advance returned %+v, want %+v", got, want)
		}
		if got := closeAll(s, "a"); len(got) != 1 || got[0].values[0] != 2.0 {
			t.Fatalf("a: %+v", got)
		}
	})
	t.Run("a window beyond MaxOpenPerKey closes the earliest early", func(t *testing.T) {
		s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute, Lateness: time.Hour}, sum("count"), window.Options{MaxOpenPerKey: 2})
		for _, sec := range []float64{1, 61, 121} {
			s.Add("k", at(sec), []any{1})
		}
		if st := s.Stats(); st.Open != 2 || st.ClosedEarly != 1 {
			t.Fatalf("stats %+v", st)
		}
		if !s.Add("k", at(2), []any{1}) {
			t.Fatal("a point for the window closed early is not late")
		}
		got := closeAll(s, "k")
		want := []win{{"k", 0, 60, []any{1.0}}, {"k", 60, 120, []any{1.0}}, {"k", 120, 180, []any{1.0}}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("sessions beyond MaxOpenPerKey close the earliest early", func(t *testing.T) {
		s := window.New(window.Spec{Kind: window.Session, Gap: time.Second, Lateness: time.Hour}, sum("count"), window.Options{MaxOpenPerKey: 3})
		for i := range 10 {
			s.Add("k", at(float64(10*i)), []any{1})
		}
		if st := s.Stats(); st.Open != 3 || st.ClosedEarly != 7 {
			t.Fatalf("stats %+v", st)
		}
		if got := closeAll(s, "k"); len(got) != 10 {
			t.Fatalf("%d windows, want 10", len(got))
		}
	})
	t.Run("a percentile keeps at most MaxValues values and estimates from the sample", func(t *testing.T) {
		aggs := []window.AggSpec{{Func: "percentile", Param: 50}, {Func: "count"}}
		spec := window.Spec{Kind: window.Tumbling, Size: time.Hour}
		o := window.Options{MaxValues: 1000}
		s := window.New(spec, aggs, o)
		// 1..20000 in a scrambled order (7919 is prime, so i·7919 mod 20000
		// visits every residue): the true median is 10000.
		for i := range 20000 {
			v := float64((i*7919)%20000 + 1)
			s.Add("k", at(1), []any{v, 1})
		}
		if kept := keptValues(t, s); !reflect.DeepEqual(kept, []int{1000}) {
			t.Fatalf("values kept per window: %v, want [1000]", kept)
		}
		b, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := window.Restore(spec, aggs, window.Options{MaxValues: 999}, b); err == nil {
			t.Fatal("restore into a smaller cap accepted")
		}
		got := closeAll(s, "k")[0].values
		// A sample of 1000 has a median within a few percent of the truth.
		if med := got[0].(float64); math.Abs(med-10000) > 600 || got[1] != 20000.0 {
			t.Fatalf("median %v, count %v", med, got[1])
		}
		// The same input gives the same estimate (the sampling is seeded).
		s2 := window.New(spec, aggs, o)
		for i := range 20000 {
			s2.Add("k", at(1), []any{float64((i*7919)%20000 + 1), 1})
		}
		if again := closeAll(s2, "k")[0].values[0]; again != got[0] {
			t.Fatalf("second run %v, first %v", again, got[0])
		}
	})
	t.Run("merging sampled sessions keeps at most MaxValues values", func(t *testing.T) {
		aggs := []window.AggSpec{{Func: "percentile", Param: 100}}
		s := window.New(window.Spec{Kind: window.Session, Gap: 2 * time.Second, Lateness: time.Hour}, aggs, window.Options{MaxValues: 10})
		for i := range 50 {
			s.Add("k", at(0), []any{float64(i)})
			s.Add("k", at(3), []any{float64(100 + i)})
		}
		s.Add("k", at(1.5), []any{1000.0}) // bridges [0,2) and [3,5)
		if kept := keptValues(t, s); !reflect.DeepEqual(kept, []int{10}) {
			t.Fatalf("values kept per window: %v, want [10]", kept)
		}
		got := closeAll(s, "k")
		if len(got) != 1 || got[0].start != 0 || got[0].end != 5 {
			t.Fatalf("got %+v", got)
		}
		// 1000 was added after the merge, beyond the cap: it may or may not
		// be in the sample, but the maximum is one of the values seen.
		if m := got[0].values[0].(float64); m != 1000 && !(m >= 0 && m <= 49) && !(m >= 100 && m <= 149) {
			t.Fatalf("max %v is not a value of the merged session", m)
		}
	})
	t.Run("a hopping window longer than MaxOpenPerKey slides is refused", func(t *testing.T) {
		spec := window.Spec{Kind: window.Hopping, Size: time.Hour, Slide: time.Second}
		if err := window.Validate(spec, nil, window.Options{}); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		spec window.Spec
		aggs []window.AggSpec
		ok   bool
	}{
		{"a tumbling window with every aggregate is valid", window.Spec{Kind: "tumbling", Size: time.Minute},
			[]window.AggSpec{{Func: "avg"}, {Func: "min"}, {Func: "max"}, {Func: "sum"}, {Func: "count"}, {Func: "stddev"}, {Func: "first"}, {Func: "last"}, {Func: "percentile", Param: 99.9}}, true},
		{"HOPPING(5m, 1m) is valid", window.Spec{Kind: "hopping", Size: 5 * time.Minute, Slide: time.Minute}, nil, true},
		{"SESSION(30s) with lateness is valid", window.Spec{Kind: "session", Gap: 30 * time.Second, Lateness: 10 * time.Second}, nil, true},
		{"an unknown kind is refused", window.Spec{Kind: "sliding", Size: time.Minute}, nil, false},
		{"a zero size is refused", window.Spec{Kind: "tumbling"}, nil, false},
		{"a hopping window needs a slide", window.Spec{Kind: "hopping", Size: time.Minute}, nil, false},
		{"a session needs a gap", window.Spec{Kind: "session", Size: time.Minute}, nil, false},
		{"negative lateness is refused", window.Spec{Kind: "tumbling", Size: time.Minute, Lateness: -1}, nil, false},
		{"a size over ten years is refused", window.Spec{Kind: "tumbling", Size: window.MaxDuration + 1}, nil, false},
		{"an unknown aggregate is refused", window.Spec{Kind: "tumbling", Size: time.Minute}, sum("median"), false},
		{"percentile over 100 is refused", window.Spec{Kind: "tumbling", Size: time.Minute}, []window.AggSpec{{Func: "percentile", Param: 101}}, false},
		{"percentile NaN is refused", window.Spec{Kind: "tumbling", Size: time.Minute}, []window.AggSpec{{Func: "percentile", Param: math.NaN()}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := window.Validate(tt.spec, tt.aggs, window.Options{})
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				defer func() {
					if recover() == nil {
						t.Fatal("New did not panic")
					}
				}()
				window.New(tt.spec, tt.aggs, window.Options{})
			}
		})
	}
}

func TestTimesOutsideTheHandledYearsAreDropped(t *testing.T) {
	s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute}, sum("count"), window.Options{})
	for _, tm := range []time.Time{{}, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if !s.Add("k", tm, []any{1}) {
			t.Fatalf("%s accepted", tm)
		}
	}
	if st := s.Stats(); st.Open != 0 || st.Late != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func Example() {
	// avg(temp), max(temp) per device over TUMBLING(1m) ALLOWED LATENESS 5s.
	s := window.New(window.Spec{Kind: window.Tumbling, Size: time.Minute, Lateness: 5 * time.Second},
		[]window.AggSpec{{Func: "avg"}, {Func: "max"}}, window.Options{})
	t0 := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, p := range []struct {
		sec  int
		temp float64
	}{{10, 20}, {40, 22}, {62, 25}, {55, 24}, {66, 26}} {
		t := t0.Add(time.Duration(p.sec) * time.Second)
		late := s.Add("dev-1", t, []any{p.temp, p.temp})
		for _, c := range s.Advance("dev-1", t) {
			fmt.Printf("%s [%s, %s) avg=%v max=%v\n", c.Key, c.Start.Format("15:04:05"), c.End.Format("15:04:05"), c.Values[0], c.Values[1])
		}
		if late {
			fmt.Println("late:", p.sec)
		}
	}
	// Output:
	// dev-1 [12:00:00, 12:01:00) avg=22 max=24
}

// keptValues returns how many percentile values each open window keeps,
// read from a snapshot.
func keptValues(t *testing.T, s *window.Set) []int {
	t.Helper()
	b, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sn struct {
		Keys []struct {
			Wins []struct {
				Aggs []struct {
					Vals []json.RawMessage `json:"vals"`
				} `json:"aggs"`
			} `json:"wins"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &sn); err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, k := range sn.Keys {
		for _, w := range k.Wins {
			out = append(out, len(w.Aggs[0].Vals))
		}
	}
	return out
}
