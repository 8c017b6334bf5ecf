package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/stream"
)

// wait bounds every wait for a delivery; deliveries take microseconds.
const wait = 10 * time.Second

// devices is an in-memory device table that counts its lookups and can
// be made to block.
type devices struct {
	mu      sync.Mutex
	byID    map[string]*tether.Device
	lookups atomic.Int64
	gate    chan struct{} // if not nil, each lookup waits for it
}

func newDevices(ds ...*tether.Device) *devices {
	d := &devices{byID: map[string]*tether.Device{}}
	for _, dev := range ds {
		d.byID[dev.TenantID+"/"+dev.ID] = dev
	}
	return d
}

func (d *devices) Device(ctx context.Context, tenant, id string) (*tether.Device, error) {
	d.lookups.Add(1)
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if dev, ok := d.byID[tenant+"/"+id]; ok {
		return dev, nil
	}
	return nil, tether.Errorf(tether.ENOTFOUND, "no device %s", id)
}

func (d *devices) set(dev *tether.Device) {
	d.mu.Lock()
	d.byID[dev.TenantID+"/"+dev.ID] = dev
	d.mu.Unlock()
}

func newHub(t *testing.T, o stream.Options) *stream.Hub {
	t.Helper()
	h := stream.NewHub(o)
	t.Cleanup(h.Close)
	return h
}

func subscribe(t *testing.T, h *stream.Hub, tenant string, f stream.Filter) stream.Subscription {
	t.Helper()
	s, err := h.Subscribe(t.Context(), tenant, f)
	if err != nil {
		t.Fatalf("Subscribe(%+v): %v", f, err)
	}
	t.Cleanup(s.Close)
	return s
}

// event returns an event of kind about device of tenant acme whose data
// names seq.
func event(kind, device string, seq int) stream.Event {
	return stream.Event{Kind: kind, TenantID: "acme", DeviceID: device, Time: time.Unix(int64(seq), 0).UTC(),
		Data: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, seq))}
}

func seqOf(t *testing.T, ev stream.Event) int {
	t.Helper()
	var v struct{ Seq int }
	if err := json.Unmarshal(ev.Data, &v); err != nil {
		t.Fatalf("event data %s: %v", ev.Data, err)
	}
	return v.Seq
}

// next returns the subscription's next event, failing the test if none
// comes.
func next(t *testing.T, s stream.Subscription) (stream.Event, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	ev, dropped, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev, dropped
}

// nothing checks the subscription has no event waiting once the hub has
// delivered everything published so far.
func nothing(t *testing.T, h *stream.Hub, s stream.Subscription) {
	t.Helper()
	settle(t, h)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if ev, _, err := s.Next(ctx); err == nil {
		t.Errorf("got %s event of %s (%s), want none", ev.Kind, ev.DeviceID, ev.Data)
	}
}

// settle waits until the hub's dispatcher has taken every event
// published so far: a marker event to a subscription of its own arrives
// after them.
func settle(t *testing.T, h *stream.Hub) {
	t.Helper()
	s := subscribe(t, h, "settle", stream.Filter{})
	defer s.Close()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		// A full queue drops the marker too; then try again.
		h.Publish(stream.Event{Kind: stream.KindAlert, TenantID: "settle", DeviceID: "marker"})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		_, _, err := s.Next(ctx)
		cancel()
		if err == nil {
			return
		}
	}
	t.Fatal("the hub did not settle")
}

