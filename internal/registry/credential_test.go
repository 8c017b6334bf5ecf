package registry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/certs"
)

// pki issues test certificates.
type pki struct {
	t      *testing.T
	serial int64
}

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func (p *pki) pem(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// issue signs tmpl with parent (self-signed when parent is nil).
func (p *pki) issue(tmpl *x509.Certificate, parent *issued) issued {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return issued{c, key}
}

func (p *pki) ca(name string, parent *issued) issued {
	return p.issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, parent)
}

func (p *pki) client(cn string, parent *issued, edit func(*x509.Certificate)) issued {
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	return p.issue(tmpl, parent)
}

func TestAuthenticateCertificate(t *testing.T) {
	ctx := context.Background()
	reg, ev, _ := newRegistry(t)
	if _, err := reg.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"pump-1", "pump-2", "pump-3"} {
		if _, _, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	p := &pki{t: t}
	trusted := p.ca("trusted root", nil)
	inter := p.ca("trusted intermediate", &trusted)
	stranger := p.ca("untrusted root", nil)
	if _, err := reg.AddCA(ctx, tether.DefaultTenantID, p.pem(trusted.cert)); err != nil {
		t.Fatalf("AddCA: %v", err)
	}
	selfSigned := p.client("anything", nil, nil)
	if _, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "pump-1", p.pem(selfSigned.cert)); err != nil {
		t.Fatalf("AddCertificate: %v", err)
	}
	revoked := p.client("pump-3", &trusted, nil)
	if _, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "pump-3", p.pem(revoked.cert)); err != nil {
		t.Fatal(err)
	}
	if err := reg.RevokeCertificate(ctx, tether.DefaultTenantID, "pump-3", certs.Fingerprint(revoked.cert)); err != nil {
		t.Fatalf("RevokeCertificate: %v", err)
	}

	tests := []struct {
		name  string
		chain []*x509.Certificate
		want  string // device ID; "" for refused
	}{
		{"a registered self-signed certificate is its device", []*x509.Certificate{selfSigned.cert}, "pump-1"},
		{"a certificate of the trusted CA naming a device by CN is that device",
			[]*x509.Certificate{p.client("pump-2", &trusted, nil).cert}, "pump-2"},
		{"a SAN URI names the device before the CN",
			[]*x509.Certificate{p.client("not-a-device", &trusted, func(c *x509.Certificate) {
				c.URIs = []*url.URL{{Scheme: "urn", Opaque: "tether:device:pump-2"}}
			}).cert}, "pump-2"},
		{"a chain through an intermediate the client sends is verified",
			[]*x509.Certificate{p.client("pump-2", &inter, nil).cert, inter.cert}, "pump-2"},
		{"a chain missing its intermediate is refused",
			[]*x509.Certificate{p.client("pump-2", &inter, nil).cert}, ""},
		{"an untrusted CA's certificate is refused",
			[]*x509.Certificate{p.client("pump-2", &stranger, nil).cert}, ""},
		{"an unregistered self-signed certificate naming a device is refused",
			[]*x509.Certificate{p.client("pump-2", nil, nil).cert}, ""},
		{"a certificate naming no device is refused",
			[]*x509.Certificate{p.client("ghost", &trusted, nil).cert}, ""},
		{"an expired certificate is refused",
			[]*x509.Certificate{p.client("pump-2", &trusted, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
			}).cert}, ""},
		{"a certificate not for client authentication is refused",
			[]*x509.Certificate{p.client("pump-2", &trusted, func(c *x509.Certificate) {
				c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			}).cert}, ""},
		{"a revoked certificate is refused although the trusted CA signed it", []*x509.Certificate{revoked.cert}, ""},
		{"no certificate is refused", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := reg.AuthenticateCertificate(ctx, tt.chain)
			switch {
			case tt.want == "" && tether.ErrorCode(err) != tether.EUNAUTHORIZED:
				t.Errorf("got %v, %v; want EUNAUTHORIZED", d, err)
			case tt.want != "" && (err != nil || d.ID != tt.want):
				t.Errorf("got %v, %v; want device %s", d, err, tt.want)
			}
		})
	}
	t.Run("revoking announces it so the device's connections are cut", func(t *testing.T) {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		if !slices.Contains(ev.got, "default/pump-3/certificate_revoked") {
			t.Errorf("events %v", ev.got)
		}
	})
	t.Run("a CA trusted by another tenant does not authenticate this tenant's devices", func(t *testing.T) {
		if err := reg.DeleteCA(ctx, tether.DefaultTenantID, certs.Fingerprint(trusted.cert)); err != nil {
			t.Fatal(err)
		}
		if d, err := reg.AuthenticateCertificate(ctx, []*x509.Certificate{p.client("pump-2", &trusted, nil).cert}); err == nil {
			t.Errorf("authenticated %s after the CA was deleted", d.ID)
		}
	})
}

func TestAddCredentialsRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	reg, _, _ := newRegistry(t)
	if _, err := reg.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{ID: "pump-1"}); err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t}
	leaf := p.client("pump-1", nil, nil)
	expired := p.client("pump-1", nil, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	})
	tests := []struct {
		name string
		add  func() error
		code string
	}{
		{"a CA that is not a CA is refused", func() error {
			_, err := reg.AddCA(ctx, tether.DefaultTenantID, p.pem(leaf.cert))
			return err
		}, tether.EINVALID},
		{"text that is not PEM is refused", func() error {
			_, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "pump-1", "hello")
			return err
		}, tether.EINVALID},
		{"an expired certificate is refused", func() error {
			_, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "pump-1", p.pem(expired.cert))
			return err
		}, tether.EINVALID},
		{"a certificate for an unknown device is refused", func() error {
			_, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "ghost", p.pem(leaf.cert))
			return err
		}, tether.ENOTFOUND},
		{"a certificate registered twice is refused", func() error {
			if _, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "pump-1", p.pem(leaf.cert)); err != nil {
				return err
			}
			_, err := reg.AddCertificate(ctx, tether.DefaultTenantID, "pump-1", p.pem(leaf.cert))
			return err
		}, tether.ECONFLICT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tether.ErrorCode(tt.add()); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
		})
	}
}

func TestDevicePSK(t *testing.T) {
	ctx := context.Background()
	reg, ev, _ := newRegistry(t)
	if _, err := reg.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.CreateDevice(ctx, tether.DefaultTenantID, tether.Device{ID: "valve-1"}); err != nil {
		t.Fatal(err)
	}
	t.Run("a device without a key is refused", func(t *testing.T) {
		if _, _, err := reg.DevicePSK(ctx, "valve-1"); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("err %v", err)
		}
	})
	first, err := reg.RotatePSK(ctx, tether.DefaultTenantID, "valve-1")
	if err != nil || len(first) != 32 {
		t.Fatalf("RotatePSK: %q, %v", first, err)
	}
	t.Run("the handshake gets the key that was shown", func(t *testing.T) {
		d, key, err := reg.DevicePSK(ctx, "valve-1")
		if err != nil || d.ID != "valve-1" || string(key) != first {
			t.Errorf("%v, %q, %v; want %q", d, key, err, first)
		}
	})
	t.Run("rotating gives a new key and the old one stops working", func(t *testing.T) {
		second, err := reg.RotatePSK(ctx, tether.DefaultTenantID, "valve-1")
		if err != nil || second == first {
			t.Fatalf("%q, %v", second, err)
		}
		if _, key, _ := reg.DevicePSK(ctx, "valve-1"); string(key) != second {
			t.Errorf("key %q, want the new %q", key, second)
		}
	})
	t.Run("deleting the key refuses the device", func(t *testing.T) {
		if err := reg.DeletePSK(ctx, tether.DefaultTenantID, "valve-1"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := reg.DevicePSK(ctx, "valve-1"); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("err %v", err)
		}
		ev.mu.Lock()
		defer ev.mu.Unlock()
		if !slices.Contains(ev.got, "default/valve-1/psk_changed") {
			t.Errorf("events %v", ev.got)
		}
	})
	t.Run("an unknown device is refused", func(t *testing.T) {
		if _, _, err := reg.DevicePSK(ctx, "ghost"); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("err %v", err)
		}
	})
}
