package certs_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/certs"
	"github.com/tether-iot/tether/internal/testkit"
)

func TestParsePEM(t *testing.T) {
	dir := t.TempDir()
	d := writeDev(t, dir)
	caPEM := readFile(t, d.CACert)
	serverPEM := readFile(t, d.ServerCert)
	keyPEM := readFile(t, d.ServerKey)
	badBlock := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	tests := []struct {
		name    string
		data    []byte
		certs   int
		wantErr string
	}{
		{"one certificate parses", serverPEM, 1, ""},
		{"a chain parses in the order given", join(serverPEM, caPEM), 2, ""},
		{"text around the blocks is ignored", join([]byte("subject=CN = localhost\n"), serverPEM, []byte("trailing words\n")), 1, ""},
		{"empty input says the PEM is empty", nil, 0, "no CERTIFICATE block: the PEM is empty"},
		{"text without a block says what was expected", []byte("hello"), 0, `no CERTIFICATE block: expected "-----BEGIN CERTIFICATE-----"`},
		{"a private key is refused and named", keyPEM, 0, "PEM block 1 is a PRIVATE KEY, not a CERTIFICATE"},
		{"a key after the certificate is refused as block 2", join(serverPEM, keyPEM), 0, "PEM block 2 is a PRIVATE KEY"},
		{"a bad second block is named", join(serverPEM, badBlock), 0, "PEM block 2 is not a valid certificate"},
		{"another block type is named", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), 0, `PEM block 1 is "CERTIFICATE REQUEST", not a CERTIFICATE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := certs.ParsePEM(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.certs {
				t.Fatalf("got %d certificates, want %d", len(got), tt.certs)
			}
		})
	}
}

func TestFingerprintIsLowercaseHexSHA256OfTheDER(t *testing.T) {
	d := writeDev(t, t.TempDir())
	c := parseOne(t, d.ServerCert)
	fp := certs.Fingerprint(c)
	if len(fp) != 64 || strings.ToLower(fp) != fp || strings.Trim(fp, "0123456789abcdef") != "" {
		t.Fatalf("fingerprint %q is not 64 lowercase hex digits", fp)
	}
	if other := certs.Fingerprint(parseOne(t, d.CACert)); other == fp {
		t.Fatal("two certificates have one fingerprint")
	}
}

// writeDev is certs.WriteDev for localhost that must succeed.
func writeDev(t *testing.T, dir string) certs.Dev {
	t.Helper()
	d, err := certs.WriteDev(dir, []string{"localhost", "127.0.0.1", "::1"})
	if err != nil {
		t.Fatalf("WriteDev: %v", err)
	}
	return d
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseOne returns the first certificate of a PEM file.
func parseOne(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	cs, err := certs.ParsePEM(readFile(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cs[0]
}

// pool is a cert pool of one PEM file's certificates.
func pool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(readFile(t, path)) {
		t.Fatalf("%s holds no certificate", path)
	}
	return p
}

// tlsServer is a TLS listener on 127.0.0.1:0 that completes each
// handshake, reports the client's certificates and answers "ok".
type tlsServer struct {
	addr  string
	peers chan []*x509.Certificate
}

func startTLSServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), peers: make(chan []*x509.Certificate, 100)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				tc := conn.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				select {
				case s.peers <- tc.ConnectionState().PeerCertificates:
				default:
				}
				io.WriteString(tc, "ok")
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

// handshake connects to s as a client trusting roots (for name
// localhost), presenting client if not nil, and returns the server's
// certificate.
func (s *tlsServer) handshake(t *testing.T, roots *x509.CertPool, client *tls.Certificate) (*x509.Certificate, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", s.addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Reading the server's answer waits for the server's side of the
	// handshake too, client certificate included.
	b, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	if string(b) != "ok" {
		return nil, errors.New("server answered " + string(b))
	}
	return conn.ConnectionState().PeerCertificates[0], nil
}

func newLogger() (*slog.Logger, *testkit.Buffer) {
	var b testkit.Buffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// copyFile copies src over dst, keeping nothing of dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, readFile(t, src), 0o600); err != nil {
		t.Fatal(err)
	}
}