func TestFiltersSelectEvents(t *testing.T) {
	devs := newDevices(
		&tether.Device{TenantID: "acme", ID: "north-1", Labels: map[string]string{"site": "north", "floor": "1"}, ProfileID: "thermostat"},
		&tether.Device{TenantID: "acme", ID: "north-2", Labels: map[string]string{"site": "north", "floor": "2"}, ProfileID: "fridge"},
		&tether.Device{TenantID: "acme", ID: "south-1", Labels: map[string]string{"site": "south"}, ProfileID: "thermostat"},
		&tether.Device{TenantID: "globex", ID: "north-1", Labels: map[string]string{"site": "north"}, ProfileID: "thermostat"},
	)
	// Every kind about every device of acme, one of globex, and one of a
	// device nobody registered.
	type pub struct{ tenant, kind, device string }
	var pubs []pub
	for _, d := range []string{"north-1", "north-2", "south-1"} {
		for _, k := range stream.Kinds {
			pubs = append(pubs, pub{"acme", k, d})
		}
	}
	pubs = append(pubs, pub{"globex", stream.KindTelemetry, "north-1"}, pub{"acme", stream.KindTelemetry, "ghost"})

	all := func(kinds []string, devices ...string) []string {
		var out []string
		for _, d := range devices {
			for _, k := range kinds {
				out = append(out, k+"/"+d)
			}
		}
		return out
	}
	tests := []struct {
		name   string
		filter stream.Filter
		want   []string // kind/device, in publish order
	}{
		{"no filter selects every event of the tenant, unknown devices too", stream.Filter{},
			append(all(stream.Kinds, "north-1", "north-2", "south-1"), "telemetry/ghost")},
		{"kinds select by kind", stream.Filter{Kinds: []string{stream.KindPresence, stream.KindAlert}},
			all([]string{stream.KindPresence, stream.KindAlert}, "north-1", "north-2", "south-1")},
		{"devices select by device ID", stream.Filter{Devices: []string{"north-2", "south-1"}},
			all(stream.Kinds, "north-2", "south-1")},
		{"a label selects the devices that have it", stream.Filter{Labels: map[string]string{"site": "north"}},
			all(stream.Kinds, "north-1", "north-2")},
		{"every label of a selector must match", stream.Filter{Labels: map[string]string{"site": "north", "floor": "2"}},
			all(stream.Kinds, "north-2")},
		{"a label value must match exactly", stream.Filter{Labels: map[string]string{"site": "nort"}}, nil},
		{"a profile selects its devices", stream.Filter{Profile: "thermostat"},
			all(stream.Kinds, "north-1", "south-1")},
		{"all filters together narrow each other", stream.Filter{Kinds: []string{stream.KindTelemetry}, Devices: []string{"north-1", "north-2"},
			Labels: map[string]string{"site": "north"}, Profile: "thermostat"}, all([]string{stream.KindTelemetry}, "north-1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, stream.Options{Devices: devs})
			s := subscribe(t, h, "acme", tt.filter)
			for i, p := range pubs {
				ev := event(p.kind, p.device, i)
				ev.TenantID = p.tenant
				h.Publish(ev)
			}
			var got []string
			for range tt.want {
				ev, dropped := next(t, s)
				if dropped != 0 {
					t.Errorf("dropped %d", dropped)
				}
				got = append(got, ev.Kind+"/"+ev.DeviceID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
			nothing(t, h, s)
		})
	}
}

func TestDeviceLookups(t *testing.T) {
	t.Run("no subscriber filtering by labels or profile means no lookup", func(t *testing.T) {
		devs := newDevices()
		h := newHub(t, stream.Options{Devices: devs})
		s := subscribe(t, h, "acme", stream.Filter{Devices: []string{"d1"}})
		for i := range 100 {
			h.Publish(event(stream.KindTelemetry, "d1", i))
		}
		for range 100 {
			next(t, s)
		}
		if n := devs.lookups.Load(); n != 0 {
			t.Errorf("%d lookups", n)
		}
	})
	t.Run("a device is looked up once per cache lifetime, for every subscriber", func(t *testing.T) {
		devs := newDevices(&tether.Device{TenantID: "acme", ID: "d1", Labels: map[string]string{"site": "north"}, ProfileID: "p"})
		h := newHub(t, stream.Options{Devices: devs, CacheTTL: 50 * time.Millisecond})
		a := subscribe(t, h, "acme", stream.Filter{Labels: map[string]string{"site": "north"}})
		b := subscribe(t, h, "acme", stream.Filter{Profile: "p"})
		for i := range 50 {
			h.Publish(event(stream.KindTelemetry, "d1", i))
		}
		for range 50 {
			next(t, a)
			next(t, b)
		}
		if n := devs.lookups.Load(); n != 1 {
			t.Errorf("%d lookups for 50 events of one device, want 1", n)
		}
		time.Sleep(100 * time.Millisecond)
		h.Publish(event(stream.KindTelemetry, "d1", 50))
		next(t, a)
		if n := devs.lookups.Load(); n != 2 {
			t.Errorf("%d lookups after the cache lifetime, want 2", n)
		}
	})
	t.Run("a relabelled device enters a label filter once its cache entry expires", func(t *testing.T) {
		devs := newDevices(&tether.Device{TenantID: "acme", ID: "d1", Labels: map[string]string{"site": "south"}})
		h := newHub(t, stream.Options{Devices: devs, CacheTTL: 50 * time.Millisecond})
		s := subscribe(t, h, "acme", stream.Filter{Labels: map[string]string{"site": "north"}})
		h.Publish(event(stream.KindTelemetry, "d1", 0))
		nothing(t, h, s)
		devs.set(&tether.Device{TenantID: "acme", ID: "d1", Labels: map[string]string{"site": "north"}})
		time.Sleep(100 * time.Millisecond)
		h.Publish(event(stream.KindTelemetry, "d1", 1))
		if ev, _ := next(t, s); seqOf(t, ev) != 1 {
			t.Errorf("got event %d", seqOf(t, ev))
		}
	})
	t.Run("the cache holds at most its size", func(t *testing.T) {
		devs := newDevices()
		for i := range 100 {
			devs.set(&tether.Device{TenantID: "acme", ID: fmt.Sprintf("d%d", i), Labels: map[string]string{"site": "north"}})
		}
		h := newHub(t, stream.Options{Devices: devs, CacheSize: 10})
		s := subscribe(t, h, "acme", stream.Filter{Labels: map[string]string{"site": "north"}})
		// Two rounds over 100 devices through a cache of 10: the second
		// round must look most of them up again.
		for round := range 2 {
			for i := range 100 {
				h.Publish(event(stream.KindTelemetry, fmt.Sprintf("d%d", i), round*100+i))
				next(t, s)
			}
		}
		if n := devs.lookups.Load(); n < 190 {
			t.Errorf("%d lookups; a cache of 10 kept more than 10 devices", n)
		}
	})
}

func TestALaggingSubscriberLosesItsOldestEventsAndIsTold(t *testing.T) {
	h := newHub(t, stream.Options{Buffer: 4})
	slow := subscribe(t, h, "acme", stream.Filter{})
	fast := subscribe(t, h, "acme", stream.Filter{})
	const n = 10
	for i := range n {
		h.Publish(event(stream.KindTelemetry, "d1", i))
		// The fast subscriber reads each event; the slow one none.
		if ev, dropped := next(t, fast); seqOf(t, ev) != i || dropped != 0 {
			t.Fatalf("fast subscriber got %d (dropped %d), want %d", seqOf(t, ev), dropped, i)
		}
	}
	ev, dropped := next(t, slow)
	if seqOf(t, ev) != n-4 || dropped != n-4 {
		t.Errorf("slow subscriber's first event is %d after %d dropped; want %d after %d", seqOf(t, ev), dropped, n-4, n-4)
	}
	for i := n - 3; i < n; i++ {
		if ev, dropped := next(t, slow); seqOf(t, ev) != i || dropped != 0 {
			t.Errorf("got %d (dropped %d), want %d", seqOf(t, ev), dropped, i)
		}
	}
	if st := h.Stats(); st.Dropped != n-4 || st.Delivered != 2*n || st.Published != n {
		t.Errorf("stats %+v", st)
	}
}

func TestPublishNeverBlocks(t *testing.T) {
	t.Run("with a subscriber that never reads", func(t *testing.T) {
		h := newHub(t, stream.Options{Buffer: 8})
		s := subscribe(t, h, "acme", stream.Filter{})
		const n = 100000
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range n {
				h.Publish(event(stream.KindTelemetry, "d1", i))
			}
		}()
		select {
		case <-done:
		case <-time.After(wait):
			t.Fatal("Publish blocked")
		}
		settle(t, h)
		var got, dropped uint64
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
			_, d, err := s.Next(ctx)
			cancel()
			if err != nil {
				break
			}
			got++
			dropped += d
		}
		if got != 8 || got+dropped != n {
			t.Errorf("got %d events and %d dropped of %d published; want the last 8 and the rest counted", got, dropped, n)
		}
	})
	t.Run("with the dispatcher stuck on a device lookup", func(t *testing.T) {
		devs := newDevices(&tether.Device{TenantID: "acme", ID: "d1", Labels: map[string]string{"site": "north"}})
		devs.gate = make(chan struct{})
		h := newHub(t, stream.Options{Devices: devs, Queue: 4})
		s := subscribe(t, h, "acme", stream.Filter{Labels: map[string]string{"site": "north"}})
		const n = 1000
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range n {
				h.Publish(event(stream.KindTelemetry, "d1", i))
			}
		}()
		select {
		case <-done:
		case <-time.After(wait):
			t.Fatal("Publish blocked")
		}
		close(devs.gate)
		// The first event (looked up) and the queue's four arrive; what
		// the full queue refused is counted before the next event.
		var got, dropped uint64
		for got+dropped < n {
			_, d := next(t, s)
			got++
			dropped += d
		}
		if got > 5 || got+dropped != n {
			t.Errorf("got %d and %d dropped of %d; want at most 5 and the rest counted", got, dropped, n)
		}
	})
}

