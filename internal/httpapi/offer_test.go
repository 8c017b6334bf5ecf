package httpapi_test

import (
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/httpapi"
)

func TestAPollTakesOnlyCommandsNoOtherTransportIsDelivering(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	sent := func(ago time.Duration) []tether.CommandTransition {
		return []tether.CommandTransition{{Status: tether.CommandQueued, At: now.Add(-time.Hour)}, {Status: tether.CommandSent, At: now.Add(-ago)}}
	}
	tests := []struct {
		name string
		cmd  tether.Command
		want bool
	}{
		{"a queued command is taken", tether.Command{Status: tether.CommandQueued}, true},
		{"a command just sent over MQTT is left to MQTT", tether.Command{Status: tether.CommandSent, History: sent(time.Second)}, false},
		{"a command sent long ago and never acknowledged is taken", tether.Command{Status: tether.CommandSent, History: sent(time.Minute)}, true},
		{"a delivered command awaiting its reply is not taken", tether.Command{Status: tether.CommandDelivered}, false},
		{"a done command is not taken", tether.Command{Status: tether.CommandSucceeded}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := httpapi.OfferAgain(&tt.cmd, now); got != tt.want {
				t.Errorf("offerAgain = %v, want %v", got, tt.want)
			}
		})
	}
}
