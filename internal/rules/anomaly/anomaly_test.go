package anomaly_test

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/rules/anomaly"
)

var base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return base.Add(time.Duration(sec * float64(time.Second))) }

var inf = math.Inf(1)

// obs is one observation and the expected result.
type obs struct {
	sec float64
	x   float64
	y   float64
	ok  bool
}

func TestFunctions(t *testing.T) {
	tests := []struct {
		name   string
		fn     string
		params []float64
		in     []obs
	}{
		// zscore, n=3.
		//   2, 4, 6: not enough yet.
		//   10 against [2 4 6]: mean 4, squares 4+0+4 = 8, s = sqrt(8/2) = 2, z = (10-4)/2 = 3.
		//   0 against [4 6 10]: mean 20/3, squares (8/3)²+(2/3)²+(10/3)² = 168/9 = 56/3,
		//   s² = 28/3, z = -(20/3)/sqrt(28/3) = -20/sqrt(84) = -2.182178902359924.
		{"zscore scores against the previous n values", "zscore", []float64{3}, []obs{
			{0, 2, 0, false}, {1, 4, 0, false}, {2, 6, 0, false},
			{3, 10, 3, true}, {4, 0, -20 / math.Sqrt(84), true}}},
		// n=2: [5 5] has s = 0: 5 scores 0, 6 scores +Inf, then [5 6]:
		// mean 5.5, s = sqrt(0.5), 4 scores -1.5/sqrt(0.5) = -2.1213203435596424.
		{"zscore of a flat history is 0 or infinite", "zscore", []float64{2}, []obs{
			{0, 5, 0, false}, {1, 5, 0, false}, {2, 5, 0, true}, {3, 6, inf, true}, {4, 4, -1.5 / math.Sqrt(0.5), true}}},
		{"zscore ignores NaN", "zscore", []float64{2}, []obs{
			{0, 1, 0, false}, {1, math.NaN(), 0, false}, {2, 3, 0, false}, {3, 2, 0, true}}},
		// ewma_dev, alpha 0.5: 10 starts m = 10; 20: 20-10 = 10, m = 15;
		// 15: 0, m = 15; 5: -10, m = 10; 10: 0.
		{"ewma_dev is the deviation from the average before the value", "ewma_dev", []float64{0.5}, []obs{
			{0, 10, 0, false}, {1, 20, 10, true}, {2, 15, 0, true}, {3, 5, -10, true}, {4, 10, 0, true}}},
		// Default alpha 0.1: 10 starts m; 20: 10, m = 0.1·20 + 0.9·10 = 11;
		// 11: 0, m = 11; 0: -11.
		{"ewma_dev defaults alpha to 0.1", "ewma_dev", nil, []obs{
			{0, 10, 0, false}, {1, 20, 10, true}, {2, 11, 0, true}, {3, 0, -11, true}}},
		// alpha 1: m is always the previous value: the first difference.
		{"ewma_dev with alpha 1 is the difference from the previous value", "ewma_dev", []float64{1}, []obs{
			{0, 3, 0, false}, {1, 7, 4, true}, {2, 6, -1, true}}},
		// rate: (14-10)/2 s = 2; 99 at the same time and 0 earlier are
		// ignored; (9-14)/2.5 s = -2; (10-9)/0.25 s = 4.
		{"rate divides the change by the seconds between observations", "rate", nil, []obs{
			{0, 10, 0, false}, {2, 14, 2, true}, {2, 99, 0, false}, {1, 0, 0, false},
			{4.5, 9, -2, true}, {4.75, 10, 4, true}}},
		// mad_outlier, n=5.
		//   5 against [1 2 3 4 100]: median 3, |deviations| 2 1 0 1 97, sorted
		//   0 1 1 2 97, MAD 1: 0.6745·(5-3)/1 = 1.349.
		//   -6 against [2 3 4 100 5]: median 4, deviations 2 1 0 96 1 → MAD 1:
		//   0.6745·(-6-4)/1 = -6.745. The outlier 100 moves neither.
		{"mad_outlier is the robust z-score over the previous n values", "mad_outlier", []float64{5}, []obs{
			{0, 1, 0, false}, {1, 2, 0, false}, {2, 3, 0, false}, {3, 4, 0, false}, {4, 100, 0, false},
			{5, 5, 1.349, true}, {6, -6, -6.745, true}}},
		// n=4, even: 10 against [1 2 4 8]: median (2+4)/2 = 3, deviations
		// 2 1 1 5, sorted 1 1 2 5, MAD (1+2)/2 = 1.5: 0.6745·7/1.5 = 3.1476666….
		{"mad_outlier averages the middle two of an even window", "mad_outlier", []float64{4, 3.5}, []obs{
			{0, 1, 0, false}, {1, 2, 0, false}, {2, 4, 0, false}, {3, 8, 0, false},
			{4, 10, 0.6745 * 7 / 1.5, true}}},
		// n=5: [7 7 7 7 12]: median 7, deviations 0 0 0 0 5, MAD 0; MeanAD
		// 5/5 = 1: 9 scores (9-7)/(1.253314·1) = 1.5957693….
		{"mad_outlier falls back to the mean absolute deviation when the MAD is 0", "mad_outlier", []float64{5}, []obs{
			{0, 7, 0, false}, {1, 7, 0, false}, {2, 7, 0, false}, {3, 7, 0, false}, {4, 12, 0, false},
			{5, 9, 2 / 1.253314, true}}},
		{"mad_outlier of identical values is 0 or infinite", "mad_outlier", []float64{3}, []obs{
			{0, 7, 0, false}, {1, 7, 0, false}, {2, 7, 0, false}, {3, 7, 0, true}, {4, 6, -inf, true}}},
		// time_to_threshold(x, 10): (0,1) (60,2) (120,3) lie on x = 1 + t/60.
		// After two: line(60) = 2, (10-2)·60 = 480 s. After three: (10-3)·60 = 420 s.
		{"time_to_threshold extrapolates the line to the threshold", "time_to_threshold", []float64{10}, []obs{
			{0, 1, 0, false}, {60, 2, 480, true}, {120, 3, 420, true}}},
		// (0,0) (10,2): slope 0.2, line(10) = 2, (10-2)/0.2 = 40 s.
		// (0,0) (10,2) (20,1): mean t 10, mean x 1; Sxx = 100+0+100 = 200;
		// Sxy = (-10)(-1) + 0·1 + 10·0 = 10; slope 0.05; line(20) = 1 + 0.05·10 = 1.5;
		// (10-1.5)/0.05 = 170 s.
		// (0,0) (10,2) (20,1) (30,3): mean t 15, mean x 1.5;
		// Sxx = 15²+5²+5²+15² = 500; Sxy = (-15)(-1.5)+(-5)(0.5)+(5)(-0.5)+(15)(1.5) = 40;
		// slope 40/500 = 0.08; line(30) = 1.5 + 0.08·15 = 2.7; (10-2.7)/0.08 = 91.25 s.
		{"time_to_threshold fits noisy data by least squares", "time_to_threshold", []float64{10, 3600}, []obs{
			{0, 0, 0, false}, {10, 2, 40, true}, {20, 1, 170, true}, {30, 3, 91.25, true}}},
		// Same data, threshold 2.5: line(10) = 2, (2.5-2)/0.2 = 2.5 s;
		// line(20) = 1.5, (2.5-1.5)/0.05 = 20 s; line(30) = 2.7 ≥ 2.5: 0.
		{"time_to_threshold is 0 when the line is already over", "time_to_threshold", []float64{2.5}, []obs{
			{0, 0, 0, false}, {10, 2, 2.5, true}, {20, 1, 20, true}, {30, 3, 0, true}}},
		{"time_to_threshold is infinite for a falling or flat line", "time_to_threshold", []float64{10}, []obs{
			{0, 5, 0, false}, {10, 4, inf, true}, {20, 4.5, inf, true}}},
		// Window 60 s. At 60 the window [0,60] holds (0,100) (30,1) (60,2):
		// mean t 30, mean x 103/3; Sxy = (-30)(197/3) + 0 + 30(-97/3) = -2940 < 0: +Inf.
		// At 90 the window [30,90] holds (30,1) (60,2) (90,3): slope 1/30,
		// line(90) = 3, (10-3)·30 = 210 s.
		{"time_to_threshold forgets observations older than the window", "time_to_threshold", []float64{10, 60}, []obs{
			{0, 100, 0, false}, {30, 1, inf, true}, {60, 2, inf, true}, {90, 3, 210, true}}},
		// (0,1) (120,3): x = 1 + t/60, line(120) = 3, (10-3)·60 = 420 s. (60,2)
		// arrives late but inside the window and lies on the same line: 420 s.
		{"time_to_threshold uses out-of-order observations inside the window", "time_to_threshold", []float64{10}, []obs{
			{0, 1, 0, false}, {120, 3, 420, true}, {60, 2, 420, true}}},
		// Window 60 s: (60,2) (120,3): 420 s. (30,50) is older than 120-60:
		// ignored. At 180 the window [120,180] holds (120,3) (180,4):
		// line(180) = 4, (10-4)·60 = 360 s.
		{"time_to_threshold ignores observations older than the window", "time_to_threshold", []float64{10, 60}, []obs{
			{60, 2, 0, false}, {120, 3, 420, true}, {30, 50, 0, false}, {180, 4, 360, true}}},
		// (0,1) (0,2): one time, no slope. With (0.5,3): mean t 1/6, mean x 2;
		// Sxx = 2(1/6)² + (1/3)² = 1/6; Sxy = (-1/6)(-1) + (-1/6)(0) + (1/3)(1) = 1/2;
		// slope 3; line(0.5) = 2 + 3·(1/3) = 3; (10-3)/3 = 7/3 s.
		{"time_to_threshold needs two distinct times", "time_to_threshold", []float64{10}, []obs{
			{0, 1, 0, false}, {0, 2, 0, false}, {0.5, 3, 7.0 / 3, true}}},
		// Both in the first 3.6 s bucket of an hour's window: summed exactly.
		// (0.1, 1) (0.2, 2): slope 10/s, line(0.2) = 2, (10-2)/10 = 0.8 s.
		{"time_to_threshold is exact for observations in one bucket", "time_to_threshold", []float64{10, 3600}, []obs{
			{0.1, 1, 0, false}, {0.2, 2, 0.8, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := anomaly.New(tt.fn, tt.params)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range tt.in {
				y, ok := s.Update(at(o.sec), o.x)
				if ok != o.ok || (ok && !close(y, o.y)) {
					t.Fatalf("observation %d (%vs, %v): got (%v, %v), want (%v, %v)", i, o.sec, o.x, y, ok, o.y, o.ok)
				}
			}
		})
	}
}

// close compares with a relative tolerance of 1e-9 (infinities exactly).
func close(a, b float64) bool {
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b))
}

