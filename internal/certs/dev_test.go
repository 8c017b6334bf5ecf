package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/certs"
)

func TestDevCertificatesServeTLSAndIdentifyADevice(t *testing.T) {
	dir := t.TempDir()
	d, err := certs.WriteDev(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := certs.NewReloader(d.ServerCert, d.ServerKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := startTLSServer(t, certs.ServerConfig(r))
	roots := pool(t, d.CACert)
	dev, err := certs.WriteDevice(dir, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.LoadX509KeyPair(dev.Cert, dev.Key)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a client trusting ca.pem completes a handshake and sees server.pem", func(t *testing.T) {
		leaf, err := srv.handshake(t, roots, &client)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := certs.Fingerprint(leaf), certs.Fingerprint(parseOne(t, d.ServerCert)); got != want {
			t.Fatalf("server presented %s, want server.pem %s", got, want)
		}
	})
	t.Run("the device certificate the server received chains to ca.pem for client auth", func(t *testing.T) {
		peers := <-srv.peers
		if len(peers) != 1 {
			t.Fatalf("server received %d client certificates, want 1", len(peers))
		}
		c := peers[0]
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("verify against ca.pem: %v", err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
			t.Error("a device certificate verifies for server auth too")
		}
		if c.Subject.CommonName != "sensor-1" {
			t.Errorf("CN = %q, want sensor-1", c.Subject.CommonName)
		}
		if len(c.URIs) != 1 || c.URIs[0].String() != "urn:tether:device:sensor-1" {
			t.Errorf("URIs = %v, want [urn:tether:device:sensor-1]", c.URIs)
		}
		if got := certs.Fingerprint(c); got != dev.Fingerprint {
			t.Errorf("fingerprint = %s, WriteDevice said %s", got, dev.Fingerprint)
		}
	})
	t.Run("a client without a certificate is let in to authenticate otherwise", func(t *testing.T) {
		if _, err := srv.handshake(t, roots, nil); err != nil {
			t.Fatal(err)
		}
		if peers := <-srv.peers; len(peers) != 0 {
			t.Fatalf("server received %d client certificates, want none", len(peers))
		}
	})
	t.Run("a certificate of another CA gets through TLS, for the registry to judge", func(t *testing.T) {
		other := t.TempDir()
		writeDev(t, other)
		stranger, err := certs.WriteDevice(other, "stranger")
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(stranger.Cert, stranger.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.handshake(t, roots, &pair); err != nil {
			t.Fatal(err)
		}
		peers := <-srv.peers
		if len(peers) != 1 {
			t.Fatalf("server received %d client certificates, want 1", len(peers))
		}
		if _, err := peers[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			t.Fatal("another CA's certificate verifies against ca.pem")
		}
	})
	t.Run("a client that does not trust ca.pem refuses the server", func(t *testing.T) {
		if _, err := srv.handshake(t, x509.NewCertPool(), nil); err == nil {
			t.Fatal("handshake succeeded without trusting the dev CA")
		}
	})
	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", srv.addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
}

func TestWriteDevWritesWhatANewcomerNeeds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	d, err := certs.WriteDev(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, server := parseOne(t, d.CACert), parseOne(t, d.ServerCert)

	t.Run("the files are the four named, in dir", func(t *testing.T) {
		for path, want := range map[string]string{d.CACert: "ca.pem", d.CAKey: "ca-key.pem", d.ServerCert: "server.pem", d.ServerKey: "server-key.pem"} {
			if path != filepath.Join(dir, want) {
				t.Errorf("path %s, want %s", path, filepath.Join(dir, want))
			}
		}
		if !d.NewCA {
			t.Error("NewCA is false for a new directory")
		}
	})
	t.Run("keys are readable by their owner only and certificates by all", func(t *testing.T) {
		for path, want := range map[string]os.FileMode{d.CAKey: 0o600, d.ServerKey: 0o600, d.CACert: 0o644, d.ServerCert: 0o644} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
			}
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("made dir with mode %v (%v), want 0700", fi.Mode().Perm(), err)
		}
	})
	t.Run("no temporary files are left behind", func(t *testing.T) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 4 {
			t.Errorf("dir holds %d files, want 4", len(entries))
		}
	})
	t.Run("keys are ECDSA P-256", func(t *testing.T) {
		for _, c := range []*x509.Certificate{ca, server} {
			k, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || k.Curve != elliptic.P256() {
				t.Errorf("%s has a %T key, want ECDSA P-256", c.Subject, c.PublicKey)
			}
		}
	})
	t.Run("the CA is a CA for 10 years and signs leaves only", func(t *testing.T) {
		if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
			t.Errorf("CA: IsCA %v, key usage %v, max path %d", ca.IsCA, ca.KeyUsage, ca.MaxPathLen)
		}
		if years := time.Until(ca.NotAfter).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
			t.Errorf("CA is valid for %.1f more years, want 10", years)
		}
	})
	t.Run("the server certificate is for server auth for at most 398 days", func(t *testing.T) {
		if server.IsCA {
			t.Error("server certificate is a CA")
		}
		if !slices.Equal(server.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
			t.Errorf("ExtKeyUsage = %v, want ServerAuth", server.ExtKeyUsage)
		}
		if days := server.NotAfter.Sub(server.NotBefore).Hours() / 24; days > 398 || days < 364 {
			t.Errorf("server certificate is valid for %.1f days, want a year", days)
		}
		if !d.NotAfter.Equal(server.NotAfter) {
			t.Errorf("Dev.NotAfter = %v, certificate says %v", d.NotAfter, server.NotAfter)
		}
	})
	t.Run("the server certificate is for localhost, both loopbacks and the hostname", func(t *testing.T) {
		for _, h := range certs.DefaultHosts() {
			if err := server.VerifyHostname(h); err != nil {
				t.Errorf("%s: %v", h, err)
			}
		}
		if !slices.Contains(server.DNSNames, "localhost") || len(server.IPAddresses) != 2 ||
			!server.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !server.IPAddresses[1].Equal(net.IPv6loopback) {
			t.Errorf("DNS names %v, IP addresses %v", server.DNSNames, server.IPAddresses)
		}
		if _, err := server.Verify(x509.VerifyOptions{Roots: pool(t, d.CACert), DNSName: "localhost"}); err != nil {
			t.Errorf("verify against ca.pem: %v", err)
		}
	})
	t.Run("Dev names the CA by its fingerprint", func(t *testing.T) {
		if d.CAFingerprint != certs.Fingerprint(ca) {
			t.Errorf("CAFingerprint = %s, want %s", d.CAFingerprint, certs.Fingerprint(ca))
		}
	})
}

