package simulate

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tether-iot/tether"
)

// Labels of simulated devices.
const (
	// LabelDemo marks a simulated device ("true"). Setup rotates the
	// token only of a device that carries it, so it never takes over a
	// real device that happens to have a simulated device's ID.
	LabelDemo = "demo"
	LabelSite = "site"
	LabelKind = "kind"
)

// Sites are the places a fleet's devices are at, in turn.
var Sites = []string{"berlin", "lyon", "austin"}

// Spec is a simulated device to register: the device as the node keeps
// it, and how to simulate it.
type Spec struct {
	Device tether.Device
	Kind   string
	// CoAP makes the device talk CoAP instead of MQTT.
	CoAP bool
	// Incident makes its model's incident happen early (see [NewModel]).
	Incident bool
}

// FleetOptions describe a fleet.
type FleetOptions struct {
	// Devices is how many; Kinds which kinds, taken in turn (default all).
	Devices int
	Kinds   []string
	// Prefix starts every device ID: <prefix><kind>-<n>.
	Prefix string
	// CoAP makes the patient monitors talk CoAP.
	CoAP bool
}

// Fleet returns the devices of a fleet: kinds in turn, numbered from 1
// per kind (sim-thermostat-1, sim-fridge-1, …, sim-thermostat-2), each
// at the next site of its kind (the first in Berlin, the second in Lyon,
// …). The first device of each kind has its incident early.
func Fleet(o FleetOptions) []Spec {
	kinds := o.Kinds
	if len(kinds) == 0 {
		kinds = Kinds
	}
	out := make([]Spec, 0, o.Devices)
	for i := range o.Devices {
		kind, n := kinds[i%len(kinds)], i/len(kinds)+1
		site := Sites[(n-1)%len(Sites)]
		out = append(out, Spec{
			Device: tether.Device{
				ID:        o.Prefix + kind + "-" + strconv.Itoa(n),
				Name:      fmt.Sprintf("%s %d, %s", profileName(kind), n, title(site)),
				Labels:    map[string]string{LabelDemo: "true", LabelSite: site, LabelKind: kind},
				ProfileID: kind,
			},
			Kind:     kind,
			CoAP:     o.CoAP && kind == KindPatientMonitor,
			Incident: n == 1,
		})
	}
	return out
}

func profileName(kind string) string {
	for _, p := range Profiles() {
		if p.ID == kind {
			return p.Name
		}
	}
	return kind
}

func title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Provisioner registers what a simulated fleet needs on a node. Lookups
// of something missing return an error with code tether.ENOTFOUND;
// creating something that exists, one with tether.ECONFLICT.
type Provisioner interface {
	Profile(ctx context.Context, id string) (*tether.Profile, error)
	CreateProfile(ctx context.Context, p tether.Profile) error
	Rule(ctx context.Context, id string) (*tether.Rule, error)
	CreateRule(ctx context.Context, r tether.Rule) error
	Device(ctx context.Context, id string) (*tether.Device, error)
	// CreateDevice registers a device and returns its token.
	CreateDevice(ctx context.Context, d tether.Device) (token string, err error)
	// RotateToken gives a device a new token and returns it.
	RotateToken(ctx context.Context, id string) (string, error)
}

// Setup registers a fleet on a node and returns its devices, ready to
// run: the profiles of its kinds and, with rules, the [ExampleRules] are
// created unless they exist (existing ones are kept as they are, edits
// included); each device is created, or, if it exists, given a new token
// (the node keeps only hashes, so the old one cannot be read back). It is
// idempotent: a restart finds everything and only rotates the tokens.
func Setup(ctx context.Context, p Provisioner, specs []Spec, rules bool) ([]Device, error) {
	var kinds []string
	for _, s := range specs {
		if !slices.Contains(kinds, s.Kind) {
			kinds = append(kinds, s.Kind)
		}
	}
	for _, prof := range Profiles() {
		if slices.Contains(kinds, prof.ID) {
			if err := ensure("profile "+prof.ID, func() error { _, err := p.Profile(ctx, prof.ID); return err },
				func() error { return p.CreateProfile(ctx, prof) }); err != nil {
				return nil, err
			}
		}
	}
	if rules {
		for _, r := range ExampleRules() {
			if err := ensure("rule "+r.ID, func() error { _, err := p.Rule(ctx, r.ID); return err },
				func() error { return p.CreateRule(ctx, r) }); err != nil {
				return nil, err
			}
		}
	}
	out := make([]Device, 0, len(specs))
	for _, s := range specs {
		token, err := ensureDevice(ctx, p, s.Device)
		if err != nil {
			return nil, err
		}
		out = append(out, Device{ID: s.Device.ID, Token: token, Kind: s.Kind, CoAP: s.CoAP, Incident: s.Incident})
	}
	return out, nil
}

// ensure creates something unless get finds it.
func ensure(what string, get, create func() error) error {
	err := get()
	if tether.ErrorCode(err) != tether.ENOTFOUND {
		if err != nil {
			return fmt.Errorf("read %s: %w", what, err)
		}
		return nil
	}
	if err := create(); err != nil && tether.ErrorCode(err) != tether.ECONFLICT {
		return fmt.Errorf("create %s: %w", what, err)
	}
	return nil
}

// ensureDevice creates a device or rotates the token of the simulated
// device of that ID.
func ensureDevice(ctx context.Context, p Provisioner, d tether.Device) (string, error) {
	existing, err := p.Device(ctx, d.ID)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		token, cerr := p.CreateDevice(ctx, d)
		if tether.ErrorCode(cerr) != tether.ECONFLICT {
			if cerr != nil {
				return "", fmt.Errorf("create device %s: %w", d.ID, cerr)
			}
			return token, nil
		}
		// Created meanwhile: read it as an existing one.
		existing, err = p.Device(ctx, d.ID)
	}
	if err != nil {
		return "", fmt.Errorf("read device %s: %w", d.ID, err)
	}
	if existing.Labels[LabelDemo] != "true" {
		return "", tether.Errorf(tether.ECONFLICT, "device %s exists and is not simulated (it has no label %s=true); its token is left alone: choose another prefix", d.ID, LabelDemo)
	}
	token, err := p.RotateToken(ctx, d.ID)
	if err != nil {
		return "", fmt.Errorf("rotate the token of device %s: %w", d.ID, err)
	}
	return token, nil
}
