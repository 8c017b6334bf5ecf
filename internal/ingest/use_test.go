package ingest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// quarantineKey is a Checker that quarantines every point of one key.
type quarantineKey string

func (k quarantineKey) Check(_ context.Context, _ *tether.Device, pts []tether.Point) {
	for i := range pts {
		if pts[i].Key == string(k) {
			pts[i].Quarantine = tether.QuarantineAboveMax
		}
	}
}

func TestUse(t *testing.T) {
	t.Run("puts the checker's quarantine reasons on the bus", func(t *testing.T) {
		pub := &recordingPublisher{}
		in := newIngestor(pub)
		in.Use(quarantineKey("temp"), nil)
		n, err := in.Accept(t.Context(), device, []byte(`{"temp":9000,"on":true}`))
		if err != nil || n != 2 {
			t.Fatalf("Accept = %d, %v; want 2 points", n, err)
		}
		m, err := telemetry.UnmarshalMessage(pub.got[0].data)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, p := range m.Points {
			got[p.Key] = p.Quarantine
		}
		if got["temp"] != tether.QuarantineAboveMax || got["on"] != "" {
			t.Errorf("quarantine reasons on the bus %v, want temp above_max and on none", got)
		}
	})

	t.Run("tells seen of each message the bus took and of no other", func(t *testing.T) {
		pub := &recordingPublisher{}
		in := newIngestor(pub)
		var seen []string
		in.Use(nil, func(d *tether.Device) { seen = append(seen, d.ID) })
		if _, err := in.Accept(t.Context(), device, []byte(`{"temp":1}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Accept(t.Context(), device, []byte(`{"temp":`)); err == nil {
			t.Fatal("Accept of a broken payload succeeded")
		}
		pub.err = errors.New("bus down")
		if _, err := in.Accept(t.Context(), device, []byte(`{"temp":1}`)); err == nil {
			t.Fatal("Accept with the bus down succeeded")
		}
		if len(seen) != 1 || seen[0] != device.ID {
			t.Errorf("seen %v, want dev-1 once", seen)
		}
	})

	t.Run("checks nothing and tells nobody without hooks", func(t *testing.T) {
		pub := &recordingPublisher{}
		in := newIngestor(pub)
		in.Use(nil, nil)
		if n, err := in.Accept(t.Context(), device, []byte(`{"temp":1}`)); err != nil || n != 1 {
			t.Fatalf("Accept = %d, %v", n, err)
		}
	})
}
