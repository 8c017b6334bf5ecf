package main

import (
	"net/http"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
	"github.com/tether-iot/tether/internal/telemetry"
)

// startStream builds the live event hub and feeds it every node's
// telemetry from the bus; device events reach it through onEvent.
func (m *Main) startStream() error {
	m.Stream = stream.NewHub(stream.Options{Devices: m.Registry, Logger: m.log.With("component", "stream")})
	var err error
	m.liveTelemetry, err = m.Bus.SubscribeTelemetryLive(m.liveTelemetryMessage)
	return err
}

// mountStream adds the live stream endpoints to the HTTP API's mounts.
// They authenticate as the API does; the server exists by the time a
// request arrives.
func (m *Main) mountStream(mount map[string]http.Handler) map[string]http.Handler {
	if mount == nil {
		mount = map[string]http.Handler{}
	}
	auth := func(r *http.Request) (*tether.Principal, error) { return m.HTTP.Authenticate(r) }
	mount["GET /api/v1/stream"] = m.Stream.WebSocket(auth)
	mount["GET /api/v1/stream/sse"] = m.Stream.SSE(auth)
	return mount
}

// liveTelemetryMessage publishes a telemetry message from the bus to the
// hub, if anyone of its tenant listens: decoding costs, and most of the
// time nobody does.
func (m *Main) liveTelemetryMessage(tenant string, data []byte) {
	if !m.Stream.Wants(tenant, stream.KindTelemetry) {
		return
	}
	msg, err := telemetry.UnmarshalMessage(data)
	if err != nil {
		m.log.Debug("live telemetry: undecodable message skipped", "tenant", tenant, "err", err)
		return
	}
	if ev, ok := stream.TelemetryEvent(msg); ok {
		m.Stream.Publish(ev)
	}
}

// streamEvent publishes a device event from the bus (presence, shadow,
// command, alert) to the hub. It never blocks.
func (m *Main) streamEvent(tenant, kind, device string, data []byte) {
	if m.Stream == nil || !m.Stream.Wants(tenant, kind) {
		return
	}
	m.Stream.Publish(stream.Event{Kind: kind, TenantID: tenant, DeviceID: device, Time: time.Now().UTC(), Data: data})
}

// stopStream ends the live streams (their clients are told the server is
// going away) and the telemetry feed.
func (m *Main) stopStream() {
	if m.liveTelemetry != nil {
		m.liveTelemetry.Stop()
	}
	if m.Stream != nil {
		m.Stream.Close()
	}
}
