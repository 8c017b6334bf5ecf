package web_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tether-iot/tether/internal/web"
)

const indexHTML = `<!doctype html><html><head><script type="module" src="/assets/index-abc123.js"></script></head><body><div id="root"></div></body></html>`

var appJS = "console.log('tether');\n" + strings.Repeat("export const x = 1;\n", 100)

// built is a dashboard build as Vite leaves it in dist.
var built = fstest.MapFS{
	".gitkeep":                {Data: nil},
	"index.html":              {Data: []byte(indexHTML)},
	"assets/index-abc123.js":  {Data: []byte(appJS)},
	"assets/index-def456.css": {Data: []byte("body{margin:0}")},
	"favicon.svg":             {Data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)},
}

// unbuilt is dist on a fresh clone: only the placeholder that lets the
// embed directive compile.
var unbuilt = fstest.MapFS{".gitkeep": {Data: nil}}

type response struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, srv *httptest.Server, method, path string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Ask for identity so the body is readable unless a test asks otherwise.
	req.Header.Set("Accept-Encoding", "identity")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func TestBuiltDashboard(t *testing.T) {
	srv := httptest.NewServer(web.New(built))
	defer srv.Close()

	tests := []struct {
		name, method, path string
		status             int
		body               string // a substring of the body
		ctype, cache       string
	}{
		{"the root answers index.html, revalidated on every load", "GET", "/", 200, `<div id="root">`, "text/html; charset=utf-8", "no-cache"},
		{"a deep link answers index.html so the app's router handles it", "GET", "/devices/thermo-1", 200, `<div id="root">`, "text/html; charset=utf-8", "no-cache"},
		{"a deep link with a query answers index.html", "GET", "/devices?q=abc", 200, `<div id="root">`, "text/html; charset=utf-8", "no-cache"},
		{"index.html by name answers index.html", "GET", "/index.html", 200, `<div id="root">`, "text/html; charset=utf-8", "no-cache"},
		{"a hashed asset is cached for a year", "GET", "/assets/index-abc123.js", 200, "console.log('tether')", "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"},
		{"a stylesheet has its content type", "GET", "/assets/index-def456.css", 200, "body{margin:0}", "text/css; charset=utf-8", "public, max-age=31536000, immutable"},
		{"another file at the root is served but revalidated", "GET", "/favicon.svg", 200, "<svg", "image/svg+xml", "no-cache"},
		{"a missing asset is not found rather than index.html", "GET", "/assets/index-old999.js", 404, "not found", "text/plain; charset=utf-8", ""},
		{"a dot file is not served", "GET", "/.gitkeep", 200, `<div id="root">`, "text/html; charset=utf-8", "no-cache"},
		{"a path that climbs out is cleaned to the root", "GET", "/../../etc/passwd", 200, `<div id="root">`, "text/html; charset=utf-8", "no-cache"},
		{"an API path is not the dashboard's", "GET", "/api/v1/nothing", 404, "not found", "text/plain; charset=utf-8", ""},
		{"HEAD answers the headers of GET", "HEAD", "/", 200, "", "text/html; charset=utf-8", "no-cache"},
		{"POST is not allowed", "POST", "/", 405, "method not allowed", "text/plain; charset=utf-8", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, srv, tt.method, tt.path)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; body %q", r.status, tt.status, r.body)
			}
			if !strings.Contains(r.body, tt.body) {
				t.Errorf("body %q does not contain %q", r.body, tt.body)
			}
			if tt.method == "HEAD" && r.body != "" {
				t.Errorf("HEAD answered a body %q", r.body)
			}
			if got := r.header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if got := r.header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control %q, want %q", got, tt.cache)
			}
			if tt.status == 405 && r.header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q, want GET, HEAD", r.header.Get("Allow"))
			}
			checkSecurityHeaders(t, r.header)
		})
	}

	t.Run("a revalidation with the ETag answers 304", func(t *testing.T) {
		first := get(t, srv, "GET", "/")
		tag := first.header.Get("ETag")
		if tag == "" {
			t.Fatal("no ETag")
		}
		again := get(t, srv, "GET", "/devices", "If-None-Match", tag)
		if again.status != http.StatusNotModified {
			t.Errorf("status %d, want 304", again.status)
		}
	})

	t.Run("a client that accepts gzip gets the asset gzipped", func(t *testing.T) {
		r := get(t, srv, "GET", "/assets/index-abc123.js", "Accept-Encoding", "gzip, br")
		if r.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding %q, want gzip", r.header.Get("Content-Encoding"))
		}
		if !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("Vary %q lacks Accept-Encoding", r.header.Get("Vary"))
		}
		zr, err := gzip.NewReader(bytes.NewReader([]byte(r.body)))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if string(plain) != appJS {
			t.Errorf("gunzipped body differs from the file")
		}
		identity := get(t, srv, "GET", "/assets/index-abc123.js")
		if identity.header.Get("ETag") == r.header.Get("ETag") {
			t.Errorf("the gzipped and plain bodies share the ETag %s", r.header.Get("ETag"))
		}
	})

	t.Run("gzip refused with q=0 is not used", func(t *testing.T) {
		r := get(t, srv, "GET", "/assets/index-abc123.js", "Accept-Encoding", "gzip;q=0")
		if r.header.Get("Content-Encoding") != "" || r.body != appJS {
			t.Errorf("Content-Encoding %q; want the plain body", r.header.Get("Content-Encoding"))
		}
	})

	t.Run("the policy names the WebSocket origin of the request's host", func(t *testing.T) {
		r := get(t, srv, "GET", "/")
		host := strings.TrimPrefix(srv.URL, "http://")
		csp := r.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "connect-src 'self' ws://"+host+" wss://"+host+";") {
			t.Errorf("policy %q does not allow the stream on %s", csp, host)
		}
	})

	t.Run("a host that could inject a directive is left out of the policy", func(t *testing.T) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = "evil; script-src *"
		rec := httptest.NewRecorder()
		web.New(built).ServeHTTP(rec, req)
		csp := rec.Header().Get("Content-Security-Policy")
		if strings.Contains(csp, "evil") || !strings.Contains(csp, "connect-src 'self';") {
			t.Errorf("policy %q", csp)
		}
	})
}

