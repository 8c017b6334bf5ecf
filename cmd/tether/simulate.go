package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/simulate"
)

// maxSimulated bounds --devices.
const maxSimulated = 10_000

// runSimulate is `tether simulate`: it registers simulated devices on any
// node over its REST API (an admin key), then runs them over MQTT (and
// CoAP) until ctx ends. It returns the exit code.
func runSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tether simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tether simulate --api-key KEY [flags]\n\n"+
			"Registers simulated devices (%s) on a Tether node over its REST API,\n"+
			"then runs them over MQTT (and CoAP) until interrupted: they send telemetry,\n"+
			"answer commands and follow their desired state. Existing simulated devices\n"+
			"(label demo=true) get new tokens; profiles that exist are kept.\n\n", strings.Join(simulate.Kinds, ", "))
		fs.PrintDefaults()
	}
	api := fs.String("api", "http://localhost:8080", "the node's HTTP API base URL")
	key := fs.String("api-key", "", "an admin API key of the node (env TETHER_API_KEY)")
	mqttAddr := fs.String("mqtt", "localhost:1883", "the node's MQTT address (host:port)")
	coapAddr := fs.String("coap", "", "the node's CoAP address (host:port); if set, the patient monitors talk CoAP")
	n := fs.Int("devices", 8, "how many devices, the kinds taken in turn")
	kindList := fs.String("kinds", strings.Join(simulate.Kinds, ","), "which kinds, comma-separated")
	interval := fs.Duration("interval", time.Second, "time between two telemetry messages of a device")
	prefix := fs.String("prefix", "sim-", "start of every device ID: <prefix><kind>-<n>")
	rules := fs.Bool("rules", false, "also create the example rules (demo-…), unless they exist")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tether simulate: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *key == "" {
		*key = getenv("TETHER_API_KEY")
	}
	kinds, err := simulate.ParseKinds(*kindList)
	if err != nil {
		return fail("--kinds: %v", err)
	}
	switch {
	case *n < 1 || *n > maxSimulated:
		return fail("--devices %d: want 1 to %d", *n, maxSimulated)
	case *interval < 100*time.Millisecond:
		return fail("--interval %v: want at least 100ms", *interval)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	prov, err := simulate.NewAPI(*api, *key)
	if err != nil {
		return fail("%v", err)
	}
	specs := simulate.Fleet(simulate.FleetOptions{Devices: *n, Kinds: kinds, Prefix: *prefix, CoAP: *coapAddr != ""})
	if id := specs[len(specs)-1].Device.ID; !tether.ValidID(id) {
		return fail("--prefix %q: device IDs such as %q must be 1 to 64 letters, digits, '-' or '_'", *prefix, id)
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	devices, err := simulate.Setup(ctx, prov, specs, *rules)
	if err != nil {
		fmt.Fprintf(stderr, "tether simulate: register the devices at %s: %v\n", *api, err)
		return 1
	}
	r, err := simulate.NewRunner(devices, simulate.Options{MQTTAddr: *mqttAddr, CoAPAddr: *coapAddr, Interval: *interval, Logger: log})
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(stdout, "Simulating %d devices against %s, MQTT %s", len(devices), *api, *mqttAddr)
	if *coapAddr != "" {
		fmt.Fprintf(stdout, ", CoAP %s", *coapAddr)
	}
	fmt.Fprintf(stdout, "; Ctrl-C stops.\n")
	for _, d := range devices {
		transport := "MQTT"
		if d.CoAP {
			transport = "CoAP"
		}
		fmt.Fprintf(stdout, "  %-28s %-16s %s\n", d.ID, d.Kind, transport)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s := r.Stats()
			log.Info("simulator", "devices", s.Devices, "connected", s.Connected, "sent", s.Sent,
				"refused", s.Refused, "commands", s.Commands, "reconnects", s.Reconnects)
		case <-done:
			s := r.Stats()
			fmt.Fprintf(stdout, "Stopped: %d messages sent, %d refused, %d commands answered.\n", s.Sent, s.Refused, s.Commands)
			return 0
		}
	}
}
