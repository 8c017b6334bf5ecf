package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// The files [WriteDev] writes in its directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// Validity of what WriteDev and WriteDevice issue. A server certificate
// stays within the 398 days browsers and Apple clients accept.
const (
	caYears      = 10
	leafValidity = 365 * 24 * time.Hour
	// backdate covers a device whose clock is a little behind the
	// machine that issued its certificate.
	backdate = time.Hour
)

// organization is the subject organization of everything issued here, so
// a development certificate is recognisable as one wherever it shows up.
const organization = "Tether development"

// DeviceURIPrefix starts the URI SAN of a device certificate; the device
// ID follows it.
const DeviceURIPrefix = "urn:tether:device:"

// Dev names what [WriteDev] wrote.
type Dev struct {
	CACert, CAKey         string // paths of the CA certificate and key
	ServerCert, ServerKey string // paths of the server certificate and key
	// NewCA is false when the directory's CA was reused, so clients that
	// already trust ca.pem keep working.
	NewCA         bool
	CAFingerprint string
	Hosts         []string  // the server certificate's names
	NotAfter      time.Time // of the server certificate
}

// DeviceCert names what [WriteDevice] wrote.
type DeviceCert struct {
	DeviceID    string
	Cert, Key   string // paths
	Fingerprint string // of the certificate, see [Fingerprint]
	NotAfter    time.Time
}

// DefaultHosts returns the names a development server certificate is for
// when none are given: localhost, 127.0.0.1, ::1 and the machine's
// hostname, if it is a usable DNS name.
func DefaultHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		if h = strings.ToLower(h); validDNSName(h) && h != "localhost" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// WriteDev writes a development CA and a server certificate into dir
// (made 0700 if missing) so that a newcomer can try TLS in one command:
// ca.pem, ca-key.pem (0600), server.pem and server-key.pem (0600), all
// ECDSA P-256. The CA is valid for 10 years and the server certificate
// for one, for hosts (by default [DefaultHosts]), with extended key usage
// ServerAuth.
//
// If dir already holds a dev CA, WriteDev reuses it, so that devices and
// clients that trust it keep working, and writes only a new server
// certificate and key. Each file is replaced atomically; a node watching
// the server files may refuse the moment between the key and the
// certificate and then load the pair.
func WriteDev(dir string, hosts []string) (Dev, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts()
	}
	dns, ips, names, err := splitHosts(hosts)
	if err != nil {
		return Dev{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Dev{}, fmt.Errorf("make certificate directory: %w", err)
	}
	d := Dev{
		CACert: filepath.Join(dir, CAFile), CAKey: filepath.Join(dir, CAKeyFile),
		ServerCert: filepath.Join(dir, ServerFile), ServerKey: filepath.Join(dir, ServerKeyFile),
		Hosts: names,
	}
	now := time.Now()
	ca, caKey, err := loadCA(dir, now)
	if errors.Is(err, fs.ErrNotExist) {
		d.NewCA = true
		ca, caKey, err = writeCA(d.CACert, d.CAKey, now)
	}
	if err != nil {
		return Dev{}, err
	}
	d.CAFingerprint = Fingerprint(ca)

	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{organization}, CommonName: names[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns,
		IPAddresses: ips,
	}
	c, err := issue(tmpl, ca, caKey, d.ServerCert, d.ServerKey, now)
	if err != nil {
		return Dev{}, fmt.Errorf("server certificate: %w", err)
	}
	d.NotAfter = c.NotAfter
	return d, nil
}

// WriteDevice writes a client certificate for deviceID signed by the dev
// CA in dir (see [WriteDev]): subject CN deviceID, URI SAN
// urn:tether:device:<deviceID>, extended key usage ClientAuth, valid for
// one year, ECDSA P-256. The files are <deviceID>.pem and
// <deviceID>-key.pem (0600) in dir; a second call makes a new key and
// certificate, with a new fingerprint, in their place.
func WriteDevice(dir, deviceID string) (DeviceCert, error) {
	if !tether.ValidID(deviceID) {
		return DeviceCert{}, fmt.Errorf("device ID %q: want 1 to 64 letters, digits, '-' or '_'", deviceID)
	}
	// The dev files share the directory; on a case-insensitive file
	// system "CA" would be ca.pem too.
	for _, f := range []string{CAFile, CAKeyFile, ServerFile, ServerKeyFile} {
		if strings.EqualFold(deviceID, strings.TrimSuffix(f, ".pem")) {
			return DeviceCert{}, fmt.Errorf("device ID %q would overwrite the dev %s; choose another ID", deviceID, f)
		}
	}
	d := DeviceCert{
		DeviceID: deviceID,
		Cert:     filepath.Join(dir, deviceID+".pem"),
		Key:      filepath.Join(dir, deviceID+"-key.pem"),
	}
	// Device "a-key" would write its certificate over device "a"'s key.
	if err := checkOverwrite(d.Cert, "CERTIFICATE"); err != nil {
		return DeviceCert{}, err
	}
	if err := checkOverwrite(d.Key, "PRIVATE KEY"); err != nil {
		return DeviceCert{}, err
	}
	now := time.Now()
	ca, caKey, err := loadCA(dir, now)
	if errors.Is(err, fs.ErrNotExist) {
		return DeviceCert{}, fmt.Errorf("no dev CA in %s: write one first with tether certs dev --dir %s", dir, dir)
	} else if err != nil {
		return DeviceCert{}, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{organization}, CommonName: deviceID},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: "urn", Opaque: strings.TrimPrefix(DeviceURIPrefix, "urn:") + deviceID}},
	}
	c, err := issue(tmpl, ca, caKey, d.Cert, d.Key, now)
	if err != nil {
		return DeviceCert{}, fmt.Errorf("device certificate: %w", err)
	}
	d.Fingerprint = Fingerprint(c)
	d.NotAfter = c.NotAfter
	return d, nil
}

