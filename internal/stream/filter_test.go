package stream_test

import (
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		query string
		want  stream.Filter
		err   string // part of the error; "" for none
	}{
		{"", stream.Filter{}, ""},
		{"kinds=telemetry,presence", stream.Filter{Kinds: []string{"telemetry", "presence"}}, ""},
		{"kinds=telemetry,,+alert+", stream.Filter{Kinds: []string{"telemetry", "alert"}}, ""},
		{"devices=d1,d2&profile=thermostat", stream.Filter{Devices: []string{"d1", "d2"}, Profile: "thermostat"}, ""},
		{"labels=site=north,floor=", stream.Filter{Labels: map[string]string{"site": "north", "floor": ""}}, ""},
		{"labels=", stream.Filter{}, ""},
		{"kinds=weather", stream.Filter{}, `unknown event kind "weather"`},
		{"labels=site", stream.Filter{}, "key=value pairs"},
		{"labels==north", stream.Filter{}, "key=value pairs"},
		{"devices=a%20b", stream.Filter{}, "not a valid device ID"},
		{"profile=a/b", stream.Filter{}, "not a valid profile ID"},
		{"kind=telemetry", stream.Filter{}, `unknown query parameter "kind"`},
		{"devices=a&devices=b", stream.Filter{}, "given 2 times"},
	}
	for _, tt := range tests {
		name := "?" + tt.query + " is read"
		if tt.err != "" {
			name = "?" + tt.query + " is refused"
		}
		t.Run(name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := stream.ParseQuery(q)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want one saying %q", err, tt.err)
			case tt.err != "" && tether.ErrorCode(err) != tether.EINVALID:
				t.Fatalf("error code %s, want %s", tether.ErrorCode(err), tether.EINVALID)
			case tt.err == "" && !reflect.DeepEqual(got, tt.want):
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseQuery checks that any query string is either refused as
// invalid or gives a filter a hub accepts.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "kinds=telemetry,alert", "devices=a,b&labels=k=v,k2=v2&profile=p", "labels=a=b=c", "kinds=x&y=z", "devices=%00"} {
		f.Add(s)
	}
	h := stream.NewHub(stream.Options{Devices: newDevices()})
	defer h.Close()
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		filter, err := stream.ParseQuery(q)
		if err != nil {
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Fatalf("%q: error %v is not invalid", raw, err)
			}
			return
		}
		s, err := h.Subscribe(context.Background(), "acme", filter)
		if err != nil {
			t.Fatalf("%q: ParseQuery gave %+v, which Subscribe refuses: %v", raw, filter, err)
		}
		s.Close()
	})
}

func TestTelemetryEvent(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	msg := tether.Message{ID: "m1", TenantID: "acme", DeviceID: "d1", ReceivedAt: at.Add(time.Second), Points: []tether.Point{
		{Key: "temp", Time: at, Kind: tether.KindNumber, Num: 21.5},
		{Key: "on", Time: at, Kind: tether.KindBool, Num: 1},
		{Key: "mode", Time: at, Kind: tether.KindString, Str: "eco"},
		{Key: "rpm", Time: at, Kind: tether.KindNumber, Num: -1, Quarantine: "out_of_range"},
	}}
	t.Run("points become key, ts and value; quarantined ones are left out", func(t *testing.T) {
		ev, ok := stream.TelemetryEvent(msg)
		if !ok {
			t.Fatal("no event")
		}
		if ev.Kind != stream.KindTelemetry || ev.TenantID != "acme" || ev.DeviceID != "d1" || !ev.Time.Equal(at.Add(time.Second)) {
			t.Errorf("event %+v", ev)
		}
		want := `{"points":[{"key":"temp","ts":"2025-03-01T12:00:00Z","value":21.5},{"key":"on","ts":"2025-03-01T12:00:00Z","value":true},{"key":"mode","ts":"2025-03-01T12:00:00Z","value":"eco"}]}`
		if string(ev.Data) != want {
			t.Errorf("data %s\nwant %s", ev.Data, want)
		}
		if !json.Valid(ev.Data) {
			t.Error("data is not JSON")
		}
	})
	t.Run("a message of quarantined points only makes no event", func(t *testing.T) {
		m := msg
		m.Points = msg.Points[3:]
		if _, ok := stream.TelemetryEvent(m); ok {
			t.Error("got an event")
		}
	})
}
