package main_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-iot/tether/internal/certs"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/testkit"
)

// curl runs curl with args and returns the HTTP status it got and the body.
func curl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	bin := testkit.Tool(t, "curl", "curl")
	out, err := exec.Command(bin, append([]string{"-sS", "-w", "\n%{http_code}", "--max-time", "10"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	body, code, _ := strings.Cut(string(out), "\n")
	if i := strings.LastIndexByte(string(out), '\n'); i >= 0 {
		body, code = string(out[:i]), string(out[i+1:])
	}
	var status int
	for _, c := range code {
		status = status*10 + int(c-'0')
	}
	return status, body
}

func TestHTTPIngestWithCurl(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("meter-1")
	url := "http://" + n.HTTP.Addr() + "/api/v1/ingest"
	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, []byte(`{"k": "`+strings.Repeat("x", 300<<10)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	json := "Content-Type: application/json"
	tests := []struct {
		name   string
		args   []string
		status int
	}{
		{"a device's message with its token is accepted", []string{"-H", json, "-H", "Authorization: Bearer " + token, "-d", `{"kwh": 12.5}`}, 202},
		{"the batch form is accepted", []string{"-H", json, "-H", "Authorization: Bearer " + token, "-d", `[{"ts": 1700000000000, "kwh": 1}, {"ts": 1700000060000, "kwh": 2}]`}, 202},
		{"a wrong token is refused", []string{"-H", json, "-H", "Authorization: Bearer " + id + ".wrong", "-d", `{"kwh": 1}`}, 401},
		{"the admin API key is refused", []string{"-H", json, "-H", "Authorization: Bearer " + adminKey, "-d", `{"kwh": 1}`}, 403},
		{"a payload that is not telemetry is refused", []string{"-H", json, "-H", "Authorization: Bearer " + token, "-d", `{"kwh": [1]}`}, 422},
		{"a payload over max_payload is refused", []string{"-H", json, "-H", "Authorization: Bearer " + token, "--data-binary", "@" + big}, 413},
		{"a content type other than JSON is refused", []string{"-H", "Content-Type: text/csv", "-H", "Authorization: Bearer " + token, "-d", "kwh,1"}, 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-X", "POST"}, tt.args...)
			if status, body := curl(t, append(args, url)...); status != tt.status {
				t.Errorf("status %d, want %d; body %s", status, tt.status, body)
			}
		})
	}
	t.Run("what was accepted is stored", func(t *testing.T) {
		n.waitStored(3)
		if s := n.telemetry(id, "keys=kwh&from=0")["kwh"].Samples; len(s) != 3 {
			t.Errorf("kwh = %+v, want 3 samples", s)
		}
	})
}

// tlsNode starts a node with a development CA's server certificate and
// returns it with the directory holding the CA and certificates.
func tlsNode(t *testing.T, edit func(*config.Config)) (*node, string) {
	t.Helper()
	dir := t.TempDir()
	dev, err := certs.WriteDev(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *config.Config) {
		c.TLSCertFile, c.TLSKeyFile = dev.ServerCert, dev.ServerKey
		if edit != nil {
			edit(c)
		}
	})
	return n, dir
}

func TestHTTPSAndMutualTLSWithCurl(t *testing.T) {
	n, dir := tlsNode(t, nil)
	ca := filepath.Join(dir, "ca.pem")
	url := "https://" + n.HTTP.TLSAddr()
	pinned, _ := n.createDevice("pump-1")
	byCA, _ := n.createDevice("pump-2")
	pinnedCert, err := certs.WriteDevice(dir, pinned)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := certs.WriteDevice(dir, byCA)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := t.TempDir()
	if _, err := certs.WriteDev(otherCA, nil); err != nil {
		t.Fatal(err)
	}
	stranger, err := certs.WriteDevice(otherCA, "pump-2") // another CA, same name
	if err != nil {
		t.Fatal(err)
	}
	post := func(c certs.DeviceCert) (int, string) {
		return curl(t, "--cacert", ca, "--cert", c.Cert, "--key", c.Key, "-H", "Content-Type: application/json",
			"-d", `{"flow": 3.5}`, url+"/api/v1/ingest")
	}
	pem := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	t.Run("the API answers over HTTPS with the dev CA", func(t *testing.T) {
		if status, body := curl(t, "--cacert", ca, url+"/healthz"); status != 200 {
			t.Errorf("status %d %s", status, body)
		}
	})
	t.Run("an unregistered certificate is refused", func(t *testing.T) {
		if status, body := post(pinnedCert); status != http.StatusUnauthorized {
			t.Errorf("status %d %s", status, body)
		}
	})
	t.Run("a certificate registered by fingerprint authenticates its device", func(t *testing.T) {
		status, _, raw := n.api("POST", "/api/v1/devices/"+pinned+"/certificates", "", map[string]string{"pem": pem(pinnedCert.Cert)}, nil)
		if status != http.StatusCreated || !strings.Contains(string(raw), pinnedCert.Fingerprint) {
			t.Fatalf("register: %d %s", status, raw)
		}
		if status, body := post(pinnedCert); status != http.StatusAccepted {
			t.Errorf("status %d %s", status, body)
		}
	})
	t.Run("a certificate of a trusted tenant CA naming a device authenticates it", func(t *testing.T) {
		if status, body := post(caCert); status != http.StatusUnauthorized {
			t.Fatalf("before the CA is trusted: status %d %s", status, body)
		}
		if status, _, raw := n.api("POST", "/api/v1/cas", "", map[string]string{"pem": pem(ca)}, nil); status != http.StatusCreated {
			t.Fatalf("trust CA: %d %s", status, raw)
		}
		if status, body := post(caCert); status != http.StatusAccepted {
			t.Errorf("status %d %s", status, body)
		}
	})
	t.Run("a certificate of another CA with the same name is refused", func(t *testing.T) {
		status, body := curl(t, "--cacert", ca, "--cert", stranger.Cert, "--key", stranger.Key, "-d", `{"flow": 1}`, url+"/api/v1/ingest")
		if status != http.StatusUnauthorized {
			t.Errorf("status %d %s", status, body)
		}
	})
	t.Run("a revoked certificate is refused even though the trusted CA signed it", func(t *testing.T) {
		if status, _, raw := n.api("DELETE", "/api/v1/devices/"+pinned+"/certificates/"+pinnedCert.Fingerprint, "", nil, nil); status != http.StatusNoContent {
			t.Fatalf("revoke: %d %s", status, raw)
		}
		if status, body := post(pinnedCert); status != http.StatusUnauthorized {
			t.Errorf("status %d %s", status, body)
		}
	})
	t.Run("what was accepted is stored", func(t *testing.T) {
		n.waitStored(2)
	})
}