func TestParameters(t *testing.T) {
	tests := []struct {
		fn     string
		params []float64
		ok     bool
	}{
		{"zscore", nil, true},
		{"ZScore", []float64{100}, true},
		{"zscore", []float64{1}, false},
		{"zscore", []float64{2.5}, false},
		{"zscore", []float64{anomaly.MaxSamples + 1}, false},
		{"zscore", []float64{30, 1}, false},
		{"ewma_dev", []float64{1}, true},
		{"ewma_dev", []float64{0}, false},
		{"ewma_dev", []float64{1.5}, false},
		{"ewma_dev", []float64{math.NaN()}, false},
		{"rate", nil, true},
		{"rate", []float64{1}, false},
		{"mad_outlier", []float64{30, 3.5}, true},
		{"mad_outlier", []float64{2}, false},
		{"mad_outlier", []float64{30, 0}, false},
		{"time_to_threshold", []float64{6}, true},
		{"time_to_threshold", []float64{6, 48 * 3600}, true},
		{"time_to_threshold", nil, false},
		{"time_to_threshold", []float64{6, 0}, false},
		{"time_to_threshold", []float64{6, anomaly.MaxWindowSeconds + 1}, false},
		{"time_to_threshold", []float64{math.Inf(1)}, false},
		{"forecast", nil, false},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s%v is refused", tt.fn, tt.params)
		if tt.ok {
			name = fmt.Sprintf("%s%v is accepted", tt.fn, tt.params)
		}
		t.Run(name, func(t *testing.T) {
			_, err := anomaly.New(tt.fn, tt.params)
			if (err == nil) != tt.ok {
				t.Fatalf("New = %v", err)
			}
			if !tt.ok {
				if _, err := anomaly.Restore(tt.fn, tt.params, []byte("{}")); err == nil {
					t.Fatal("Restore accepted the same parameters")
				}
			}
		})
	}
}

