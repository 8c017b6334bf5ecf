package graphql_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/graphql"
)

// aliases is a query of n aliases of field, each as f0, f1, ...
func aliases(n int, field string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		fmt.Fprintf(&b, " f%d: %s", i, field)
	}
	b.WriteString(" }")
	return b.String()
}

func TestTelemetryIsCostedByItsRange(t *testing.T) {
	s := newServer(t, nil)
	monthAgo := time.Now().Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	twoMonthsAgo := time.Now().Add(-60 * 24 * time.Hour).UTC().Format(time.RFC3339)
	month := fmt.Sprintf(`telemetry(keys: ["temp"], from: %q, agg: AVG, bucket: "1h", limit: 1) { samples { value } }`, monthAgo)
	hour := `telemetry(keys: ["temp"], agg: AVG, bucket: "1m", limit: 60) { samples { value } }`
	cases := []struct {
		name, query string
		wantCode    string // "" accepted
	}{
		{"a month of one key in one bucket is allowed", `{ device(id: "d1") { ` + month + ` } }`, ""},
		{"333 aliases of a month in one bucket each are refused, though each returns one bucket",
			aliases(333, `device(id: "d1") { `+month+` }`), graphql.CodeTooComplex},
		{"20 aliases, within the field limit, of two months each cost too much",
			aliases(20, `device(id: "d1") { `+strings.Replace(month, monthAgo, twoMonthsAgo, 1)+` }`), graphql.CodeTooComplex},
		{"20 aliases of an hour are allowed", aliases(20, `device(id: "d1") { `+hour+` }`), ""},
		{"21 telemetry fields are too many, however short", aliases(21, `device(id: "d1") { `+hour+` }`), graphql.CodeTooComplex},
		{"telemetry fields in fragments count where they are spread",
			aliases(7, `device(id: "d1") { ...T }`) + ` fragment T on Device { a: ` + hour + ` b: ` + hour + ` c: ` + hour + ` }`,
			graphql.CodeTooComplex},
		{"a profile's telemetry keys are not telemetry queries",
			aliases(30, `device(id: "d1") { profile { telemetry { key } } }`), ""},
		{"a month of every key of a hundred devices costs too much",
			`{ devices(first: 100) { devices { ` + strings.Replace(month, `keys: ["temp"], `, "", 1) + ` } } }`, graphql.CodeTooComplex},
		{"a month of one key of each of a hundred devices costs too much",
			`{ devices(first: 100) { devices { ` + month + ` } } }`, graphql.CodeTooComplex},
		{"a dashboard of a hundred devices with their latest values, presence and last hour is within the limit",
			`{ devices(first: 100) { devices { id name labels { key value } latest { key value } presence { status } ` + hour + ` } } }`, ""},
		{"raw points of a long range cost by their limit, since the store reads no more",
			`{ device(id: "d1") { telemetry(keys: ["temp"], from: "2024-01-01T00:00:00Z", limit: 100) { key } } }`, ""},
		{"a range of centuries cannot overflow into a small cost",
			`{ device(id: "d1") { telemetry(keys: ["temp"], from: "0001-01-01T00:00:00Z", to: "9999-01-01T00:00:00Z", agg: AVG, bucket: "8760h", limit: 1) { key } } }`,
			graphql.CodeTooComplex},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, res, raw := s.post(t, "viewer-key", c.query, nil)
			if c.wantCode == "" {
				if status != http.StatusOK || len(res.Errors) > 0 {
					t.Errorf("%d %.500s", status, raw)
				}
				return
			}
			if status != http.StatusUnprocessableEntity || res.Code() != c.wantCode {
				t.Errorf("%d %.500s", status, raw)
			}
		})
	}
}

// labelPairs is a GraphQL list of n label pairs k0=v, k1=v, ...
func labelPairs(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf(`{key: "k%d", value: "v"}`, i)
	}
	return "[" + strings.Join(p, ", ") + "]"
}

func TestLabelSelectorsAreBounded(t *testing.T) {
	s := newServer(t, nil)
	cases := []struct {
		name, labels string
		wantDetail   string // "" accepted
	}{
		{"64 labels, a device's most, are allowed", labelPairs(64), ""},
		{"65 labels are too many", labelPairs(65), "labels has 65 pairs; at most 64"},
		{"thousands of labels are refused before the store is asked", labelPairs(5000), "labels has 5000 pairs"},
		{"a key must be an ID", `[{key: "si.te", value: "v"}]`, `label key "si.te" must be 1 to 64 letters`},
		{"an empty key is not an ID", `[{key: "", value: "v"}]`, `label key "" must be`},
		{"a value of 257 bytes is too long", `[{key: "site", value: "` + strings.Repeat("v", 257) + `"}]`, `label "site" is 257 bytes; at most 256`},
		{"a key given twice is refused", `[{key: "site", value: "a"}, {key: "site", value: "b"}]`, `label "site" is given twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, res, raw := s.post(t, "viewer-key", `{ devices(labels: `+c.labels+`) { devices { id } } }`, nil)
			if c.wantDetail == "" {
				if len(res.Errors) > 0 {
					t.Errorf("%.500s", raw)
				}
				return
			}
			if res.Code() != tether.EINVALID || !strings.Contains(res.Errors[0].Message, c.wantDetail) {
				t.Errorf("want %s with %q: %.500s", tether.EINVALID, c.wantDetail, raw)
			}
		})
	}

	t.Run("a device's labels have the same bounds", func(t *testing.T) {
		_, res, raw := s.post(t, "admin-key", `mutation { createDevice(input: {id: "d9", labels: `+labelPairs(65)+`}) { token } }`, nil)
		if res.Code() != tether.EINVALID || !strings.Contains(res.Errors[0].Message, "at most 64") {
			t.Errorf("%.500s", raw)
		}
	})
}
