package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/bus"
	"github.com/tether-iot/tether/internal/certs"
	"github.com/tether-iot/tether/internal/coap"
	"github.com/tether-iot/tether/internal/command"
	"github.com/tether-iot/tether/internal/config"
	"github.com/tether-iot/tether/internal/httpapi"
	"github.com/tether-iot/tether/internal/ingest"
	"github.com/tether-iot/tether/internal/mqtt"
	"github.com/tether-iot/tether/internal/registry"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/stream"
	"github.com/tether-iot/tether/internal/telemetry"
	"github.com/tether-iot/tether/internal/user"
	"github.com/tether-iot/tether/internal/web"
	"github.com/tether-iot/tether/internal/writer"
)

// Main is a running Tether node. End-to-end tests build one exactly as the
// binary does.
type Main struct {
	Config config.Config

	// AdminKey is the admin API key created at this start, if one was.
	AdminKey string
	// BootstrapAdmin is the first admin user's e-mail address and
	// password (TETHER_BOOTSTRAP_ADMIN_EMAIL, _PASSWORD), either of which
	// may be empty; AdminUser is that user if this start created it,
	// with its password if it was generated.
	BootstrapAdmin AdminLogin
	AdminUser      *AdminLogin
	// Observe, if set before Run, sees every committed telemetry batch.
	Observe func(msgs []tether.Message, committed time.Time)

	bootstrapKey string
	log          *slog.Logger

	DB  *sqlite.DB
	Bus *bus.Bus
	// TLS serves the server certificate to every TLS listener; nil
	// without tls_cert_file.
	TLS      *certs.Reloader
	Registry *registry.Service
	// Users signs people in and manages users (users.go).
	Users    *user.Service
	Ingestor *ingest.Ingestor
	Writer   *writer.Writer
	MQTT     *mqtt.Gateway
	CoAP     *coap.Gateway
	HTTP     *httpapi.Server
	// Stream is the hub of live events (WebSocket, SSE and GraphQL
	// subscriptions); it exists before the HTTP server.
	Stream        *stream.Hub
	liveTelemetry *bus.LiveTelemetry

	services    *services
	demo        *demoRun
	unsubscribe func()
	unsubEvents func()
	httpDone    chan error
	stopWatch   context.CancelFunc

	// graphQL is the GraphQL API (graphql.go), closed before the HTTP
	// server shuts down.
	graphQL interface{ Close(context.Context) error }
}

