package graphql

import (
	"log/slog"

	"github.com/tether-iot/tether/internal/stream"
)

// DecodeTelemetryEvent is telemetryUpdate, for the fuzz test.
func DecodeTelemetryEvent(ev stream.Event, keys []string) *TelemetryUpdate {
	return telemetryUpdate(ev, keys, slog.New(slog.DiscardHandler))
}
