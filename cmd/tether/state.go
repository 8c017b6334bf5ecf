package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/alert"
	"github.com/tether-iot/tether/internal/command"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/presence"
	"github.com/tether-iot/tether/internal/profile"
	"github.com/tether-iot/tether/internal/provision"
	"github.com/tether-iot/tether/internal/rules"
	"github.com/tether-iot/tether/internal/rules/action"
	"github.com/tether-iot/tether/internal/shadow"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// services are the device state and control services: profiles,
// shadows, commands, presence and provisioning. They sit between the
// gateways and the store, and announce their changes on the bus.
type services struct {
	Profiles  *profile.Service
	Checker   *profile.Checker
	Shadows   *shadow.Service
	Commands  *command.Service
	Presence  *presence.Service
	Provision *provision.Service
	Alerts    *alert.Service
	Rules     *rules.Service
	Actions   *action.Runner

	ruleRuntime *ruleRuntime
	stop        context.CancelFunc
	wg          sync.WaitGroup
}

// startServices builds the services and starts their background loops
// (command expiry and timeouts, stale presence).
func (m *Main) startServices(ctx context.Context) error {
	cfg, log := m.Config, m.log
	node, err := nodeName(m.Config.DataDir + "/node.id")
	if err != nil {
		return err
	}
	s := &services{}
	s.Profiles = profile.New(m.DB, profile.Options{Logger: log.With("component", "profile")})
	s.Checker = profile.NewChecker(s.Profiles, m.DB)
	s.Shadows = shadow.New(m.DB, m.Bus, shadow.Options{MaxSize: cfg.ShadowMaxSize, MaxDepth: cfg.ShadowMaxDepth, Logger: log.With("component", "shadow")})
	s.Commands = command.New(m.DB, m.Registry, s.Profiles, m.Bus, command.Options{
		DeviceRate:      tether.Rate{Count: cfg.CommandRatePerDevice, Per: tether.Duration(time.Minute)},
		BreakerFailures: cfg.CommandBreakerFailures, BreakerCooldown: cfg.CommandBreakerCooldown,
		DefaultTTL: cfg.CommandTTL, DefaultTimeout: cfg.CommandTimeout,
		Logger: log.With("component", "command"),
	})
	s.Presence = presence.New(m.DB, s.Profiles, m.Bus, presence.Options{Node: node, Logger: log.With("component", "presence")})
	if err := s.Presence.Recover(ctx); err != nil {
		return fmt.Errorf("recover presence: %w", err)
	}
	s.Provision = provision.New(m.DB, s.Profiles, provision.Options{Logger: log.With("component", "provision")})
	m.Ingestor.Use(s.Checker, func(d *tether.Device) { s.Presence.Seen(d, "mqtt") })

	var runCtx context.Context
	runCtx, s.stop = context.WithCancel(context.Background())
	for _, run := range []func(context.Context){s.Commands.Run, s.Presence.Run} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			run(runCtx)
		}()
	}
	m.services = s
	return nil
}

// close stops the background loops and waits for them.
func (s *services) close() {
	if s != nil && s.stop != nil {
		s.stop()
		s.wg.Wait()
	}
}

// httpServices adapts the services to the HTTP API.
func (s *services) httpServices(m *Main) httpapi.Services {
	db := m.DB
	return httpapi.Services{
		Profiles:   s.Profiles,
		Shadows:    s.Shadows,
		Commands:   s.Commands,
		Presence:   s.Presence,
		Quarantine: quarantineAPI{db},
		Provision:  provisionAPI{s.Provision},
		Alerts:     s.Alerts,
		Rules:      s.Rules,
		RuleEngine: ruleEngineAPI{m},
		Fleet:      fleetAPI{db, m.Ingestor},
	}
}

// onEvent hands a device event from the bus (from any node) to the
// gateways of this one: shadow changes become deltas and Observe
// notifications, and every event goes to the apps listening on MQTT.
func (m *Main) onEvent(tenant, kind, device string, data []byte) {
	if kind == tether.EventShadow {
		var sh tether.Shadow
		if err := json.Unmarshal(data, &sh); err != nil {
			m.log.Warn("shadow event", "device", device, "err", err)
			return
		}
		m.MQTT.ShadowChanged(&sh)
		m.CoAP.ShadowChanged(&sh)
	}
	m.MQTT.PublishEvent(tenant, kind, device, data)
	m.streamEvent(tenant, kind, device, data)
	if rt := m.services.ruleRuntime; rt != nil {
		rt.event(tenant, kind, device, data)
	}
}

type quarantineAPI struct{ *sqlite.DB }

func (q quarantineAPI) QuarantineCount(ctx context.Context, tenant, device string) (int64, error) {
	n, err := q.DB.QuarantineCount(ctx, tenant, device)
	return int64(n), err
}

type provisionAPI struct{ *provision.Service }

func (provisionAPI) ParseCSV(r io.Reader) ([]tether.DeviceImport, error) {
	return provision.ParseCSV(r)
}
func (provisionAPI) ParseJSON(r io.Reader) ([]tether.DeviceImport, error) {
	return provision.ParseJSON(r)
}

func (p provisionAPI) Import(ctx context.Context, tenant string, rows []tether.DeviceImport) ([]httpapi.ImportedDevice, error) {
	created, err := p.Service.Import(ctx, tenant, rows)
	out := make([]httpapi.ImportedDevice, len(created))
	for i, c := range created {
		out[i] = httpapi.ImportedDevice(c)
	}
	return out, err
}

func (p provisionAPI) Register(ctx context.Context, key string, r httpapi.RegisterRequest) (*tether.Device, string, error) {
	return p.Service.Register(ctx, key, provision.Request(r))
}

// mqttProvisioner adapts provisioning to the MQTT gateway.
type mqttProvisioner struct{ *provision.Service }

func (p mqttProvisioner) Register(ctx context.Context, key, deviceID, name string, labels map[string]string) (*tether.Device, string, error) {
	return p.Service.Register(ctx, key, provision.Request{DeviceID: deviceID, Name: name, Labels: labels})
}

// nodeName reads this node's name, creating it on first start. Presence
// rows carry it, so that after a crash the node marks offline the
// devices it held.
func nodeName(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var r [6]byte
		_, _ = rand.Read(r[:])
		name := "node-" + hex.EncodeToString(r[:])
		if err := os.WriteFile(path, []byte(name+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write node name: %w", err)
		}
		return name, nil
	}
	if err != nil {
		return "", fmt.Errorf("read node name: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", fmt.Errorf("node name file %s is empty; delete it to make a new one", path)
	}
	return name, nil
}