// series is a deterministic, noisy, rising series with some out-of-order
// times, NaNs and repeats.
func series(n int) []obs {
	var out []obs
	x := uint64(7)
	for i := range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		noise := float64(x%1000)/100 - 5
		sec := float64(i) * 7.5
		if i%17 == 0 {
			sec -= 20
		}
		v := 0.01*float64(i) + noise
		if i%29 == 0 {
			v = math.NaN()
		}
		out = append(out, obs{sec: sec, x: v})
	}
	return out
}

var everyFunction = []struct {
	fn     string
	params []float64
}{
	{"zscore", []float64{10}},
	{"ewma_dev", []float64{0.2}},
	{"rate", nil},
	{"mad_outlier", []float64{9, 3.5}},
	{"mad_outlier", []float64{10}},
	{"time_to_threshold", []float64{50, 300}},
}

func TestSnapshotRoundTrip(t *testing.T) {
	in := series(400)
	for _, f := range everyFunction {
		t.Run(fmt.Sprintf("%s%v restored mid-stream gives the same results", f.fn, f.params), func(t *testing.T) {
			a, err := anomaly.New(f.fn, f.params)
			if err != nil {
				t.Fatal(err)
			}
			// Before any data, too.
			b0, err := anomaly.Snapshot(a)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := anomaly.Restore(f.fn, f.params, b0); err != nil {
				t.Fatalf("restore of the empty state: %v", err)
			}
			for _, o := range in[:200] {
				a.Update(at(o.sec), o.x)
			}
			snap, err := anomaly.Snapshot(a)
			if err != nil {
				t.Fatal(err)
			}
			b, err := anomaly.Restore(f.fn, f.params, snap)
			if err != nil {
				t.Fatal(err)
			}
			again, err := anomaly.Snapshot(b)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(snap) {
				t.Fatalf("snapshot of the restored state differs:\n%s\n%s", snap, again)
			}
			oks := 0
			for i, o := range in[200:] {
				ya, oka := a.Update(at(o.sec), o.x)
				yb, okb := b.Update(at(o.sec), o.x)
				if oka != okb || (ya != yb && !(math.IsNaN(ya) && math.IsNaN(yb))) {
					t.Fatalf("observation %d: original (%v, %v), restored (%v, %v)", i, ya, oka, yb, okb)
				}
				if oka {
					oks++
				}
			}
			if oks < 100 {
				t.Fatalf("only %d results: the series does not exercise the function", oks)
			}
		})
	}
	t.Run("restore refuses other parameters, another function and bad bytes", func(t *testing.T) {
		a, _ := anomaly.New("zscore", []float64{3})
		for i := range 5 {
			a.Update(at(float64(i)), float64(i))
		}
		snap, _ := anomaly.Snapshot(a)
		for _, c := range []struct {
			fn     string
			params []float64
			b      []byte
		}{
			{"zscore", []float64{4}, snap},
			{"mad_outlier", []float64{3}, snap},
			{"zscore", []float64{3}, []byte("not json")},
			{"zscore", []float64{3}, []byte(`{"fn":"zscore","params":[3],"state":{"values":[1,2,3,4]}}`)},
			{"ewma_dev", nil, []byte(`{"fn":"ewma_dev","params":[0.1],"state":{"mean":"+Inf"}}`)},
		} {
			if _, err := anomaly.Restore(c.fn, c.params, c.b); err == nil {
				t.Errorf("Restore(%s%v, %s) accepted", c.fn, c.params, c.b)
			}
		}
		// The defaults are part of the parameters: zscore() is zscore(30).
		z, _ := anomaly.New("zscore", nil)
		s, _ := anomaly.Snapshot(z)
		if _, err := anomaly.Restore("zscore", []float64{30}, s); err != nil {
			t.Errorf("zscore() did not restore as zscore(30): %v", err)
		}
	})
	t.Run("snapshot refuses a foreign State", func(t *testing.T) {
		if _, err := anomaly.Snapshot(foreign{}); err == nil {
			t.Fatal("no error")
		}
	})
}

