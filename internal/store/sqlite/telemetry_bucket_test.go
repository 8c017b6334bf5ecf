package sqlite

// These tests hold the bucketed telemetry query, which walks the primary
// key from bucket to bucket (see bucketsSQL), to the GROUP BY query it
// replaced: both must return the same samples for every aggregation, and
// the walk must search the key, never sort.

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

// groupedBucketsSQL is the query bucketsSQL replaced, kept as the
// reference of its results: it reads every point of the range, sorts
// them by bucket in a temporary B-tree and aggregates each group. Its
// parameters are series_id, from, to and limit.
func groupedBucketsSQL(agg string, b int64) string {
	const where = "WHERE series_id = ? AND ts >= ? AND ts < ?"
	var sel, filter string
	switch agg {
	case "avg", "min", "max", "sum":
		sel = agg + "(num)"
		filter = fmt.Sprintf(" AND kind <> %d", tether.KindString)
	case "count":
		sel = "count(*)"
	case "first":
		// SQLite takes the bare columns of a row with min() or max() from
		// the row that has the minimum or maximum.
		sel = "min(ts), kind, num, str"
	case "last":
		sel = "max(ts), kind, num, str"
	}
	return "SELECT " + bucketOf("ts", b) + " AS bucket, " + sel + " FROM telemetry " + where + filter +
		" GROUP BY bucket ORDER BY bucket LIMIT ?"
}

// bucketTestStart is where most keys' random points start: on a whole
// day, so that it is the start of a bucket of every width the tests use
// but 7s and 30 days.
var bucketTestStart = time.Date(2025, 3, 4, 0, 0, 0, 0, time.UTC)

// bucketTestWidths are the bucket widths the tests use. The random times
// land on multiples of each of them now and then.
var bucketTestWidths = []time.Duration{
	time.Nanosecond, time.Second, 7 * time.Second, time.Hour, 24 * time.Hour, 30 * 24 * time.Hour,
}

// randomPoints returns n points of key from start on, at irregular
// times: mostly close together, now and then exactly on the start of a
// bucket of one of bucketTestWidths, sometimes after a gap of hours or
// days. value makes each point's kind and value.
func randomPoints(r *rand.Rand, key string, start time.Time, n int, value func(*rand.Rand, *tether.Point)) []tether.Point {
	points := make([]tether.Point, 0, n)
	at := start
	for range n {
		p := tether.Point{Key: key, Time: at}
		value(r, &p)
		points = append(points, p)
		switch x := r.IntN(100); {
		case x < 35:
			at = at.Add(time.Duration(1 + r.Int64N(int64(time.Millisecond))))
		case x < 70:
			at = at.Add(time.Duration(1 + r.Int64N(int64(10*time.Second))))
		case x < 95:
			// On the next start of a bucket, counted from the Unix epoch
			// (time.Truncate counts from year 1): a point exactly on a
			// boundary.
			w := int64(bucketTestWidths[r.IntN(len(bucketTestWidths)-1)])
			n := at.UnixNano()
			at = time.Unix(0, n-((n%w)+w)%w+w).UTC()
		default:
			at = at.Add(time.Duration(1 + r.Int64N(int64(3*24*time.Hour))))
		}
	}
	return points
}

// intValue makes whole numbers, negative ones too.
func intValue(r *rand.Rand, p *tether.Point) {
	p.Kind, p.Num = tether.KindNumber, float64(r.IntN(2001)-1000)
}

// floatValue makes numbers of widely different magnitudes and signs, whose
// sums and averages depend on the order they are added in.
func floatValue(r *rand.Rand, p *tether.Point) {
	p.Kind, p.Num = tether.KindNumber, r.NormFloat64()*math.Pow(10, float64(r.IntN(20)-5))
}

func boolValue(r *rand.Rand, p *tether.Point) {
	p.Kind = tether.KindBool
	if r.IntN(2) == 1 {
		p.Num = 1
	}
}

func stringValue(r *rand.Rand, p *tether.Point) {
	p.Kind, p.Str = tether.KindString, fmt.Sprintf("s%d", r.IntN(100))
}

// mixedValue makes numbers, bools and strings, in runs of strings long
// enough to fill buckets with only strings.
func mixedValue() func(*rand.Rand, *tether.Point) {
	run := 0 // strings still to come
	return func(r *rand.Rand, p *tether.Point) {
		if run == 0 && r.IntN(10) == 0 {
			run = 1 + r.IntN(30)
		}
		if run > 0 {
			run--
			stringValue(r, p)
			return
		}
		if r.IntN(4) == 0 {
			boolValue(r, p)
		} else {
			floatValue(r, p)
		}
	}
}