func TestSubscriptionsEnd(t *testing.T) {
	t.Run("Close ends Next and stops delivery", func(t *testing.T) {
		h := newHub(t, stream.Options{})
		s := subscribe(t, h, "acme", stream.Filter{})
		errc := make(chan error, 1)
		go func() {
			_, _, err := s.Next(context.Background())
			errc <- err
		}()
		s.Close()
		if err := <-errc; !errors.Is(err, stream.ErrClosed) {
			t.Errorf("Next after Close: %v", err)
		}
		s.Close() // twice is fine
		if h.Wants("acme", stream.KindTelemetry) || h.Stats().Subscribers != 0 {
			t.Errorf("a closed subscription is still wanted: %+v", h.Stats())
		}
	})
	t.Run("the subscription's context ends it", func(t *testing.T) {
		h := newHub(t, stream.Options{})
		ctx, cancel := context.WithCancel(t.Context())
		s, err := h.Subscribe(ctx, "acme", stream.Filter{Kinds: []string{stream.KindAlert}})
		if err != nil {
			t.Fatal(err)
		}
		if !h.Wants("acme", stream.KindAlert) || h.Wants("acme", stream.KindTelemetry) || h.Wants("globex", stream.KindAlert) {
			t.Error("Wants does not follow the subscription's tenant and kinds")
		}
		cancel()
		if _, _, err := s.Next(context.Background()); !errors.Is(err, stream.ErrClosed) {
			t.Errorf("Next after the context ended: %v", err)
		}
		if h.Stats().Subscribers != 0 {
			t.Error("the hub still counts it")
		}
	})
	t.Run("closing the hub ends every subscription and refuses new ones", func(t *testing.T) {
		h := stream.NewHub(stream.Options{})
		var subs []stream.Subscription
		for range 3 {
			s, err := h.Subscribe(t.Context(), "acme", stream.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			subs = append(subs, s)
		}
		h.Close()
		h.Close()
		for _, s := range subs {
			if _, _, err := s.Next(context.Background()); !errors.Is(err, stream.ErrClosed) {
				t.Errorf("Next after the hub closed: %v", err)
			}
		}
		if _, err := h.Subscribe(t.Context(), "acme", stream.Filter{}); tether.ErrorCode(err) != tether.EUNAVAILABLE {
			t.Errorf("Subscribe after Close: %v", err)
		}
		h.Publish(event(stream.KindTelemetry, "d1", 0)) // no panic, no block
	})
	t.Run("subscriptions and hubs leave no goroutine behind", func(t *testing.T) {
		before := runtime.NumGoroutine()
		for range 20 {
			h := stream.NewHub(stream.Options{})
			ctx, cancel := context.WithCancel(context.Background())
			for i := range 10 {
				s, err := h.Subscribe(ctx, "acme", stream.Filter{})
				if err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					s.Close()
				}
			}
			h.Publish(event(stream.KindTelemetry, "d1", 0))
			cancel()
			h.Close()
		}
		deadline := time.Now().Add(wait)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines, %d before", n, before)
		}
	})
}

