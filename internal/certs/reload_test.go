package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/certs"
	"github.com/tether-iot/tether/internal/testkit"
)

func TestWatchServesRenewedFilesAndKeepsThePairWhenTheyBreak(t *testing.T) {
	dir := t.TempDir()
	d := writeDev(t, dir)
	log, logs := newLogger()
	r, err := certs.NewReloader(d.ServerCert, d.ServerKey, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := startTLSServer(t, certs.ServerConfig(r))
	roots := pool(t, d.CACert)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Watch(ctx, 10*time.Millisecond) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	serial := func(t *testing.T) *big.Int {
		t.Helper()
		leaf, err := srv.handshake(t, roots, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-srv.peers
		return leaf.SerialNumber
	}
	// waitServed waits until a new handshake sees the certificate in path.
	waitServed := func(t *testing.T, path string) {
		t.Helper()
		want := parseOne(t, path).SerialNumber
		deadline := time.Now().Add(10 * time.Second)
		for serial(t).Cmp(want) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("serial %v was not served within 10s", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("new server files are served without a restart", func(t *testing.T) {
		before := serial(t)
		writeDev(t, dir)
		waitServed(t, d.ServerCert)
		if serial(t).Cmp(before) == 0 {
			t.Fatal("the serial did not change")
		}
		fp := certs.Fingerprint(parseOne(t, d.ServerCert))
		waitLog(t, logs, "fingerprint="+fp)
		if !strings.Contains(logs.String(), `msg="TLS certificate loaded"`) || !strings.Contains(logs.String(), "not_after=") {
			t.Errorf("the reload was not logged with its not-after:\n%s", logs)
		}
	})
	errors := func() int { return strings.Count(logs.String(), "level=ERROR") }
	errorsBefore := errors()
	t.Run("a broken certificate file is logged and the previous pair served", func(t *testing.T) {
		before := serial(t)
		replaceFile(t, d.ServerCert, []byte("half a certif"))
		waitFor(t, "an error logged", func() bool { return errors() > errorsBefore })
		if !strings.Contains(logs.String(), "TLS certificate file "+d.ServerCert+": no CERTIFICATE block") {
			t.Errorf("the error does not name %s:\n%s", d.ServerCert, logs)
		}
		if got := serial(t); got.Cmp(before) != 0 {
			t.Fatalf("serving serial %v, want the previous %v", got, before)
		}
	})
	t.Run("the error is logged once, not on every poll", func(t *testing.T) {
		time.Sleep(100 * time.Millisecond) // ten polls
		if n := errors() - errorsBefore; n != 1 {
			t.Errorf("%d errors logged, want 1:\n%s", n, logs)
		}
	})
	t.Run("fixed files are served again", func(t *testing.T) {
		writeDev(t, dir)
		waitServed(t, d.ServerCert)
	})
	t.Run("the logs hold no key material", func(t *testing.T) {
		if strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Errorf("a key was logged:\n%s", logs)
		}
	})
}

func TestReloadKeepsThePreviousPairWhenTheNewOneDoesNotLoad(t *testing.T) {
	dir := t.TempDir()
	d := writeDev(t, dir)
	dev, err := certs.WriteDevice(dir, "lamp")
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger()
	r, err := certs.NewReloader(d.ServerCert, d.ServerKey, log)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.Certificate()

	copyFile(t, dev.Key, d.ServerKey) // a key, but not server.pem's
	err = r.Reload()
	if err == nil || !strings.Contains(err.Error(), d.ServerKey+" is not the key of the certificate in "+d.ServerCert) {
		t.Fatalf("Reload: %v, want it to name both files", err)
	}
	if now, _ := r.Certificate(); now != before {
		t.Fatal("Certificate changed after a failed reload")
	}
	if now, _ := r.GetCertificate(nil); now != before {
		t.Fatal("GetCertificate changed after a failed reload")
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "serving="+certs.Fingerprint(before.Leaf)) {
		t.Errorf("the failure was not logged with the pair still served:\n%s", logs)
	}
	// Watch has nothing new to say about files Reload has refused.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	r.Watch(ctx, 5*time.Millisecond)
	cancel()
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, logs)
	}

	writeDev(t, dir)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	after, _ := r.Certificate()
	if got, want := certs.Fingerprint(after.Leaf), certs.Fingerprint(parseOne(t, d.ServerCert)); got != want {
		t.Fatalf("serving %s after Reload, want %s", got, want)
	}
}

func TestNewReloaderNamesTheFileToFix(t *testing.T) {
	d := writeDev(t, t.TempDir())
	other := writeDev(t, t.TempDir())
	dir := t.TempDir()
	write := func(name string, parts ...string) string {
		path := filepath.Join(dir, name)
		var b []byte
		for _, p := range parts {
			b = append(b, readFile(t, p)...)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	encrypted := filepath.Join(dir, "encrypted-key.pem")
	os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}}), 0o600)
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name      string
		cert, key string
		wantErr   string // "" loads
	}{
		{"the written pair loads", d.ServerCert, d.ServerKey, ""},
		{"a chain with its CA after the server certificate loads", write("chain.pem", d.ServerCert, d.CACert), d.ServerKey, ""},
		{"a missing certificate file is named", missing, d.ServerKey, "read TLS certificate: open " + missing},
		{"a missing key file is named", d.ServerCert, missing, "read TLS key: open " + missing},
		{"a key in place of the certificate is named", d.ServerKey, d.ServerKey, "TLS certificate file " + d.ServerKey + ": PEM block 1 is a PRIVATE KEY"},
		{"a certificate in place of the key is named", d.ServerCert, d.ServerCert, "TLS key file " + d.ServerCert + ": no PRIVATE KEY block: this is a certificate"},
		{"another certificate's key is named with both files", d.ServerCert, other.ServerKey, "TLS key file " + other.ServerKey + " is not the key of the certificate in " + d.ServerCert},
		{"a chain in the wrong order says the server certificate comes first", write("backwards.pem", d.CACert, d.ServerCert), d.ServerKey, "the server certificate must come first"},
		{"an encrypted key says to decrypt it", d.ServerCert, encrypted, "TLS key file " + encrypted + ": the private key is encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := certs.NewReloader(tt.cert, tt.key, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				c, err := r.Certificate()
				if err != nil || c.Leaf == nil || len(c.Certificate) < 1 {
					t.Fatalf("Certificate: %v, %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	t.Run("a chain is served whole", func(t *testing.T) {
		r, err := certs.NewReloader(filepath.Join(dir, "chain.pem"), d.ServerKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := r.Certificate(); len(c.Certificate) != 2 {
			t.Fatalf("serving %d certificates, want 2", len(c.Certificate))
		}
	})
}

func TestNewReloaderWarnsOfAnExpiredCertificate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "old"},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "old.pem"), filepath.Join(dir, "old-key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	log, logs := newLogger()
	if _, err := certs.NewReloader(certFile, keyFile, log); err != nil {
		t.Fatalf("an expired certificate is the operator's choice to serve, but: %v", err)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="TLS certificate has expired`) {
		t.Errorf("no warning:\n%s", logs)
	}
}

