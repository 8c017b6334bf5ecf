package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tether-iot/tether/internal/certs"
)

const certsUsage = `Usage:
  tether certs dev [--dir certs] [--host h1,h2]
      Write a development CA and a server certificate into --dir. A CA
      already there is reused, so whatever trusts it keeps working; the
      server certificate is new each time, for the hosts given (default:
      localhost, 127.0.0.1, ::1 and this machine's hostname).
  tether certs device --id ID [--dir certs]
      Write a client certificate for device ID, signed by the dev CA in --dir.

These certificates are for trying Tether and for development. In
production, give tether serve a certificate from a CA your clients trust.
`

// runCerts is the certs command: it writes development certificates and
// prints the commands that use them. It returns the exit code; 2 means the
// command line was wrong.
func runCerts(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, certsUsage)
		return 2
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, certsUsage)
		return 0
	case "dev":
		return certsDev(args[1:], stdout, stderr)
	case "device":
		return certsDevice(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "tether certs: unknown command %q\n\n%s", args[0], certsUsage)
		return 2
	}
}

// certsFlags returns a flag set for a certs subcommand, with --dir, whose
// errors and help go to stderr with the certs usage.
func certsFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("tether certs "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "\n%s", certsUsage) }
	dir := fs.String("dir", "certs", "directory of the dev CA and the certificates")
	return fs, dir
}

// parseCertsFlags parses args and returns the exit code to stop with, or
// -1 to go on.
func parseCertsFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2 // the flag package has said what was wrong
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n\n%s", fs.Name(), fs.Arg(0), certsUsage)
		return 2
	}
	return -1
}

func certsDev(args []string, stdout, stderr io.Writer) int {
	fs, dir := certsFlags("dev", stderr)
	host := fs.String("host", "", "comma-separated DNS names and IP addresses of the server certificate")
	if code := parseCertsFlags(fs, args, stderr); code >= 0 {
		return code
	}
	var hosts []string
	for h := range strings.SplitSeq(*host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if *host != "" && len(hosts) == 0 {
		fmt.Fprintf(stderr, "tether certs dev: --host %q names no host\n\n%s", *host, certsUsage)
		return 2
	}
	d, err := certs.WriteDev(*dir, hosts)
	if err != nil {
		fmt.Fprintf(stderr, "tether certs dev: %v\n", err)
		return 1
	}

	if d.NewCA {
		fmt.Fprintf(stdout, "Wrote a new development CA and a server certificate in %s:\n", *dir)
	} else {
		fmt.Fprintf(stdout, "Wrote a new server certificate in %s, signed by the development CA already there (whatever trusts it still does):\n", *dir)
	}
	fmt.Fprintf(stdout, "  %-*s  CA certificate: clients trust the server with it\n", width(d), d.CACert)
	fmt.Fprintf(stdout, "  %-*s  CA key (0600): signs device certificates; keep it private\n", width(d), d.CAKey)
	fmt.Fprintf(stdout, "  %-*s  server certificate for %s, valid until %s\n", width(d), d.ServerCert, strings.Join(d.Hosts, ", "), d.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(stdout, "  %-*s  server key (0600)\n", width(d), d.ServerKey)
	fmt.Fprintf(stdout, "CA fingerprint (SHA-256): %s\n", d.CAFingerprint)

	host0 := "localhost"
	if !slices.Contains(d.Hosts, host0) {
		host0 = d.Hosts[0]
		if strings.Contains(host0, ":") { // an IPv6 address in a URL
			host0 = "[" + host0 + "]"
		}
	}
	caq := shellQuote(d.CACert)
	fmt.Fprintf(stdout, `
Run a node with TLS (MQTTS on :8883, HTTPS on :8443); it reloads these files when they change:
  tether serve --tls-cert-file %s --tls-key-file %s
  (or set tls_cert_file and tls_key_file in the config file, or TETHER_TLS_CERT_FILE and TETHER_TLS_KEY_FILE)

Then, from another terminal:
  curl --cacert %s https://%s:8443/healthz
  mosquitto_pub --cafile %s -h %s -p 8883 -u thermostat-1 -P "$TOKEN" -t devices/thermostat-1/telemetry -m '{"temp":21.5}'

A device can authenticate with a certificate instead of a token:
  tether certs device --id thermostat-1 --dir %s
`, shellQuote(d.ServerCert), shellQuote(d.ServerKey), caq, host0, caq, strings.Trim(host0, "[]"), shellQuote(*dir))
	return 0
}

func certsDevice(args []string, stdout, stderr io.Writer) int {
	fs, dir := certsFlags("device", stderr)
	id := fs.String("id", "", "device ID: the certificate's CN, and its URI urn:tether:device:<ID>")
	if code := parseCertsFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *id == "" {
		fmt.Fprintf(stderr, "tether certs device: --id is required\n\n%s", certsUsage)
		return 2
	}
	d, err := certs.WriteDevice(*dir, *id)
	if err != nil {
		fmt.Fprintf(stderr, "tether certs device: %v\n", err)
		return 1
	}
	certPEM, err := os.ReadFile(d.Cert)
	if err != nil {
		fmt.Fprintf(stderr, "tether certs device: %v\n", err)
		return 1
	}
	body, err := json.Marshal(struct {
		PEM string `json:"pem"`
	}{string(certPEM)})
	if err != nil {
		fmt.Fprintf(stderr, "tether certs device: %v\n", err)
		return 1
	}

	w := max(len(d.Cert), len(d.Key))
	fmt.Fprintf(stdout, "Wrote a client certificate for device %s, signed by the development CA in %s:\n", d.DeviceID, *dir)
	fmt.Fprintf(stdout, "  %-*s  certificate: CN %s, URI %s%s, valid until %s\n", w, d.Cert, d.DeviceID, certs.DeviceURIPrefix, d.DeviceID, d.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(stdout, "  %-*s  its key (0600): copy it to the device only\n", w, d.Key)
	fmt.Fprintf(stdout, "Fingerprint (SHA-256): %s\n", d.Fingerprint)

	caq := shellQuote(filepath.Join(*dir, certs.CAFile))
	certq, keyq := shellQuote(d.Cert), shellQuote(d.Key)
	fmt.Fprintf(stdout, `
Register it with the device (which must exist; $KEY is an admin API key):
  curl --cacert %s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' https://localhost:8443/api/v1/devices/%s/certificates -d '%s'

Then the device authenticates with it alone, over HTTPS and MQTTS:
  curl --cacert %s --cert %s --key %s -H 'Content-Type: application/json' https://localhost:8443/api/v1/ingest -d '{"temp":21.5}'
  mosquitto_pub --cafile %s --cert %s --key %s -h localhost -p 8883 -t devices/%s/telemetry -m '{"temp":21.5}'
`, caq, d.DeviceID, body, caq, certq, keyq, caq, certq, keyq, d.DeviceID)
	return 0
}

// width is the column of the file names in certsDev's list.
func width(d certs.Dev) int {
	return max(len(d.CACert), len(d.CAKey), len(d.ServerCert), len(d.ServerKey))
}

// shellQuote returns s as one word of a POSIX shell command line, quoted
// only when it needs to be, so the printed commands can be pasted as they
// are.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+,=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
