package egress_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/egress"
)

func TestAllowed(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"169.254.169.254", false}, // cloud metadata
		{"fe80::1", false},
		{"224.0.0.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"::ffff:169.254.169.254", false},
		{"127.0.0.1", true},
		{"10.1.2.3", true},
		{"93.184.216.34", true},
		{"2001:db8::1", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := egress.Allowed(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Allowed(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c := egress.Client(5 * time.Second)
	t.Run("a loopback webhook is reached", func(t *testing.T) {
		resp, err := c.Get(srv.URL)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
	})
	t.Run("a redirect is not followed", func(t *testing.T) {
		resp, err := c.Get(srv.URL + "/redirect")
		if err != nil || resp.StatusCode != http.StatusFound {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
	})
	t.Run("the metadata address is refused before connecting", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := egress.Dialer(time.Second).DialContext(ctx, "tcp", "169.254.169.254:80")
		if err == nil || !strings.Contains(err.Error(), "link-local") {
			t.Errorf("err = %v", err)
		}
	})
}