type foreign struct{}

func (foreign) Update(time.Time, float64) (float64, bool) { return 0, false }

func TestMemoryBounds(t *testing.T) {
	t.Run("zscore and mad_outlier keep n values", func(t *testing.T) {
		for _, fn := range []string{"zscore", "mad_outlier"} {
			s, _ := anomaly.New(fn, []float64{50})
			for i := range 1000 {
				s.Update(at(float64(i)), float64(i%37))
			}
			var sn struct {
				State struct{ Values []float64 }
			}
			b, _ := anomaly.Snapshot(s)
			if err := json.Unmarshal(b, &sn); err != nil {
				t.Fatal(err)
			}
			if len(sn.State.Values) != 50 {
				t.Fatalf("%s keeps %d values, want 50", fn, len(sn.State.Values))
			}
		}
	})
	t.Run("time_to_threshold keeps at most MaxTrendBuckets buckets and stays exact", func(t *testing.T) {
		// 20,000 observations 5 ms apart on x = 2t, window 60 s: buckets
		// of 60 ms, at most 1,000 (+2 at the edges) in the window. A perfect
		// line: at the last time t = 99.995 s, x = 199.99, so the threshold
		// 1000 is (1000 - 199.99)/2 = 400.005 s away.
		s, _ := anomaly.New("time_to_threshold", []float64{1000, 60})
		var y float64
		for i := range 20_000 {
			sec := float64(i) * 0.005
			y, _ = s.Update(at(sec), 2*sec)
		}
		if !close2(y, 400.005, 1e-6) {
			t.Fatalf("got %v, want 400.005", y)
		}
		var sn struct {
			State struct{ Buckets []json.RawMessage }
		}
		b, _ := anomaly.Snapshot(s)
		if err := json.Unmarshal(b, &sn); err != nil {
			t.Fatal(err)
		}
		if n := len(sn.State.Buckets); n > anomaly.MaxTrendBuckets+2 || n < anomaly.MaxTrendBuckets-2 {
			t.Fatalf("%d buckets, want about %d", n, anomaly.MaxTrendBuckets)
		}
	})
}

func close2(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func ExampleNew() {
	// Alert if vibration will cross 6.0 within 48 hours:
	// time_to_threshold(vibration, 6.0, 86400) < 48*3600.
	s, err := anomaly.New("time_to_threshold", []float64{6.0, 86400})
	if err != nil {
		panic(err)
	}
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	for h, v := range []float64{4.0, 4.1, 4.2, 4.3} { // +0.1 an hour
		secs, ok := s.Update(t0.Add(time.Duration(h)*time.Hour), v)
		if ok {
			fmt.Printf("after %dh: %.1f hours to 6.0\n", h, secs/3600)
		}
	}
	// Output:
	// after 1h: 19.0 hours to 6.0
	// after 2h: 18.0 hours to 6.0
	// after 3h: 17.0 hours to 6.0
}
