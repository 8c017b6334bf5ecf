// Command tether is the Tether IoT backend in one binary.
//
//	tether serve [flags]   run a node (see tether serve -h)
//	tether simulate        run simulated devices against a node (see tether simulate -h)
//	tether version         print the version
//
// main only parses the configuration, builds each part, runs them and shuts
// them down in order; the parts live under internal/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tether-iot/tether/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `Tether is an IoT backend: devices connect over MQTT, their telemetry
crosses a durable bus into storage, and apps read it over a REST API.

Usage:
  tether serve [flags]   run a node; tether serve -h lists the settings
  tether certs dev       write a development CA and server certificate
  tether certs device    write a device client certificate signed by it
  tether simulate        run simulated devices against a node; tether simulate -h
  tether version         print the version
`

// run is main without the process: it returns the exit code. 2 means the
// command line or configuration was wrong.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "tether %s\n", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "certs":
		return runCerts(args[1:], stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args[1:], getenv, stdout, stderr)
	case "serve":
	default:
		fmt.Fprintf(stderr, "tether: unknown command %q\n\n%s", args[0], usage)
		return 2
	}

	cfg, err := config.Load(args[1:], getenv, stderr)
	if err == nil {
		err = cfg.TLSError()
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		fmt.Fprintf(stderr, "tether: %v\n", err)
		return 2
	}
	m := NewMain(cfg, getenv("TETHER_BOOTSTRAP_ADMIN_KEY"), stderr)
	m.BootstrapAdmin = AdminLogin{Email: getenv("TETHER_BOOTSTRAP_ADMIN_EMAIL"), Password: getenv("TETHER_BOOTSTRAP_ADMIN_PASSWORD")}
	if err := m.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "tether: %v\n", err)
		m.Close()
		return 1
	}
	m.PrintWelcome(stdout)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for waiting := true; waiting; {
		select {
		case <-hup:
			m.log.Info("SIGHUP: reloading the TLS certificate")
			m.ReloadTLS()
		case <-ctx.Done():
			waiting = false
		}
	}
	m.log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	if err := m.Close(); err != nil {
		fmt.Fprintf(stderr, "tether: shutdown: %v\n", err)
		return 1
	}
	return 0
}
