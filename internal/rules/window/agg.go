package window

import (
	"encoding/json"
	"math"
	"slices"
)

// aggFunc is an aggregate function.
type aggFunc uint8

const (
	aggAvg aggFunc = iota + 1
	aggMin
	aggMax
	aggSum
	aggCount
	aggStddev
	aggFirst
	aggLast
	aggPercentile
)

var funcs = map[string]aggFunc{
	"avg": aggAvg, "min": aggMin, "max": aggMax, "sum": aggSum, "count": aggCount,
	"stddev": aggStddev, "first": aggFirst, "last": aggLast, "percentile": aggPercentile,
}

// aggState is one aggregate's state in one window. Only the fields of its
// function are used.
type aggState struct {
	n        int64   // values taken (count: non-nil arguments)
	sum      float64 // sum, avg
	mean, m2 float64 // stddev (Welford)
	min, max float64
	val      any   // first, last: the value …
	valT     int64 // … and its event time
	vals     []float64
	seen     int64  // percentile: values offered to the reservoir
	rng      uint64 // percentile: splitmix64 state
}

// add takes one non-nil argument at event time ns; false if it was skipped
// as not numeric (or of a type first/last do not keep).
func (a *aggState) add(f aggFunc, ns int64, v any, maxValues int) bool {
	switch f {
	case aggCount:
		a.n++
		return true
	case aggFirst, aggLast:
		x, ok := scalar(v)
		if !ok {
			return false
		}
		if a.n == 0 || (f == aggFirst && ns < a.valT) || (f == aggLast && ns >= a.valT) {
			a.val, a.valT = x, ns
		}
		a.n++
		return true
	}
	x, ok := number(v)
	if !ok {
		return false
	}
	a.n++
	switch f {
	case aggSum, aggAvg:
		a.sum += x
	case aggMin:
		if a.n == 1 || x < a.min {
			a.min = x
		}
	case aggMax:
		if a.n == 1 || x > a.max {
			a.max = x
		}
	case aggStddev:
		d := x - a.mean
		a.mean += d / float64(a.n)
		a.m2 += d * (x - a.mean)
	case aggPercentile:
		a.seen++
		if len(a.vals) < maxValues {
			a.vals = append(a.vals, x)
		} else if j := a.rand(uint64(a.seen)); j < uint64(len(a.vals)) {
			a.vals[j] = x
		}
	}
	return true
}

// merge folds b (a later session) into a.
func (a *aggState) merge(f aggFunc, b *aggState, maxValues int) {
	if b.n == 0 {
		return
	}
	if a.n == 0 {
		rng := a.rng
		*a = *b
		if f == aggPercentile {
			a.rng = rng
		}
		return
	}
	n := a.n + b.n
	switch f {
	case aggSum, aggAvg:
		a.sum += b.sum
	case aggMin:
		a.min = min(a.min, b.min)
	case aggMax:
		a.max = max(a.max, b.max)
	case aggStddev:
		// Chan et al.'s parallel combination of Welford states.
		d := b.mean - a.mean
		a.m2 += b.m2 + d*d*float64(a.n)*float64(b.n)/float64(n)
		a.mean += d * float64(b.n) / float64(n)
	case aggFirst:
		if b.valT < a.valT {
			a.val, a.valT = b.val, b.valT
		}
	case aggLast:
		if b.valT >= a.valT {
			a.val, a.valT = b.val, b.valT
		}
	case aggPercentile:
		a.mergeReservoir(b, maxValues)
	}
	a.n = n
}

// mergeReservoir combines two reservoirs: exactly if both fit, else by
// drawing maxValues values, each from a or b with probability proportional
// to the values each has seen, without replacement.
func (a *aggState) mergeReservoir(b *aggState, maxValues int) {
	seen := a.seen + b.seen
	if len(a.vals)+len(b.vals) <= maxValues {
		a.vals = append(a.vals, b.vals...)
		a.seen = seen
		return
	}
	xa, xb := slices.Clone(a.vals), slices.Clone(b.vals)
	out := make([]float64, 0, maxValues)
	wa, wb := uint64(a.seen), uint64(b.seen)
	take := func(xs *[]float64) {
		j := a.rand(uint64(len(*xs)))
		out = append(out, (*xs)[j])
		(*xs)[j] = (*xs)[len(*xs)-1]
		*xs = (*xs)[:len(*xs)-1]
	}
	for len(out) < maxValues {
		switch {
		case len(xa) == 0:
			take(&xb)
		case len(xb) == 0:
			take(&xa)
		case a.rand(wa+wb) < wa:
			take(&xa)
		default:
			take(&xb)
		}
	}
	a.vals, a.seen = out, seen
}

// rand returns a pseudo-random number in [0, n) (splitmix64; the modulo
// bias is negligible for n far below 2^64).
func (a *aggState) rand(n uint64) uint64 {
	a.rng += 0x9e3779b97f4a7c15
	z := a.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return z % n
}

// result is the aggregate's value: float64 (first/last: the value kept),
// or nil if it had no input (count: 0).
func (a *aggState) result(f aggFunc, p float64) any {
	if f == aggCount {
		return float64(a.n)
	}
	if a.n == 0 {
		return nil
	}
	switch f {
	case aggSum:
		return a.sum
	case aggAvg:
		return a.sum / float64(a.n)
	case aggMin:
		return a.min
	case aggMax:
		return a.max
	case aggStddev:
		if a.n < 2 {
			return nil
		}
		return math.Sqrt(a.m2 / float64(a.n-1))
	case aggFirst, aggLast:
		return a.val
	case aggPercentile:
		if len(a.vals) == 0 {
			return nil
		}
		v := slices.Clone(a.vals)
		slices.Sort(v)
		// Nearest rank; p·n is computed before dividing so whole ranks
		// come out exact (p=70, n=10 gives 7, not 7.000000000000001).
		k := int(math.Ceil(p * float64(len(v)) / 100))
		k = max(1, min(k, len(v)))
		return v[k-1]
	}
	return nil
}

// number converts a numeric argument to a finite float64.
func number(v any) (float64, bool) {
	var x float64
	switch n := v.(type) {
	case float64:
		x = n
	case float32:
		x = float64(n)
	case int:
		x = float64(n)
	case int8:
		x = float64(n)
	case int16:
		x = float64(n)
	case int32:
		x = float64(n)
	case int64:
		x = float64(n)
	case uint:
		x = float64(n)
	case uint8:
		x = float64(n)
	case uint16:
		x = float64(n)
	case uint32:
		x = float64(n)
	case uint64:
		x = float64(n)
	case json.Number:
		f, err := n.Float64()
		if err != nil {
			return 0, false
		}
		x = f
	default:
		return 0, false
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, false
	}
	return x, true
}

// scalar converts an argument of first/last to what they keep: a number
// as float64, a string or a bool as it is.
func scalar(v any) (any, bool) {
	switch v := v.(type) {
	case string, bool:
		return v, true
	}
	x, ok := number(v)
	if !ok {
		return nil, false
	}
	return x, true
}
