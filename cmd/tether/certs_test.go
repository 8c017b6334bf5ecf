// This file is in package main, not main_test like the others, because
// it drives run, the command line without the process, which is not
// exported; building the binary for a command that only writes files
// would be slower and test no more.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCertsCmd runs `tether args…` and returns its exit code and output.
func runCertsCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(string) string { return "" }
	code := run(context.Background(), args, getenv, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCertsDevWritesTheFilesAndSaysWhatNext(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	code, stdout, stderr := runCertsCmd(t, "certs", "dev", "--dir", dir)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	t.Run("the four files exist and the keys are 0600", func(t *testing.T) {
		for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "server.pem": 0o644, "server-key.pem": 0o600} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
			}
		}
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
			t.Errorf("the server pair does not load: %v", err)
		}
	})
	t.Run("the output gives the commands to paste next", func(t *testing.T) {
		for _, want := range []string{
			"tether serve --tls-cert-file " + filepath.Join(dir, "server.pem") + " --tls-key-file " + filepath.Join(dir, "server-key.pem"),
			"TETHER_TLS_CERT_FILE",
			"curl --cacert " + filepath.Join(dir, "ca.pem") + " https://localhost:8443/healthz",
			"mosquitto_pub --cafile " + filepath.Join(dir, "ca.pem") + " -h localhost -p 8883",
			"tether certs device --id thermostat-1 --dir " + dir,
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})
	t.Run("a second run says the CA was reused", func(t *testing.T) {
		code, stdout, stderr := runCertsCmd(t, "certs", "dev", "--dir", dir, "--host", "localhost,192.0.2.7")
		if code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "signed by the development CA already there") || !strings.Contains(stdout, "for localhost, 192.0.2.7,") {
			t.Errorf("output:\n%s", stdout)
		}
	})
	t.Run("a device certificate is written and its registration shown", func(t *testing.T) {
		code, stdout, stderr := runCertsCmd(t, "certs", "device", "--id", "sensor-1", "--dir", dir)
		if code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		if fi, err := os.Stat(filepath.Join(dir, "sensor-1-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("sensor-1-key.pem: mode %v, %v", fi.Mode().Perm(), err)
		}
		cert, key := filepath.Join(dir, "sensor-1.pem"), filepath.Join(dir, "sensor-1-key.pem")
		for _, want := range []string{
			"https://localhost:8443/api/v1/devices/sensor-1/certificates -d '{\"pem\":\"-----BEGIN CERTIFICATE-----\\n",
			"curl --cacert " + filepath.Join(dir, "ca.pem") + " --cert " + cert + " --key " + key + " -H 'Content-Type: application/json' https://localhost:8443/api/v1/ingest -d '{\"temp\":21.5}'",
			"mosquitto_pub --cafile " + filepath.Join(dir, "ca.pem") + " --cert " + cert + " --key " + key + " -h localhost -p 8883 -t devices/sensor-1/telemetry",
			"Fingerprint (SHA-256): ",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})
}

func TestCertsCommandLineMistakes(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		args       []string
		code       int
		wantStderr string
	}{
		{"no subcommand exits 2 with usage", []string{"certs"}, 2, "tether certs dev [--dir certs]"},
		{"a bad subcommand exits 2 with usage", []string{"certs", "bogus"}, 2, "tether certs: unknown command \"bogus\"\n\nUsage:\n  tether certs dev"},
		{"an unknown flag exits 2 with usage", []string{"certs", "dev", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"a stray argument exits 2", []string{"certs", "dev", "--dir", dir, "extra"}, 2, `unexpected argument "extra"`},
		{"device without --id exits 2", []string{"certs", "device", "--dir", dir}, 2, "--id is required"},
		{"an empty --host exits 2", []string{"certs", "dev", "--dir", dir, "--host", ","}, 2, "names no host"},
		{"a host with a port exits 1 naming it", []string{"certs", "dev", "--dir", dir, "--host", "localhost:8443"}, 1, `tether certs dev: host "localhost:8443" is not a DNS name`},
		{"a device without a CA exits 1 saying how to make one", []string{"certs", "device", "--id", "lamp", "--dir", dir}, 1, "tether certs device: no dev CA in " + dir + ": write one first with tether certs dev --dir " + dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCertsCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout is not empty:\n%s", stdout)
			}
		})
	}
	t.Run("help prints usage to stdout and exits 0", func(t *testing.T) {
		code, stdout, _ := runCertsCmd(t, "certs", "help")
		if code != 0 || !strings.Contains(stdout, "tether certs device --id ID") {
			t.Fatalf("exit %d, stdout:\n%s", code, stdout)
		}
	})
}

func TestCertsShellQuote(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"a plain path is left alone", "certs/ca.pem", "certs/ca.pem"},
		{"a path with a space is quoted", "my certs/ca.pem", "'my certs/ca.pem'"},
		{"a quote in a path is escaped", "it's/ca.pem", `'it'\''s/ca.pem'`},
		{"a dollar sign is quoted", "$HOME/ca.pem", "'$HOME/ca.pem'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shellQuote(tt.in); got != tt.want {
				t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}
