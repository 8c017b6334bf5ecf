package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

func TestAWrongSettingExitsWithCode2AndOneLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"a bad flag value names the flag", []string{"serve", "--mqtt-addr", "localhost"}, "", "mqtt_addr (--mqtt-addr, TETHER_MQTT_ADDR)"},
		{"a bad environment value names the variable", []string{"serve"}, "TETHER_WRITER_BATCH=lots", "writer_batch (--writer-batch, TETHER_WRITER_BATCH)"},
		{"an unknown flag is refused", []string{"serve", "--no-such-flag"}, "", "no-such-flag"},
		{"an unknown command is refused", []string{"frobnicate"}, "", `unknown command "frobnicate"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Dir = t.TempDir()
			if tc.env != "" {
				cmd.Env = append(cmd.Environ(), tc.env)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("err = %v, want exit code 2", err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not name %q", stderr.String(), tc.want)
			}
		})
	}
	t.Run("version prints the version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").Output()
		if err != nil || !strings.HasPrefix(string(out), "tether ") {
			t.Errorf("%q, %v", out, err)
		}
	})
}

func TestSIGTERMDrainsAndExitsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	dataDir := t.TempDir()
	p := startProcess(t, dataDir)
	req, _ := http.NewRequest("POST", "http://"+p.http+"/api/v1/devices", stringsReader(`{"id":"term-1"}`))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	var dev createdDevice
	if err := doJSON(req, &dev); err != nil {
		t.Fatal(err)
	}
	c, err := connect3(t, p.mqttAddr, "term-1", dev.Token)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		tok := c.Publish("devices/term-1/telemetry", 1, false, fmt.Sprintf(`{"seq": %d}`, i))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit 20s after SIGTERM")
	}
	waitFor(t, "the disconnect", func() bool { return !c.IsConnectionOpen() })

	// Every acknowledged message was written before the exit: the
	// database alone, with no node running, has them all.
	db, err := sqlite.Open(context.Background(), filepath.Join(dataDir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Telemetry(context.Background(), tether.TelemetryQuery{
		TenantID: tether.DefaultTenantID, DeviceID: "term-1", Keys: []string{"seq"}, Limit: 10000,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Samples) != n {
		t.Errorf("stored %+v, want %d points", got, n)
	}
}
