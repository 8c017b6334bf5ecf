// Package web serves the dashboard: the single-page application built from
// web/ by Vite into dist/ and embedded in the binary. Hashed assets under
// /assets/ are cached for a year; every other path that names no file
// answers index.html, uncached, so the application's own router handles
// deep links. Responses carry a Content-Security-Policy that lets the
// page talk only to its own origin. A binary built without the front end
// (dist holds only .gitkeep) answers a short page saying how to build it.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed all:dist
var dist embed.FS

// Handler serves the embedded dashboard.
func Handler() http.Handler {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		// fs.Sub fails only for an invalid directory name, which "dist" is not.
		panic(fmt.Sprintf("web: %v", err))
	}
	return New(sub)
}

// New serves the dashboard from files, whose root holds index.html and
// assets/.
func New(files fs.FS) http.Handler {
	return &server{files: files, cache: map[string]*file{}}
}

// server serves files, keeping each file it has read (with a gzipped copy
// and ETags) in memory: the dashboard is a few hundred kilobytes that never
// change while the binary runs.
type server struct {
	files fs.FS
	mu    sync.Mutex
	cache map[string]*file
}

// file is one file of the build, ready to serve.
type file struct {
	body, gz     []byte
	etag, gzEtag string
	ctype        string
}

// notBuilt is answered when the binary was built without the dashboard.
const notBuilt = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tether</title></head>
<body style="font-family: system-ui, sans-serif; margin: 2rem; max-width: 40rem">
<h1>Tether</h1>
<p>The dashboard is not built: run <code>make build</code> (or <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code>) and rebuild the binary.</p>
<p>The API is served under <a href="/api/v1/openapi.json"><code>/api/v1/</code></a>.</p>
</body></html>
`

// Caching: Vite puts a content hash in every name under assets/, so those
// may be kept forever; index.html and anything else must be revalidated so
// that a new release is picked up on the next load.
const (
	cacheForever = "public, max-age=31536000, immutable"
	cacheNever   = "no-cache"
)

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header(), r.Host)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := path.Clean("/" + r.URL.Path)
	// The API answers its own paths; one that reaches the dashboard (when
	// mounted without the API's catch-all) must not get index.html.
	if p == "/api" || strings.HasPrefix(p, "/api/") {
		http.NotFound(w, r)
		return
	}
	name := strings.TrimPrefix(p, "/")
	if strings.HasPrefix(p, "/assets/") {
		f, err := s.open(name)
		if err != nil {
			// A missing hashed asset is an old page asking for the
			// previous release's file: index.html would be wrong here.
			http.NotFound(w, r)
			return
		}
		s.serve(w, r, f, cacheForever)
		return
	}
	if name != "" && name != "index.html" {
		if f, err := s.open(name); err == nil {
			s.serve(w, r, f, cacheNever)
			return
		}
	}
	f, err := s.open("index.html")
	if err != nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", cacheNever)
		w.WriteHeader(http.StatusServiceUnavailable)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte(notBuilt))
		}
		return
	}
	s.serve(w, r, f, cacheNever)
}

// open returns the named regular file, reading it on first use.
func (s *server) open(name string) (*file, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.cache[name]; ok {
		return f, nil
	}
	// Dot files (dist/.gitkeep) are not part of the dashboard.
	if !fs.ValidPath(name) || strings.HasPrefix(name, ".") || strings.Contains(name, "/.") {
		return nil, fs.ErrNotExist
	}
	st, err := fs.Stat(s.files, name)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fs.ErrNotExist
	}
	body, err := fs.ReadFile(s.files, name)
	if err != nil {
		return nil, err
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = http.DetectContentType(body)
	}
	f := &file{body: body, ctype: ctype, etag: etag(body, "")}
	if compressible(ctype) && len(body) >= 512 {
		if gz, err := gzipped(body); err == nil && len(gz) < len(body) {
			f.gz, f.gzEtag = gz, etag(body, "-gz")
		}
	}
	s.cache[name] = f
	return f, nil
}

// serve answers f, gzipped when the client accepts it, honouring
// If-None-Match and ranges through http.ServeContent.
func (s *server) serve(w http.ResponseWriter, r *http.Request, f *file, cacheControl string) {
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", cacheControl)
	body, tag := f.body, f.etag
	if f.gz != nil {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body, tag = f.gz, f.gzEtag
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("ETag", tag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// securityHeaders sets the headers every dashboard response carries. The
// policy allows scripts and styles from this origin only (uPlot and React
// set styles through the CSSOM, which style-src does not restrict), and
// connections to this origin, including the WebSocket of the live stream:
// 'self' covers ws: and wss: to the same host only in newer browsers, so
// the host is named for the others.
func securityHeaders(h http.Header, host string) {
	connect := "'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "+
		"img-src 'self' data:; font-src 'self'; connect-src "+connect+"; object-src 'none'; "+
		"base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// validHost reports whether host (a Host header) is a plain host[:port],
// safe to put into the policy: anything else (spaces, semicolons, quotes)
// could add directives.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// etag is a strong validator for body, with suffix for its encoding.
func etag(body []byte, suffix string) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + suffix + `"`
}

func compressible(ctype string) bool {
	mt, _, _ := mime.ParseMediaType(ctype)
	return strings.HasPrefix(mt, "text/") || mt == "application/javascript" || mt == "application/json" ||
		mt == "image/svg+xml" || mt == "application/manifest+json"
}

func gzipped(body []byte) ([]byte, error) {
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(body); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.TrimSpace(coding) != "*" {
			continue
		}
		for param := range strings.SplitSeq(params, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(param), "=")
			if strings.EqualFold(strings.TrimSpace(name), "q") {
				if q, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil && q <= 0 {
					return false
				}
			}
		}
		return true
	}
	return false
}
