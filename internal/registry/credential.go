package registry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/certs"
)

// CredentialStore is the storage of certificates, trusted CAs and
// pre-shared key nonces.
type CredentialStore interface {
	AddCertificate(ctx context.Context, c *tether.Certificate) error
	Certificate(ctx context.Context, fingerprint string) (*tether.Certificate, error)
	Certificates(ctx context.Context, tenantID, deviceID string) ([]*tether.Certificate, error)
	RevokeCertificate(ctx context.Context, tenantID, deviceID, fingerprint string, now time.Time) error
	Revoked(ctx context.Context, fingerprint string) (bool, error)
	AddCA(ctx context.Context, ca *tether.CA) error
	CAs(ctx context.Context, tenantID string) ([]*tether.CA, error)
	DeleteCA(ctx context.Context, tenantID, id string) error
	SetDevicePSKNonce(ctx context.Context, tenantID, id string, nonce int64, now time.Time) error
}

// Lifecycle events of credentials other than the token; each cuts the
// device's connections so that none outlives the credential it used.
const (
	EventCertificateRevoked = "certificate_revoked"
	EventPSKChanged         = "psk_changed"
)

// DeviceURIPrefix starts the SAN URI that names a device in a certificate
// issued by a trusted CA, as an alternative to the common name.
const DeviceURIPrefix = "urn:tether:device:"

var errBadCertificate = tether.Errorf(tether.EUNAUTHORIZED, "the client certificate is not registered, not trusted, expired or revoked")

// AddCertificate registers a device's client certificate, given as PEM.
// Only the certificate is needed, never its key.
func (s *Service) AddCertificate(ctx context.Context, tenant, deviceID, pemText string) (*tether.Certificate, error) {
	chain, err := certs.ParsePEM([]byte(pemText))
	if err != nil {
		return nil, tether.Errorf(tether.EINVALID, "pem: %v", err)
	}
	leaf := chain[0]
	if now := s.now(); now.After(leaf.NotAfter) {
		return nil, tether.Errorf(tether.EINVALID, "the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c := &tether.Certificate{
		Fingerprint: certs.Fingerprint(leaf), TenantID: tenant, DeviceID: deviceID,
		Subject: leaf.Subject.String(), NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(), CreatedAt: s.now(),
	}
	if err := s.creds.AddCertificate(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Certificates returns a device's registered certificates.
func (s *Service) Certificates(ctx context.Context, tenant, deviceID string) ([]*tether.Certificate, error) {
	if _, err := s.store.Device(ctx, tenant, deviceID); err != nil {
		return nil, err
	}
	return s.creds.Certificates(ctx, tenant, deviceID)
}

// RevokeCertificate deletes a device's certificate, refuses it from now
// on (even if a trusted CA signed it) and cuts the device's connections.
func (s *Service) RevokeCertificate(ctx context.Context, tenant, deviceID, fingerprint string) error {
	if err := s.creds.RevokeCertificate(ctx, tenant, deviceID, strings.ToLower(fingerprint), s.now()); err != nil {
		return err
	}
	s.announce(tenant, deviceID, EventCertificateRevoked)
	return nil
}

// AddCA makes a tenant trust a CA certificate, given as PEM, for device
// certificates.
func (s *Service) AddCA(ctx context.Context, tenant, pemText string) (*tether.CA, error) {
	chain, err := certs.ParsePEM([]byte(pemText))
	if err != nil {
		return nil, tether.Errorf(tether.EINVALID, "pem: %v", err)
	}
	if len(chain) != 1 {
		return nil, tether.Errorf(tether.EINVALID, "pem holds %d certificates; send the one CA certificate", len(chain))
	}
	c := chain[0]
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, tether.Errorf(tether.EINVALID, "%s is not a CA certificate (basic constraints CA:TRUE and key usage keyCertSign)", c.Subject)
	}
	ca := &tether.CA{
		ID: certs.Fingerprint(c), TenantID: tenant, Subject: c.Subject.String(), NotAfter: c.NotAfter.UTC(),
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})), CreatedAt: s.now(),
	}
	if err := s.creds.AddCA(ctx, ca); err != nil {
		return nil, err
	}
	return ca, nil
}

// CAs returns the CAs a tenant trusts.
func (s *Service) CAs(ctx context.Context, tenant string) ([]*tether.CA, error) {
	return s.creds.CAs(ctx, tenant)
}

// DeleteCA stops a tenant trusting a CA. Connections already made with
// certificates it signed stay until they end.
func (s *Service) DeleteCA(ctx context.Context, tenant, id string) error {
	return s.creds.DeleteCA(ctx, tenant, strings.ToLower(id))
}

