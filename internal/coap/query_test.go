package coap_test

import (
	"strings"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/coap"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		name    string
		queries []string
		want    string
		wantErr string
	}{
		{"no query is no token", nil, "", ""},
		{"t= gives the token", []string{"t=" + token}, token, ""},
		{"a token may hold '=' and '&'", []string{"t=a.b=c&d"}, "a.b=c&d", ""},
		{"an empty t= is refused", []string{"t="}, "", "empty"},
		{"t without '=' is refused", []string{"t"}, "", "empty"},
		{"t= twice is refused", []string{"t=a.b", "t=a.b"}, "", "twice"},
		{"an unknown parameter is refused by name", []string{"t=a.b", "tok=x"}, "", `"tok"`},
		{"an unprintable parameter name is not echoed", []string{"\x00=1"}, "", `"?"`},
		{"a token over 512 bytes is refused", []string{"t=" + strings.Repeat("x", 513)}, "", "at most 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := coap.ParseQuery(tt.queries)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || tether.ErrorCode(err) != tether.EINVALID || !strings.Contains(tether.ErrorMessage(err), tt.wantErr) {
				t.Fatalf("got %q, %v; want EINVALID containing %q", got, err, tt.wantErr)
			}
		})
	}
}

// FuzzParseQuery checks that the query parser never panics, that a token
// it returns is exactly one t= option, and that it refuses only with
// EINVALID. The input is the queries joined by '&'.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "t=sensor-1.secret", "t=a&t=b", "x=1", "t=", "t", "t=a.b&x", "t=\xff\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var queries []string
		if raw != "" {
			queries = strings.Split(raw, "&")
		}
		got, err := coap.ParseQuery(queries)
		if err != nil {
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Fatalf("refused %q with %v", raw, err)
			}
			return
		}
		if len(got) > 512 {
			t.Fatalf("token of %d bytes", len(got))
		}
		n := 0
		for _, q := range queries {
			if strings.HasPrefix(q, "t=") {
				n++
				if q != "t="+got {
					t.Fatalf("token %q is not %q", got, q)
				}
			}
		}
		if n != len(queries) || (n == 1) != (got != "") {
			t.Fatalf("accepted %q as %q", raw, got)
		}
	})
}
