// Package certs is Tether's X.509 tooling: it names certificates by
// fingerprint, parses PEM chains with errors a person can act on, serves
// the server certificate to every TLS listener and reloads it from its
// files without a restart, and writes a development CA with server and
// device certificates so that trying TLS takes one command.
//
// Client certificates are requested by [ServerConfig] but never verified
// by crypto/tls: the trusted CAs are per tenant and change at run time, so
// the registry decides. Only the standard library's crypto is used; the
// keys this package makes are ECDSA P-256.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Fingerprint is how Tether names a certificate everywhere (API,
// registry, logs): the lowercase hex SHA-256 of its DER encoding, 64
// characters without separators, the same as
// `openssl x509 -noout -fingerprint -sha256` without the colons.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// ParsePEM parses one or more PEM certificates, a chain in the order
// given. Text around the blocks (as openssl prints) is ignored, but every
// block must be a CERTIFICATE: a private key pasted in by mistake is an
// error rather than something silently carried along. Errors say which
// block is wrong, counting from 1.
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if strings.Contains(b.Type, "PRIVATE KEY") {
				return nil, fmt.Errorf("PEM block %d is a %s, not a CERTIFICATE: give the certificate only, and keep the key secret", n, b.Type)
			}
			return nil, fmt.Errorf("PEM block %d is %q, not a CERTIFICATE", n, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d is not a valid certificate: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		if len(strings.TrimSpace(string(data))) == 0 {
			return nil, errors.New("no CERTIFICATE block: the PEM is empty")
		}
		return nil, errors.New(`no CERTIFICATE block: expected "-----BEGIN CERTIFICATE-----"`)
	}
	return certs, nil
}

// parseKey parses the first PRIVATE KEY block of a PEM file in any of the
// encodings openssl writes (PKCS #8, SEC 1, PKCS #1). Other blocks before
// it, such as the EC PARAMETERS of `openssl ecparam -genkey`, are skipped.
func parseKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(data) > 0 && strings.Contains(string(data), "BEGIN CERTIFICATE") {
				return nil, errors.New("no PRIVATE KEY block: this is a certificate, not its key")
			}
			return nil, errors.New(`no PRIVATE KEY block: expected "-----BEGIN PRIVATE KEY-----"`)
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		// Legacy encrypted PEM carries Proc-Type; PKCS #8 has its own type.
		if b.Headers["Proc-Type"] != "" || b.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("the private key is encrypted; Tether needs it unencrypted (openssl pkey -in key.pem -out plain-key.pem), readable only by its user")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%s block is not a valid key: %w", b.Type, err)
		}
		switch k := k.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
	}
}

// keyMatches reports whether key is the private half of c's public key.
func keyMatches(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(c.PublicKey)
}
