package main

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/simulate"
)

// demoDevices is the size of the demo fleet: three of each kind, one at
// each site.
const demoDevices = 12

// demoPrefix starts the demo devices' IDs: demo-thermostat-1, …
const demoPrefix = "demo-"

// demoRun is the simulated fleet of `tether serve --demo`, running in the
// node's process and connected to its own listeners.
type demoRun struct {
	runner  *simulate.Runner
	devices int
	rules   int
	stop    context.CancelFunc
	done    chan struct{}
}

// startDemo makes sure the demo's profiles, example rules and devices
// exist (keeping what a previous start or a person made of them), gives
// the devices new tokens (only hashes are stored) and starts simulating
// them over MQTT, and, with a CoAP listener, the patient monitors over
// CoAP.
func (m *Main) startDemo(ctx context.Context) error {
	coapAddr := dialable(m.CoAP.Addr())
	specs := simulate.Fleet(simulate.FleetOptions{Devices: demoDevices, Prefix: demoPrefix, CoAP: coapAddr != ""})
	devices, err := simulate.Setup(ctx, nodeProvisioner{m}, specs, true)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	r, err := simulate.NewRunner(devices, simulate.Options{
		MQTTAddr: dialable(m.MQTT.Addr()), CoAPAddr: coapAddr, Logger: m.log,
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	d := &demoRun{runner: r, devices: len(devices), rules: len(simulate.ExampleRules()), stop: stop, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		r.Run(runCtx)
	}()
	m.demo = d
	m.log.Info("demo running", "devices", d.devices, "rules", d.rules)
	return nil
}

// stopDemo disconnects the simulated devices, before the node stops
// taking device traffic, so that they leave cleanly.
func (m *Main) stopDemo() {
	if m.demo == nil {
		return
	}
	m.demo.stop()
	<-m.demo.done
	m.demo = nil
}

// printDemo adds the demo to the welcome text.
func (m *Main) printDemo(w io.Writer) {
	if m.demo == nil {
		return
	}
	fmt.Fprintf(w, "  Demo:      %d simulated devices (label demo=true) and %d example rules are running;\n"+
		"             start without --demo (or TETHER_DEMO) for a node with no devices\n", m.demo.devices, m.demo.rules)
}

// dialable turns a listen address into one to dial on this host: a
// wildcard host becomes the loopback address. Empty stays empty.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// nodeProvisioner registers the demo in the node's own services, in the
// default tenant, with the same checks as the API.
type nodeProvisioner struct{ m *Main }

var _ simulate.Provisioner = nodeProvisioner{}

const demoTenant = tether.DefaultTenantID

func (p nodeProvisioner) Profile(ctx context.Context, id string) (*tether.Profile, error) {
	return p.m.services.Profiles.Get(ctx, demoTenant, id)
}

func (p nodeProvisioner) CreateProfile(ctx context.Context, prof tether.Profile) error {
	_, err := p.m.services.Profiles.Create(ctx, demoTenant, prof)
	return err
}

func (p nodeProvisioner) Rule(ctx context.Context, id string) (*tether.Rule, error) {
	return p.m.services.Rules.Get(ctx, demoTenant, id)
}

func (p nodeProvisioner) CreateRule(ctx context.Context, r tether.Rule) error {
	_, err := p.m.services.Rules.Create(ctx, demoTenant, r)
	return err
}

func (p nodeProvisioner) Device(ctx context.Context, id string) (*tether.Device, error) {
	return p.m.Registry.Device(ctx, demoTenant, id)
}

func (p nodeProvisioner) CreateDevice(ctx context.Context, d tether.Device) (string, error) {
	_, token, err := p.m.Registry.CreateDevice(ctx, demoTenant, d)
	return token, err
}

func (p nodeProvisioner) RotateToken(ctx context.Context, id string) (string, error) {
	return p.m.Registry.RotateToken(ctx, demoTenant, id)
}
