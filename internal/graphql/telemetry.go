package graphql

import (
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// The bounds of a telemetry query, the REST API's.
const (
	// maxBuckets bounds a bucketed query so that one query cannot ask the
	// store for millions of rows; the caller picks a coarser bucket.
	maxBuckets = 10000
	// maxKeys bounds the keys one query may name.
	maxKeys = 100
	// maxLimit bounds the points or buckets per key.
	maxLimit = 10000
)

// telemetryQuery checks a telemetry field's arguments and makes the
// store's query of them, with the REST API's defaults and bounds: the
// last hour, avg per minute when only one of agg and bucket is given.
func telemetryQuery(now time.Time, keys []string, from, to *time.Time, agg *Aggregation, bucket *time.Duration, limit *int) (tether.TelemetryQuery, error) {
	var q tether.TelemetryQuery
	q.To = deref(to, now).UTC()
	q.From = deref(from, q.To.Add(-time.Hour)).UTC()
	if !q.From.Before(q.To) {
		return q, tether.Errorf(tether.EINVALID, "from (%s) must be before to (%s)", q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	if len(keys) > maxKeys {
		return q, tether.Errorf(tether.EINVALID, "keys names %d keys; at most %d per query", len(keys), maxKeys)
	}
	q.Keys = keys
	if agg != nil || bucket != nil {
		q.Agg, q.Bucket = "avg", time.Minute
		if agg != nil {
			q.Agg = strings.ToLower(string(*agg))
		}
		if bucket != nil {
			if *bucket < time.Second {
				return q, tether.Errorf(tether.EINVALID, "bucket %s must be at least 1s, like 1m or 1h", *bucket)
			}
			q.Bucket = *bucket
		}
		if n := q.To.Sub(q.From) / q.Bucket; n > maxBuckets {
			return q, tether.Errorf(tether.EINVALID, "from-to over bucket %s is %d buckets; at most %d, so pick a larger bucket", q.Bucket, n, maxBuckets)
		}
	}
	q.Limit = deref(limit, 1000)
	if q.Limit < 1 || q.Limit > maxLimit {
		return q, tether.Errorf(tether.EINVALID, "limit is %d; it must be from 1 to %d", q.Limit, maxLimit)
	}
	return q, nil
}