// NewMain returns a node that logs to logOut.
func NewMain(cfg config.Config, bootstrapKey string, logOut io.Writer) *Main {
	return &Main{Config: cfg, bootstrapKey: bootstrapKey, log: newLogger(cfg, logOut)}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Run starts every part, in dependency order, and returns once the node
// serves. On error, call Close to release what was started.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	var err error
	if m.DB, err = sqlite.Open(ctx, filepath.Join(cfg.DataDir, "tether.db")); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	if m.Bus, err = bus.Open(ctx, bus.Options{
		URL: cfg.NATSURL, StoreDir: filepath.Join(cfg.DataDir, "nats"), ListenAddr: cfg.NATSAddr,
		MaxBytes: cfg.BusMaxBytes, Durables: []string{storageConsumer, rulesConsumer}, Logger: m.log.With("component", "bus"),
	}); err != nil {
		return fmt.Errorf("open bus: %w", err)
	}
	if u := m.Bus.ClientURL(); u != "" {
		m.log.Info("embedded NATS listening", "url", u)
	}

	secret, err := nodeSecret(filepath.Join(cfg.DataDir, "secret.key"))
	if err != nil {
		return err
	}
	m.Registry = registry.New(m.DB, m.Bus, registry.Options{PSKSecret: secret, Logger: m.log.With("component", "registry")})
	if m.AdminKey, err = m.Registry.Bootstrap(ctx, m.bootstrapKey); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := m.startUsers(ctx); err != nil {
		return err
	}

	var serverTLS *tls.Config
	if err := cfg.TLSError(); err != nil {
		return err
	}
	if cfg.TLSCertFile != "" {
		if m.TLS, err = certs.NewReloader(cfg.TLSCertFile, cfg.TLSKeyFile, m.log.With("component", "tls")); err != nil {
			return err
		}
		var watchCtx context.Context
		watchCtx, m.stopWatch = context.WithCancel(context.Background())
		go m.TLS.Watch(watchCtx, 2*time.Second)
		serverTLS = certs.ServerConfig(m.TLS)
	}

	limits := telemetry.DefaultLimits()
	limits.MaxPayload = cfg.MaxPayload
	m.Ingestor = ingest.New(m.Bus, limits, cfg.DevicePublishRate, m.log.With("component", "ingest"))
	if err := m.startServices(ctx); err != nil {
		return err
	}
	if err := m.startRules(ctx); err != nil {
		return err
	}
	sv := m.services

	// The CoAP gateway exists before the writer, which tells it what was
	// stored (its observers of /latest), but serves only after it.
	co := coap.Options{Addr: cfg.CoAPAddr, DTLSAddr: cfg.CoAPSAddr, Logger: m.log.With("component", "coap"),
		Shadows: sv.Shadows, Commands: sv.Commands, Presence: sv.Presence}
	if m.TLS != nil {
		co.Certificate = m.TLS.Certificate
	}
	if m.CoAP, err = coap.New(m.Registry, m.Ingestor, m.DB, co); err != nil {
		return err
	}
	observe := m.Observe
	wo := writer.Options{Batch: cfg.WriterBatch, MaxDelay: cfg.WriterMaxDelay, Logger: m.log.With("component", "writer"),
		Observe: func(msgs []tether.Message, committed time.Time) {
			m.CoAP.Stored(msgs)
			if observe != nil {
				observe(msgs, committed)
			}
		}}
	if m.Writer, err = writer.Start(ctx, m.DB, m.consumeTelemetry, wo); err != nil {
		return err
	}

	mo := mqtt.Options{
		Addr: cfg.MQTTAddr, WSAddr: cfg.MQTTWSAddr, Logger: m.log,
		AllowAnonymous: cfg.MQTTAllowAnonymous, MaxKeepAlive: uint16(cfg.MQTTMaxKeepAlive),
		MaxConnectionsPerDevice: cfg.MQTTMaxConnectionsPerDevice, ConnectRatePerIP: cfg.ConnectRatePerIP,
		ConnectTimeout: cfg.ConnectTimeout, StoreDir: filepath.Join(cfg.DataDir, "mqtt"),
		Shadows: sv.Shadows, Commands: sv.Commands, Presence: sv.Presence,
		Provisioner: mqttProvisioner{sv.Provision}, Apps: m.Registry,
		OnDeviceMessage: sv.ruleRuntime.deviceMessage,
	}
	if serverTLS != nil {
		mo.TLSAddr, mo.WSSAddr, mo.TLS = cfg.MQTTSAddr, cfg.MQTTWSSAddr, serverTLS.Clone()
	}
	if m.MQTT, err = mqtt.New(m.Registry, m.Ingestor, mo); err != nil {
		return err
	}
	if m.unsubscribe, err = m.Bus.SubscribeLifecycle(m.onLifecycle); err != nil {
		return err
	}
	// The live stream hub exists before the events reach onEvent.
	if err := m.startStream(); err != nil {
		return err
	}
	if m.unsubEvents, err = m.Bus.SubscribeEvents("", m.onEvent); err != nil {
		return err
	}
	if cfg.MQTTAllowAnonymous {
		m.log.Warn("LAB MODE: MQTT clients without credentials may connect and use every topic outside devices/ (mqtt_allow_anonymous); never enable this on a network you do not trust")
	}
	if err := m.MQTT.Serve(); err != nil {
		return fmt.Errorf("mqtt serve: %w", err)
	}
	for _, l := range []struct{ name, addr string }{
		{"MQTT listening", m.MQTT.Addr()}, {"MQTT over WebSocket listening", m.MQTT.WSAddr()},
		{"MQTTS listening", m.MQTT.TLSAddr()}, {"MQTT over secure WebSocket listening", m.MQTT.WSSAddr()},
	} {
		if l.addr != "" {
			m.log.Info(l.name, "addr", l.addr)
		}
	}
	if err := m.CoAP.Serve(); err != nil {
		return fmt.Errorf("coap serve: %w", err)
	}
	if a := m.CoAP.Addr(); a != "" {
		m.log.Info("CoAP listening", "addr", a)
	}
	if a := m.CoAP.DTLSAddr(); a != "" {
		m.log.Info("CoAP over DTLS listening", "addr", a)
	}

	ho := httpapi.Options{Addr: cfg.HTTPAddr, Logger: m.log.With("component", "http"), Services: sv.httpServices(m)}
	ho.Services.Users, ho.Services.APIKeys = m.Users, m.Registry
	ho.Mount = m.mountStream(ho.Mount)
	if ho.Mount, err = m.mountGraphQL(ho.Mount); err != nil {
		return err
	}
	if serverTLS != nil {
		ho.TLSAddr, ho.TLS = cfg.HTTPSAddr, serverTLS.Clone()
	}
	// The dashboard answers every path the API and other mounts do not:
	// "/" rather than "GET /", which would conflict with the API's "/api/"
	// catch-all; the handler itself refuses methods other than GET and HEAD.
	if ho.Mount == nil {
		ho.Mount = map[string]http.Handler{}
	}
	ho.Mount["/"] = web.Handler()
	if m.HTTP, err = httpapi.New(m.Registry, m.DB, m.Ingestor, nodeStats{m}, ho); err != nil {
		return err
	}
	for _, t := range []command.Transport{m.MQTT, m.CoAP, m.HTTP} {
		sv.Commands.AddTransport(t)
	}
	m.httpDone = make(chan error, 1)
	go func() { m.httpDone <- m.HTTP.Serve() }()
	m.log.Info("HTTP API listening", "addr", m.HTTP.Addr())
	if a := m.HTTP.TLSAddr(); a != "" {
		m.log.Info("HTTPS API listening", "addr", a)
	}
	if cfg.Demo {
		return m.startDemo(ctx)
	}
	return nil
}