// checkOverwrite refuses to replace a file that holds something other
// than a PEM block whose type ends in want.
func checkOverwrite(path, want string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if b, _ := pem.Decode(data); b == nil || !strings.HasSuffix(b.Type, want) {
		return fmt.Errorf("%s exists and is not a %s; move it away or choose another ID or directory", path, strings.ToLower(want))
	}
	return nil
}

// loadCA loads dir's dev CA. The error wraps fs.ErrNotExist only when
// neither file exists.
func loadCA(dir string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("no dev CA in %s: %w", dir, fs.ErrNotExist)
	case errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("%s exists without %s: restore %s, or delete %s to make a new CA", keyPath, CAFile, certPath, keyPath)
	case errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("%s exists without %s, so it cannot sign: restore the key, or delete %s to make a new CA", certPath, CAKeyFile, certPath)
	case certErr != nil:
		return nil, nil, fmt.Errorf("read dev CA: %w", certErr)
	case keyErr != nil:
		return nil, nil, fmt.Errorf("read dev CA key: %w", keyErr)
	}
	chain, err := ParsePEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("dev CA %s: %w", certPath, err)
	}
	ca := chain[0]
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("dev CA key %s: %w", keyPath, err)
	}
	remake := fmt.Sprintf("delete %s and %s to make a new CA", certPath, keyPath)
	switch {
	case !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, nil, fmt.Errorf("%s is not a CA certificate; %s", certPath, remake)
	case !keyMatches(ca, key):
		return nil, nil, fmt.Errorf("%s is not the key of %s; restore the matching key, or %s", keyPath, certPath, remake)
	case !now.Before(ca.NotAfter):
		return nil, nil, fmt.Errorf("the dev CA %s expired on %s; %s (clients must then trust the new one)", certPath, ca.NotAfter.Format(time.DateOnly), remake)
	}
	return ca, key, nil
}

// writeCA makes a self-signed CA and writes it, the key first so that a
// CA certificate never exists without its key.
func writeCA(certPath, keyPath string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells apart the dev CAs of different
		// machines in a trust store.
		Subject:               pkix.Name{Organization: []string{organization}, CommonName: "Tether development CA " + fmt.Sprintf("%032x", serial)[:8]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(caYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writeCert(certPath, der); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

// issue completes tmpl (serial, key, validity within the CA's), signs it
// with the CA and writes the certificate and its new key.
func issue(tmpl, ca *x509.Certificate, caKey crypto.Signer, certPath, keyPath string, now time.Time) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(leafValidity)
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	if err := writeCert(certPath, der); err != nil {
		return nil, err
	}
	return c, nil
}

// newSerial returns a random 128-bit serial number, as RFC 5280 and the
// CA/Browser Forum ask (positive, unpredictable, at most 20 bytes).
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

// writeKey writes key as PKCS #8 ("PRIVATE KEY"), which openssl, curl,
// mosquitto and Go all read, readable by its owner only.
func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeCert writes a certificate, readable by all: it is public.
func writeCert(path string, der []byte) error {
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile replaces path atomically, so that a reader (a watching
// node) sees the old file or the new one, never half of one. The
// temporary file is created 0600, so a key is never readable by others,
// even for a moment.
func writeFile(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// splitHosts sorts hosts into DNS names and IP addresses, in the order
// given without repeats, and refuses anything that is neither.
func splitHosts(hosts []string) (dns []string, ips []net.IP, names []string, err error) {
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if validDNSName(h) {
			dns = append(dns, h)
		} else {
			return nil, nil, nil, fmt.Errorf("host %q is not a DNS name or an IP address (leave out schemes and ports)", h)
		}
		names = append(names, h)
	}
	if len(names) == 0 {
		return nil, nil, nil, errors.New("no host names for the server certificate")
	}
	return dns, ips, names, nil
}

// validDNSName reports whether s is a lowercase DNS name a TLS client
// can match: labels of letters, digits and inner hyphens, with an
// optional leading "*." wildcard.
func validDNSName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