func TestWriteDevTakesTheHostsGiven(t *testing.T) {
	d, err := certs.WriteDev(t.TempDir(), []string{"Tether.Example", " 10.0.0.5 ", "*.tether.example", "tether.example", ""})
	if err != nil {
		t.Fatal(err)
	}
	server := parseOne(t, d.ServerCert)
	if want := []string{"tether.example", "*.tether.example"}; !slices.Equal(server.DNSNames, want) {
		t.Errorf("DNS names %v, want %v", server.DNSNames, want)
	}
	if len(server.IPAddresses) != 1 || !server.IPAddresses[0].Equal(net.ParseIP("10.0.0.5")) {
		t.Errorf("IP addresses %v, want [10.0.0.5]", server.IPAddresses)
	}
	if server.Subject.CommonName != "tether.example" {
		t.Errorf("CN = %q, want the first host", server.Subject.CommonName)
	}
	if err := server.VerifyHostname("localhost"); err == nil {
		t.Error("the certificate is for localhost, which was not asked for")
	}
}

func TestWriteDevReusesTheCAAlreadyThere(t *testing.T) {
	dir := t.TempDir()
	first := writeDev(t, dir)
	ca, caKey, server1 := readFile(t, first.CACert), readFile(t, first.CAKey), readFile(t, first.ServerCert)

	second := writeDev(t, dir)
	if second.NewCA {
		t.Error("NewCA is true the second time")
	}
	if !bytes.Equal(readFile(t, second.CACert), ca) || !bytes.Equal(readFile(t, second.CAKey), caKey) {
		t.Fatal("ca.pem or ca-key.pem changed")
	}
	if bytes.Equal(readFile(t, second.ServerCert), server1) {
		t.Fatal("server.pem did not change")
	}
	if _, err := parseOne(t, second.ServerCert).Verify(x509.VerifyOptions{Roots: pool(t, first.CACert), DNSName: "localhost"}); err != nil {
		t.Fatalf("the new server certificate does not chain to the old CA: %v", err)
	}
}