// storageConsumer is the durable consumer of the storage writer; nodes
// sharing a bus share its work.
const storageConsumer = "storage"

// consumeTelemetry adapts the bus to the writer's Source.
func (m *Main) consumeTelemetry(ctx context.Context, maxPending int, handle func(writer.Delivery)) (func(context.Context), error) {
	c, err := m.Bus.ConsumeTelemetry(ctx, storageConsumer, maxPending, func(msg bus.Msg) { handle(msg) })
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) {
		if err := c.WaitCaughtUp(ctx); err != nil {
			m.log.Warn("storage writer: stopping with telemetry still on the bus; it is written after the next start", "err", err)
		}
		c.Stop()
	}, nil
}

func (m *Main) onLifecycle(_, device, event string) {
	switch event {
	case registry.EventDeleted, registry.EventTokenRotated, registry.EventCertificateRevoked, registry.EventPSKChanged:
		var n int
		if event == registry.EventDeleted {
			n = m.MQTT.Forget(device)
			m.Ingestor.Forget(device)
			m.services.Checker.Forget(device)
		} else {
			n = m.MQTT.Disconnect(device)
		}
		n += m.CoAP.Disconnect(device)
		m.log.Info("device connections cut", "device", device, "event", event, "connections", n)
	}
}

// ReloadTLS reads the certificate and key files again (on SIGHUP); a
// failure keeps the old pair and is logged.
func (m *Main) ReloadTLS() {
	if m.TLS != nil {
		_ = m.TLS.Reload()
	}
}

// nodeSecret reads the node's secret, creating it on first start. DTLS
// pre-shared keys are derived from it, so it must stay with the data (and
// be the same on every node of a cluster).
func nodeSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b = make([]byte, 32)
		_, _ = rand.Read(b)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write node secret: %w", err)
		}
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node secret: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("node secret %s is %d bytes; want 32 (delete it to make a new one, which changes every device's pre-shared key)", path, len(b))
	}
	return b, nil
}

