package telemetry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// refDecode is a second, straightforward implementation of Decode over
// json.Decoder's token API. FuzzDecode checks that both agree, and
// BenchmarkDecode measures it against Decode: it is the obvious design,
// and several times slower.
func refDecode(payload []byte, now time.Time, lim telemetry.Limits) ([]tether.Point, string) {
	def := telemetry.DefaultLimits()
	if lim.MaxPayload <= 0 {
		lim.MaxPayload = def.MaxPayload
	}
	if lim.MaxKeyLen <= 0 {
		lim.MaxKeyLen = def.MaxKeyLen
	}
	if lim.MaxPoints <= 0 {
		lim.MaxPoints = def.MaxPoints
	}
	if lim.MaxDepth <= 0 {
		lim.MaxDepth = def.MaxDepth
	}
	if lim.MaxFuture <= 0 {
		lim.MaxFuture = def.MaxFuture
	}
	if lim.MinTime.IsZero() {
		lim.MinTime = def.MinTime
	}
	if len(payload) > lim.MaxPayload {
		return nil, "too_large"
	}
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return nil, "malformed_json"
	}
	r := ref{dec: json.NewDecoder(bytes.NewReader(payload)), lim: lim, now: now.UTC()}
	r.dec.UseNumber()
	tok, _ := r.dec.Token()
	switch tok {
	case json.Delim('{'):
		if reason := r.element(); reason != "" {
			return nil, reason
		}
	case json.Delim('['):
		if !r.dec.More() {
			return nil, "no_values"
		}
		for r.dec.More() {
			if tok, _ := r.dec.Token(); tok != json.Delim('{') {
				return nil, "not_object"
			}
			if reason := r.element(); reason != "" {
				return nil, reason
			}
		}
	default:
		return nil, "not_object"
	}
	seen := map[string]bool{}
	for _, p := range r.pts {
		id := p.Key + "\x00" + p.Time.String()
		if seen[id] {
			return nil, "duplicate_point"
		}
		seen[id] = true
	}
	return r.pts, ""
}

type ref struct {
	dec   *json.Decoder
	lim   telemetry.Limits
	now   time.Time
	pts   []tether.Point
	names map[string]bool
}

// element reads an object after its '{'.
func (r *ref) element() string {
	start := len(r.pts)
	r.names = map[string]bool{}
	ts, hasTS, reason := r.object("", 1)
	if reason != "" {
		return reason
	}
	if len(r.pts) == start {
		return "no_values"
	}
	if !hasTS {
		ts = r.now
	}
	for i := start; i < len(r.pts); i++ {
		r.pts[i].Time = ts
	}
	return ""
}

func (r *ref) object(prefix string, depth int) (ts time.Time, hasTS bool, reason string) {
	if !r.dec.More() {
		r.dec.Token()
		return ts, false, "no_values"
	}
	for r.dec.More() {
		tok, _ := r.dec.Token()
		name := tok.(string)
		if depth == 1 && name == "ts" {
			if hasTS {
				return ts, false, "bad_key"
			}
			if ts, reason = r.timestamp(); reason != "" {
				return ts, false, reason
			}
			hasTS = true
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		switch {
		case name == "":
			return ts, false, "bad_key"
		case hasControlRune(name):
			return ts, false, "bad_key"
		case len(key) > r.lim.MaxKeyLen:
			return ts, false, "key_too_long"
		}
		tok, _ = r.dec.Token()
		var p tether.Point
		switch v := tok.(type) {
		case json.Delim:
			if v == '[' {
				return ts, false, "bad_value"
			}
			if depth >= r.lim.MaxDepth {
				return ts, false, "too_deep"
			}
			if r.names[key] {
				return ts, false, "bad_key"
			}
			r.names[key] = true
			if _, _, reason := r.object(key, depth+1); reason != "" {
				return ts, false, reason
			}
			continue
		case nil:
			return ts, false, "bad_value"
		case bool:
			p = boolean(key, v, time.Time{})
		case string:
			p = str(key, v, time.Time{})
		case json.Number:
			f, err := strconv.ParseFloat(string(v), 64)
			if math.IsInf(f, 0) {
				return ts, false, "bad_value"
			}
			if err != nil {
				panic(err)
			}
			p = num(key, f, time.Time{})
		}
		if len(r.pts) >= r.lim.MaxPoints {
			return ts, false, "too_many_points"
		}
		if r.names[key] {
			return ts, false, "bad_key"
		}
		r.names[key] = true
		r.pts = append(r.pts, p)
	}
	if _, err := r.dec.Token(); err != nil && !errors.Is(err, io.EOF) {
		panic(err)
	}
	return ts, hasTS, ""
}

func hasControlRune(s string) bool {
	for _, c := range s {
		if unicode.IsControl(c) {
			return true
		}
	}
	return false
}

func (r *ref) timestamp() (time.Time, string) {
	tok, _ := r.dec.Token()
	var t time.Time
	switch v := tok.(type) {
	case string:
		var err error
		if t, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return t, "bad_ts"
		}
	case json.Number:
		var ok bool
		if t, ok = telemetry.EpochMillis([]byte(v)); !ok {
			return t, "ts_out_of_range"
		}
	default:
		return t, "bad_ts"
	}
	t = t.UTC()
	if t.Before(r.lim.MinTime) || t.After(r.now.Add(r.lim.MaxFuture)) {
		return t, "ts_out_of_range"
	}
	return t, ""
}