func TestWriteDevRefusesWhatItCannotUse(t *testing.T) {
	// other is a complete dev directory to borrow wrong files from.
	other := writeDev(t, t.TempDir())
	tests := []struct {
		name    string
		hosts   []string
		setup   func(t *testing.T, dir string)
		wantErr string
	}{
		{name: "a host with a port is not a host", hosts: []string{"localhost:8443"}, wantErr: `host "localhost:8443" is not a DNS name or an IP address`},
		{name: "a URL is not a host", hosts: []string{"https://example.com"}, wantErr: "leave out schemes and ports"},
		{name: "a name with an underscore is not a host", hosts: []string{"my_host"}, wantErr: `host "my_host"`},
		{name: "only empty hosts are no hosts", hosts: []string{" ", ""}, wantErr: "no host names"},
		{
			name:    "a CA certificate without its key cannot sign",
			setup:   func(t *testing.T, dir string) { copyFile(t, other.CACert, filepath.Join(dir, "ca.pem")) },
			wantErr: "ca.pem exists without ca-key.pem",
		},
		{
			name:    "a CA key without its certificate is not silently replaced",
			setup:   func(t *testing.T, dir string) { copyFile(t, other.CAKey, filepath.Join(dir, "ca-key.pem")) },
			wantErr: "ca-key.pem exists without ca.pem",
		},
		{
			name: "a server certificate in place of the CA is not a CA",
			setup: func(t *testing.T, dir string) {
				copyFile(t, other.ServerCert, filepath.Join(dir, "ca.pem"))
				copyFile(t, other.ServerKey, filepath.Join(dir, "ca-key.pem"))
			},
			wantErr: "ca.pem is not a CA certificate",
		},
		{
			name: "a CA key of another CA is named",
			setup: func(t *testing.T, dir string) {
				copyFile(t, other.CACert, filepath.Join(dir, "ca.pem"))
				copyFile(t, other.ServerKey, filepath.Join(dir, "ca-key.pem"))
			},
			wantErr: "ca-key.pem is not the key of",
		},
		{
			name: "a garbled CA certificate is named",
			setup: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("garbage"), 0o644)
				copyFile(t, other.CAKey, filepath.Join(dir, "ca-key.pem"))
			},
			wantErr: "ca.pem: no CERTIFICATE block",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			hosts := tt.hosts
			if hosts == nil {
				hosts = []string{"localhost"}
			}
			_, err := certs.WriteDev(dir, hosts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Join(dir, "server.pem")); err == nil {
				t.Error("server.pem was written anyway")
			}
		})
	}
}

func TestWriteDeviceWritesAClientCertificate(t *testing.T) {
	dir := t.TempDir()
	d := writeDev(t, dir)
	dev, err := certs.WriteDevice(dir, "thermostat_1")
	if err != nil {
		t.Fatal(err)
	}
	c := parseOne(t, dev.Cert)

	t.Run("the files are <id>.pem and <id>-key.pem in dir", func(t *testing.T) {
		if dev.Cert != filepath.Join(dir, "thermostat_1.pem") || dev.Key != filepath.Join(dir, "thermostat_1-key.pem") {
			t.Errorf("paths %s, %s", dev.Cert, dev.Key)
		}
		if fi, err := os.Stat(dev.Key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
		if _, err := tls.LoadX509KeyPair(dev.Cert, dev.Key); err != nil {
			t.Errorf("the pair does not load: %v", err)
		}
	})
	t.Run("it is for client auth, named by CN and URI, for a year", func(t *testing.T) {
		if c.Subject.CommonName != "thermostat_1" || len(c.URIs) != 1 || c.URIs[0].String() != certs.DeviceURIPrefix+"thermostat_1" {
			t.Errorf("CN %q, URIs %v", c.Subject.CommonName, c.URIs)
		}
		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.IsCA {
			t.Errorf("ExtKeyUsage %v, IsCA %v", c.ExtKeyUsage, c.IsCA)
		}
		if days := c.NotAfter.Sub(c.NotBefore).Hours() / 24; days < 364 || days > 367 {
			t.Errorf("valid for %.1f days, want a year", days)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool(t, d.CACert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("does not chain to ca.pem: %v", err)
		}
	})
	t.Run("the fingerprint returned is the certificate's", func(t *testing.T) {
		if dev.Fingerprint != certs.Fingerprint(c) {
			t.Errorf("fingerprint %s, want %s", dev.Fingerprint, certs.Fingerprint(c))
		}
	})
	t.Run("writing it again makes a new certificate", func(t *testing.T) {
		again, err := certs.WriteDevice(dir, "thermostat_1")
		if err != nil {
			t.Fatal(err)
		}
		if again.Fingerprint == dev.Fingerprint {
			t.Error("the same certificate was written twice")
		}
	})
}

func TestWriteDeviceRefusesWhatItCannotWrite(t *testing.T) {
	dir := t.TempDir()
	writeDev(t, dir)
	if _, err := certs.WriteDevice(dir, "lamp"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, id, wantErr string
	}{
		{"an ID with a slash is not a device ID", dir, "a/b", `device ID "a/b": want 1 to 64 letters, digits`},
		{"an empty ID is not a device ID", dir, "", `device ID ""`},
		{"an ID of 65 characters is too long", dir, strings.Repeat("a", 65), "want 1 to 64"},
		{"the ID ca would overwrite the CA", dir, "ca", "would overwrite the dev ca.pem"},
		{"the ID CA would overwrite the CA on a case-insensitive file system", dir, "CA", "would overwrite the dev ca.pem"},
		{"the ID server-key would overwrite the server key", dir, "server-key", "would overwrite the dev server-key.pem"},
		{"the ID lamp-key would overwrite lamp's key", dir, "lamp-key", "lamp-key.pem exists and is not a certificate"},
		{"a directory without a CA says how to make one", t.TempDir(), "lamp", "write one first with tether certs dev --dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.WriteDevice(tt.dir, tt.id)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "lamp.pem"), filepath.Join(dir, "lamp-key.pem")); err != nil {
		t.Fatalf("lamp's pair was damaged: %v", err)
	}
}