func TestSubscribeRefuses(t *testing.T) {
	tests := []struct {
		name   string
		opts   stream.Options
		filter stream.Filter
		code   string
	}{
		{"an unknown kind", stream.Options{}, stream.Filter{Kinds: []string{"telemetry", "weather"}}, tether.EINVALID},
		{"a bad device ID", stream.Options{}, stream.Filter{Devices: []string{"a b"}}, tether.EINVALID},
		{"over 1000 devices", stream.Options{}, stream.Filter{Devices: slices.Repeat([]string{"d"}, 1001)}, tether.EINVALID},
		{"a label with no key", stream.Options{Devices: newDevices()}, stream.Filter{Labels: map[string]string{"": "x"}}, tether.EINVALID},
		{"a label filter on a hub that cannot look devices up", stream.Options{}, stream.Filter{Labels: map[string]string{"site": "x"}}, tether.EUNAVAILABLE},
		{"a profile filter on a hub that cannot look devices up", stream.Options{}, stream.Filter{Profile: "p"}, tether.EUNAVAILABLE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, tt.opts)
			if _, err := h.Subscribe(t.Context(), "acme", tt.filter); tether.ErrorCode(err) != tt.code {
				t.Errorf("err %v, want code %s", err, tt.code)
			}
		})
	}
	t.Run("more subscribers than the hub allows", func(t *testing.T) {
		h := newHub(t, stream.Options{MaxSubscribers: 2})
		subscribe(t, h, "acme", stream.Filter{})
		s := subscribe(t, h, "globex", stream.Filter{})
		if _, err := h.Subscribe(t.Context(), "acme", stream.Filter{}); tether.ErrorCode(err) != tether.ETOOMANY {
			t.Errorf("third subscription: %v", err)
		}
		s.Close()
		subscribe(t, h, "acme", stream.Filter{})
	})
}

func TestConcurrentPublishersAndSubscribers(t *testing.T) {
	h := newHub(t, stream.Options{Buffer: 16, Devices: newDevices(&tether.Device{TenantID: "acme", ID: "d1", Labels: map[string]string{"a": "b"}})})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h.Publish(event(stream.Kinds[(p+i)%len(stream.Kinds)], "d1", i))
			}
		})
	}
	for c := range 8 {
		wg.Go(func() {
			for range 50 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
				f := stream.Filter{}
				if c%2 == 0 {
					f.Labels = map[string]string{"a": "b"}
				}
				s, err := h.Subscribe(ctx, "acme", f)
				if err != nil {
					t.Error(err)
					cancel()
					return
				}
				for {
					if _, _, err := s.Next(ctx); err != nil {
						break
					}
				}
				cancel()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
}