// bucketTestDB returns a store with random points of several keys of
// devices "d1" and "d2" of tenant "acme", and all the points of d1 by
// key.
func bucketTestDB(t *testing.T) (*DB, map[string][]tether.Point) {
	t.Helper()
	ctx := context.Background()
	db, _ := openTemp(t)
	t.Cleanup(func() { db.Close() })
	if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: "acme", Name: "acme", CreatedAt: bucketTestStart}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	byKey := map[string][]tether.Point{}
	for _, device := range []string{"d1", "d2"} {
		if err := db.CreateDevice(ctx, &tether.Device{TenantID: "acme", ID: device, CreatedAt: bucketTestStart}); err != nil {
			t.Fatal(err)
		}
		var points []tether.Point
		for _, k := range []struct {
			key   string
			start time.Time
			n     int
			value func(*rand.Rand, *tether.Point)
		}{
			{"int", bucketTestStart, 120, intValue},
			{"float", bucketTestStart.Add(3 * time.Second), 150, floatValue},
			{"bool", bucketTestStart, 60, boolValue},
			{"mixed", bucketTestStart.Add(-time.Hour), 200, mixedValue()},
			{"string", bucketTestStart, 30, stringValue},
			// Across 1970, where % truncates toward zero.
			{"epoch", time.Unix(0, 0).Add(-48 * time.Hour), 80, floatValue},
		} {
			ps := randomPoints(r, k.key, k.start, k.n, k.value)
			points = append(points, ps...)
			if device == "d1" {
				byKey[k.key] = ps
			}
		}
		// A message per 100 points, in an order that is not the points'.
		r.Shuffle(len(points), func(i, j int) { points[i], points[j] = points[j], points[i] })
		var msgs []tether.Message
		for i := 0; i < len(points); i += 100 {
			msgs = append(msgs, tether.Message{TenantID: "acme", DeviceID: device, ReceivedAt: bucketTestStart,
				Points: points[i:min(i+100, len(points))]})
		}
		if _, err := db.WriteMessages(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	return db, byKey
}

// bucketRange is a time range of a telemetry query: From <= t < To, open
// at a zero end.
type bucketRange struct {
	name     string
	from, to time.Time
}

// sameBuckets fails the test unless bucketsSQL and groupedBucketsSQL of
// agg and width return the same samples (or both an error) for each
// series of the device, range and limit. A limit of 0 is
// DefaultTelemetryLimit, as in Telemetry.
func sameBuckets(t *testing.T, db *DB, device, agg string, width time.Duration, ranges []bucketRange, limits []int) {
	t.Helper()
	ctx := context.Background()
	var stmts [2]*sql.Stmt
	for i, query := range []string{bucketsSQL(agg, int64(width)), groupedBucketsSQL(agg, int64(width))} {
		stmt, err := db.read.PrepareContext(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		stmts[i] = stmt
	}
	var series []seriesKey
	err := db.inReadTx(ctx, func(tx *sql.Tx) (err error) {
		series, err = seriesKeys(ctx, tx, tether.TelemetryQuery{TenantID: "acme", DeviceID: device})
		return err
	})
	if err != nil || len(series) == 0 {
		t.Fatalf("series of %s: %v %v", device, series, err)
	}
	for _, rg := range ranges {
		from, to := int64(math.MinInt64), int64(math.MaxInt64)
		if !rg.from.IsZero() {
			from = nanos(rg.from)
		}
		if !rg.to.IsZero() {
			to = nanos(rg.to)
		}
		// The grouped query's LIMIT cuts its list of every bucket, so
		// that list, cut, is the result of each limit.
		all := make([][]tether.Sample, len(series))
		allErr := make([]error, len(series))
		for i, k := range series {
			all[i], allErr[i] = querySamples(ctx, stmts[1], agg, k.id, from, to, math.MaxInt64)
		}
		for _, limit := range limits {
			if limit == 0 {
				limit = DefaultTelemetryLimit
			}
			for i, k := range series {
				got, err := querySamples(ctx, stmts[0], agg, k.id, from, to, limit)
				want, wantErr := all[i], allErr[i]
				if len(want) > limit {
					want = want[:limit]
				}
				switch {
				case (err != nil) != (wantErr != nil):
					t.Errorf("%s, limit %d, key %s: error %v, want %v", rg.name, limit, k.key, err, wantErr)
				case err == nil && !reflect.DeepEqual(got, want):
					t.Errorf("%s, limit %d, key %s:\n%s", rg.name, limit, k.key, samplesDiff(got, want))
				}
			}
		}
	}
}

func TestBucketsEqualGrouping(t *testing.T) {
	db, byKey := bucketTestDB(t)
	float := byKey["float"]
	day := 24 * time.Hour
	at := func(d time.Duration) time.Time { return bucketTestStart.Add(d) }
	epoch := time.Unix(0, 0).UTC()

	ranges := []bucketRange{
		{"open", time.Time{}, time.Time{}},
		{"open end", at(day), time.Time{}},
		{"on whole hours", at(5 * time.Hour), at(3*day + 7*time.Hour)},
		{"inside buckets", at(5*time.Hour + 17*time.Second + 3), at(2*day + 1234567891)},
		{"on points", float[20].Time, float[120].Time},
		{"on one point", float[60].Time, float[60].Time.Add(1)},
		{"empty", at(day), at(day)},
		{"after every point", at(10000 * day), at(10001 * day)},
		{"across 1970", epoch.Add(-30 * time.Hour), epoch.Add(5*time.Hour + 1)},
	}
	for _, width := range bucketTestWidths {
		for _, agg := range tether.Aggregations {
			t.Run(fmt.Sprintf("bucket=%s/agg=%s", width, agg), func(t *testing.T) {
				sameBuckets(t, db, "d1", agg, width, ranges, []int{0, 1, 3})
			})
		}
	}

	t.Run("at the ends of int64 nanoseconds", func(t *testing.T) {
		ctx := context.Background()
		if err := db.CreateDevice(ctx, &tether.Device{TenantID: "acme", ID: "ends", CreatedAt: bucketTestStart}); err != nil {
			t.Fatal(err)
		}
		m := tether.Message{TenantID: "acme", DeviceID: "ends", ReceivedAt: bucketTestStart}
		for _, n := range []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64 - 2, math.MaxInt64 - 1} {
			m.Points = append(m.Points, tether.Point{Key: "x", Time: fromNanos(n), Kind: tether.KindNumber, Num: float64(n % 10)})
		}
		if _, err := db.WriteMessages(ctx, []tether.Message{m}); err != nil {
			t.Fatal(err)
		}
		// At the end the start of the next bucket is no integer, and at
		// the start with 1 h buckets the start of the first one is not
		// either: both queries fail to read it.
		ends := []bucketRange{{"the end", epoch, time.Time{}}, {"the start", time.Time{}, epoch}}
		for _, width := range []time.Duration{time.Nanosecond, time.Hour} {
			for _, agg := range tether.Aggregations {
				sameBuckets(t, db, "ends", agg, width, ends, []int{0})
			}
		}
	})
}

// samplesDiff describes how got differs from want.
func samplesDiff(got, want []tether.Sample) string {
	var b strings.Builder
	if len(got) != len(want) {
		fmt.Fprintf(&b, "%d samples, want %d\n", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !reflect.DeepEqual(got[i], want[i]) {
			fmt.Fprintf(&b, "sample %d: %v %#v, want %v %#v\n", i, got[i].Time, got[i].Value, want[i].Time, want[i].Value)
		}
	}
	return b.String()
}

func TestBucketsQueryPlan(t *testing.T) {
	// On a store with points: the planner's choices depend on the data.
	db, _ := bucketTestDB(t)
	for _, agg := range tether.Aggregations {
		t.Run(agg, func(t *testing.T) {
			plan := queryPlan(t, db, bucketsSQL(agg, int64(time.Hour)), 1, 0, int64(math.MaxInt64), 10)
			all := strings.Join(plan, "\n")
			for _, line := range plan {
				switch {
				case strings.Contains(line, "TEMP B-TREE"), strings.Contains(line, "AUTOMATIC"),
					strings.HasPrefix(line, "SCAN ") && line != "SCAN w" && line != "SCAN CONSTANT ROW":
					t.Errorf("the plan has %q:\n%s", line, all)
				case strings.HasPrefix(line, "SEARCH") && !strings.Contains(line, "USING PRIMARY KEY (series_id=? AND ts"):
					t.Errorf("%q does not search a range of one series' points:\n%s", line, all)
				}
			}
			if !strings.Contains(all, "CO-ROUTINE w") {
				t.Errorf("the walk is no co-routine:\n%s", all)
			}
		})
	}
}

// BenchmarkBuckets compares the walk of bucketsSQL with the GROUP BY of
// groupedBucketsSQL on 720 buckets of 1 h with from 1 to 3,600 evenly
// spaced points each (the last one is the dashboard's 30 days of 1 s
// points), through querySamples.
func BenchmarkBuckets(b *testing.B) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "tether.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const (
		width   = int64(time.Hour)
		buckets = 720
	)
	perBucket := []int64{1, 4, 16, 64, 3600}
	for i, n := range perBucket {
		// Straight into the table, as series i+1: writing 2.6 million
		// points through WriteMessages would take longer than all the
		// benchmarks.
		_, err := db.write.ExecContext(ctx, `WITH RECURSIVE g(ts) AS (SELECT 0 UNION ALL SELECT ts + ?1 FROM g WHERE ts + ?1 < ?2)
			INSERT INTO telemetry (series_id, ts, kind, num) SELECT ?3, ts, 1, random() / 1e15 FROM g`, width/n, buckets*width, i+1)
		if err != nil {
			b.Fatal(err)
		}
	}
	for i, n := range perBucket {
		for _, agg := range []string{"avg", "count", "first", "last"} {
			for _, shape := range []string{"walk", "group"} {
				b.Run(fmt.Sprintf("points-per-bucket=%d/agg=%s/shape=%s", n, agg, shape), func(b *testing.B) {
					query := bucketsSQL(agg, width)
					if shape == "group" {
						query = groupedBucketsSQL(agg, width)
					}
					stmt, err := db.read.PrepareContext(ctx, query)
					if err != nil {
						b.Fatal(err)
					}
					defer stmt.Close()
					b.ReportAllocs()
					for b.Loop() {
						s, err := querySamples(ctx, stmt, agg, int64(i+1), 0, buckets*width, DefaultTelemetryLimit)
						if err != nil {
							b.Fatal(err)
						}
						if len(s) != buckets {
							b.Fatalf("%d buckets, want %d", len(s), buckets)
						}
					}
				})
			}
		}
	}
}