// PrintWelcome tells a person where to connect and, on first start, the
// admin API key: the only time it is ever shown.
func (m *Main) PrintWelcome(w io.Writer) {
	fmt.Fprintf(w, "\nTether %s is running.\n", version)
	for _, l := range []struct{ name, scheme, addr, note string }{
		{"Dashboard", "http", m.HTTP.Addr(), "/"},
		{"REST API", "http", m.HTTP.Addr(), "/api/v1  (OpenAPI: /api/v1/openapi.json)"},
		{"GraphQL", "http", m.HTTP.Addr(), "/api/graphql"},
		{"REST API", "https", m.HTTP.TLSAddr(), "/api/v1"},
		{"MQTT", "mqtt", m.MQTT.Addr(), ""},
		{"MQTT", "mqtts", m.MQTT.TLSAddr(), ""},
		{"MQTT", "ws", m.MQTT.WSAddr(), "/mqtt"},
		{"MQTT", "wss", m.MQTT.WSSAddr(), "/mqtt"},
		{"CoAP", "coap", m.CoAP.Addr(), ""},
		{"CoAP", "coaps", m.CoAP.DTLSAddr(), "  (DTLS pre-shared keys)"},
	} {
		if l.addr != "" {
			fmt.Fprintf(w, "  %-10s %s://%s%s\n", l.name+":", l.scheme, displayAddr(l.addr), l.note)
		}
	}
	fmt.Fprintf(w, "  Data:      %s\n", m.Config.DataDir)
	m.printDemo(w)
	if m.AdminKey != "" {
		fmt.Fprintf(w, "\n  Admin API key (shown only this once; it is stored hashed):\n\n    %s\n\n  Try: curl -H 'Authorization: Bearer %s' http://%s/api/v1/devices\n",
			m.AdminKey, m.AdminKey, displayAddr(m.HTTP.Addr()))
	}
	m.printAdminUser(w)
	fmt.Fprintln(w)
}

// displayAddr turns a wildcard listen address into one a client can dial.
func displayAddr(addr string) string {
	for _, p := range []string{"[::]:", "0.0.0.0:"} {
		if len(addr) > len(p) && addr[:len(p)] == p {
			return "localhost:" + addr[len(p):]
		}
	}
	return addr
}

// Close shuts down in order: stop taking device traffic (finishing the
// publishes already on their way to the bus), stop the API, write what the
// storage writer holds, close the bus, close the store.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	var errs []error
	m.stopDemo() // first: the simulated devices leave while the node still listens
	if m.MQTT != nil {
		errs = append(errs, m.MQTT.Close(ctx))
	}
	if m.CoAP != nil {
		errs = append(errs, m.CoAP.Close(ctx))
	}
	if m.unsubscribe != nil {
		m.unsubscribe()
	}
	if m.unsubEvents != nil {
		m.unsubEvents()
	}
	m.stopStream()
	errs = append(errs, m.closeGraphQL(ctx))
	if m.HTTP != nil {
		errs = append(errs, m.HTTP.Shutdown(ctx))
		if m.httpDone != nil {
			errs = append(errs, <-m.httpDone)
		}
	}
	if m.services != nil {
		m.services.ruleRuntime.close(ctx)
	}
	m.services.close()
	if m.Writer != nil {
		errs = append(errs, m.Writer.Close(ctx))
	}
	if m.Bus != nil {
		errs = append(errs, m.Bus.Close())
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
	}
	if m.stopWatch != nil {
		m.stopWatch()
	}
	return errors.Join(errs...)
}

// nodeStats gives the API the node's counters.
type nodeStats struct{ m *Main }

func (s nodeStats) Refused(deviceID string) uint64 { return s.m.Ingestor.Refused(deviceID) }

func (s nodeStats) Stats() any {
	return struct {
		Ingest       ingest.Stats `json:"ingest"`
		StoredPoints uint64       `json:"stored_points"`
	}{s.m.Ingestor.Stats(), s.m.Writer.Stored()}
}