func TestUnbuiltDashboard(t *testing.T) {
	srv := httptest.NewServer(web.New(unbuilt))
	defer srv.Close()
	for _, path := range []string{"/", "/devices/d1", "/index.html"} {
		t.Run("GET "+path+" says how to build the dashboard", func(t *testing.T) {
			r := get(t, srv, "GET", path)
			if r.status != http.StatusServiceUnavailable {
				t.Errorf("status %d, want 503", r.status)
			}
			if !strings.Contains(r.body, "The dashboard is not built: run <code>make build</code>") {
				t.Errorf("body %q", r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			checkSecurityHeaders(t, r.header)
		})
	}
}

// TestEmbedded checks the dashboard compiled into this binary: the built
// application after `npm run build`, or the page that asks for a build on
// a fresh clone. Either way it must be one of the two.
func TestEmbedded(t *testing.T) {
	srv := httptest.NewServer(web.Handler())
	defer srv.Close()
	r := get(t, srv, "GET", "/")
	checkSecurityHeaders(t, r.header)
	switch r.status {
	case http.StatusOK:
		if !strings.Contains(r.body, `<div id="root">`) {
			t.Fatalf("index.html without the root element: %q", r.body)
		}
		// Every script and stylesheet index.html names must be served.
		for _, ref := range assetRefs(r.body) {
			a := get(t, srv, "GET", ref)
			if a.status != http.StatusOK || a.header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
				t.Errorf("GET %s: status %d, Cache-Control %q", ref, a.status, a.header.Get("Cache-Control"))
			}
		}
		if len(assetRefs(r.body)) == 0 {
			t.Errorf("index.html names no assets: %q", r.body)
		}
	case http.StatusServiceUnavailable:
		if !strings.Contains(r.body, "The dashboard is not built") {
			t.Fatalf("503 without the build hint: %q", r.body)
		}
	default:
		t.Fatalf("status %d", r.status)
	}
}

// assetRefs returns the /assets/ paths html refers to.
func assetRefs(html string) []string {
	var refs []string
	for rest := html; ; {
		i := strings.Index(rest, `"/assets/`)
		if i < 0 {
			return refs
		}
		rest = rest[i+1:]
		j := strings.IndexByte(rest, '"')
		if j < 0 {
			return refs
		}
		refs = append(refs, rest[:j])
		rest = rest[j:]
	}
}

func checkSecurityHeaders(t *testing.T, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "img-src 'self' data:", "connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", h.Get("X-Content-Type-Options"))
	}
	if h.Get("Referrer-Policy") != "same-origin" {
		t.Errorf("Referrer-Policy %q", h.Get("Referrer-Policy"))
	}
}

// FuzzHandler checks that no path, Host or Accept-Encoding gets anything
// but a file of the build, index.html, or a refusal, and that the Host
// never changes the policy's directives.
func FuzzHandler(f *testing.F) {
	for _, seed := range []struct{ path, host, enc string }{
		{"/", "localhost:8080", "gzip"},
		{"/assets/index-abc123.js", "example.com", "gzip;q=0, identity"},
		{"/assets/../index.html", "[::1]:80", "*"},
		{"/.gitkeep", "a;b", ""},
		{"/devices/%2e%2e/%2e%2e/etc", "x y", "br;q=1, gzip;q=0.5"},
		{"//assets//index-abc123.js", "", "GZIP"},
	} {
		f.Add(seed.path, seed.host, seed.enc)
	}
	h := web.New(built)
	files := map[string]string{}
	for name, file := range built {
		files[string(file.Data)] = name
	}
	wantDirectives := strings.Count(get0(h, "/", "localhost", "").Header().Get("Content-Security-Policy"), ";")
	f.Fuzz(func(t *testing.T, path, host, enc string) {
		rec := get0(h, path, host, enc)
		if rec.Code == http.StatusOK && rec.Header().Get("Content-Encoding") == "" {
			if _, ok := files[rec.Body.String()]; !ok {
				t.Fatalf("GET %q answered a body that is no file of the build: %q", path, rec.Body.String())
			}
		}
		switch rec.Code {
		case http.StatusOK, http.StatusNotFound:
		default:
			t.Fatalf("GET %q: status %d", path, rec.Code)
		}
		if n := strings.Count(rec.Header().Get("Content-Security-Policy"), ";"); n != wantDirectives {
			t.Fatalf("Host %q changed the policy: %q", host, rec.Header().Get("Content-Security-Policy"))
		}
	})
}

func get0(h http.Handler, path, host, enc string) *httptest.ResponseRecorder {
	req := &http.Request{Method: "GET", URL: &url.URL{Path: path}, Host: host, Header: http.Header{}}
	if enc != "" {
		req.Header.Set("Accept-Encoding", enc)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