func TestWatchWithoutAnIntervalReturnsAtOnce(t *testing.T) {
	d := writeDev(t, t.TempDir())
	r, err := certs.NewReloader(d.ServerCert, d.ServerKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		r.Watch(context.Background(), 0)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch with interval 0 did not return")
	}
}

func TestServerConfigRequestsButDoesNotVerifyClientCertificates(t *testing.T) {
	d := writeDev(t, t.TempDir())
	r, err := certs.NewReloader(d.ServerCert, d.ServerKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ServerConfig(r)
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequestClientCert || cfg.ClientCAs != nil || cfg.GetCertificate == nil {
		t.Fatalf("MinVersion %x, ClientAuth %v, ClientCAs %v", cfg.MinVersion, cfg.ClientAuth, cfg.ClientCAs)
	}
	if certs.ServerConfig(r) == cfg {
		t.Fatal("ServerConfig returned a shared config")
	}
}

// waitLog waits until the logs contain s.
func waitLog(t *testing.T, logs *testkit.Buffer, s string) {
	t.Helper()
	waitFor(t, "the logs to say "+s, func() bool { return strings.Contains(logs.String(), s) })
}

// waitFor waits up to 10 seconds for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// replaceFile replaces path at once, as a careful renewal does, so that
// a poll sees the old contents or the new, never an empty file.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
