package shadow

import (
	"encoding/json"
	"reflect"
	"testing"
)

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test document %s: %v", s, err)
	}
	return m
}

// TestMergeFollowsRFC7386 runs the examples of RFC 7386's appendix A
// whose target and patch are objects (a shadow document always is one).
func TestMergeFollowsRFC7386(t *testing.T) {
	cases := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	}
	for _, c := range cases {
		t.Run(c.target+" patched with "+c.patch+" is "+c.want, func(t *testing.T) {
			doc := decode(t, c.target)
			merge(doc, decode(t, c.patch))
			if want := decode(t, c.want); !reflect.DeepEqual(doc, want) {
				t.Errorf("got %v, want %v", doc, want)
			}
		})
	}
}

func TestDelta(t *testing.T) {
	cases := []struct {
		name                    string
		desired, reported, want string // want "" means no delta
	}{
		{"equal documents have no delta", `{"a":1,"b":{"c":[1,2]}}`, `{"b":{"c":[1,2]},"a":1}`, ""},
		{"a field reported lacks is in the delta", `{"a":1}`, `{}`, `{"a":1}`},
		{"a field only reported is not", `{}`, `{"a":1}`, ""},
		{"nested objects differ field by field", `{"o":{"x":1,"y":2}}`, `{"o":{"x":1,"y":3,"z":4}}`, `{"o":{"y":2}}`},
		{"arrays are compared whole", `{"l":[1,2,3]}`, `{"l":[1,2]}`, `{"l":[1,2,3]}`},
		{"a type change is a difference", `{"a":"1"}`, `{"a":1}`, `{"a":"1"}`},
		{"an object where reported has a scalar is the whole object", `{"a":{"b":1}}`, `{"a":1}`, `{"a":{"b":1}}`},
		{"null in reported is not a value desired has", `{"a":false}`, `{"a":null}`, `{"a":false}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := delta(decode(t, c.desired), decode(t, c.reported))
			if c.want == "" {
				if got != nil {
					t.Errorf("delta = %v, want none", got)
				}
				return
			}
			if want := decode(t, c.want); !reflect.DeepEqual(got, want) {
				t.Errorf("delta = %v, want %v", got, want)
			}
		})
	}
}

// FuzzMerge feeds a document, a patch and a reported document (untrusted
// device input, all of them) through merge, stamp and delta and checks
// what must always hold: merged documents hold no nulls, a patch applied
// twice changes nothing the second time, the metadata has exactly the
// shape of the document, and merging the delta into reported leaves no
// delta.
func FuzzMerge(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":{"c":[1,2]}}`), []byte(`{"a":null,"b":{"d":true}}`), []byte(`{"b":{"c":[1]}}`))
	f.Add([]byte(`{}`), []byte(`{"a":{"bb":{"ccc":null}}}`), []byte(`{"a":1}`))
	f.Add([]byte(`{"x":"y"}`), []byte(`{"x":{"y":{"z":null,"w":[null]}}}`), []byte(`{"x":{"y":{}}}`))
	f.Add([]byte(`{"n":1e308}`), []byte(`{"n":-0,"s":"\u0000"}`), []byte(`{"n":0}`))
	f.Fuzz(func(t *testing.T, docJSON, patchJSON, reportedJSON []byte) {
		var doc, patch, reported map[string]any
		if json.Unmarshal(docJSON, &doc) != nil || json.Unmarshal(patchJSON, &patch) != nil || json.Unmarshal(reportedJSON, &reported) != nil {
			return
		}
		if doc == nil || reported == nil {
			return
		}
		// A stored document has no nulls: make one from the input.
		clean := map[string]any{}
		merge(clean, doc)
		doc = clean
		meta := map[string]any{}
		stamp(meta, doc, "t0")
		if !sameShape(doc, meta) {
			t.Fatalf("metadata %v does not mirror %v", meta, doc)
		}

		merge(doc, patch)
		stamp(meta, patch, "t1")
		if hasNull(doc) {
			t.Fatalf("merged document holds a null: %v", doc)
		}
		if !sameShape(doc, meta) {
			t.Fatalf("metadata %v does not mirror %v after patch %v", meta, doc, patch)
		}
		again := copyDoc(doc)
		merge(again, patch)
		if !reflect.DeepEqual(again, doc) {
			t.Fatalf("patch %v applied twice: %v, once: %v", patch, again, doc)
		}

		cleanReported := map[string]any{}
		merge(cleanReported, reported)
		d := delta(doc, cleanReported)
		if d != nil {
			if len(d) == 0 {
				t.Fatalf("empty delta returned as non-nil")
			}
			merge(cleanReported, d)
			if rest := delta(doc, cleanReported); rest != nil {
				t.Fatalf("after merging delta %v into reported, delta %v is left", d, rest)
			}
		}
		if _, err := json.Marshal(doc); err != nil {
			t.Fatalf("merged document cannot be written: %v", err)
		}
	})
}

// sameShape reports whether meta has an object wherever doc has one, with
// the same keys, and a timestamp string at every other value of doc.
func sameShape(doc, meta map[string]any) bool {
	if len(doc) != len(meta) {
		return false
	}
	for k, v := range doc {
		m, ok := meta[k]
		if !ok {
			return false
		}
		if dv, isMap := v.(map[string]any); isMap {
			mm, ok := m.(map[string]any)
			if !ok || !sameShape(dv, mm) {
				return false
			}
			continue
		}
		if _, ok := m.(string); !ok {
			return false
		}
	}
	return true
}

func hasNull(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, e := range x {
			if hasNull(e) {
				return true
			}
		}
	}
	// Arrays may hold nulls: they are values, replaced whole.
	return false
}
