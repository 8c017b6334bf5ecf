package certs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// expiresSoon is how close to its not-after a loaded certificate makes
// the Reloader warn.
const expiresSoon = 14 * 24 * time.Hour

// Reloader serves the server certificate and key from their files and
// reloads them without a restart, on [Reloader.Reload] (the node calls it
// on SIGHUP) or when [Reloader.Watch] sees the files change. A pair that
// does not load is refused and the previous one goes on being served, so
// a botched renewal never takes the listeners down.
//
// It is safe for concurrent use; handshakes read the current pair
// without a lock.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	cur atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // serialises loads, so the last files read are the ones served
	seen    string     // what Watch last acted on: the files' hash, or the error reading them
	pending error      // why seen did not load, until Watch logs it
}

// NewReloader loads certFile (the PEM server certificate, followed by any
// intermediates) and keyFile (its PEM private key). It fails, naming the
// file to fix, if either does not load or the key is not the
// certificate's. log may be nil.
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	certPEM, keyPEM, err := r.read()
	if err != nil {
		return nil, err
	}
	c, err := r.load(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	r.seen = hashOf(certPEM, keyPEM)
	r.serve(c)
	return r, nil
}

// GetCertificate returns the current pair whatever the client asked
// for; it is [tls.Config.GetCertificate].
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Certificate returns the current pair, for TLS stacks with their own
// configuration type (DTLS). Call it per handshake, not once, to see
// reloads.
func (r *Reloader) Certificate() (*tls.Certificate, error) {
	c := r.cur.Load()
	if c == nil {
		return nil, fmt.Errorf("no TLS certificate loaded from %s", r.certFile)
	}
	return c, nil
}

// Reload reads both files again and serves the new pair. On failure it
// keeps serving the previous pair, logs at error level and returns the
// error; on success it logs the new certificate at info. Callers need not
// log the outcome again.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Watch is told what was read, so that it does not log it again.
	r.pending = nil
	certPEM, keyPEM, err := r.read()
	if err != nil {
		r.seen = "error: " + err.Error()
	} else {
		r.seen = hashOf(certPEM, keyPEM)
		err = r.apply(certPEM, keyPEM)
	}
	if err != nil {
		r.refused(err)
	}
	return err
}

// Watch polls both files every interval and reloads them when their
// contents change, until ctx is done. It compares contents, not
// modification times, so a renewal written within one clock tick, or one
// that keeps the old time, is still seen.
//
// A renewal writes two files, and a poll between them sees a key that is
// not the certificate's. So a change that does not load is logged only if
// the files stay so for a whole interval, and then once, not on every
// poll; the pair is tried again whenever the files change. An interval
// ≤ 0 turns polling off and Watch returns at once.
func (r *Reloader) Watch(ctx context.Context, every time.Duration) {
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.poll()
		}
	}
}

// poll is one step of Watch.
func (r *Reloader) poll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	certPEM, keyPEM, err := r.read()
	state := hashOf(certPEM, keyPEM)
	if err != nil {
		state = "error: " + err.Error()
	}
	if state == r.seen {
		if r.pending != nil {
			r.refused(r.pending)
			r.pending = nil
		}
		return
	}
	r.seen = state
	if err == nil {
		err = r.apply(certPEM, keyPEM)
	}
	r.pending = err
}

// apply loads a pair and serves it; r.mu is held.
func (r *Reloader) apply(certPEM, keyPEM []byte) error {
	c, err := r.load(certPEM, keyPEM)
	if err != nil {
		return err
	}
	r.serve(c)
	return nil
}

// refused logs a pair that did not load.
func (r *Reloader) refused(err error) {
	attrs := []any{"err", err}
	if old := r.cur.Load(); old != nil {
		attrs = append(attrs, "serving", Fingerprint(old.Leaf))
	}
	r.log.Error("TLS certificate not reloaded; still serving the previous one", attrs...)
}

// serve makes c the pair handshakes get and logs it.
func (r *Reloader) serve(c *tls.Certificate) {
	r.cur.Store(c)
	leaf := c.Leaf
	attrs := []any{
		"file", r.certFile,
		"subject", leaf.Subject.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"fingerprint", Fingerprint(leaf),
	}
	r.log.Info("TLS certificate loaded", attrs...)
	switch now := r.now(); {
	case now.After(leaf.NotAfter):
		r.log.Warn("TLS certificate has expired; clients will refuse it", attrs...)
	case now.Before(leaf.NotBefore):
		r.log.Warn("TLS certificate is not valid yet; clients will refuse it", append(attrs, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339))...)
	case leaf.NotAfter.Sub(now) < expiresSoon:
		r.log.Warn("TLS certificate expires soon", attrs...)
	}
}

// read reads both files.
func (r *Reloader) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(r.certFile); err != nil {
		return nil, nil, fmt.Errorf("read TLS certificate: %w", err)
	}
	if keyPEM, err = os.ReadFile(r.keyFile); err != nil {
		return nil, nil, fmt.Errorf("read TLS key: %w", err)
	}
	return certPEM, keyPEM, nil
}

// load makes a pair of the two files' contents; its errors name the file
// to fix.
func (r *Reloader) load(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	chain, err := ParsePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate file %s: %w", r.certFile, err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS key file %s: %w", r.keyFile, err)
	}
	if !keyMatches(chain[0], key) {
		for _, c := range chain[1:] {
			if keyMatches(c, key) {
				return nil, fmt.Errorf("TLS certificate file %s: the server certificate must come first, before the CA certificates", r.certFile)
			}
		}
		return nil, fmt.Errorf("TLS key file %s is not the key of the certificate in %s (was one replaced without the other?)", r.keyFile, r.certFile)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// hashOf names the contents of both files.
func hashOf(certPEM, keyPEM []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d:", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	return string(h.Sum(nil))
}

// ServerConfig returns the tls.Config for every TLS listener (MQTTS, WSS,
// HTTPS): TLS 1.2 or later, the certificate from r, and client
// certificates requested but not verified. The trusted CAs are per tenant
// and change at run time, so the registry verifies a presented chain
// against them; crypto/tls still checks that the client holds the key of
// the certificate it presents. A client without a certificate is let in
// to authenticate otherwise (a token, an API key).
//
// Each call returns a new config that the caller may change (an HTTP
// server adds its NextProtos).
func ServerConfig(r *Reloader) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
	}
}
