package graphql_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-iot/tether/internal/graphql"
	"github.com/tether-iot/tether/internal/stream"
)

// The seeds of every fuzz test are in testdata/fuzz/<test>.

func FuzzDuration(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		d, err := graphql.UnmarshalDuration(s)
		if err != nil {
			return
		}
		var b bytes.Buffer
		graphql.MarshalDuration(d).MarshalGQL(&b)
		q, err := strconv.Unquote(b.String())
		if err != nil {
			t.Fatalf("marshalled %q: %v", b.String(), err)
		}
		back, err := graphql.UnmarshalDuration(q)
		if err != nil || back != d {
			t.Fatalf("%q → %v → %q → %v, %v", s, d, q, back, err)
		}
	})
}

func FuzzRawJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		raw, err := graphql.UnmarshalRawJSON(v)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		var b bytes.Buffer
		graphql.MarshalRawJSON(raw).MarshalGQL(&b)
		if !json.Valid(b.Bytes()) {
			t.Fatalf("%s written as %s", data, b.Bytes())
		}
	})
}

func FuzzTelemetryEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		var keys []string
		if key != "" {
			keys = []string{key}
		}
		u := graphql.DecodeTelemetryEvent(stream.Event{Kind: stream.KindTelemetry, DeviceID: "d1", Data: data}, keys)
		if u == nil {
			return
		}
		if len(u.Points) == 0 || u.DeviceID == nil || *u.DeviceID != "d1" {
			t.Fatalf("%s: %+v", data, u)
		}
		for _, p := range u.Points {
			if key != "" && p.Key != key {
				t.Fatalf("%s: point %q, only %q asked for", data, p.Key, key)
			}
		}
	})
}

// FuzzQuery sends any document, as a viewer, to the handler over the
// fakes: it is answered with JSON, as a GraphQL response or a refusal,
// and never with an internal error.
func FuzzQuery(f *testing.F) {
	s := newServer(f, nil)
	f.Fuzz(func(t *testing.T, query string) {
		body, _ := json.Marshal(map[string]string{"query": query})
		req := httptest.NewRequest("POST", "/api/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer viewer-key")
		w := httptest.NewRecorder()
		s.h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusUnprocessableEntity, http.StatusBadRequest:
		default:
			t.Fatalf("%q: %d %s", query, w.Code, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) || strings.Contains(w.Body.String(), `"internal"`) {
			t.Fatalf("%q: %s", query, w.Body)
		}
	})
}