// AuthenticateCertificate returns the device a TLS client certificate
// chain (leaf first, as the client sent it) authenticates. The leaf must
// be within its validity period and not revoked, and either registered
// for a device by fingerprint, or verified (with the intermediates the
// client sent) up to a CA a tenant trusts, for client authentication, and
// name a device of that tenant by common name or SAN URI
// urn:tether:device:<id>. Every failure is the same EUNAUTHORIZED error.
func (s *Service) AuthenticateCertificate(ctx context.Context, chain []*x509.Certificate) (*tether.Device, error) {
	if len(chain) == 0 {
		return nil, errBadCertificate
	}
	leaf, now := chain[0], s.now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, errBadCertificate
	}
	fp := certs.Fingerprint(leaf)
	if revoked, err := s.creds.Revoked(ctx, fp); err != nil {
		return nil, fmt.Errorf("authenticate certificate: %w", err)
	} else if revoked {
		return nil, errBadCertificate
	}
	c, err := s.creds.Certificate(ctx, fp)
	switch tether.ErrorCode(err) {
	case "":
		return s.deviceOf(ctx, c.TenantID, c.DeviceID)
	case tether.ENOTFOUND:
	default:
		return nil, fmt.Errorf("authenticate certificate: %w", err)
	}

	id := certificateDeviceID(leaf)
	if id == "" {
		return nil, errBadCertificate
	}
	d, err := s.store.DeviceByID(ctx, id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, errBadCertificate
	} else if err != nil {
		return nil, fmt.Errorf("authenticate certificate: %w", err)
	}
	cas, err := s.creds.CAs(ctx, d.TenantID)
	if err != nil {
		return nil, fmt.Errorf("authenticate certificate: %w", err)
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AppendCertsFromPEM([]byte(ca.PEM))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		s.log.Debug("client certificate not verified", "device", id, "fingerprint", fp, "err", err)
		return nil, errBadCertificate
	}
	return d, nil
}

// certificateDeviceID returns the device a CA-issued certificate names:
// its SAN URI urn:tether:device:<id>, or else its common name.
func certificateDeviceID(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if id, ok := strings.CutPrefix(u.String(), DeviceURIPrefix); ok && tether.ValidID(id) {
			return id
		}
	}
	if tether.ValidID(c.Subject.CommonName) {
		return c.Subject.CommonName
	}
	return ""
}

func (s *Service) deviceOf(ctx context.Context, tenant, id string) (*tether.Device, error) {
	d, err := s.store.Device(ctx, tenant, id)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, errBadCertificate
	} else if err != nil {
		return nil, fmt.Errorf("authenticate certificate: %w", err)
	}
	return d, nil
}

// RotatePSK gives a device a new DTLS pre-shared key (identity: the
// device ID) and returns it; it is shown only this once. The device's
// connections are cut, so none outlives its old key.
//
// The key is HMAC-SHA256(node secret, tenant/device/nonce) with a random
// nonce stored on the device: the server can compute it when a device
// handshakes, yet no key is ever stored, so the database alone gives none
// away. Rotating draws a new nonce.
func (s *Service) RotatePSK(ctx context.Context, tenant, deviceID string) (string, error) {
	if len(s.pskSecret) == 0 {
		return "", tether.Errorf(tether.EUNAVAILABLE, "this node has no secret to derive pre-shared keys from")
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	nonce := int64(binary.BigEndian.Uint64(b[:]) >> 1) // positive, never 0 in practice
	if nonce == 0 {
		nonce = 1
	}
	if err := s.creds.SetDevicePSKNonce(ctx, tenant, deviceID, nonce, s.now()); err != nil {
		return "", err
	}
	s.announce(tenant, deviceID, EventPSKChanged)
	return s.psk(tenant, deviceID, nonce), nil
}

// DeletePSK takes a device's pre-shared key away.
func (s *Service) DeletePSK(ctx context.Context, tenant, deviceID string) error {
	if err := s.creds.SetDevicePSKNonce(ctx, tenant, deviceID, 0, s.now()); err != nil {
		return err
	}
	s.announce(tenant, deviceID, EventPSKChanged)
	return nil
}

// DevicePSK returns a device and its DTLS pre-shared key, for a handshake
// whose PSK identity is the device ID. It returns EUNAUTHORIZED for an
// unknown device or one without a key.
func (s *Service) DevicePSK(ctx context.Context, deviceID string) (*tether.Device, []byte, error) {
	bad := tether.Errorf(tether.EUNAUTHORIZED, "unknown device or no pre-shared key")
	if !tether.ValidID(deviceID) || len(s.pskSecret) == 0 {
		return nil, nil, bad
	}
	d, err := s.store.DeviceByID(ctx, deviceID)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return nil, nil, bad
	} else if err != nil {
		return nil, nil, fmt.Errorf("device psk: %w", err)
	}
	if d.PSKNonce == 0 {
		return nil, nil, bad
	}
	return d, []byte(s.psk(d.TenantID, d.ID, d.PSKNonce)), nil
}

// psk derives a key as 32 hex digits: text, so that it can be typed into
// a tool's -k option, with 128 bits of strength.
func (s *Service) psk(tenant, deviceID string, nonce int64) string {
	m := hmac.New(sha256.New, s.pskSecret)
	fmt.Fprintf(m, "tether-psk/%s/%s/%d", tenant, deviceID, nonce)
	return hex.EncodeToString(m.Sum(nil)[:16])
}
