package shadow

import (
	"encoding/json"
	"reflect"
)

// The documents of a shadow are JSON objects decoded by encoding/json:
// their values are nil, bool, float64, string, []any and map[string]any.
// Everything here works on those types only; normalize makes a patch so.

// normalize returns a deep copy of the patch with every value turned into
// the type encoding/json decodes it to (an int becomes a float64, a
// struct an object), or an error if it cannot be written as JSON (NaN, a
// channel). A patch from a gateway is such a document already; one from Go
// code may not be, and delta compares values by type.
func normalize(patch map[string]any) (map[string]any, error) {
	if patch == nil {
		return nil, nil
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// merge applies a JSON merge patch (RFC 7386) to doc in place: a null
// deletes a field, an object is merged into the object at its place (or
// replaces a value that is not an object, its nulls dropped), anything
// else (arrays included) replaces the value whole.
func merge(doc, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(doc, k)
		case map[string]any:
			target, ok := doc[k].(map[string]any)
			if !ok {
				target = map[string]any{}
			}
			merge(target, pv)
			doc[k] = target
		default:
			doc[k] = copyValue(v)
		}
	}
}

// stamp applies the shape of a merge patch to a metadata document: each
// leaf the patch writes gets the time at, each field it deletes goes, and
// an object the patch writes becomes an object of stamps. The metadata
// thus mirrors the shape of the document the same patch is merged into.
func stamp(meta, patch map[string]any, at string) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(meta, k)
		case map[string]any:
			target, ok := meta[k].(map[string]any)
			if !ok {
				target = map[string]any{}
			}
			stamp(target, pv, at)
			meta[k] = target
		default:
			meta[k] = at
		}
	}
}

// delta returns the fields of desired whose value differs from reported's
// (or that reported lacks): objects are compared field by field, so the
// delta of an object holds only its differing fields; anything else
// (arrays included) is compared whole. It returns nil when the documents
// agree.
func delta(desired, reported map[string]any) map[string]any {
	var out map[string]any
	for k, dv := range desired {
		rv, ok := reported[k]
		var diff any
		dm, dIsMap := dv.(map[string]any)
		rm, rIsMap := rv.(map[string]any)
		switch {
		case dIsMap && rIsMap:
			if d := delta(dm, rm); d != nil {
				diff = d
			}
		case !ok || !equal(dv, rv):
			diff = copyValue(dv)
		}
		if diff == nil {
			continue
		}
		if out == nil {
			out = map[string]any{}
		}
		out[k] = diff
	}
	return out
}

// equal reports whether two decoded JSON values are the same.
func equal(a, b any) bool { return reflect.DeepEqual(a, b) }

// depth returns how deeply v nests objects and arrays: 0 for a scalar, 1
// for an object or array of scalars.
func depth(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	case []any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

// copyValue returns a deep copy of a decoded JSON value, so that a stored
// document never shares an object or array with a patch or a caller.
func copyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = copyValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyValue(e)
		}
		return out
	}
	return v
}

// copyDoc is copyValue for a document; nil becomes an empty one.
func copyDoc(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return copyValue(m).(map[string]any)
}
