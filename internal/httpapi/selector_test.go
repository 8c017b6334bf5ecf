package httpapi_test

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tether-iot/tether"
)

// pairs is a selector of n labels k0=v, k1=v, ...
func pairs(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("k%d=v", i)
	}
	return strings.Join(p, ",")
}

func TestLabelSelector(t *testing.T) {
	a := newStateAPI(t)
	for _, c := range []struct {
		name, labels string
		want         map[string]string // the registry's filter's labels
		wantDetail   string            // "" accepted; else part of the 400's detail
	}{
		{"pairs separated by commas select devices", "site=north,floor=1",
			map[string]string{"site": "north", "floor": "1"}, ""},
		{"a value may be empty and may hold '='", "site=,eq=a=b",
			map[string]string{"site": "", "eq": "a=b"}, ""},
		{"64 labels, a device's most, are allowed", pairs(64), nil, ""},
		{"65 labels are too many", pairs(65), nil, "labels has 65 pairs; at most 64 labels in a selector"},
		{"5000 labels are refused before they are split", pairs(5000), nil, "labels has 5000 pairs; at most 64"},
		{"a pair needs '='", "site", nil, "must be key=value pairs"},
		{"a key cannot be empty", "=north", nil, "must be key=value pairs"},
		{"a key must be an ID", "si.te=north", nil, `label key "si.te" must be 1 to 64 letters`},
		{"a key of 65 bytes is not an ID", strings.Repeat("k", 65) + "=v", nil, "must be 1 to 64 letters"},
		{"a value of 256 bytes is allowed", "site=" + strings.Repeat("v", 256),
			map[string]string{"site": strings.Repeat("v", 256)}, ""},
		{"a value of 257 bytes is too long", "site=" + strings.Repeat("v", 257), nil, `label "site" is 257 bytes; at most 256`},
		{"a key given twice is refused", "site=a,site=b", nil, `label "site" is given twice`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := "/api/v1/devices?" + url.Values{"labels": {c.labels}}.Encode()
			if c.wantDetail != "" {
				p := a.expect(t, http.StatusBadRequest, "GET", path, testViewerKey, "").problem(t)
				if p.Code != tether.EINVALID || !strings.Contains(p.Detail, c.wantDetail) {
					t.Errorf("problem %+v, want %s with %q", p, tether.EINVALID, c.wantDetail)
				}
				if len(p.Detail) > 300 {
					t.Errorf("detail of %d bytes quotes too much: %.100s…", len(p.Detail), p.Detail)
				}
				return
			}
			a.expect(t, http.StatusOK, "GET", path, testViewerKey, "")
			a.reg.mu.Lock()
			got := a.reg.filter.Labels
			a.reg.mu.Unlock()
			want := c.want
			if want == nil {
				want = map[string]string{}
				for i := range strings.Count(c.labels, ",") + 1 {
					want[fmt.Sprintf("k%d", i)] = "v"
				}
			}
			if !maps.Equal(got, want) {
				t.Errorf("filter's labels %v, want %v", got, want)
			}
		})
	}
}
