// Package testkit holds what Tether's tests share across packages: finding
// a real peer program from a Debian package (skipped where it is missing,
// required in CI, which installs it), a log buffer safe for a server's
// goroutines to write while a test reads it, and benchmark helpers (CPU
// time, a consumer that acknowledges in batches). Only tests import it.
package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Tool returns the path of the program name from the Debian package pkg.
// Without it the test is skipped, except when the environment variable CI
// is set: .ci/run installs every such package, so there it fails.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found; .ci/run must install the Debian package %s", name, pkg)
		}
		t.Skipf("%s not found; install the Debian package %s to run this test", name, pkg)
	}
	return path
}

// Buffer is a bytes.Buffer that goroutines may write while another reads.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
