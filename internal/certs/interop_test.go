package certs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/certs"
	"github.com/tether-iot/tether/internal/testkit"
)

// runTool runs a program with a timeout and returns its combined output.
func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func TestCurlTrustsTheDevCAAndPresentsADeviceCertificate(t *testing.T) {
	curl := testkit.Tool(t, "curl", "curl")
	dir := t.TempDir()
	d := writeDev(t, dir)
	dev, err := certs.WriteDevice(dir, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := certs.NewReloader(d.ServerCert, d.ServerKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	// An HTTPS server as the node runs it: ServeTLS with ServerConfig.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: certs.ServerConfig(r),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if cs := r.TLS.PeerCertificates; len(cs) > 0 {
				fmt.Fprintf(w, "device %s", certs.Fingerprint(cs[0]))
				return
			}
			fmt.Fprint(w, "anonymous")
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// The refused curl makes the server log a handshake error.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port
	localhost := fmt.Sprintf("https://localhost:%d/", port)
	// --resolve keeps the name localhost (checked against the certificate)
	// but connects where the server listens, whatever localhost resolves to.
	resolve := fmt.Sprintf("localhost:%d:127.0.0.1", port)

	tests := []struct {
		name string
		args []string
		want string // "" means curl must fail
	}{
		{"curl --cacert ca.pem verifies localhost", []string{"--cacert", d.CACert, "--resolve", resolve, localhost}, "anonymous"},
		{"curl --cacert ca.pem verifies 127.0.0.1", []string{"--cacert", d.CACert, fmt.Sprintf("https://127.0.0.1:%d/", port)}, "anonymous"},
		{"curl presents the device certificate and key", []string{"--cacert", d.CACert, "--cert", dev.Cert, "--key", dev.Key, "--resolve", resolve, localhost}, "device " + dev.Fingerprint},
		{"curl without ca.pem refuses the server", []string{"--resolve", resolve, localhost}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--silent", "--show-error", "--fail", "--noproxy", "*", "--max-time", "20"}, tt.args...)
			out, err := runTool(t, curl, args...)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("curl succeeded: %s", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if out != tt.want {
				t.Fatalf("curl got %q, want %q", out, tt.want)
			}
		})
	}
}

func TestOpenSSLVerifiesTheDevCertificates(t *testing.T) {
	openssl := testkit.Tool(t, "openssl", "openssl")
	dir := t.TempDir()
	d := writeDev(t, dir)
	dev, err := certs.WriteDevice(dir, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		purpose string
		cert    string
		ok      bool
	}{
		{"server.pem verifies against ca.pem", "", d.ServerCert, true},
		{"server.pem verifies strictly as a TLS server", "sslserver", d.ServerCert, true},
		{"the device certificate verifies against ca.pem", "", dev.Cert, true},
		{"the device certificate verifies strictly as a TLS client", "sslclient", dev.Cert, true},
		{"the device certificate is not a TLS server's", "sslserver", dev.Cert, false},
		{"server.pem is not a TLS client's", "sslclient", d.ServerCert, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"verify", "-CAfile", d.CACert}
			if tt.purpose != "" {
				args = append(args, "-x509_strict", "-purpose", tt.purpose)
			}
			out, err := runTool(t, openssl, append(args, tt.cert)...)
			ok := err == nil && strings.Contains(out, tt.cert+": OK")
			if ok != tt.ok {
				t.Fatalf("openssl %s: ok = %v, want %v\n%s", strings.Join(args, " "), ok, tt.ok, out)
			}
		})
	}
	t.Run("openssl computes the same fingerprint", func(t *testing.T) {
		out, err := runTool(t, openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", dev.Cert)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		_, fp, _ := strings.Cut(strings.TrimSpace(out), "=")
		if got := strings.ToLower(strings.ReplaceAll(fp, ":", "")); got != dev.Fingerprint {
			t.Fatalf("openssl says %s, Fingerprint %s", got, dev.Fingerprint)
		}
	})
	t.Run("openssl reads the keys", func(t *testing.T) {
		for _, k := range []string{d.CAKey, d.ServerKey, dev.Key} {
			if out, err := runTool(t, openssl, "pkey", "-noout", "-in", k); err != nil {
				t.Errorf("%s: %v\n%s", k, err, out)
			}
		}
	})
}
